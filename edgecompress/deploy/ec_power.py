"""Power sources the device side can read. Standard library only, Python >= 3.8.

A source is either instantaneous (`kind == "power"`: `read_power_mw() -> {rail: mW}`) or a
cumulative counter (`kind == "energy"`: `read_energy_mj() -> float`, wraps already undone). Each
says whether it is here (`available() -> (bool, reason)`), which rails it reads (`rails()`), which
rail is the total (`total_rail`) or which rails it adds up where the device has no input rail
(`summed_rails`), and how often the sensor refreshes (`update_interval_s`).

Every source takes `root` (default "/") for its sysfs paths and `runner` for the commands it runs,
so tests drive it with fixture trees and fake command output. Paths, units and formats follow
../shared/reference/devices.md. `ec_energy.SOURCES` is the registry (name -> class).
"""
import glob
import importlib.util
import os
import re
import shutil
import subprocess

from ec_state import nvml_throttle_reasons, read_int, read_text

NVIDIA_DRIVER = "/proc/driver/nvidia"  # present where the NVIDIA kernel driver is loaded

# Input rails: the whole module's power. Sub-rails are never added to them (jetson-stats issue 51).
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
# Used where a sensor's refresh period cannot be read: a longer guess only lengthens the minimum window.
ASSUMED_INA3221_UPDATE_S = 0.05
RAPL_UPDATE_S = 0.001  # the RAPL energy status registers refresh about every millisecond
NVML_UPDATE_S = 0.1  # nvmlDeviceGetTotalEnergyConsumption refreshes every 20-100 ms: take the slow end
ASSUMED_PMIC_UPDATE_S = 0.1
COMMAND_TIMEOUT_S = 5.0


class SourceError(Exception):
    """A source could not be opened or read; the message says which file or command and why."""


def run_command(argv, timeout=COMMAND_TIMEOUT_S):
    """The default command runner: stdout of `argv`, or SourceError naming the command."""
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        raise SourceError("`%s` failed: %s" % (" ".join(argv), e))
    if done.returncode != 0:
        raise SourceError("`%s` exited with %d: %s" % (" ".join(argv), done.returncode, done.stderr.strip()[-200:]))
    return done.stdout


def place(root, *parts):
    """A path under root, shown as the real path when root is "/"."""
    return os.path.join(root, *parts) if root != "/" else "/" + "/".join(parts)


def total_of(rails):
    """(total_rail, summed_rails): the input rail when there is one, else every rail, summed."""
    for rail in INPUT_RAILS:
        if rail in rails:
            return rail, None
    return None, list(rails)


class Source(object):
    """Shared plumbing; subclasses set `name`, `kind`, and the reading methods."""

    name = None
    kind = "power"
    update_interval_s = ASSUMED_INA3221_UPDATE_S
    # Sampling faster than this gains nothing for a counter (only wraps must be caught) and costs CPU.
    default_sample_interval_s = None
    note = None

    def __init__(self, root="/", runner=None, device_index=0, interval_ms=None):
        self.root = root
        self.runner = runner or run_command
        self.device_index = device_index
        self.interval_ms = interval_ms
        self.total_rail, self.summed_rails = None, None

    def available(self):
        raise NotImplementedError

    def open(self):
        """Start whatever must run while sampling (a subprocess); SourceError when it cannot."""

    def close(self):
        """Stop what open() started; safe to call twice."""

    def rails(self):
        raise NotImplementedError

    def total_mw(self, readings):
        if self.total_rail is not None:
            return readings[self.total_rail]
        return sum(readings[rail] for rail in self.summed_rails)

    def device_state(self):
        """Extra device-state keys for the result (NVML's throttle reasons); {} for most sources."""
        return {}


# -- INA3221, JetPack 5/6: hwmon driver `ina3221` -------------------------------------------------

def _device_of(hwmon_dir):
    """`1-0040` for .../1-0040/hwmon/hwmon3, whichever link led there."""
    return os.path.basename(os.path.dirname(os.path.dirname(os.path.realpath(hwmon_dir))))


def ina3221_hwmon_dirs(root="/"):
    """Every INA3221 hwmon folder once: via the i2c driver, and /sys/class/hwmon by `name`."""
    found = glob.glob(os.path.join(root, "sys", "bus", "i2c", "drivers", "ina3221", "*", "hwmon", "hwmon*"))
    for hwmon in glob.glob(os.path.join(root, "sys", "class", "hwmon", "hwmon*")):
        if read_text(os.path.join(hwmon, "name")) == "ina3221":
            found.append(hwmon)
    unique = {}
    for hwmon in found:
        unique.setdefault(os.path.realpath(hwmon), hwmon)
    return sorted(unique.values(), key=lambda d: (_device_of(d), d))


