"""End to end through the real CLI: one deploy of a user model with trained weights and labelled
data (Torch-Pruning, distillation, ONNX export, ORT INT8, the local runner in its own process), and
what a user does with its bundle: the layout and manifest, the zip, the summary and report page,
the example program, verify and bench."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from e2eutil import deploy
from ecutil import fast_sets, make_data, run_cli, train_weights


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One fast deploy of a user model with labelled .npz data, shared by the bundle tests."""
    from ecutil import MODEL_SRC

    root = tmp_path_factory.mktemp("built")
    (root / "net.py").write_text(MODEL_SRC)
    x, y = make_data()
    np.savez(root / "data.npz", x=x, y=y, labels=np.array(["nw", "ne", "sw", "se"]))
    weights = train_weights(root / "net.pt", x, y)
    out, err = deploy(f"{root}/net.py:build", "--weights", weights, "--target", "host-cpu", "--data", root / "data.npz",
                      "--out", root / "dist", "--json", *fast_sets("distill.steps=150"))
    return root, json.loads(out), err


def test_bundle_layout_and_manifest(built):
    root, summary, _ = built
    folder = root / "dist" / "net-host-cpu"
    assert Path(summary["bundle"]) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "example.py", "example_tasks.py", "labels.txt",
                                                        "manifest.json", "model.onnx", "parity.npz", "report.html"]
    m = json.loads((folder / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["target"] == "host-cpu" and m["runtime"]["name"] == "onnxruntime"
    assert m["inputs"][0]["shape"][1:] == [1, 8, 8] and m["inputs"][0]["dtype"] == "float32"
    from edgecompress.quantize import quantization_params

    in_file = quantization_params(folder / "model.onnx")  # the Q/DQ constants as the file holds them
    assert [m["inputs"][0]["quantization"], m["outputs"][0]["quantization"]] == [in_file["input"], in_file["output"]]
    x = np.load(root / "data.npz")["x"]
    whole = (max(float(x.max()), 0) - min(float(x.min()), 0)) / 255  # uint8 over the whole data's range
    assert 0.5 * whole < in_file["input"]["scale"] <= whole, "calibrated on part of that data"
    assert 0 <= in_file["input"]["zero_point"] <= 255
    p = m["compression"]["pruning"]
    assert p["structure"] == "channel" and p["params_after"] < p["params_before"] / 3
    # ratio 0.5 with round_to 8 keeps 8 of the 16 and 16 of the 32 channels: convs 80 + 1168, BNs 16 + 32, fc 68
    assert (p["params_before"], p["params_after"]) == (5028, 1364)
    assert m["compression"]["distillation"]["steps"] == 150
    assert m["compression"]["quantization"]["precision"] == "int8"
    lat = m["metrics"]["latency_ms"]
    assert set(lat) == {"original", "compressed", "student_fp32"}  # the FP32 student too: report.html's trade-off
    assert lat["compressed"]["n"] == lat["original"]["n"] == lat["student_fp32"]["n"] == 20
    assert m["metrics"]["measured_on"]["where"] == "host" and "not on the host-cpu target" in m["metrics"]["measured_on"]["note"]
    assert m["metrics"]["measured_on"]["threads"] == min(2, os.cpu_count())
    assert m["metrics"]["energy_mj_per_inference"] is None and "no power source" in m["metrics"]["energy_reason"]
    acc = m["metrics"]["accuracy"]
    assert acc["metric"] == "accuracy" and acc["teacher"] > 0.95 and acc["student"] > acc["teacher"] - 0.1
    assert m["provenance"]["profile"]["prune"]["ratio"] == 0.5 and m["provenance"]["profile"]["distill"]["steps"] == 150
    assert (folder / "labels.txt").read_text().split() == ["nw", "ne", "sw", "se"]
    assert set(m["files"]) == {"README.md", "example.py", "example_tasks.py", "labels.txt", "model.onnx", "parity.npz", "report.html"}
    curve = m["compression"]["distillation"]["loss_curve"]
    assert len(curve) == 50 and [p[1] for p in curve] == list(range(3, 151, 3)) and {p[0] for p in curve} == {1}
    assert curve[-1][2] < curve[0][2], "the recorded loss falls as the student learns"


def test_zip_holds_the_same_files(built):
    root, _, _ = built
    with zipfile.ZipFile(root / "dist" / "net-host-cpu.zip") as zf:
        names = sorted(zf.namelist())
    assert names == sorted(f"net-host-cpu/{n}" for n in ["README.md", "example.py", "example_tasks.py", "labels.txt",
                                                         "manifest.json", "model.onnx", "parity.npz", "report.html"])
    assert not [p for p in (root / "dist").iterdir() if p.name.startswith(".")], "no temp or work folders left"


def test_summary_table_and_json(built):
    _, summary, _ = built
    assert summary["before"]["params"] > summary["after"]["params"]
    assert summary["speedup_p50"] == pytest.approx(summary["before"]["p50_ms"] / summary["after"]["p50_ms"])
    from edgecompress.report import table

    text = table(summary)
    for row in ("model file", "params", "MACs", "accuracy", "p50 latency", "Measured on the build host"):
        assert row in text
    assert "x faster" in text or "x slower" in text  # a tiny model on a busy host can come out either way


def test_summary_table_says_slower_and_larger_rather_than_a_ratio_below_one(built):
    import copy

    from edgecompress.report import table

    _, summary, _ = built
    worse = copy.deepcopy(summary)
    worse["after"].update(p50_ms=summary["before"]["p50_ms"] * 2, bytes=summary["before"]["bytes"] * 4)
    text = table(worse)
    assert "2.00x slower" in text and "4.00x larger" in text
    assert "x faster" not in text and not any(f"0.{d}" in line and "x faster" in line for line in text.splitlines()
                                            for d in range(10))


def test_report_page_shows_the_bundles_figures(built):
    """report.html: the same before/after cells as the printed table, the latency of both models with
    their run counts, the loss curve, every check and why energy is missing; one page, no script."""
    from html.parser import HTMLParser

    from edgecompress import report

    root, summary, _ = built
    page = (root / "dist" / "net-host-cpu" / "report.html").read_text()
    m = json.loads((root / "dist" / "net-host-cpu" / "manifest.json").read_text())
    text = []
    parser = HTMLParser()
    parser.handle_data = text.append
    parser.feed(page)
    words = " ".join(text)
    for row in report.table_rows(summary)[1:]:
        assert all(cell in words for cell in row), row
    for model, lat in m["metrics"]["latency_ms"].items():
        assert f"{lat['p50']:.3g}" in words and str(lat["n"]) in words
    assert page.count("<svg") == 3 and "Accuracy against latency" in page and "<script" not in page and "http" not in page.replace("http://www.w3.org", "")
    points = page.split('aria-label="distillation loss"')[1].split('points="')[1].split('"')[0].split()
    assert len(points) == len(m["compression"]["distillation"]["loss_curve"]) == 50
    for check in m["metrics"]["parity"]:
        assert check["what"] in words
    assert "no power source" in words and "Not measured" in words


def test_example_program_classifies_one_input(built):
    root, _, _ = built
    folder = root / "dist" / "net-host-cpu"
    out = subprocess.run([sys.executable, "example.py"], cwd=folder, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    top = out.stdout.split()[0]
    assert top in {"nw", "ne", "sw", "se"}
    np.save(root / "flat.npy", make_data(n=1, seed=5)[0][0][0])  # 8x8, no channel: the same numbers
    out = subprocess.run([sys.executable, str(folder / "example.py"), str(root / "flat.npy")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split()[0] in {"nw", "ne", "sw", "se"}, out.stderr
    for bad, said in ((root / "nowhere.npy", "no such file"), (root / "wrong.npy", "takes one sample of shape [1, 8, 8]")):
        if bad.name == "wrong.npy":
            np.save(bad, np.zeros((3, 5), np.float32))
        out = subprocess.run([sys.executable, str(folder / "example.py"), str(bad)], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 1 and said in out.stderr and "Traceback" not in out.stderr, out.stderr
    np.save(root / "one.npy", make_data(n=1, seed=5)[0][0])
    out = subprocess.run([sys.executable, str(folder / "example.py"), str(root / "one.npy")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split()[0] in {"nw", "ne", "sw", "se"}
    # built from .npz arrays: how an image becomes the input is unknown, and the manifest and example say so
    pre = json.loads((folder / "manifest.json").read_text())["inputs"][0]["preprocessing"]
    assert pre["mean"] is None and pre["size"] is None and "data.npz" in pre["note"]
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "photo.png")
    out = subprocess.run([sys.executable, str(folder / "example.py"), str(root / "photo.png")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "preprocessed arrays" in out.stderr and ".npy" in out.stderr
    assert "Traceback" not in out.stderr


def test_verify_passes_then_catches_a_changed_file(built, tmp_path):
    root, _, _ = built
    code, out, err = run_cli("verify", root / "dist" / "net-host-cpu.zip")
    assert code == 0 and "7 files match" in out and "OK" in out, err  # 7 listed; the manifest is not in its own list
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(root / "dist" / "net-host-cpu", copy)
    with open(copy / "labels.txt", "a") as fh:
        fh.write("extra\n")
    code, _, err = run_cli("verify", copy)
    assert code == 3 and "labels.txt" in err and "sha256" in err


def test_bench_a_bundle_json(built):
    root, _, _ = built
    code, out, err = run_cli("bench", root / "dist" / "net-host-cpu", "--runs", "30", "--seconds", "0", "--json")
    assert code == 0, err
    result = json.loads(out)["results"][0]
    assert result["device_name"] == "this host" and result["latency_ms"]["n"] == 30
    assert result["latency_ms"]["min"] <= result["latency_ms"]["p50"] <= result["latency_ms"]["max"]


def test_bench_table_shows_the_p50_drift_and_the_warnings(built):
    root, _, _ = built
    code, out, err = run_cli("bench", root / "dist" / "net-host-cpu", "--runs", "30", "--seconds", "1.2")
    assert code == 0, err
    head, rule, row = out.splitlines()[:3]
    assert "p50 drift" in head and row.startswith("this host")
    drift = [cell for cell in row.split() if cell.endswith("%")]
    assert len(drift) == 1 and float(drift[0][:-1]) >= 0
    assert "energy on this host: not measured" in out
    assert "p50 drift: how far the p50s of consecutive parts (>= 0.5 s each) of the timed window spread; above 10%" in out


def test_lock_clocks_reaches_the_device_side(built):
    """--lock-clocks asks the device side to pin clocks with jetson_clocks; this host has none, so
    the device side refuses clearly instead of measuring with clocks it could not pin."""
    root, _, _ = built
    code, out, err = run_cli("bench", root / "dist" / "net-host-cpu", "--runs", "5", "--seconds", "0",
                             "--lock-clocks")
    assert code == 4 and "jetson_clocks" in err
    from edgecompress import bench, profile

    prof, _ = profile.load("jetson-orin-nano", ["bench.lock_clocks=true"])
    assert bench.make_job(prof.bench, "tensorrt")["lock_clocks"] is True
    assert "lock_clocks" not in bench.make_job(profile.load("host-cpu")[0].bench, "onnxruntime")


def test_bench_table_prints_a_dash_for_statistics_a_tool_did_not_give():
    from edgecompress.report_bench import bench_table

    device = {"arch": "aarch64", "runtime": "tensorrt", "runtime_version": "10.3"}
    trtexec_timed = {"device_name": "orin", "device": device,
                     "latency_ms": {"p50": 1.25, "p90": None, "p99": 2.5, "mean": 1.3, "n": 200}, "load_ms": 5.0,
                     "energy": None, "energy_reason": "timed by trtexec", "warnings": []}
    table = bench_table([trtexec_timed])
    row = table.splitlines()[2].split()
    assert row[:7] == ["orin", "aarch64", "tensorrt", "10.3", "1.250", "-", "2.500"]
    assert "p50 drift:" not in table  # no row has a drift figure: no footnote


def test_a_bare_model_file_is_timed_with_the_named_devices_settings(tmp_path):
    """bench model.onnx --device lab-pi: the Pi's bench settings (4 threads), not this host's (2);
    a .tflite takes the settings of the first device whose runtime is LiteRT."""
    from edgecompress.inventory import Device
    from edgecompress.commands import _profile_for_file

    pi, orin, phone = (Device(name=n, target=t, transport=tr) for n, t, tr in
                       (("lab-pi", "raspberry-pi-5", "ssh"), ("lab-orin", "jetson-orin-nano", "ssh"),
                        ("pixel", "android-arm64", "adb")))
    assert _profile_for_file(Path("m.onnx"), [None]).name == "host-cpu"
    assert _profile_for_file(Path("m.onnx"), [orin, pi]).name == "raspberry-pi-5"  # TensorRT does not load .onnx here
    assert _profile_for_file(Path("m.onnx"), [pi]).bench.threads == 4
    assert _profile_for_file(Path("m.tflite"), [pi, phone]).name == "android-arm64"
    assert _profile_for_file(Path("m.tflite"), [None]).runtime == "litert"


def test_an_input_shape_a_fixed_size_bundle_cannot_use_is_said(built):
    root, _, _ = built
    code, _, err = run_cli("bench", root / "dist" / "net-host-cpu", "--input-shape", "1x1x16x16", "--runs", "5",
                           "--seconds", "0.1", "--rounds", "1", "--json")
    assert code == 0 and "note: --input-shape is not used: model.onnx has a fixed size" in err, err
