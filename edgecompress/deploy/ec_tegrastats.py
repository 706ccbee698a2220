"""tegrastats as a power source: used on Jetsons whose sysfs rails cannot be read. Standard library
only, Python >= 3.8.

`parse_line` reads one line of `tegrastats --interval <ms>` in both forms of
../shared/reference/devices.md: JetPack 4 (`POM_5V_IN 3129/3129`, mW without a unit) and JetPack 5/6
(`VDD_IN 4824mW/4824mW`, with a leading date). `Tegrastats` runs the command, keeps its latest line
and serves its rails as instantaneous power.
"""
import re
import shutil
import subprocess
import threading
import time

from ec_power import Source, SourceError, total_of

DEFAULT_INTERVAL_MS = 100
FIRST_LINE_WAIT_S = 3.0
STALE_INTERVALS = 5  # this many intervals without a line: tegrastats has stopped

TIMESTAMP = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d) ")
RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
CPU = re.compile(r"\bCPU \[([^\]]*)\]")
CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
LOAD_FREQ = r"\b%s (\d+)%%(?:@\[?(\d+))?"
TEMPERATURE = re.compile(r"(?:^|\s)([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C(?=\s|$)")
# NAME cur/avg in mW, with or without the unit; a third value (JetPack 7) is kept apart, meaning unknown.
RAIL = re.compile(r"(?:^|\s)([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
NOT_RAILS = ("RAM", "SWAP", "IRAM", "LFB")


def _cores(text):
    """[{"load_pct", "freq_mhz", "online"}] of a `CPU [..]` list; `off` cores and missing MHz are None."""
    cores = []
    for entry in text.split(","):
        entry = entry.strip()
        match = CORE.match(entry)
        if match:
            mhz = match.group(2)
            cores.append({"load_pct": int(match.group(1)), "freq_mhz": int(mhz) if mhz else None, "online": True})
        else:  # "off", or a field this parser does not know
            cores.append({"load_pct": None, "freq_mhz": None, "online": False if entry == "off" else None})
    return cores


def _load_freq(line, name):
    match = re.search(LOAD_FREQ % name, line)
    if not match:
        return None
    return {"load_pct": int(match.group(1)), "freq_mhz": int(match.group(2)) if match.group(2) else None}


def parse_line(line):
    """One tegrastats line as {"timestamp", "ram_mb", "cpu", "gpu", "emc", "temperatures_c",
    "rails_mw" (current), "rails_avg_mw", "rails_third_mw"}; a field not on the line is None/{}."""
    line = line.strip()
    stamp = TIMESTAMP.match(line)
    ram = RAM.search(line)
    cpu = CPU.search(line)
    rails, averages, thirds = {}, {}, {}
    for name, current, average, third in RAIL.findall(line):
        if name in NOT_RAILS:
            continue
        rails[name], averages[name] = float(current), float(average)
        if third:
            thirds[name] = float(third)
    return {
        "timestamp": stamp.group(1) if stamp else None,
        "ram_mb": {"used": int(ram.group(1)), "total": int(ram.group(2))} if ram else None,
        "cpu": _cores(cpu.group(1)) if cpu else [],
        "gpu": _load_freq(line, "GR3D_FREQ"),
        "emc": _load_freq(line, "EMC_FREQ"),
        "temperatures_c": dict((name, float(value)) for name, value in TEMPERATURE.findall(line)),
        "rails_mw": rails, "rails_avg_mw": averages, "rails_third_mw": thirds,
    }


class Tegrastats(Source):
    """Runs `tegrastats --interval <ms>` for as long as the source is open. Its rails are the
    JetPack's own INA3221 readings; VDD_IN / POM_5V_IN is the total where printed."""

    name = "tegrastats"
    command = ("tegrastats",)

    def __init__(self, *args, **kwargs):
        Source.__init__(self, *args, **kwargs)
        self.interval_ms = int(self.interval_ms or DEFAULT_INTERVAL_MS)
        self.update_interval_s = self.default_sample_interval_s = self.interval_ms / 1000.0
        self.process, self.thread = None, None
        self.latest, self.latest_at, self.last_other = None, None, None
        self.first = threading.Event()
        self._lock = threading.Lock()

    def available(self):
        if shutil.which(self.command[0]) is None:
            return False, "no `%s` on PATH" % self.command[0]
        return True, "`%s` found (rails known once it prints)" % self.command[0]

    def open(self):
        argv = list(self.command) + ["--interval", str(self.interval_ms)]
        try:
            self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            universal_newlines=True, bufsize=1)
        except OSError as e:
            raise SourceError("cannot start `%s`: %s" % (" ".join(argv), e))
        self.thread = threading.Thread(target=self._read_lines, name="tegrastats-reader", daemon=True)
        self.thread.start()
        wait_s = max(FIRST_LINE_WAIT_S, STALE_INTERVALS * self.update_interval_s)
        if not self._wait_first_line(wait_s):
            ended = self._exit_code()
            self.close()
            raise SourceError("`%s` %s%s" % (
                " ".join(argv), "exited with %d before printing rail readings" % ended if ended is not None
                else "printed no rail readings within %.1f s" % wait_s,
                "; last line: %r" % self.last_other if self.last_other else ""))
        self.total_rail, self.summed_rails = total_of(sorted(self.latest["rails_mw"]))
        if self.total_rail is None:
            self.note = "tegrastats printed no input rail; the rails printed are summed"

    def _exit_code(self):
        """Its exit code once its output has ended, else None (it is still running)."""
        if self.thread.is_alive():
            return self.process.poll()
        try:
            return self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return None

    def _wait_first_line(self, wait_s):
        deadline = time.perf_counter() + wait_s
        while not self.first.wait(0.02):
            if time.perf_counter() > deadline or not self.thread.is_alive():
                return self.first.is_set()  # the reader ends when tegrastats closes its output
        return True

    def _read_lines(self):
        for line in self.process.stdout:
            parsed = parse_line(line)
            if parsed["rails_mw"]:
                with self._lock:
                    self.latest, self.latest_at = parsed, time.perf_counter()
                self.first.set()
            elif line.strip():
                self.last_other = line.strip()[-200:]

    def rails(self):
        return sorted(self.latest["rails_mw"]) if self.latest else []

    def read_power_mw(self):
        with self._lock:
            latest, latest_at = self.latest, self.latest_at
        if latest is None or time.perf_counter() - latest_at > STALE_INTERVALS * self.update_interval_s:
            raise SourceError("tegrastats printed no line for %d intervals" % STALE_INTERVALS)
        return dict(latest["rails_mw"])

    def close(self):
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self.thread is not None:
            self.thread.join(timeout=2)
        process.stdout.close()
