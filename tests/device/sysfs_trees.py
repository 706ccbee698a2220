"""Fixture sysfs trees laid out like the real ones (../shared/reference/devices.md), and a writer
thread that changes their values during a measurement following a known power profile.

Layouts copy the kernel's: a driver folder links to the device, /sys/class/... links to the same
folder, so a reader that globs both must count each device once. Values are written atomically
(temp file + os.replace) so a reader never sees half a number.
"""
import os
import threading
import time
from pathlib import Path

ORIN_I2C = "sys/devices/platform/bus@0/c240000.i2c/i2c-1"
NANO_I2C = "sys/devices/7000c400.i2c/i2c-6"
RAPL_DEVICES = "sys/devices/virtual/powercap/intel-rapl"


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name("." + path.name + ".%d.tmp" % threading.get_ident())
    temp.write_text(text + "\n")
    os.replace(temp, path)


def link(root: Path, at: str, target: str) -> None:
    """A relative symlink root/at -> root/target, as sysfs has them."""
    where = root / at
    where.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(root / target, where.parent), where)


class Profile:
    """P(t) mW = idle until `ramp_at`, then rising by `slope` mW/s, plus `step` mW from `step_at`.
    `energy_mj(t0, t1)` is its exact integral, the truth a measurement is checked against."""

    def __init__(self, idle_mw, ramp_at=0.0, slope=0.0, step_at=None, step=0.0):
        self.idle_mw, self.ramp_at, self.slope, self.step_at, self.step = idle_mw, ramp_at, slope, step_at, step

    def power_mw(self, t):
        p = self.idle_mw + self.slope * max(0.0, t - self.ramp_at)
        return p + (self.step if self.step_at is not None and t >= self.step_at else 0.0)

    def energy_mj(self, t0, t1):
        def ramp_area(t):  # integral of slope * max(0, u - ramp_at) from 0 to t
            return 0.5 * self.slope * max(0.0, t - self.ramp_at) ** 2

        def step_area(t):
            return self.step * max(0.0, t - self.step_at) if self.step_at is not None else 0.0

        return self.idle_mw * (t1 - t0) + ramp_area(t1) - ramp_area(t0) + step_area(t1) - step_area(t0)


class Writer(threading.Thread):
    """Writes every channel's value every `period_s`; `t0` (perf_counter) is the profiles' zero.
    A channel has `write(t)`: it writes its file(s) for profile time t; see the tree builders.
    What a reader sees trails the profile by up to one tick: keep ticks short (a tree in memory)."""

    def __init__(self, channels, period_s=0.001):
        threading.Thread.__init__(self, daemon=True)
        self.channels, self.period_s = channels, period_s
        self.stopped = threading.Event()
        self.ready = threading.Event()
        self.t0, self.ticks, self.longest_tick_s = None, 0, 0.0

    def run(self):
        self.t0 = last = time.perf_counter()
        self.tick(0.0)
        self.ready.set()
        while not self.stopped.wait(self.period_s):
            now = time.perf_counter()
            self.tick(now - self.t0)
            self.longest_tick_s = max(self.longest_tick_s, now - last)
            last = now

    def tick(self, t):
        for channel in self.channels:
            if self.ticks % getattr(channel, "every", 1) == 0:
                channel.write(t)
        self.ticks += 1

    def __enter__(self):
        self.start()
        self.ready.wait()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.join()

    def truth_mj(self, profiles, t_start, t_end):
        """Exact energy (mJ) of the summed profiles between two perf_counter times."""
        return sum(p.energy_mj(t_start - self.t0, t_end - self.t0) for p in profiles)


class HwmonChannel:
    """An INA3221 hwmon channel: bus voltage fixed (mV), current (mA) follows the profile."""

    def __init__(self, folder: Path, k: int, millivolts: int, profile: Profile):
        self.folder, self.k, self.millivolts, self.profile = folder, k, millivolts, profile
        atomic_write(folder / ("in%d_input" % k), str(millivolts))

    def write(self, t):
        milliamps = round(self.profile.power_mw(t) * 1000.0 / self.millivolts)
        atomic_write(self.folder / ("curr%d_input" % self.k), str(milliamps))


