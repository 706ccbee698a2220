"""Energy and device state on an Android phone, from what the adb runner collects there
(../shared/reference/devices.md, Android section). Pure text and arithmetic: no adb here.

- Battery: a `sh` loop on the phone (SAMPLER_SH) appends `uptime_s current_now voltage_now` lines.
  The Android contract is uA and uV with positive = charging; some vendors report mA, and some flip
  the sign. The unit is judged by magnitude, the sign from the readings while the battery status
  says Discharging; what was detected is recorded with the energy.
- PowerStats HAL (Pixel): `dumpsys android.hardware.power.stats.IPowerStats/default delta` blocks,
  per-rail energy in mJ (mWs) since the previous dump.
- State: `dumpsys thermalservice` (status line and HAL temperatures), cpufreq and governors.
- WATCHDOG_SH: the phone-side guard that restores charging when the host dies mid-job."""
from __future__ import annotations

import re
import statistics
from typing import Dict, List, Optional, Tuple

BATTERY_DIR = "/sys/class/power_supply/battery"
POWERSTATS_SERVICE = "android.hardware.power.stats.IPowerStats/default"
CPU_DIR = "/sys/devices/system/cpu"
# Above this |current_now| the unit is uA: 30000 mA (30 A) is beyond any phone, and a phone running a
# benchmark draws far more than 30000 uA (30 mA).
MA_LIMIT = 30000
THERMAL_STATUS = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical", 5: "emergency", 6: "shutdown"}

# Runs on the phone: sh SAMPLER_SH FOLDER CURRENT_FILE VOLTAGE_FILE PERIOD_S MAX_SAMPLES.
# Only shell builtins besides sleep, so sampling costs one fork per line. It stops at a `stop` file,
# when its folder is removed, or after MAX_SAMPLES lines, so it never outlives its job for long.
SAMPLER_SH = """\
dir=$1; cur=$2; volt=$3; period=$4; max=$5; n=0
while [ -d "$dir" ] && [ ! -e "$dir/stop" ] && [ "$n" -lt "$max" ]; do
  read t rest < /proc/uptime
  read c < "$cur"
  read v < "$volt"
  echo "$t $c $v" >> "$dir/battery.txt"
  n=$((n + 1))
  sleep "$period" || sleep 1  # toolbox sleep before Android 6 takes whole seconds only
done
"""

# Runs on the phone beside every job, under nohup: sh WATCHDOG_SH FOLDER LOCK TOKEN MAX_S STALE_TICKS.
# The host may die without running its cleanup (SIGKILL, the OOM killer, a crash, a power cut), and
# nothing else on the phone would ever restore charging. Once a second the watchdog takes the host's
# heartbeat (a `heartbeat` file the host touches and the watchdog removes); after STALE_TICKS seconds
# without one, after MAX_S seconds, or when the folder is removed by anyone but the host's own cleanup
# (which kills the watchdog first), it restores charging if the job suspended it (the `unplugged`
# marker, written before `dumpsys battery unplug`), then ends the job's processes, removes the folder
# and releases the lock if it is still this job's. POSIX sh only (mksh, toybox sh, dash): builtins,
# sleep, tr, grep, kill, rm. A pid is killed only while its command line names the job folder, so a
# pid reused by another process is left alone.
WATCHDOG_SH = """\
dir=$1; lock=$2; token=$3; max=$4; stale=$5; misses=0; unplugged=; pids=
read up rest < /proc/uptime; deadline=$((${up%.*} + max))
ours() { tr '\\000' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF "$dir"; }
while [ -d "$dir" ]; do
  [ -e "$dir/unplugged" ] && unplugged=1
  for f in run sampler benchmark; do
    p=; [ -f "$dir/$f.pid" ] && read p < "$dir/$f.pid"
    case " $pids " in *" $p "*) ;; *) pids="$pids $p";; esac
  done
  if [ -e "$dir/heartbeat" ]; then rm -f "$dir/heartbeat"; misses=0; else misses=$((misses + 1)); fi
  read up rest < /proc/uptime
  if [ "$misses" -ge "$stale" ] || [ "${up%.*}" -ge "$deadline" ]; then break; fi
  sleep 1
done
[ -n "$unplugged" ] && dumpsys battery reset
for p in $pids; do ours "$p" && kill "$p" 2>/dev/null; done
sleep 1
for p in $pids; do ours "$p" && kill -9 "$p" 2>/dev/null; done
rm -rf "$dir"
grep -qF "$token" "$lock/owner" 2>/dev/null && rm -rf "$lock"
exit 0
"""


