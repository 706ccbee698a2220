"""The fault suite's own checks see what they are there to see: a device left pinned or unplugged,
a job folder, a held lock, a benchmark still running, two measurements at once, a bundle whose zip
or model does not match its manifest. Without these, a case could pass because a check looked in
the wrong place. No deploy runs here: each leftover is made by hand."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time

from faultlib import model_matches_manifest, processes, zip_matches_folder
from test_fault_bench import clock_overlaps, overlaps


def test_a_jetson_left_pinned_with_a_job_folder_and_a_held_lock_is_reported(make_lab):
    lab = make_lab("ssh")
    assert lab.device_left("ssh") == []
    lab.clocks.state_file.write_text("pinned\n")
    (lab.jet_workdir / "jobs" / "job-left").mkdir(parents=True)
    lock = lab.jet_workdir / "device.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        left = " | ".join(lab.device_left("ssh"))
    finally:
        os.close(fd)
    assert "clocks left pinned" in left and "job-left" in left and "device lock still held" in left


def test_a_phone_left_unplugged_locked_and_measuring_is_reported(make_lab):
    lab = make_lab("local")  # the phone exists in every lab; no conversion is needed here
    with open(lab.phone.root / "log" / "calls.txt", "a") as f:
        f.write("1.0 dumpsys battery unplug\n")
    (lab.phone_base() / "job-left").mkdir(parents=True)
    (lab.phone_base() / "lock").mkdir()
    (lab.phone_base() / "lock" / "owner").write_text("4242 {}\n")
    fake = lab.phone_base() / "job-left" / "benchmark_model"
    fake.write_text("import time\ntime.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, str(fake)])
    try:
        deadline = time.monotonic() + 10
        while not processes(lab.phone.root, "benchmark_model") and time.monotonic() < deadline:
            time.sleep(0.05)
        left = " | ".join(lab.device_left("adb"))
    finally:
        proc.kill()
        proc.wait()
    assert "charging left suspended" in left and "job-left" in left and "phone lock left (4242" in left
    assert "benchmark_model left running" in left


def test_two_measurements_at_once_are_counted_and_a_forked_child_is_not(make_lab):
    lab = make_lab("ssh")
    jobs = []
    for name in ("job-a", "job-b"):
        folder = lab.jet_workdir / "jobs" / name
        folder.mkdir(parents=True)
        script = "import os, time\nif os.fork() == 0:\n    time.sleep(30)\ntime.sleep(30)\n"
        (folder / "ec_bench.py").write_text(script)
        jobs.append(subprocess.Popen([sys.executable, "ec_bench.py"], cwd=folder))
    try:
        deadline = time.monotonic() + 10
        while len(processes(lab.jet_workdir / "jobs", "ec_bench.py")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert overlaps(lab, "ssh") == 2  # two jobs, each with a forked child that never exec'd
    finally:
        lab.close()  # kills everything under the lab, the forked children too
    with open(lab.clocks.log_file, "a") as f:
        f.write("1 1 pin (was default)\n2 2 pin (was pinned)\n3 3 restore done (state default)\n")
    assert len(clock_overlaps(lab)) == 1


def test_a_bundle_whose_zip_or_model_differs_from_its_manifest_is_reported(tmp_path):
    from ecutil import tripling_model

    folder = tmp_path / "net-host-cpu"
    folder.mkdir()
    tripling_model(folder / "model.onnx")
    manifest = {"model": {"file": "model.onnx", "inputs": [{"name": "x"}], "outputs": [{"name": "y"}]}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    zipped = tmp_path / "net-host-cpu.zip"
    shutil.make_archive(str(zipped.with_suffix("")), "zip", tmp_path, folder.name)
    assert zip_matches_folder(zipped, folder) == [] and model_matches_manifest(folder) == []
    manifest["model"]["outputs"] = [{"name": "logits"}]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert zip_matches_folder(zipped, folder)[0].startswith("published net-host-cpu.zip differs")
    assert "outputs ['y'] differ from the manifest's ['logits']" in model_matches_manifest(folder)[0]