class IioChannel:
    """A JetPack 4 ina3221x channel: power (mW), voltage and current written together."""

    def __init__(self, folder: Path, k: int, millivolts: int, profile: Profile):
        self.folder, self.k, self.millivolts, self.profile = folder, k, millivolts, profile
        atomic_write(folder / ("in_voltage%d_input" % k), str(millivolts))

    def write(self, t):
        milliwatts = self.profile.power_mw(t)
        atomic_write(self.folder / ("in_power%d_input" % self.k), str(round(milliwatts)))
        self.writes = getattr(self, "writes", -1) + 1
        if self.writes % 10 == 0:  # not read for energy: written less often to keep the writer quick
            milliamps = round(milliwatts * 1000.0 / self.millivolts)
            atomic_write(self.folder / ("in_current%d_input" % self.k), str(milliamps))


class RaplCounter:
    """A RAPL zone's energy_uj: the integral of the profile in µJ, wrapping at max_energy_range_uj."""

    def __init__(self, folder: Path, profile: Profile, max_range_uj: int, start_uj: int):
        self.folder, self.profile, self.max_range_uj = folder, profile, max_range_uj
        self.total_uj, self.start_uj, self.wraps = 0.0, start_uj, 0
        atomic_write(folder / "max_energy_range_uj", str(max_range_uj))
        atomic_write(folder / "energy_uj", str(start_uj))

    def write(self, t):
        # The exact integral over the last tick, so the counter never drifts from the profile.
        self.total_uj = self.profile.energy_mj(0.0, t) * 1000.0
        value = self.start_uj + int(self.total_uj)
        self.wraps = value // self.max_range_uj
        atomic_write(self.folder / "energy_uj", str(value % self.max_range_uj))


def hwmon_device(root: Path, i2c: str, device: str, hwmon: str, labels: dict, driver="ina3221") -> Path:
    """An INA3221 hwmon device at root/i2c/device/hwmon/hwmonN, linked from the i2c driver folder
    and /sys/class/hwmon, with labels {channel: label}; a channel without a label is disabled."""
    folder = root / i2c / device / "hwmon" / hwmon
    atomic_write(folder / "name", "ina3221")
    for k in (1, 2, 3):
        if k in labels:
            atomic_write(folder / ("in%d_label" % k), labels[k])
            atomic_write(folder / ("in%d_enable" % k), "1")
        else:
            atomic_write(folder / ("in%d_enable" % k), "0")
        atomic_write(folder / ("in%d_input" % k), "0")
        atomic_write(folder / ("curr%d_input" % k), "0")
        atomic_write(folder / ("curr%d_crit" % k), "32760")
        atomic_write(folder / ("in%d_input" % (k + 3)), "40")  # shunt voltages
    atomic_write(folder / "in7_label", "sum of shunt voltages")
    atomic_write(folder / "in7_input", "120")
    atomic_write(folder / "curr4_input", "9000")  # the summed channel: must never be read as a rail
    link(root, "sys/bus/i2c/drivers/%s/%s" % (driver, device), "%s/%s" % (i2c, device))
    link(root, "sys/class/hwmon/" + hwmon, "%s/%s/hwmon/%s" % (i2c, device, hwmon))
    return folder


def other_hwmon(root: Path) -> None:
    """A hwmon that is not an INA3221, as every board has."""
    atomic_write(root / "sys/devices/virtual/thermal/thermal_zone0/hwmon0/name", "cpu_thermal")
    atomic_write(root / "sys/devices/virtual/thermal/thermal_zone0/hwmon0/temp1_input", "45000")
    link(root, "sys/class/hwmon/hwmon0", "sys/devices/virtual/thermal/thermal_zone0/hwmon0")


