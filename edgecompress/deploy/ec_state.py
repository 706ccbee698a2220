"""Device state around a benchmark: CPU governor, CPU and Jetson GPU clocks, temperatures and
throttling (power sources are in ec_power.py). Standard library only, Python >= 3.8.

Every reader takes `root` (default "/") so tests can point it at a fixture tree laid out like the
real sysfs. A missing or unreadable file is reported as absent (None / {}), never guessed.
Formats follow ../shared/reference/devices.md: cpufreq in kHz, thermal zones in milli-degrees C,
Jetson GPU devfreq in Hz (load in per-mille).
"""
import glob
import os
import re

# A clock more than this fraction below its value at the start of the timed window counts as a
# fall under load, the sign of throttling that sysfs offers on every Linux (there is no single flag).
CLOCK_FALL_FRACTION = 0.05
# Device-tree node names of Jetson GPUs (Volta, Pascal, Ampere, Blackwell; "gpu" on newer trees).
JETSON_GPU_NODES = ("gv11b", "gp10b", "ga10b", "gb10b", "gpu")
# Trip types at which the kernel starts to hold clocks back.
LIMITING_TRIPS = ("passive", "hot")
# NVML clocks-event reasons that are throttling (not idle or application-clock settings).
NVML_THROTTLE_BITS = {0x4: "SwPowerCap", 0x8: "HwSlowdown", 0x20: "SwThermalSlowdown",
                      0x40: "HwThermalSlowdown", 0x80: "HwPowerBrakeSlowdown"}


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


# The CPU features INT8 kernels turn on (x86 "flags", ARM "Features" in /proc/cpuinfo): an INT8 speed-up
# depends on them (an x86 CPU without VNNI sums INT8 products in saturating int16; an ARM core without
# asimddp has no dot-product instruction).
INT8_CPU_FEATURES = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "sve", "sve2")


def cpu(root="/"):
    """{"model": the CPU's name, "int8_features": [...]} from /proc/cpuinfo (x86 "model name"; ARM boards
    "Model", else "Hardware", else the first core's implementer and part), or None where it is unreadable."""
    text = read_text(os.path.join(root, "proc", "cpuinfo"))
    if not text:
        return None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())  # the first core's
    model = fields.get("model name") or fields.get("model") or fields.get("hardware")
    if not model and fields.get("cpu part"):
        model = "CPU implementer %s part %s" % (fields.get("cpu implementer"), fields["cpu part"])
    present = set((fields.get("flags") or fields.get("features") or "").split())
    return {"model": model or None, "int8_features": [f for f in INT8_CPU_FEATURES if f in present]}


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


def gpu_devfreq(root="/"):
    """{devfreq name: {cur_hz, max_hz, min_hz, load_permille}} of Jetson GPUs; {} elsewhere.

    A GPU is the devfreq device whose `device/of_node/name` is a Jetson GPU node; that file is a
    device-tree string and ends in a NUL byte.
    """
    gpus = {}
    for dev in sorted(glob.glob(_sys(root, "class", "devfreq", "*"))):
        node = read_text(os.path.join(dev, "device", "of_node", "name"))
        if node is None or node.strip("\x00").strip() not in JETSON_GPU_NODES:
            continue
        gpus[os.path.basename(dev)] = {
            "cur_hz": read_int(os.path.join(dev, "cur_freq")), "max_hz": read_int(os.path.join(dev, "max_freq")),
            "min_hz": read_int(os.path.join(dev, "min_freq")),
            "load_permille": read_int(os.path.join(dev, "device", "load")),
        }
    return gpus


def thermal_limits_hit(root="/"):
    """["zone at T C >= its passive trip P C", ...]: zones at or above a trip where the kernel throttles."""
    hits = []
    for zone in sorted(glob.glob(_sys(root, "class", "thermal", "thermal_zone*")), key=_number_key):
        temp = read_int(os.path.join(zone, "temp"))
        if temp is None:
            continue
        for trip_type in sorted(glob.glob(os.path.join(zone, "trip_point_*_type")), key=_number_key):
            if read_text(trip_type) not in LIMITING_TRIPS:
                continue
            trip = read_int(trip_type[:-len("type")] + "temp")
            if trip is not None and 0 < trip <= temp:
                kind = read_text(os.path.join(zone, "type")) or os.path.basename(zone)
                hits.append("%s at %.1f C >= its %s trip %.1f C" % (kind, temp / 1000.0, read_text(trip_type),
                                                                    trip / 1000.0))
                break
    return hits


def nvml_throttle_reasons(mask):
    """Names of the throttling bits set in an NVML clocks-event-reasons mask."""
    return [name for bit, name in sorted(NVML_THROTTLE_BITS.items()) if mask & bit]


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
        "gpu_devfreq": gpu_devfreq(root),
        "thermal_limits_hit": thermal_limits_hit(root),
    }


def _clock_falls(before, after):
    reasons = []
    for cpu, start in sorted(before["clocks_mhz"].items()):
        end = after["clocks_mhz"].get(cpu)
        if end is not None and end < start * (1 - CLOCK_FALL_FRACTION):
            reasons.append("%s clock fell from %.0f to %.0f MHz" % (cpu, start, end))
    for gpu, start in sorted(before["gpu_devfreq"].items()):
        start_hz, end_hz = start["cur_hz"], after["gpu_devfreq"].get(gpu, {}).get("cur_hz")
        if start_hz and end_hz is not None and end_hz < start_hz * (1 - CLOCK_FALL_FRACTION):
            reasons.append("GPU %s clock fell from %.0f to %.0f MHz" % (gpu, start_hz / 1e6, end_hz / 1e6))
    return reasons


def throttled(before, after, gpu_event_mask=None):
    """(True/False/None, reason or None) from two snapshots bracketing the timed window, and the
    NVML clocks-event mask seen during it where NVML was read.

    Throttled: a CPU or GPU clock fell, the kernel counted throttle events, a thermal zone sat at a
    passive trip, or NVML named a throttle reason. None when the device exposes none of these:
    unknown, not "no".
    """
    reasons = _clock_falls(before, after)
    events_start, events_end = before["throttle_events"], after["throttle_events"]
    if events_start is not None and events_end is not None and events_end > events_start:
        reasons.append("kernel counted %d thermal throttle events" % (events_end - events_start))
    for hit in sorted(set(before["thermal_limits_hit"]) | set(after["thermal_limits_hit"])):
        reasons.append("thermal limit: " + hit)
    if gpu_event_mask:
        named = nvml_throttle_reasons(gpu_event_mask)
        if named:
            reasons.append("NVML clocks-event reasons " + ", ".join(named))
    if reasons:
        return True, "throttled during the timed runs: " + "; ".join(reasons)
    known = (bool(before["clocks_mhz"] and after["clocks_mhz"]) or events_start is not None
             or bool(before["gpu_devfreq"]) or gpu_event_mask is not None)
    return (False if known else None), None
