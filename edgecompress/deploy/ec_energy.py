"""Energy per inference: pick a power source, sample it on a thread, integrate. Standard library
only, Python >= 3.8.

SOURCES is the registry (name -> class, in the order `auto` tries them); the classes live in
ec_power.py and ec_tegrastats.py. A job's `energy` is "auto", "none" or one of these names.

How a measurement goes (ec_bench.py drives it): `select` finds and opens the source; a `Meter`
samples it just before the timed window with nothing running (idle baseline, `idle_seconds`) and
then during the timed window only. Power samples are integrated with the trapezoid rule; an energy
counter is differenced (wraps already undone by the source). Samples are stamped with
time.perf_counter at the middle of each read. A window shorter than MIN_UPDATES sensor refreshes
says little, so ec_bench keeps the timed runs going until the window is long enough and says so
(max_runs never stops them earlier: it caps a count budget only).

The result's `energy` object (Meter.result): source; rails (read); total_rail (the input rail, e.g.
VDD_IN) or summed_rails (rails added up where there is none), the other null; method; samples and
idle_samples; window_s (the timed window), sampled_s, idle_window_s; idle_power_mw, avg_power_mw,
rail_avg_power_mw (power sources); mj_per_inference_total = avg * window_s / n;
mj_per_inference_net = (avg - idle) * window_s / n (null without an idle baseline);
update_interval_s, sample_interval_s, min_window_s, failed_reads, note (what the rails cover, what
was assumed). Where there is no energy, `energy` is null and the reason says why.
"""
import threading
import time

from ec_power import Ina3221Hwmon, Ina3221Iio, Nvml, Pi5Pmic, Rapl, SourceError
from ec_tegrastats import Tegrastats

SOURCES = dict((cls.name, cls) for cls in (Ina3221Hwmon, Ina3221Iio, Tegrastats, Nvml, Rapl, Pi5Pmic))
AUTO_ORDER = ("ina3221", "ina3221x", "tegrastats", "nvml", "rapl", "pi5_pmic")
CHOICES = ("auto", "none") + AUTO_ORDER
MIN_UPDATES = 10
# Sampling power faster than this steals CPU from the model for little gain in accuracy.
MIN_SAMPLE_INTERVAL_S = 0.02


def make_source(name, root="/", runner=None, device_index=0, interval_ms=None):
    return SOURCES[name](root=root, runner=runner, device_index=device_index, interval_ms=interval_ms)


def _try(source):
    """(available, reason) of one source, opened when available; closed again when not."""
    try:
        ok, reason = source.available()
        if ok:
            source.open()
            return True, reason
    except SourceError as e:
        ok, reason = False, str(e)
    except Exception as e:  # a source's own bug must not end the benchmark: report it as the reason
        ok, reason = False, "%s: %s" % (type(e).__name__, e)
    source.close()
    return False, reason


def select(choice, **context):
    """(opened source, None) or (None, reason naming every place looked at). `context` is passed to
    each source: root, runner, device_index, interval_ms."""
    if choice == "none":
        return None, "energy measurement disabled by the job (energy: none)"
    names = AUTO_ORDER if choice == "auto" else (choice,)
    looked = []
    for name in names:
        source = make_source(name, **context)
        ok, reason = _try(source)
        if ok:
            return source, None
        looked.append("%s: %s" % (name, reason))
    if choice == "auto":
        return None, "no power source found: looked at " + "; ".join(looked)
    return None, "energy source '%s' is not available here: %s" % (choice, looked[0].split(": ", 1)[1])


def survey(**context):
    """[{"name", "available", "reason"}] for every source, without starting any (for the probe)."""
    found = []
    for name in AUTO_ORDER:
        source = make_source(name, **context)
        try:
            ok, reason = source.available()
        except Exception as e:
            ok, reason = False, "%s: %s" % (type(e).__name__, e)
        source.close()
        found.append({"name": name, "available": bool(ok), "reason": reason})
    return found


def trapezoid_mj(points):
    """Integral of [(t s, P mW)] in mJ (mW * s)."""
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in zip(points, points[1:]))


class Sampler(object):
    """Reads a source every `interval_s` on its own thread between start() and stop(). The first and
    last samples are read on the caller's thread, so the samples bracket the caller's window."""

    def __init__(self, source, interval_s, clock=time.perf_counter):
        self.source, self.interval_s, self.clock = source, interval_s, clock
        self.samples, self.errors, self.last_error = [], 0, None
        self._stop, self._thread = threading.Event(), None

    def _read(self):
        if self.source.kind == "energy":
            return self.source.read_energy_mj(), None
        rails = self.source.read_power_mw()
        return self.source.total_mw(rails), rails

    def sample(self):
        started = self.clock()
        try:
            value, rails = self._read()
        except Exception as e:  # one failed read loses one sample, not the measurement
            self.errors += 1
            self.last_error = "%s: %s" % (type(e).__name__, e)
            return
        self.samples.append(((started + self.clock()) / 2.0, value, rails))

    def _loop(self):
        due = self.clock() + self.interval_s
        while not self._stop.wait(max(0.0, due - self.clock())):
            self.sample()
            due = max(due + self.interval_s, self.clock())  # a slow read skips ticks, never bursts

    def start(self):
        self.samples, self._stop = [], threading.Event()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="ec-energy-sampler", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.sample()
        return self.samples


