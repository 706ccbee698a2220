"""Device state and power-source discovery on fixture trees laid out like the real sysfs
(../shared/reference/devices.md), with values that change between the two snapshots."""
from pathlib import Path

import ec_energy
import ec_power
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
    assert snap == {"clocks_mhz": {}, "temperatures_c": {}, "throttle_events": None, "gpu_devfreq": {},
                    "thermal_limits_hit": []}
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


def test_jetpack5_ina3221_rails_are_found_by_label_via_class_hwmon_alone(tmp_path):
    put(tmp_path, "sys/class/hwmon/hwmon0/name", "coretemp")
    put(tmp_path, "sys/class/hwmon/hwmon3/name", "ina3221")
    for channel, label in ((1, "VDD_IN"), (2, "VDD_CPU_GPU_CV"), (3, "NC")):
        put(tmp_path, f"sys/class/hwmon/hwmon3/in{channel}_label", label)
        put(tmp_path, f"sys/class/hwmon/hwmon3/in{channel}_input", "5000")
        put(tmp_path, f"sys/class/hwmon/hwmon3/curr{channel}_input", "100")
    put(tmp_path, "sys/class/hwmon/hwmon3/in7_label", "sum of shunt voltages")
    assert [rail for rail, _, _ in ec_power.ina3221_hwmon_channels(str(tmp_path))] == ["VDD_IN", "VDD_CPU_GPU_CV"]
    source, reason = ec_energy.select("auto", root=str(tmp_path))
    assert reason is None and source.name == "ina3221" and source.total_rail == "VDD_IN"
    assert source.read_power_mw() == {"VDD_IN": 500.0, "VDD_CPU_GPU_CV": 500.0}


def test_jetpack4_iio_rails_and_rapl_states(tmp_path):
    put(tmp_path, "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/rail_name_0", "POM_5V_IN")
    put(tmp_path, "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/rail_name_1", "POM_5V_GPU")
    assert [rail for rail, _ in ec_power.ina3221_iio_channels(str(tmp_path))] == ["POM_5V_IN", "POM_5V_GPU"]
    ok, reason = ec_energy.make_source("ina3221x", root=str(tmp_path)).available()
    assert not ok and reason.startswith("cannot read ") and reason.endswith("in_power0_input")
    assert not ec_energy.make_source("rapl", root=str(tmp_path)).available()[0]
    # A directory where the counter should be cannot be read, like the root-only file (the tests
    # may run as root, where a chmod would not stop the read).
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").mkdir(parents=True)
    ok, reason = ec_energy.make_source("rapl", root=str(tmp_path)).available()
    assert not ok and "not readable" in reason
    put(tmp_path, "sys/class/powercap/intel-rapl:1/energy_uj", "123456789")
    put(tmp_path, "sys/class/powercap/intel-rapl:1/max_energy_range_uj", "262143328850")
    ok, reason = ec_energy.make_source("rapl", root=str(tmp_path)).available()
    assert not ok  # zone 0 is still unreadable: a sum without it would be wrong
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").rmdir()
    put(tmp_path, "sys/class/powercap/intel-rapl:0/energy_uj", "5")
    put(tmp_path, "sys/class/powercap/intel-rapl:0/max_energy_range_uj", "262143328850")
    assert ec_energy.make_source("rapl", root=str(tmp_path)).available() == (
        True, "RAPL zones intel-rapl:0, intel-rapl:1")


def devfreq(root: Path, name: str, node: str, cur_hz: int, max_hz: int = 1020000000, load: int = 512):
    put(root, f"sys/class/devfreq/{name}/device/of_node/name", node + "\x00")  # a device-tree string
    put(root, f"sys/class/devfreq/{name}/cur_freq", str(cur_hz))
    put(root, f"sys/class/devfreq/{name}/max_freq", str(max_hz))
    put(root, f"sys/class/devfreq/{name}/min_freq", "306000000")
    put(root, f"sys/class/devfreq/{name}/device/load", str(load))


def test_jetson_gpu_devfreq_is_read_and_a_falling_gpu_clock_is_throttling(tmp_path):
    devfreq(tmp_path, "17000000.ga10b", "ga10b", 1020000000)
    devfreq(tmp_path, "15340000.vic", "vic", 729600000)  # not a GPU
    before = ec_state.snapshot(str(tmp_path))
    assert before["gpu_devfreq"] == {"17000000.ga10b": {"cur_hz": 1020000000, "max_hz": 1020000000,
                                                        "min_hz": 306000000, "load_permille": 512}}
    assert ec_state.throttled(before, ec_state.snapshot(str(tmp_path))) == (False, None)
    devfreq(tmp_path, "17000000.ga10b", "ga10b", 624750000)
    flag, reason = ec_state.throttled(before, ec_state.snapshot(str(tmp_path)))
    assert flag is True and "GPU 17000000.ga10b clock fell from 1020 to 625 MHz" in reason


def test_a_zone_at_its_passive_trip_point_is_throttling(tmp_path):
    put(tmp_path, "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
    put(tmp_path, "sys/class/thermal/thermal_zone0/temp", "71000")
    put(tmp_path, "sys/class/thermal/thermal_zone0/trip_point_0_type", "passive")
    put(tmp_path, "sys/class/thermal/thermal_zone0/trip_point_0_temp", "95500")
    put(tmp_path, "sys/class/thermal/thermal_zone0/trip_point_1_type", "critical")
    put(tmp_path, "sys/class/thermal/thermal_zone0/trip_point_1_temp", "105000")
    before = ec_state.snapshot(str(tmp_path))
    assert before["thermal_limits_hit"] == []
    put(tmp_path, "sys/class/thermal/thermal_zone0/temp", "96000")
    flag, reason = ec_state.throttled(before, ec_state.snapshot(str(tmp_path)))
    assert flag is True and "thermal limit: cpu-thermal at 96.0 C >= its passive trip 95.5 C" in reason


def test_nvml_throttle_reasons_count_but_idle_and_app_clock_bits_do_not(tmp_path):
    snap = ec_state.snapshot(str(tmp_path))
    assert ec_state.throttled(snap, snap, gpu_event_mask=0x1 | 0x2) == (False, None)
    flag, reason = ec_state.throttled(snap, snap, gpu_event_mask=0x1 | 0x4 | 0x40)
    assert flag is True and reason.endswith("NVML clocks-event reasons SwPowerCap, HwThermalSlowdown")
    assert ec_state.nvml_throttle_reasons(0xFF) == ["SwPowerCap", "HwSlowdown", "SwThermalSlowdown",
                                                    "HwThermalSlowdown", "HwPowerBrakeSlowdown"]
