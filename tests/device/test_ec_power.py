"""Power sources on fixture sysfs trees whose values change during the measurement following a known
power profile: the energy measured over the window must match the profile's exact integral."""
import importlib.machinery
import sys
import time

import pytest

import ec_energy
import ec_power
from sysfs_trees import (Profile, Writer, agx_orin, atomic_write, nano_iio, orin_nano, rapl_two_sockets,
                         rapl_zone)

IDLE_S = 0.3
TIMED_S = 0.6


@pytest.fixture(autouse=True)
def quick_thread_switches():
    """The fixture writer's lag behind its profile is the error these tests tolerate: hand the GIL
    over sooner than the default 5 ms so the writer keeps up while the sampler reads."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(before)


def measure(source, writer, runs=100, interval_ms=None):
    """Idle baseline then a timed window of `runs` pretend inferences, as ec_bench drives a Meter."""
    meter = ec_energy.Meter(source, interval_ms)
    meter.measure_idle(IDLE_S)
    meter.start()
    time.sleep(TIMED_S)
    meter.stop()
    energy, reason = meter.result(meter.timed[-1][0] - meter.timed[0][0], runs)
    assert reason is None, reason
    return meter, energy


def check_against_truth(meter, energy, writer, profiles, runs=100):
    """Total, idle and net energy within 2 % of the profile's exact integral over the same windows."""
    truth = writer.truth_mj
    first, last = meter.timed[0][0], meter.timed[-1][0]
    truth_mj = truth(profiles, first, last)
    idle_first, idle_last = meter.idle[0][0], meter.idle[-1][0]
    idle_mw = truth(profiles, idle_first, idle_last) / (idle_last - idle_first)
    assert energy["avg_power_mw"] * energy["window_s"] == pytest.approx(truth_mj, rel=0.02)
    assert energy["mj_per_inference_total"] == pytest.approx(truth_mj / runs, rel=0.02)
    assert energy["idle_power_mw"] == pytest.approx(idle_mw, rel=0.02)
    truth_net = (truth_mj - idle_mw * (last - first)) / runs
    # net is a difference: its error is that of the total and the idle energy, so bound it by those
    assert abs(energy["mj_per_inference_net"] - truth_net) <= 0.02 * truth_mj / runs
    return truth_mj


def test_orin_nano_hwmon_total_is_vdd_in_alone(memory_root):
    # Idle 3 W; from 0.4 s a ramp of 4 W/s and a 1.5 W step at 0.6 s (within the timed window).
    vdd_in = Profile(3000.0, ramp_at=0.4, slope=4000.0, step_at=0.6, step=1500.0)
    cpu_gpu_cv = Profile(800.0, ramp_at=0.4, slope=2500.0)
    soc = Profile(1100.0)
    with Writer(orin_nano(memory_root, vdd_in, cpu_gpu_cv, soc)) as writer:
        source = ec_energy.make_source("ina3221", root=str(memory_root))
        ok, reason = source.available()
        assert ok, reason
        assert source.rails() == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
        assert (source.total_rail, source.summed_rails) == ("VDD_IN", None)
        meter, energy = measure(source, writer, interval_ms=10)
    check_against_truth(meter, energy, writer, [vdd_in])
    assert energy["idle_power_mw"] == pytest.approx(3000.0, rel=0.005)
    first, last = meter.timed[0][0], meter.timed[-1][0]
    for rail, profile in (("VDD_CPU_GPU_CV", cpu_gpu_cv), ("VDD_SOC", soc)):
        truth = writer.truth_mj([profile], first, last) / (last - first)
        assert energy["rail_avg_power_mw"][rail] == pytest.approx(truth, rel=0.02)
    # Had the sub-rails been added to VDD_IN, the average would be far above the truth.
    assert energy["avg_power_mw"] < energy["rail_avg_power_mw"]["VDD_IN"] * 1.02
    assert energy["source"] == "ina3221" and energy["method"] == "trapezoid over power samples"
    assert energy["samples"] >= 30 and energy["idle_samples"] >= 15
    assert energy["update_interval_s"] == ec_power.ASSUMED_INA3221_UPDATE_S
    assert "assumed" in energy["note"]


