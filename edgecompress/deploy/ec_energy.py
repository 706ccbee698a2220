"""Which power sources this device has. Standard library only, Python >= 3.8.

No source is read yet: `probe` looks in every place a reader will later use (INA3221 rails on
Jetson, Intel RAPL, NVML) and says what it found, so a result's `energy` is null with an honest
reason instead of an invented number. Paths and formats: ../shared/reference/devices.md.
"""
import glob
import importlib.util
import os

from ec_state import read_text

SOURCES = ("auto", "none", "ina3221", "rapl", "nvml")


def ina3221_hwmon_rails(root="/"):
    """Rail labels of JetPack 5/6 INA3221 hwmon devices; channel 7 (shunt sum) and "NC" skipped."""
    rails = []
    for hwmon in sorted(glob.glob(os.path.join(root, "sys", "class", "hwmon", "hwmon*"))):
        if read_text(os.path.join(hwmon, "name")) != "ina3221":
            continue
        for channel in (1, 2, 3):
            label = read_text(os.path.join(hwmon, "in%d_label" % channel))
            if label and label != "NC":
                rails.append(label)
    return rails


def ina3221_iio_rails(root="/"):
    """Rail names of JetPack 4 `ina3221x` IIO devices."""
    pattern = os.path.join(root, "sys", "bus", "i2c", "drivers", "ina3221x", "*", "iio:device*", "rail_name_*")
    return sorted(filter(None, (read_text(path) for path in glob.glob(pattern))))


def rapl_state(root="/"):
    """"absent", "unreadable" (root-only since the CVE-2020-8694 fix) or "readable"."""
    files = glob.glob(os.path.join(root, "sys", "class", "powercap", "intel-rapl:*", "energy_uj"))
    if not files:
        return "absent"
    return "readable" if any(read_text(path) is not None for path in files) else "unreadable"


def _where(root, *parts):
    return os.path.join(root, *parts) if root != "/" else "/" + "/".join(parts)


def _hwmon_finding(root, rails):
    if rails:
        return "INA3221 rails " + ", ".join(rails)
    return "no INA3221 rails" if os.path.isdir(os.path.join(root, "sys", "class", "hwmon")) else "absent"


def findings(root="/"):
    """[(place, what was found, whether a source is there)] for every place a reader will use."""
    hwmon, iio = ina3221_hwmon_rails(root), ina3221_iio_rails(root)
    rapl = rapl_state(root)
    nvml = importlib.util.find_spec("pynvml") is not None
    return [
        (_where(root, "sys/class/hwmon"), _hwmon_finding(root, hwmon), bool(hwmon)),
        (_where(root, "sys/bus/i2c/drivers/ina3221x"), "rails " + ", ".join(iio) if iio else "absent", bool(iio)),
        (_where(root, "sys/class/powercap/intel-rapl"), rapl, rapl == "readable"),
        ("pynvml", "importable" if nvml else "not importable", nvml),
    ]


def probe(source="auto", root="/"):
    """(energy, reason): energy is always None until a reader is implemented; reason says why."""
    if source == "none":
        return None, "energy measurement disabled by the job (energy: none)"
    found = findings(root)
    looked = "looked at " + ", ".join("%s (%s)" % (place, what) for place, what, _ in found)
    present = [place for place, _, there in found if there]
    if source != "auto":
        return None, "energy source '%s' is not implemented on the device side yet; %s" % (source, looked)
    if not present:
        return None, "no power source found: " + looked
    return None, "power source found (%s) but reading it is not implemented yet; %s" % (", ".join(present), looked)