def parse_samples(text: str) -> List[Tuple[float, float, float]]:
    """(uptime_s, current_now, voltage_now) per complete line; a torn or empty line is skipped."""
    samples = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        try:
            samples.append((float(parts[0]), float(parts[1]), float(parts[2])))
        except ValueError:
            continue
    return samples


def current_unit(currents: List[float]) -> Tuple[str, float]:
    """("uA", 1e-6) or ("mA", 1e-3), judged by the largest magnitude seen."""
    return ("uA", 1e-6) if max(abs(c) for c in currents) >= MA_LIMIT else ("mA", 1e-3)


def voltage_unit(voltages: List[float]) -> Tuple[str, float]:
    """("uV", 1e-6), ("mV", 1e-3) or ("V", 1.0) for a Li-ion cell of about 3-4.5 V."""
    level = statistics.median(abs(v) for v in voltages)
    if level >= 100000:
        return "uV", 1e-6
    return ("mV", 1e-3) if level >= 100 else ("V", 1.0)


def detect(samples: List[Tuple[float, float, float]], status: Optional[str]) -> Tuple[Optional[dict], Optional[str]]:
    """(units {current, voltage, sign, discharge_sign, basis}, None) or (None, why the battery
    cannot measure this run). discharge_sign turns a current reading into a positive draw."""
    if len(samples) < 2:
        return None, f"the battery sampler wrote {len(samples)} reading(s)"
    currents = [c for _, c, _ in samples]
    if not any(currents):
        return None, "current_now read 0 throughout (no fuel gauge current on this device)"
    if (status or "").strip() != "Discharging":
        return None, (f"the battery status was {status.strip() if status else 'unknown'!r}, not 'Discharging': "
                      f"with USB power feeding the phone the battery current is not the load (dumpsys battery "
                      f"unplug only hides the charger from apps); unplug the cable and use adb over Wi-Fi")
    cur_name, cur_scale = current_unit(currents)
    volt_name, volt_scale = voltage_unit([v for _, _, v in samples])
    flipped = statistics.median(currents) > 0
    units = {"current": cur_name, "voltage": volt_name, "current_scale_a": cur_scale, "voltage_scale_v": volt_scale,
             "sign": "flipped (positive = discharging)" if flipped else "contract (positive = charging)",
             "discharge_sign": 1 if flipped else -1,
             "basis": f"unit by magnitude (max |current_now| {max(abs(c) for c in currents):.0f}, "
                      f"{'>=' if cur_name == 'uA' else '<'} {MA_LIMIT}); sign from the median reading while "
                      f"the status was Discharging"}
    return units, None


def power_mw(samples: List[Tuple[float, float, float]], units: dict) -> List[Tuple[float, float]]:
    """(uptime_s, battery discharge power in mW) per sample."""
    k = units["discharge_sign"] * units["current_scale_a"] * units["voltage_scale_v"] * 1000.0
    return [(t, k * c * v) for t, c, v in samples]


def integrate(points: List[Tuple[float, float]], start: float, end: float) -> Optional[dict]:
    """Trapezoid energy (mJ) of the (s, mW) points inside [start, end]; None with fewer than 2.
    {mj, covered_s (first to last point inside), samples, avg_mw}. Nothing is interpolated past the
    points inside: a reading just outside belongs to another phase (idle next to the benchmark)."""
    inside = [(t, p) for t, p in sorted(points) if start <= t <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    mj = sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in zip(inside, inside[1:]))
    covered = inside[-1][0] - inside[0][0]
    return {"mj": mj, "covered_s": covered, "samples": len(inside), "avg_mw": mj / covered}


def battery_energy(samples, units: dict, idle: Tuple[float, float], timed: Tuple[float, float],
                   runs: int, period_s: float) -> Tuple[Optional[dict], Optional[str]]:
    """The result's energy block from battery samples over the timed and idle windows (uptime s)."""
    points = power_mw(samples, units)
    run = integrate(points, *timed)
    if run is None:
        inside = sum(1 for t, _ in points if timed[0] <= t <= timed[1])
        return None, (f"the battery sampler has {inside} reading(s) inside the {timed[1] - timed[0]:.3f} s timed "
                      f"window; lengthen runs.seconds or lower energy_interval_ms")
    rest = integrate(points, *idle) if idle[1] > idle[0] else None
    window_s = timed[1] - timed[0]
    idle_mw = rest["avg_mw"] if rest else None
    notes = ["battery power = |current_now x voltage_now|: the whole phone (screen, radios) as its battery sees it"]
    notes.append("average power over the readings inside the timed window (the last n x mean latency before "
                 "benchmark_model exited; it prints no timestamps) times that window")
    if idle_mw is None:
        notes.append("no idle baseline (idle_seconds 0 or too few idle readings), so no net energy")
    return {
        "source": "battery", "rails": ["battery"], "total_rail": "battery", "summed_rails": None,
        "method": "trapezoid over power samples", "samples": run["samples"],
        "idle_samples": rest["samples"] if rest else 0, "window_s": window_s, "sampled_s": run["covered_s"],
        "idle_window_s": rest["covered_s"] if rest else None, "idle_power_mw": idle_mw,
        "avg_power_mw": run["avg_mw"], "rail_avg_power_mw": {"battery": run["avg_mw"]},
        "mj_per_inference_total": run["avg_mw"] * window_s / runs,
        "mj_per_inference_net": None if idle_mw is None else (run["avg_mw"] - idle_mw) * window_s / runs,
        "sample_interval_s": period_s, "units": {k: units[k] for k in ("current", "voltage", "sign", "basis")},
        "note": "; ".join(notes),
    }, None


