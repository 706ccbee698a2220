"""tegrastats lines (the exact examples of ../shared/reference/devices.md) and the tegrastats source
driven end to end by a fake `tegrastats` on PATH; the Raspberry Pi 5 PMIC parser and source."""
import os
import sys
import time
from pathlib import Path

import pytest

import ec_energy
import ec_power
import ec_tegrastats

JETPACK4 = ("RAM 1170/3956MB (lfb 496x4MB) SWAP 0/1978MB (cached 0MB) CPU [20%@1479,21%@1479,33%@1479,29%@1479] "
            "EMC_FREQ 0% GR3D_FREQ 34% PLL@38C CPU@39.5C PMIC@100C GPU@39C AO@46C thermal@38.75C "
            "POM_5V_IN 3129/3129 POM_5V_GPU 160/160 POM_5V_CPU 922/922")
JETPACK6 = ("06-18-2025 11:25:24 RAM 3452/7620MB (lfb 25x4MB) SWAP 1518/16384MB (cached 174MB) "
            "CPU [1%@1420,2%@1420,0%@1420,2%@1420,2%@729,1%@729] GR3D_FREQ 0% cpu@50.031C soc2@49.031C soc0@50C "
            "gpu@49.031C tj@50.25C soc1@50.25C VDD_IN 4824mW/4824mW VDD_CPU_GPU_CV 518mW/518mW VDD_SOC 1475mW/1475mW")
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "devices.md"


@pytest.mark.skipif(not REFERENCE.exists(), reason="the shared reference is not beside this checkout")
def test_the_lines_are_the_reference_examples_verbatim():
    text = REFERENCE.read_text()
    assert JETPACK4 in text and JETPACK6 in text


def test_jetpack4_line():
    parsed = ec_tegrastats.parse_line(JETPACK4 + "\n")
    assert parsed["timestamp"] is None
    assert parsed["ram_mb"] == {"used": 1170, "total": 3956}
    assert parsed["rails_mw"] == {"POM_5V_IN": 3129.0, "POM_5V_GPU": 160.0, "POM_5V_CPU": 922.0}
    assert parsed["rails_avg_mw"] == parsed["rails_mw"]
    assert [c["load_pct"] for c in parsed["cpu"]] == [20, 21, 33, 29]
    assert {c["freq_mhz"] for c in parsed["cpu"]} == {1479}
    assert parsed["gpu"] == {"load_pct": 34, "freq_mhz": None}
    assert parsed["emc"] == {"load_pct": 0, "freq_mhz": None}
    assert parsed["temperatures_c"] == {"PLL": 38.0, "CPU": 39.5, "PMIC": 100.0, "GPU": 39.0, "AO": 46.0,
                                        "thermal": 38.75}


def test_jetpack6_line():
    parsed = ec_tegrastats.parse_line(JETPACK6)
    assert parsed["timestamp"] == "06-18-2025 11:25:24"
    assert parsed["ram_mb"] == {"used": 3452, "total": 7620}
    assert parsed["rails_mw"] == {"VDD_IN": 4824.0, "VDD_CPU_GPU_CV": 518.0, "VDD_SOC": 1475.0}
    assert [(c["load_pct"], c["freq_mhz"]) for c in parsed["cpu"]] == [
        (1, 1420), (2, 1420), (0, 1420), (2, 1420), (2, 729), (1, 729)]
    assert parsed["gpu"] == {"load_pct": 0, "freq_mhz": None} and parsed["emc"] is None
    assert parsed["temperatures_c"] == {"cpu": 50.031, "soc2": 49.031, "soc0": 50.0, "gpu": 49.031,
                                        "tj": 50.25, "soc1": 50.25}


def test_offline_cores_missing_frequencies_and_a_third_rail_value():
    line = ("RAM 2000/7620MB CPU [12%@1190,off,off,5%] GR3D_FREQ 61%@921 gpu@61.5C "
            "VDD_IN 9001mW/7000mW/9500mW VDD_SOC 1500mW/1400mW/1600mW")
    parsed = ec_tegrastats.parse_line(line)
    assert parsed["cpu"] == [{"load_pct": 12, "freq_mhz": 1190, "online": True},
                             {"load_pct": None, "freq_mhz": None, "online": False},
                             {"load_pct": None, "freq_mhz": None, "online": False},
                             {"load_pct": 5, "freq_mhz": None, "online": True}]
    assert parsed["gpu"] == {"load_pct": 61, "freq_mhz": 921}
    assert parsed["rails_mw"] == {"VDD_IN": 9001.0, "VDD_SOC": 1500.0}
    assert parsed["rails_third_mw"] == {"VDD_IN": 9500.0, "VDD_SOC": 1600.0}
    assert ec_tegrastats.parse_line("garbage without rails")["rails_mw"] == {}


FAKE = """#!{python}
import sys, time
args = sys.argv[1:]
open({log!r}, "w").write(" ".join(args))
{body}
interval = int(args[args.index("--interval") + 1]) / 1000.0
while True:
    print({line!r}, flush=True)
    time.sleep(interval)
"""


def fake_tegrastats(folder: Path, line: str, body: str = "") -> Path:
    """An executable `tegrastats` in folder/bin that prints `line` every --interval ms."""
    script = folder / "bin" / "tegrastats"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(FAKE.format(python=sys.executable, log=str(folder / "argv.txt"), body=body, line=line))
    script.chmod(0o755)
    return folder / "argv.txt"