def test_orin_nano_with_default_sampling_still_matches_a_ramp(memory_root):
    vdd_in = Profile(4000.0, ramp_at=0.35, slope=3000.0)  # piecewise linear: the trapezoid rule is exact
    with Writer(orin_nano(memory_root, vdd_in, Profile(900.0), Profile(1000.0))) as writer:
        source = ec_energy.make_source("ina3221", root=str(memory_root))
        assert source.available()[0]
        meter, energy = measure(source, writer)
    assert energy["sample_interval_s"] == ec_power.ASSUMED_INA3221_UPDATE_S
    assert energy["samples"] >= 10
    check_against_truth(meter, energy, writer, [vdd_in])


def test_agx_orin_without_an_input_rail_sums_the_rails_and_says_which(memory_root):
    profiles = {"VDD_GPU_SOC": Profile(2500.0, ramp_at=0.4, slope=5000.0, step_at=0.7, step=2000.0),
                "VDD_CPU_CV": Profile(1200.0, ramp_at=0.4, slope=1500.0),
                "VIN_SYS_5V0": Profile(3000.0), "VDDQ_VDD2_1V8AO": Profile(600.0, step_at=0.5, step=300.0)}
    with Writer(agx_orin(memory_root, profiles)) as writer:
        source = ec_energy.make_source("ina3221", root=str(memory_root))
        ok, reason = source.available()
        assert ok, reason
        meter, energy = measure(source, writer, interval_ms=5)
    assert energy["rails"] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]
    assert energy["total_rail"] is None
    assert energy["summed_rails"] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]
    check_against_truth(meter, energy, writer, list(profiles.values()))
    assert energy["idle_power_mw"] == pytest.approx(7300.0, rel=0.005)  # the four rails, not NC


def test_nano_iio_reads_power_in_mw_and_takes_pom_5v_in(memory_root):
    profiles = {"POM_5V_IN": Profile(2000.0, ramp_at=0.4, slope=3000.0, step_at=0.6, step=1000.0),
                "POM_5V_GPU": Profile(150.0, ramp_at=0.4, slope=4000.0), "POM_5V_CPU": Profile(900.0)}
    with Writer(nano_iio(memory_root, profiles)) as writer:
        source, reason = ec_energy.select("auto", root=str(memory_root))
        assert reason is None and source.name == "ina3221x"
        assert source.rails() == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]
        meter, energy = measure(source, writer, interval_ms=10)  # 10 ms resolves the step
    assert (energy["total_rail"], energy["summed_rails"]) == ("POM_5V_IN", None)
    check_against_truth(meter, energy, writer, [profiles["POM_5V_IN"]])
    assert energy["idle_power_mw"] == pytest.approx(2000.0, rel=0.005)


def test_rapl_counters_across_a_wrap_sum_the_packages_only(memory_root):
    package0 = Profile(3000.0, ramp_at=0.4, slope=6000.0)
    package1 = Profile(1500.0, ramp_at=0.4, slope=1000.0)
    counters = rapl_two_sockets(memory_root, package0, package1, max_range_uj=1000000)
    with Writer(counters) as writer:
        source, reason = ec_energy.select("rapl", root=str(memory_root))
        assert reason is None
        assert source.summed_rails == ["package-0", "package-1"]
        meter, energy = measure(source, writer)
        wraps = counters[0].wraps
    assert wraps >= 3  # package-0 went past max_energy_range_uj several times during the test
    assert energy["method"] == "energy counter difference"
    check_against_truth(meter, energy, writer, [package0, package1])


def test_rapl_leaves_psys_out_when_packages_exist_and_says_so(tmp_path):
    for path, name in (("intel-rapl:0", "package-0"), ("intel-rapl:1", "psys")):
        atomic_write(rapl_zone(tmp_path, path, name) / "energy_uj", "1000")
        atomic_write(tmp_path / "sys/class/powercap" / path / "max_energy_range_uj", "262143328850")
    source = ec_energy.make_source("rapl", root=str(tmp_path))
    assert source.available() == (True, "RAPL zones package-0")
    assert "psys left out" in source.note


def test_unreadable_rapl_says_root_only(tmp_path):
    zone = rapl_zone(tmp_path, "intel-rapl:0", "package-0")
    (zone / "energy_uj").mkdir()  # unreadable like the root-only file, even when tests run as root
    ok, reason = ec_energy.make_source("rapl", root=str(tmp_path)).available()
    assert not ok and "not readable (root-only since the CVE-2020-8694 fix)" in reason


