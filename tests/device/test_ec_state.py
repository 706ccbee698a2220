"""Device state and power-source probes on fixture trees laid out like the real sysfs
(../shared/reference/devices.md), with values that change between the two snapshots."""
from pathlib import Path

import ec_energy
import ec_state


def put(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def cpu_tree(root: Path, khz: dict, governor: str = "schedutil") -> None:
    put(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", governor)
    for cpu, value in khz.items():
        put(root, f"sys/devices/system/cpu/{cpu}/cpufreq/scaling_cur_freq", str(value))


def test_clocks_governor_and_temperatures(tmp_path):
    cpu_tree(tmp_path, {"cpu0": 1_500_000, "cpu1": 2_400_000, "cpu10": 729_600})
    (tmp_path / "sys/devices/system/cpu/cpu2").mkdir()  # an offline core without cpufreq
    put(tmp_path, "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
    put(tmp_path, "sys/class/thermal/thermal_zone0/temp", "50031")
    put(tmp_path, "sys/class/thermal/thermal_zone1/type", "acpitz")
    put(tmp_path, "sys/class/thermal/thermal_zone1/temp", "38750")
    put(tmp_path, "sys/class/thermal/thermal_zone2/type", "acpitz")
    put(tmp_path, "sys/class/thermal/thermal_zone2/temp", "-1000")
    put(tmp_path, "sys/class/thermal/thermal_zone3/type", "broken")  # no temp file: skipped

    assert ec_state.governor(str(tmp_path)) == "schedutil"
    clocks = ec_state.clocks_mhz(str(tmp_path))
    assert clocks == {"cpu0": 1500.0, "cpu1": 2400.0, "cpu10": 729.6}
    assert list(clocks) == ["cpu0", "cpu1", "cpu10"]
    assert ec_state.temperatures_c(str(tmp_path)) == {
        "cpu-thermal": 50.031, "acpitz/thermal_zone1": 38.75, "acpitz/thermal_zone2": -1.0}


def test_an_empty_tree_reports_nothing_rather_than_guessing(tmp_path):
    snap = ec_state.snapshot(str(tmp_path))
    assert snap == {"clocks_mhz": {}, "temperatures_c": {}, "throttle_events": None}
    assert ec_state.governor(str(tmp_path)) is None
    assert ec_state.throttled(snap, ec_state.snapshot(str(tmp_path))) == (None, None)


def test_a_clock_falling_during_the_run_is_throttling(tmp_path):
    cpu_tree(tmp_path, {"cpu0": 1_500_000, "cpu1": 1_500_000})
    before = ec_state.snapshot(str(tmp_path))
    cpu_tree(tmp_path, {"cpu0": 1_480_000, "cpu1": 1_500_000})  # a 1.3 % dip is noise
    assert ec_state.throttled(before, ec_state.snapshot(str(tmp_path))) == (False, None)
    cpu_tree(tmp_path, {"cpu0": 1_500_000, "cpu1": 1_100_000})
    flag, reason = ec_state.throttled(before, ec_state.snapshot(str(tmp_path)))
    assert flag is True
    assert "cpu1 clock fell from 1500 to 1100 MHz" in reason


def test_kernel_throttle_counters_that_grow_mean_throttling(tmp_path):
    counter = "sys/devices/system/cpu/cpu0/thermal_throttle/package_throttle_count"
    put(tmp_path, counter, "7")
    before = ec_state.snapshot(str(tmp_path))
    assert ec_state.throttled(before, ec_state.snapshot(str(tmp_path))) == (False, None)
    put(tmp_path, counter, "9")
    flag, reason = ec_state.throttled(before, ec_state.snapshot(str(tmp_path)))
    assert flag is True and "2 thermal throttle events" in reason


def test_no_power_source_names_every_place_looked_at(tmp_path):
    energy, reason = ec_energy.probe("auto", str(tmp_path))
    assert energy is None
    assert reason.startswith("no power source found: looked at ")
    for place in ("sys/class/hwmon (absent)", "ina3221x (absent)", "intel-rapl (absent)", "pynvml ("):
        assert place in reason


def test_jetpack5_ina3221_rails_are_found_by_label(tmp_path):
    put(tmp_path, "sys/class/hwmon/hwmon0/name", "coretemp")
    put(tmp_path, "sys/class/hwmon/hwmon3/name", "ina3221")
    for channel, label in ((1, "VDD_IN"), (2, "VDD_CPU_GPU_CV"), (3, "NC")):
        put(tmp_path, f"sys/class/hwmon/hwmon3/in{channel}_label", label)
    put(tmp_path, "sys/class/hwmon/hwmon3/in7_label", "sum of shunt voltages")
    assert ec_energy.ina3221_hwmon_rails(str(tmp_path)) == ["VDD_IN", "VDD_CPU_GPU_CV"]
    energy, reason = ec_energy.probe("auto", str(tmp_path))
    assert energy is None
    assert "power source found" in reason and "not implemented yet" in reason
    assert "INA3221 rails VDD_IN, VDD_CPU_GPU_CV" in reason


def test_jetpack4_iio_rails_and_rapl_states(tmp_path):
    put(tmp_path, "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/rail_name_0", "POM_5V_IN")
    put(tmp_path, "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/rail_name_1", "POM_5V_GPU")
    assert ec_energy.ina3221_iio_rails(str(tmp_path)) == ["POM_5V_GPU", "POM_5V_IN"]
    assert ec_energy.rapl_state(str(tmp_path)) == "absent"
    # A directory where the counter should be cannot be read, like the root-only file (the tests
    # may run as root, where a chmod would not stop the read).
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").mkdir(parents=True)
    assert ec_energy.rapl_state(str(tmp_path)) == "unreadable"
    put(tmp_path, "sys/class/powercap/intel-rapl:1/energy_uj", "123456789")
    assert ec_energy.rapl_state(str(tmp_path)) == "readable"


def test_disabled_and_named_sources_say_so(tmp_path):
    assert ec_energy.probe("none", str(tmp_path)) == (
        None, "energy measurement disabled by the job (energy: none)")
    energy, reason = ec_energy.probe("rapl", str(tmp_path))
    assert energy is None and reason.startswith("energy source 'rapl' is not implemented")