def _channel_numbers(hwmon):
    numbers = []
    for path in glob.glob(os.path.join(hwmon, "in*_label")):
        match = re.match(r"in(\d+)_label$", os.path.basename(path))
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def ina3221_hwmon_channels(root="/"):
    """[(rail, bus voltage file, current file)]: labelled channels 1-3, minus `NC` and disabled ones.

    Channel 7 is the sum of the shunt voltages, not a rail; hwmonN changes between boots, so
    channels are found by label, never by number.
    """
    channels, names = [], set()
    for hwmon in ina3221_hwmon_dirs(root):
        for k in _channel_numbers(hwmon):
            label = read_text(os.path.join(hwmon, "in%d_label" % k))
            current = os.path.join(hwmon, "curr%d_input" % k)
            if k == 7 or not label or label == "NC" or not os.path.exists(current):
                continue
            if read_text(os.path.join(hwmon, "in%d_enable" % k)) == "0":
                continue
            rail = label if label not in names else "%s@%s" % (label, _device_of(hwmon))
            names.add(rail)
            channels.append((rail, os.path.join(hwmon, "in%d_input" % k), current))
    return channels


class Ina3221Hwmon(Source):
    """Jetson rails on JetPack 5/6. There is no power file: P[mW] = in_mV * curr_mA / 1000."""

    name = "ina3221"

    def __init__(self, *args, **kwargs):
        Source.__init__(self, *args, **kwargs)
        self.channels = ina3221_hwmon_channels(self.root)
        self.total_rail, self.summed_rails = total_of([rail for rail, _, _ in self.channels])
        self.update_interval_s, self.note = self._update_interval()

    def _update_interval(self):
        """The driver's `update_interval` (ms, conversion time of all channels) where it exists."""
        periods = [read_int(os.path.join(d, "update_interval")) for d in ina3221_hwmon_dirs(self.root)]
        periods = [p for p in periods if p]
        if periods:
            return max(periods) / 1000.0, None
        return ASSUMED_INA3221_UPDATE_S, ("INA3221 update interval not exposed; assumed %.3f s"
                                          % ASSUMED_INA3221_UPDATE_S)

    def available(self):
        where = "%s and %s" % (place(self.root, "sys/bus/i2c/drivers/ina3221"), place(self.root, "sys/class/hwmon"))
        if not ina3221_hwmon_dirs(self.root):
            return False, "no INA3221 hwmon device under %s" % where
        if not self.channels:
            return False, "INA3221 hwmon devices under %s have no labelled rails" % where
        try:
            self.read_power_mw()
        except SourceError as e:
            return False, str(e)
        return True, "INA3221 rails " + ", ".join(self.rails())

    def rails(self):
        return [rail for rail, _, _ in self.channels]

    def read_power_mw(self):
        power = {}
        for rail, volt_file, curr_file in self.channels:
            millivolts, milliamps = read_int(volt_file), read_int(curr_file)
            if millivolts is None or milliamps is None:
                raise SourceError("cannot read %s or %s" % (volt_file, curr_file))
            power[rail] = millivolts * milliamps / 1000.0
        return power


# -- INA3221, JetPack 4: IIO driver `ina3221x` ----------------------------------------------------

def ina3221_iio_channels(root="/"):
    """[(rail, power file in mW)] from `rail_name_K` / `in_power{K}_input`."""
    pattern = os.path.join(root, "sys", "bus", "i2c", "drivers", "ina3221x", "*", "iio:device*", "rail_name_*")
    channels = []
    for path in sorted(glob.glob(pattern)):
        rail = read_text(path)
        k = path.rsplit("_", 1)[1]
        if rail and rail != "NC" and k.isdigit():
            channels.append((rail, os.path.join(os.path.dirname(path), "in_power%s_input" % k)))
    return channels


class Ina3221Iio(Source):
    """Jetson rails on JetPack 4 (Nano, TX2, Xavier): the driver gives power in mW directly."""

    name = "ina3221x"
    note = "INA3221 update interval not exposed; assumed %.3f s" % ASSUMED_INA3221_UPDATE_S

    def __init__(self, *args, **kwargs):
        Source.__init__(self, *args, **kwargs)
        self.channels = ina3221_iio_channels(self.root)
        self.total_rail, self.summed_rails = total_of([rail for rail, _ in self.channels])

    def available(self):
        if not self.channels:
            return False, "no rail_name_* under %s" % place(self.root, "sys/bus/i2c/drivers/ina3221x")
        try:
            self.read_power_mw()
        except SourceError as e:
            return False, str(e)
        return True, "INA3221 IIO rails " + ", ".join(self.rails())

    def rails(self):
        return [rail for rail, _ in self.channels]

    def read_power_mw(self):
        power = {}
        for rail, power_file in self.channels:
            milliwatts = read_int(power_file)
            if milliwatts is None:
                raise SourceError("cannot read %s" % power_file)
            power[rail] = float(milliwatts)
        return power