@pytest.mark.parametrize("line, total_rail, total_mw", [(JETPACK4, "POM_5V_IN", 3129.0),
                                                        (JETPACK6, "VDD_IN", 4824.0)])
def test_a_fake_tegrastats_on_path_drives_the_source(tmp_path, monkeypatch, line, total_rail, total_mw):
    argv_log = fake_tegrastats(tmp_path, line)
    monkeypatch.setenv("PATH", "%s%s%s" % (tmp_path / "bin", os.pathsep, os.environ["PATH"]))
    source, reason = ec_energy.select("auto", root=str(tmp_path), interval_ms=20)
    assert reason is None and source.name == "tegrastats"
    try:
        meter = ec_energy.Meter(source, 20)
        assert meter.min_window_s == pytest.approx(0.2)
        meter.measure_idle(0.25)
        meter.start()
        time.sleep(0.25)
        meter.stop()
        energy, reason = meter.result(meter.timed[-1][0] - meter.timed[0][0], 50)
        process = source.process
    finally:
        source.close()
    assert process.poll() is not None  # close() ended tegrastats
    assert argv_log.read_text() == "--interval 20"
    assert reason is None
    assert energy["source"] == "tegrastats" and energy["total_rail"] == total_rail
    assert energy["summed_rails"] is None and len(energy["rails"]) == 3
    assert energy["avg_power_mw"] == pytest.approx(total_mw) and energy["idle_power_mw"] == pytest.approx(total_mw)
    assert energy["mj_per_inference_net"] == pytest.approx(0.0, abs=1e-9)
    assert energy["update_interval_s"] == 0.02 and energy["samples"] >= 8


def test_a_tegrastats_that_prints_no_rails_is_not_a_source(tmp_path, monkeypatch):
    fake_tegrastats(tmp_path, "", body='print("tegrastats: permission denied", flush=True); sys.exit(3)')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    started = time.monotonic()
    source, reason = ec_energy.select("tegrastats", root=str(tmp_path))
    assert source is None and time.monotonic() - started < 2  # no wait for a process that ended
    assert "exited with 3 before printing rail readings" in reason
    assert "last line: 'tegrastats: permission denied'" in reason


# Both formats of devices.md (exact lines), with a second rail in the first.
PMIC_PADDED = """    VDD_CORE_A current(7)=0.76113000A
    VDD_CORE_V volt(15)=0.72000000V
    EXT5V_V volt(24)=5.14688000V
    3V3_SYS_A current(1)=0.07320000A
    3V3_SYS_V volt(9)=3.31250000V
"""
PMIC_COMPACT = "VDD_CORE_A=1.2340A\nVDD_CORE_V=0.8750V\n"


def test_pmic_parser_reads_both_formats_and_pairs_current_with_voltage():
    rails, unpaired = ec_power.parse_pmic(PMIC_PADDED)
    assert sorted(rails) == ["3V3_SYS", "VDD_CORE"]
    assert rails["VDD_CORE"] == {"current_a": 0.76113, "volt_v": 0.72, "power_mw": pytest.approx(548.0136)}
    assert rails["3V3_SYS"]["power_mw"] == pytest.approx(0.0732 * 3.3125 * 1000)
    assert unpaired == {"EXT5V_V": 5.14688}  # the input voltage: no current, so no power
    rails, unpaired = ec_power.parse_pmic(PMIC_COMPACT)
    assert rails == {"VDD_CORE": {"current_a": 1.234, "volt_v": 0.875, "power_mw": pytest.approx(1079.75)}}
    assert unpaired == {}


def test_pi5_source_sums_the_soc_rails_and_says_it_is_not_a_total():
    calls = []

    def runner(argv):
        calls.append(argv)
        return PMIC_PADDED

    source = ec_energy.make_source("pi5_pmic", runner=runner)
    ok, reason = source.available()
    assert ok and reason == "Pi 5 PMIC rails 3V3_SYS, VDD_CORE"
    assert calls[0] == ["vcgencmd", "pmic_read_adc"]
    assert (source.total_rail, source.summed_rails) == (None, ["3V3_SYS", "VDD_CORE"])
    assert "SoC side only" in source.note and "not the board's total" in source.note
    meter = ec_energy.Meter(source, 20)
    meter.start()
    time.sleep(0.1)
    meter.stop()
    energy_mj, span, rails = ec_energy.window_energy(source.kind, meter.timed)
    assert energy_mj / span == pytest.approx(548.0136 + 0.0732 * 3.3125 * 1000)
    assert rails["VDD_CORE"] == pytest.approx(548.0136)
    # The PMIC's assumed 0.1 s refresh asks for a 1 s window: 0.1 s gives no energy.
    energy, reason = meter.result(0.1, 7)
    assert energy is None and "needs >= 1.000 s" in reason


def test_pi5_source_is_absent_without_vcgencmd_or_rails(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ec_energy.make_source("pi5_pmic").available() == (False, "no `vcgencmd` on PATH")

    def failing(argv):
        raise ec_power.SourceError("`vcgencmd pmic_read_adc` exited with 255: unknown command")

    ok, reason = ec_energy.make_source("pi5_pmic", runner=failing).available()
    assert not ok and "unknown command" in reason
    ok, reason = ec_energy.make_source("pi5_pmic", runner=lambda argv: "EXT5V_V volt(24)=5.1V\n").available()
    assert not ok and "no <RAIL>_A/<RAIL>_V pairs" in reason