def orin_nano(root: Path, vdd_in: Profile, cpu_gpu_cv: Profile, soc: Profile):
    """Orin Nano / NX (p3767): 1-0040 with VDD_IN (total), VDD_CPU_GPU_CV, VDD_SOC, and in7."""
    other_hwmon(root)
    folder = hwmon_device(root, ORIN_I2C, "1-0040", "hwmon3", {1: "VDD_IN", 2: "VDD_CPU_GPU_CV", 3: "VDD_SOC"})
    return [HwmonChannel(folder, 1, 5080, vdd_in), HwmonChannel(folder, 2, 5072, cpu_gpu_cv),
            HwmonChannel(folder, 3, 5064, soc)]


def agx_orin(root: Path, profiles: dict):
    """AGX Orin (p3701): 1-0040 VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0; 1-0041 NC, VDDQ_VDD2_1V8AO,
    disabled. No VDD_IN. `profiles` maps the four real rails; the NC channel carries a large
    current that must not be counted."""
    other_hwmon(root)
    first = hwmon_device(root, ORIN_I2C, "1-0040", "hwmon1",
                         {1: "VDD_GPU_SOC", 2: "VDD_CPU_CV", 3: "VIN_SYS_5V0"})
    second = hwmon_device(root, ORIN_I2C, "1-0041", "hwmon2", {1: "NC", 2: "VDDQ_VDD2_1V8AO"})
    atomic_write(second / "in1_input", "5000")
    atomic_write(second / "curr1_input", "3000")  # NC: 15 W nobody should count
    return [HwmonChannel(first, 1, 5040, profiles["VDD_GPU_SOC"]),
            HwmonChannel(first, 2, 5040, profiles["VDD_CPU_CV"]),
            HwmonChannel(first, 3, 5000, profiles["VIN_SYS_5V0"]),
            HwmonChannel(second, 2, 5000, profiles["VDDQ_VDD2_1V8AO"])]


def nano_iio(root: Path, profiles: dict):
    """Jetson Nano on JetPack 4: 6-0040/iio:device0 with POM_5V_IN, POM_5V_GPU, POM_5V_CPU."""
    device = NANO_I2C + "/6-0040"
    folder = root / device / "iio:device0"
    channels = []
    for k, rail in enumerate(("POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU")):
        atomic_write(folder / ("rail_name_%d" % k), rail)
        channels.append(IioChannel(folder, k, 5000 - 8 * k, profiles[rail]))
    atomic_write(folder / "name", "ina3221x")
    link(root, "sys/bus/i2c/drivers/ina3221x/6-0040", device)
    return channels


def rapl_zone(root: Path, path: str, name: str) -> Path:
    folder = root / RAPL_DEVICES / path
    atomic_write(folder / "name", name)
    atomic_write(folder / "enabled", "1")
    link(root, "sys/class/powercap/" + path.split("/")[-1], RAPL_DEVICES + "/" + path)
    return folder


def rapl_two_sockets(root: Path, package0: Profile, package1: Profile, max_range_uj: int):
    """intel-rapl:0 and :1 (package-0/1) with core/dram sub-zones whose counters must not be added.
    package-0 starts just below its wrap so it wraps within the first few milliseconds."""
    (root / RAPL_DEVICES).mkdir(parents=True)
    link(root, "sys/class/powercap/intel-rapl", RAPL_DEVICES)
    zero = rapl_zone(root, "intel-rapl:0", "package-0")
    one = rapl_zone(root, "intel-rapl:1", "package-1")
    subzones = [rapl_zone(root, "intel-rapl:0/intel-rapl:0:0", "core"),
                rapl_zone(root, "intel-rapl:0/intel-rapl:0:1", "dram"),
                rapl_zone(root, "intel-rapl:1/intel-rapl:1:0", "core")]
    channels = [RaplCounter(zero, package0, max_range_uj, max_range_uj - 20000),
                RaplCounter(one, package1, max_range_uj, 12345)]
    big = Profile(50000.0)  # sub-zone counters racing ahead: adding them would show at once
    for zone in subzones:
        channels.append(RaplCounter(zone, big, max_range_uj, 0))
        channels[-1].every = 10  # written less often: the writer's lag is the tests' error budget
    return channels
