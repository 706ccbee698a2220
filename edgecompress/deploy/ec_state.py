"""Device state around a benchmark: CPU governor, clocks, temperatures, throttling, and which power
sources exist. Standard library only, Python >= 3.8.

Every reader takes `root` (default "/") so tests can point it at a fixture tree laid out like the
real sysfs. A missing or unreadable file is reported as absent (None / {}), never guessed.
Formats follow ../shared/reference/devices.md: cpufreq in kHz, thermal zones in milli-degrees C.
"""
import glob
import os
import re

# A clock more than this fraction below its value at the start of the timed window counts as a
# fall under load, the sign of throttling that sysfs offers on every Linux (there is no single flag).
CLOCK_FALL_FRACTION = 0.05


def read_text(path):
    """The stripped contents of a small sysfs file, or None when it is absent or unreadable."""
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def read_int(path):
    text = read_text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _number_key(path):
    """Sort cpu10 after cpu9 and thermal_zone10 after thermal_zone9."""
    digits = re.findall(r"\d+", os.path.basename(path))
    return int(digits[-1]) if digits else -1


def _sys(root, *parts):
    return os.path.join(root, "sys", *parts)


def governor(root="/"):
    return read_text(_sys(root, "devices", "system", "cpu", "cpu0", "cpufreq", "scaling_governor"))


def clocks_mhz(root="/"):
    """{"cpu0": MHz, ...} from scaling_cur_freq (kHz); {} where cpufreq is absent (most VMs)."""
    clocks = {}
    pattern = _sys(root, "devices", "system", "cpu", "cpu[0-9]*")
    for cpu in sorted(glob.glob(pattern), key=_number_key):
        khz = read_int(os.path.join(cpu, "cpufreq", "scaling_cur_freq"))
        if khz is not None:
            clocks[os.path.basename(cpu)] = khz / 1000.0
    return clocks


def temperatures_c(root="/"):
    """{zone type: degrees C}; a type shared by several zones is keyed "type/thermal_zoneN"."""
    zones = sorted(glob.glob(_sys(root, "class", "thermal", "thermal_zone*")), key=_number_key)
    readings = []
    for zone in zones:
        millidegrees = read_int(os.path.join(zone, "temp"))
        if millidegrees is not None:
            kind = read_text(os.path.join(zone, "type")) or os.path.basename(zone)
            readings.append((kind, os.path.basename(zone), millidegrees / 1000.0))
    kinds = [kind for kind, _, _ in readings]
    temps = {}
    for kind, zone, celsius in readings:
        temps[kind if kinds.count(kind) == 1 else kind + "/" + zone] = celsius
    return temps


def throttle_events(root="/"):
    """Sum of the x86 kernel's thermal throttle counters, or None where the kernel has none."""
    pattern = _sys(root, "devices", "system", "cpu", "cpu[0-9]*", "thermal_throttle", "*_throttle_count")
    counts = [read_int(path) for path in glob.glob(pattern)]
    counts = [c for c in counts if c is not None]
    return sum(counts) if counts else None


def snapshot(root="/"):
    return {
        "clocks_mhz": clocks_mhz(root),
        "temperatures_c": temperatures_c(root),
        "throttle_events": throttle_events(root),
    }


def throttled(before, after):
    """(True/False/None, reason or None) from two snapshots bracketing the timed window.

    None when the device exposes neither clocks nor throttle counters: unknown, not "no".
    """
    reasons = []
    for cpu, start in sorted(before["clocks_mhz"].items()):
        end = after["clocks_mhz"].get(cpu)
        if end is not None and end < start * (1 - CLOCK_FALL_FRACTION):
            reasons.append("%s clock fell from %.0f to %.0f MHz" % (cpu, start, end))
    events_start, events_end = before["throttle_events"], after["throttle_events"]
    if events_start is not None and events_end is not None and events_end > events_start:
        reasons.append("kernel counted %d thermal throttle events" % (events_end - events_start))
    if reasons:
        return True, "throttled during the timed runs: " + "; ".join(reasons)
    known = bool(before["clocks_mhz"] and after["clocks_mhz"]) or events_start is not None
    return (False if known else None), None