# -- Intel RAPL ----------------------------------------------------------------------------------

def rapl_zones(root="/"):
    """[(zone folder, name)] of the top-level zones intel-rapl:N (sub-zones :N:M are inside them)."""
    zones = []
    for zone in glob.glob(os.path.join(root, "sys", "class", "powercap", "intel-rapl:*")):
        match = re.match(r"intel-rapl:(\d+)$", os.path.basename(zone))
        if match:
            zones.append((int(match.group(1)), zone, read_text(os.path.join(zone, "name")) or os.path.basename(zone)))
    return [(zone, name) for _, zone, name in sorted(zones)]


class Rapl(Source):
    """CPU package energy counters (µJ). The total is the sum of the top-level package zones; their
    sub-zones (core, uncore, dram) are inside them and psys covers the platform, so adding either
    would count energy twice."""

    name = "rapl"
    kind = "energy"
    update_interval_s = RAPL_UPDATE_S
    default_sample_interval_s = 0.1  # a counter needs samples only to catch each wrap

    def __init__(self, *args, **kwargs):
        Source.__init__(self, *args, **kwargs)
        zones = rapl_zones(self.root)
        packages = [(z, n) for z, n in zones if n.startswith("package")]
        self.zones = packages or zones
        self.summed_rails = [name for _, name in self.zones]
        left_out = [name for zone, name in zones if (zone, name) not in self.zones]
        self.note = ("top-level RAPL zones %s summed (CPU side only, not the whole machine)"
                     % ", ".join(self.summed_rails))
        if left_out:
            self.note += "; zones %s left out (they overlap the packages)" % ", ".join(left_out)
        self._last, self._total_uj = None, 0

    def available(self):
        where = place(self.root, "sys/class/powercap/intel-rapl:*")
        if not self.zones:
            return False, "no RAPL zones at %s" % where
        try:
            self._read_counters()
        except SourceError:
            return False, ("RAPL energy_uj at %s is not readable (root-only since the CVE-2020-8694 fix)"
                           % where)
        return True, "RAPL zones " + ", ".join(self.summed_rails)

    def rails(self):
        return list(self.summed_rails)

    def _read_counters(self):
        counters = []
        for zone, _ in self.zones:
            energy = read_int(os.path.join(zone, "energy_uj"))
            limit = read_int(os.path.join(zone, "max_energy_range_uj"))
            if energy is None or limit is None:
                raise SourceError("cannot read %s/energy_uj and max_energy_range_uj" % zone)
            counters.append((energy, limit))
        return counters

    def read_energy_mj(self):
        """Energy since the first read, mJ; a counter below its last value has wrapped once."""
        counters = self._read_counters()
        if self._last is not None:
            for (energy, limit), previous in zip(counters, self._last):
                self._total_uj += energy - previous + (limit if energy < previous else 0)
        self._last = [energy for energy, _ in counters]
        return self._total_uj / 1000.0


# -- NVML (NVIDIA GPUs; not Jetson) ---------------------------------------------------------------