def test_hwmon_update_interval_is_read_where_the_driver_exposes_it(tmp_path):
    channels = orin_nano(tmp_path, Profile(1.0), Profile(1.0), Profile(1.0))
    atomic_write(channels[0].folder / "update_interval", "8")  # kernel hwmon ABI: milliseconds
    source = ec_energy.make_source("ina3221", root=str(tmp_path))
    assert source.update_interval_s == 0.008 and source.note is None
    meter = ec_energy.Meter(source)
    assert meter.sample_interval_s == ec_energy.MIN_SAMPLE_INTERVAL_S
    assert meter.min_window_s == pytest.approx(10 * ec_energy.MIN_SAMPLE_INTERVAL_S)


def test_the_ina3221_reader_computes_mv_times_ma(tmp_path):
    channels = orin_nano(tmp_path, Profile(0.0), Profile(0.0), Profile(0.0))
    atomic_write(channels[0].folder / "in1_input", "5080")
    atomic_write(channels[0].folder / "curr1_input", "950")
    power = ec_energy.make_source("ina3221", root=str(tmp_path)).read_power_mw()
    assert power["VDD_IN"] == pytest.approx(5080 * 950 / 1000.0)  # 4826 mW, not 5080 "mW" from in1_input


def test_a_window_shorter_than_ten_updates_gives_no_energy(tmp_path):
    orin_nano(tmp_path, Profile(3000.0), Profile(1.0), Profile(1.0))
    source = ec_energy.make_source("ina3221", root=str(tmp_path))
    meter = ec_energy.Meter(source)
    meter.start()
    time.sleep(0.05)
    meter.stop()
    energy, reason = meter.result(0.05, 10)
    assert energy is None
    assert reason.startswith("window too short: the timed window of 0.050 s holds fewer than 10 updates")


def test_auto_prefers_the_jetson_rails_and_a_missing_named_source_says_why(tmp_path):
    orin_nano(tmp_path, Profile(3000.0), Profile(1.0), Profile(1.0))
    rapl_two_sockets(tmp_path, Profile(1.0), Profile(1.0), 10 ** 6)
    source, reason = ec_energy.select("auto", root=str(tmp_path))
    assert reason is None and source.name == "ina3221"
    source, reason = ec_energy.select("ina3221x", root=str(tmp_path))
    assert source is None
    assert reason == ("energy source 'ina3221x' is not available here: no rail_name_* under %s"
                      % (tmp_path / "sys/bus/i2c/drivers/ina3221x"))