_RAIL = re.compile(r"^\s*\[([^\]]+)\]:(\S*)\s+([-+\d.eE]+)\s*mWs\s*\(([-+\d.eE]+)\)")
_ELAPSED = re.compile(r"Elapsed time:\s*([\d.]+)\s*ms")


def parse_powerstats(text: str) -> Optional[dict]:
    """{elapsed_ms, rails {RAIL: delta mJ}, subsystems {RAIL: name}, cumulative_mj {RAIL: mJ}} of
    the first PowerStats HAL energy-meter block, or None when there is none."""
    if "energy meter" not in text:
        return None
    elapsed = _ELAPSED.search(text)
    rails, subsystems, cumulative = {}, {}, {}
    for line in text.splitlines():
        if line.strip().startswith("====") and "End of" in line:
            break
        match = _RAIL.match(line)
        if match:
            rail, subsystem, total, delta = match.groups()
            rails[rail], subsystems[rail], cumulative[rail] = float(delta), subsystem, float(total)
    if elapsed is None or not rails:
        return None
    return {"elapsed_ms": float(elapsed.group(1)), "rails": rails, "subsystems": subsystems,
            "cumulative_mj": cumulative}


def powerstats_energy(idle: Optional[dict], run: Optional[dict], window_s: float, runs: int,
                      process_s: Optional[float] = None) -> Tuple[Optional[dict], Optional[str]]:
    """The energy block from PowerStats deltas: `idle` over the idle window, `run` from just before
    benchmark_model started to just after it ended (process_s of that, by the phone's clock). The
    run delta's time outside the process (the dumps themselves) is taken at idle power per rail."""
    if run is None or run["elapsed_ms"] <= 0:
        return None, "PowerStats HAL printed no energy-meter block after the run"
    run_s = run["elapsed_ms"] / 1000.0
    idle_s = idle["elapsed_ms"] / 1000.0 if idle and idle["elapsed_ms"] > 0 else None
    idle_rail = {r: idle["rails"].get(r, 0.0) / idle_s for r in run["rails"]} if idle_s else None
    span = process_s if idle_rail and process_s and 0 < process_s < run_s else run_s
    rail_mw = {r: (mj - (idle_rail[r] * (run_s - span) if idle_rail else 0.0)) / span for r, mj in run["rails"].items()}
    avg = sum(rail_mw.values())
    idle_mw = sum(idle_rail.values()) if idle_rail else None
    note = ("PowerStats rails cover the SoC and subsystems the HAL meters, not the whole phone; the run delta spans "
            "the whole benchmark_model process (load, warm-up, timed runs), and its average power is applied to "
            "the timed window; a delta is since the previous dump by any reader")
    return {
        "source": "powerstats", "rails": sorted(run["rails"]), "total_rail": None, "summed_rails": sorted(run["rails"]),
        "method": "energy counter difference", "samples": 2, "idle_samples": 2 if idle_mw is not None else 0,
        "window_s": window_s, "sampled_s": span, "idle_window_s": idle_s,
        "idle_power_mw": idle_mw, "avg_power_mw": avg, "rail_avg_power_mw": rail_mw,
        "mj_per_inference_total": avg * window_s / runs,
        "mj_per_inference_net": None if idle_mw is None else (avg - idle_mw) * window_s / runs,
        "subsystems": run["subsystems"], "note": note,
    }, None


_TEMPERATURE = re.compile(r"Temperature\{mValue=([-\d.]+), mType=(-?\d+), mName=([^,]+), mStatus=(-?\d+)\}")


def parse_thermal(text: str) -> dict:
    """{status, status_name, temperatures_c {name: C}} from `dumpsys thermalservice`."""
    match = re.search(r"Thermal Status:\s*(\d+)", text)
    status = int(match.group(1)) if match else None
    temps: Dict[str, float] = {}
    section = text.split("Current temperatures from HAL:", 1)
    for value, _, name, _ in _TEMPERATURE.findall(section[1] if len(section) == 2 else text):
        temps[name.strip()] = float(value)
    return {"status": status, "status_name": THERMAL_STATUS.get(status) if status is not None else None,
            "temperatures_c": temps}