def window_energy(kind, samples):
    """(energy mJ, sampled span s, {rail: average mW} or None) of one window's samples."""
    span = samples[-1][0] - samples[0][0]
    if kind == "energy":
        return samples[-1][1] - samples[0][1], span, None
    energy = trapezoid_mj([(t, total) for t, total, _ in samples])
    rails = {}
    for rail in sorted(samples[0][2]):
        if all(rail in r for _, _, r in samples):
            rails[rail] = trapezoid_mj([(t, r[rail]) for t, _, r in samples]) / span if span > 0 else None
    return energy, span, rails


class Meter(object):
    """One benchmark's energy measurement with an opened source."""

    def __init__(self, source, interval_ms=None):
        self.source = source
        given = interval_ms / 1000.0 if interval_ms else None
        self.sample_interval_s = given or source.default_sample_interval_s or max(
            source.update_interval_s, MIN_SAMPLE_INTERVAL_S)
        # A counter's difference needs only the sensor to refresh often; power samples need both.
        slowest = source.update_interval_s if source.kind == "energy" else max(
            source.update_interval_s, self.sample_interval_s)
        self.min_window_s = MIN_UPDATES * slowest
        self.sampler = Sampler(source, self.sample_interval_s)
        self.idle, self.timed, self.errors, self.last_error = None, None, 0, None

    def _collect(self):
        samples = self.sampler.stop()
        self.errors += self.sampler.errors
        self.last_error = self.sampler.last_error or self.last_error
        return samples

    def measure_idle(self, seconds):
        """Sample for `seconds` with nothing running; the caller must not run inferences."""
        self.sampler.start()
        time.sleep(seconds)
        self.idle = self._collect()

    def start(self):
        self.sampler.start()

    def stop(self):
        self.timed = self._collect()

    def _idle_power_mw(self):
        if not self.idle or len(self.idle) < 2:
            return None
        energy, span, _ = window_energy(self.source.kind, self.idle)
        return energy / span if span > 0 else None

    def result(self, window_s, runs):
        """(energy object, None) or (None, reason) for a timed window of `runs` inferences."""
        if window_s < self.min_window_s:
            return None, ("window too short: the timed window of %.3f s holds fewer than %d updates of %s "
                          "(every %.3f s; needs >= %.3f s); raise runs.seconds"
                          % (window_s, MIN_UPDATES, self.source.name, self.slowest_s(), self.min_window_s))
        if not self.timed or len(self.timed) < 2:
            return None, "%s gave fewer than 2 readings in the timed window (%d failed reads; last: %s)" % (
                self.source.name, self.errors, self.last_error)
        energy, span, rails = window_energy(self.source.kind, self.timed)
        avg = energy / span
        idle = self._idle_power_mw()
        return {
            "source": self.source.name, "rails": self.source.rails(),
            "total_rail": self.source.total_rail, "summed_rails": self.source.summed_rails,
            "method": "energy counter difference" if self.source.kind == "energy" else "trapezoid over power samples",
            "samples": len(self.timed), "idle_samples": len(self.idle) if self.idle else 0,
            "window_s": window_s, "sampled_s": span,
            "idle_window_s": self.idle[-1][0] - self.idle[0][0] if self.idle else None,
            "idle_power_mw": idle, "avg_power_mw": avg, "rail_avg_power_mw": rails,
            "mj_per_inference_total": avg * window_s / runs,
            "mj_per_inference_net": None if idle is None else (avg - idle) * window_s / runs,
            "update_interval_s": self.source.update_interval_s, "sample_interval_s": self.sample_interval_s,
            "min_window_s": self.min_window_s, "failed_reads": self.errors, "note": self._note(idle),
        }, None

    def slowest_s(self):
        return self.min_window_s / MIN_UPDATES

    def _note(self, idle):
        notes = [n for n in (self.source.note,) if n]
        if self.idle is None:
            notes.append("no idle baseline (idle_seconds 0), so no net energy")
        elif idle is None:
            notes.append("the idle baseline got fewer than 2 readings, so no net energy")
        if self.errors:
            notes.append("%d reads failed (last: %s)" % (self.errors, self.last_error))
        return "; ".join(notes) or None