def test_no_source_names_every_place_looked_at(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no tegrastats, no vcgencmd
    source, reason = ec_energy.select("auto", root=str(tmp_path))
    assert source is None and reason.startswith("no power source found: looked at ina3221: ")
    for place in ("sys/bus/i2c/drivers/ina3221 and %s/sys/class/hwmon" % tmp_path,
                  "sys/bus/i2c/drivers/ina3221x", "tegrastats: no `tegrastats` on PATH", "nvml: ",
                  "rapl: no RAPL zones at %s/sys/class/powercap/intel-rapl:*" % tmp_path,
                  "pi5_pmic: no `vcgencmd` on PATH"):
        assert place in reason
    assert ec_energy.select("none") == (None, "energy measurement disabled by the job (energy: none)")


def test_the_registry_covers_every_source_and_auto_tries_them_all():
    assert list(ec_energy.SOURCES) == list(ec_energy.AUTO_ORDER)
    assert ec_energy.CHOICES == ("auto", "none", "ina3221", "ina3221x", "tegrastats", "nvml", "rapl", "pi5_pmic")
    for name, cls in ec_energy.SOURCES.items():
        assert cls.name == name and cls.kind in ("power", "energy")
        assert hasattr(cls, "read_power_mw" if cls.kind == "power" else "read_energy_mj")


def test_trapezoid_of_a_known_series():
    assert ec_energy.trapezoid_mj([(0.0, 1000.0), (0.5, 3000.0), (1.0, 3000.0)]) == pytest.approx(2500.0)
    assert ec_energy.trapezoid_mj([(0.0, 1000.0)]) == 0.0


def test_failed_reads_cost_a_sample_and_are_counted(memory_root):
    channels = orin_nano(memory_root, Profile(2000.0), Profile(1.0), Profile(1.0))
    with Writer(channels[:1]):  # only VDD_IN changes; curr2_input is about to become unreadable
        source = ec_energy.make_source("ina3221", root=str(memory_root))
        sampler = ec_energy.Sampler(source, 0.01)
        sampler.start()
        time.sleep(0.05)
        (channels[0].folder / "curr2_input").unlink()
        (channels[0].folder / "curr2_input").mkdir()  # reads fail from here on
        time.sleep(0.05)
        samples = sampler.stop()
    assert sampler.errors >= 3 and "cannot read" in sampler.last_error
    assert 3 <= len(samples) <= 8
    assert all(total == pytest.approx(2000.0, rel=0.01) for _, total, _ in samples)


def gpu_present():
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        return count > 0, "NVML sees no GPU"
    except ImportError:
        return False, "pynvml is not importable (pip install nvidia-ml-py)"
    except Exception as e:
        return False, "NVML is not usable here: %s" % e


@pytest.mark.skipif(not gpu_present()[0], reason=gpu_present()[1])
def test_nvml_energy_counter_on_a_real_gpu():
    import pynvml

    source, reason = ec_energy.select("nvml")
    assert reason is None, reason
    try:
        assert source.kind == "energy"  # Volta and newer have the counter
        meter = ec_energy.Meter(source)
        assert meter.min_window_s == pytest.approx(10 * ec_power.NVML_UPDATE_S)
        meter.measure_idle(1.2)
        powers = [pynvml.nvmlDeviceGetPowerUsage(source.handle)]
        meter.start()
        for _ in range(12):
            time.sleep(0.1)
            powers.append(pynvml.nvmlDeviceGetPowerUsage(source.handle))
        meter.stop()
        energy, reason = meter.result(meter.timed[-1][0] - meter.timed[0][0], 10)
        state = source.device_state()
    finally:
        source.close()
    assert reason is None, reason
    assert 5000 < energy["avg_power_mw"] < 1500000 and 5000 < energy["idle_power_mw"] < 1500000
    # Counter-derived power agrees with NVML's own (1 s averaged) power reading on an idle GPU.
    assert energy["avg_power_mw"] == pytest.approx(sum(powers) / len(powers), rel=0.3)
    assert energy["samples"] >= 10 and energy["total_rail"] == "gpu0"
    assert isinstance(state["gpu_clocks_event_mask"], int) and state["gpu_name"]


class FakeNvml:
    """Stands in for the `pynvml` module: one 300 W GPU whose energy counter follows perf_counter."""

    class NVMLError(Exception):
        pass

    def __init__(self, energy_counter=True, reasons=(0x1, 0x1, 0x4)):
        self.energy_counter, self.reasons, self.calls, self.shut = energy_counter, list(reasons), 0, False
        self.__spec__ = importlib.machinery.ModuleSpec("pynvml", None)  # find_spec reads it

    def nvmlInit(self):
        self.shut = False

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return "handle%d" % index

    def nvmlDeviceGetName(self, handle):
        return b"Fake GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.energy_counter:
            raise self.NVMLError("Not Supported")
        return int(time.perf_counter() * 300000.0)  # 300 W = 300000 mJ/s

    def nvmlDeviceGetPowerUsage(self, handle):
        return 250000

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        self.calls += 1
        return self.reasons[min(self.calls, len(self.reasons)) - 1]


def test_nvml_source_with_a_stand_in_module(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    source, reason = ec_energy.select("auto", root="/nonexistent")
    assert reason is None and source.name == "nvml" and source.kind == "energy"
    assert (source.total_rail, source.rails()) == ("gpu0", ["gpu0"])
    meter = ec_energy.Meter(source)
    assert meter.min_window_s == pytest.approx(1.0)  # 10 updates of NVML's slowest 100 ms
    meter.start()
    time.sleep(0.25)
    meter.stop()
    energy, reason = meter.result(1.0, 10)
    assert reason is None and energy["avg_power_mw"] == pytest.approx(300000.0, rel=0.01)
    assert "GPU 0 (Fake GPU)" in energy["note"]
    state = source.device_state()
    assert state == {"gpu_name": "Fake GPU", "gpu_clocks_event_mask": 0x5, "gpu_throttle_reasons": ["SwPowerCap"]}
    source.close()
    assert fake.shut


def test_nvml_without_an_energy_counter_integrates_power_and_checks_the_index(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(energy_counter=False))
    source, reason = ec_energy.select("nvml")
    assert reason is None and source.kind == "power"
    assert source.read_power_mw() == {"gpu0": 250000.0}
    assert "no energy counter" in source.note
    source.close()
    source, reason = ec_energy.select("nvml", device_index=3)
    assert source is None
    assert reason == ("energy source 'nvml' is not available here: "
                      "NVML sees 1 GPU(s); energy_device_index 3 does not exist")