class Nvml(Source):
    """GPU board energy from NVML (mJ since driver load, Volta and newer), else its power (mW).
    Each read also collects the clocks-event (throttle) reasons seen during the window."""

    name = "nvml"
    kind = "energy"
    update_interval_s = NVML_UPDATE_S
    default_sample_interval_s = NVML_UPDATE_S

    def __init__(self, *args, **kwargs):
        Source.__init__(self, *args, **kwargs)
        self.nvml, self.handle, self.gpu_name, self.event_mask = None, None, None, 0

    def _connect(self):
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        if self.device_index >= count:
            raise SourceError("NVML sees %d GPU(s); energy_device_index %d does not exist" % (count, self.device_index))
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
        name = pynvml.nvmlDeviceGetName(self.handle)
        self.gpu_name = name.decode() if isinstance(name, bytes) else name
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except Exception:  # NVMLError_NotSupported before Volta: fall back to power samples
            self.kind = "power"
        self.summed_rails = None
        self.total_rail = "gpu%d" % self.device_index
        self.note = "NVML GPU %d (%s) board power; the CPU and the rest of the host are not included" % (
            self.device_index, self.gpu_name)
        if self.kind == "power":
            self.note += "; no energy counter on this GPU, so power samples are integrated"

    def available(self):
        if importlib.util.find_spec("pynvml") is None:
            if not os.path.exists(NVIDIA_DRIVER) and not glob.glob("/dev/nvidia[0-9]*"):
                # no GPU to read: an install of nvidia-ml-py would only move the reason to NVML's own error
                return False, "no NVIDIA GPU driver here (no %s, no /dev/nvidia*)" % NVIDIA_DRIVER
            return False, "pynvml not importable (pip install nvidia-ml-py)"
        try:
            self._connect()
        except SourceError as e:
            return False, str(e)
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            return False, "NVML not usable: %s: %s" % (type(e).__name__, e)
        return True, "NVML GPU %d (%s), %s" % (self.device_index, self.gpu_name,
                                                "energy counter" if self.kind == "energy" else "power only")

    def rails(self):
        return [self.total_rail]

    def _note_events(self):
        get = getattr(self.nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            self.nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        try:
            self.event_mask |= int(get(self.handle)) if get else 0
        except self.nvml.NVMLError:
            pass

    def read_energy_mj(self):
        self._note_events()
        return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def read_power_mw(self):
        self._note_events()
        return {self.total_rail: float(self.nvml.nvmlDeviceGetPowerUsage(self.handle))}

    def device_state(self):
        return {"gpu_name": self.gpu_name, "gpu_clocks_event_mask": self.event_mask,
                "gpu_throttle_reasons": nvml_throttle_reasons(self.event_mask)}

    def close(self):
        if self.nvml is not None:
            self.nvml.nvmlShutdown()
            self.nvml = None



# -- Raspberry Pi 5 PMIC --------------------------------------------------------------------------

PMIC_LINE = re.compile(r"^\s*([A-Za-z0-9_]+)_([AV])\s*(?:(?:current|volt)\(\d+\))?\s*=\s*([-+0-9.eE]+)\s*[AV]\s*$")


def parse_pmic(text):
    """{rail: {"current_a", "volt_v", "power_mw"}} for each `<RAIL>_A` paired with `<RAIL>_V`, and
    {name: volts} of the voltages without a current (EXT5V_V, the input). Both formats in
    devices.md: `VDD_CORE_A current(7)=0.76113000A` and `VDD_CORE_A=1.2340A`."""
    amps, volts = {}, {}
    for line in text.splitlines():
        match = PMIC_LINE.match(line)
        if match:
            rail, unit, value = match.groups()
            (amps if unit == "A" else volts)[rail] = float(value)
    rails = {}
    for rail in sorted(set(amps) & set(volts)):
        rails[rail] = {"current_a": amps[rail], "volt_v": volts[rail],
                       "power_mw": amps[rail] * volts[rail] * 1000.0}
    unpaired = dict((rail + "_V", v) for rail, v in sorted(volts.items()) if rail not in amps)
    return rails, unpaired


class Pi5Pmic(Source):
    """Raspberry Pi 5 PMIC rails via `vcgencmd pmic_read_adc`. Their sum covers the SoC side only;
    no board total is given because one would be an estimate."""

    name = "pi5_pmic"
    update_interval_s = ASSUMED_PMIC_UPDATE_S
    default_sample_interval_s = ASSUMED_PMIC_UPDATE_S
    command = ("vcgencmd", "pmic_read_adc")
    note = ("sum of the Pi 5 PMIC rails: SoC side only (no USB, peripherals or conversion losses), "
            "not the board's total; PMIC update interval assumed %.1f s" % ASSUMED_PMIC_UPDATE_S)

    def __init__(self, *args, **kwargs):
        Source.__init__(self, *args, **kwargs)
        self._rails = []

    def available(self):
        if self.runner is run_command and shutil.which(self.command[0]) is None:
            return False, "no `%s` on PATH" % self.command[0]
        try:
            self._rails = sorted(self.read_power_mw())
        except SourceError as e:
            return False, str(e)
        if not self._rails:
            return False, "`%s` printed no <RAIL>_A/<RAIL>_V pairs" % " ".join(self.command)
        self.summed_rails = list(self._rails)
        return True, "Pi 5 PMIC rails " + ", ".join(self._rails)

    def rails(self):
        return list(self._rails)

    def read_power_mw(self):
        rails, _ = parse_pmic(self.runner(list(self.command)))
        return dict((rail, reading["power_mw"]) for rail, reading in rails.items())