def parse_cpu(text: str) -> dict:
    """{clocks_mhz {cpuN: MHz}, governors {cpuN: name}} from `PATH VALUE` lines of the cpufreq files."""
    clocks, governors = {}, {}
    for line in text.splitlines():
        match = re.match(r"\S*/(cpu\d+)/cpufreq/(scaling_cur_freq|scaling_governor)\s+(\S+)", line.strip())
        if not match:
            continue
        cpu, kind, value = match.groups()
        if kind == "scaling_governor":
            governors[cpu] = value
        elif value.isdigit():
            clocks[cpu] = int(value) / 1000.0  # kHz
    order = lambda d: dict(sorted(d.items(), key=lambda kv: int(kv[0][3:])))  # noqa: E731
    return {"clocks_mhz": order(clocks), "governors": order(governors)}


def throttled(before: dict, after: dict) -> Tuple[bool, Optional[str]]:
    """Throttled when the thermal status after the run is above none, or rose during it."""
    b, a = before.get("status"), after.get("status")
    if a is None:
        return False, None
    if a > 0 or (b is not None and a > b):
        return True, (f"thermal status {THERMAL_STATUS.get(b, b)} before, {THERMAL_STATUS.get(a, a)} after the run: "
                      f"the phone may have held its clocks back")
    return False, None


def parse_marks(text: Optional[str]) -> dict:
    """{name: phone uptime s} from the run's `NAME UPTIME` marks."""
    marks = {}
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        try:
            marks[name] = float(value)
        except ValueError:
            continue
    return marks


def parse_state(text: Optional[str]) -> dict:
    """Thermal status and temperatures, clocks, governors and battery status from a state dump."""
    state = dict(parse_thermal(text or ""), **parse_cpu(text or ""))
    status = [line[len("battery_status "):].strip() for line in (text or "").splitlines()
              if line.startswith("battery_status ")]
    state["battery_status"] = status[0] if status and status[0] else None
    return state


def _battery(files: dict, sample_s: float, marks: dict, before: dict, after: dict, timed: tuple, n: int) -> tuple:
    samples = parse_samples(files["battery.txt"] or "")
    statuses = {s for s in (before["battery_status"], after["battery_status"]) if s}
    status = statuses.pop() if len(statuses) == 1 else (" then ".join(
        [before["battery_status"] or "?", after["battery_status"] or "?"]))
    units, reason = detect(samples, status)
    if units is None:
        return None, f"battery: {reason}", None
    idle = (marks.get("idle_start", 0.0), marks.get("idle_end", 0.0))
    energy, reason = battery_energy(samples, units, idle, timed, n, sample_s)
    return energy, (None if energy else f"battery: {reason}"), energy and energy["units"]


def run_energy(files: dict, sources: dict, sample_s: float, marks: dict, states: tuple, latency: dict) -> tuple:
    """(energy, energy_reason, battery units detected) of one run from the files it left: sources
    maps each source asked for to None (usable) or why not; states are (before, after)."""
    before, after = states
    if not sources:
        return None, "energy: none in the job", None
    if "unsupported" in sources:
        return None, sources["unsupported"], None
    n, window_s = latency["n"], latency["n"] * latency["mean"] / 1000.0
    end = marks.get("bench_end", 0.0)
    timed = (max(marks.get("bench_start", end - window_s), end - window_s), end)
    found, reasons, units = {}, [], None
    if "battery" in sources:
        if sources["battery"] is not None:
            reasons.append(f"battery: {sources['battery']}")
        else:
            found["battery"], reason, units = _battery(files, sample_s, marks, before, after, timed, n)
            reasons += [reason] if reason else []
    if "powerstats" in sources:
        if sources["powerstats"] is not None:
            reasons.append(f"powerstats: {sources['powerstats']}")
        else:
            found["powerstats"], reason = powerstats_energy(
                parse_powerstats(files["powerstats_idle.txt"] or ""),
                parse_powerstats(files["powerstats_run.txt"] or ""), window_s, n,
                marks.get("bench_end", 0.0) - marks.get("bench_start", 0.0))
            reasons += [f"powerstats: {reason}"] if reason else []
    measured = [name for name in ("powerstats", "battery") if found.get(name)]
    if not measured:
        return None, "; ".join(reasons) or "no power source gave readings", units
    energy = dict(found[measured[0]])
    for other in measured[1:]:
        energy["cross_check"] = {other: {k: found[other][k] for k in ("avg_power_mw", "mj_per_inference_total")}}
    return energy, None, units
