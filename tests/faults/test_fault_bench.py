"""Faults during `edgecompress bench --device` (the review's F1 and F2 repros: a Jetson left with
pinned clocks, a phone left unplugged with benchmark_model running and its lock held), and two
commands at once: two deploys into one --out (F3: exactly one runs, the other exits 2, and the
published bundle holds the model its manifest describes) and two benches on one device (never
both measuring; the device restored). Each case ends with the next job on the same device, which
must not be refused or inherit a stale state."""
from __future__ import annotations

import os
import signal
import time

import pytest

from faultlib import (JOB_TIMEOUT_S, SETTLE_S, TARGETS, classifier_width, copy_log, find_in, parent_pid, processes,
                      write_model)

BENCH_FAULTS = [("sigint", "adb"), ("sigterm", "adb"), ("sigkill", "adb"), ("sigint", "ssh"), ("sigterm", "ssh"),
                ("sigkill", "ssh"), ("drop", "ssh")]
DEFAULT = {("sigint", "adb"), ("sigkill", "ssh")}
EXPECTED_EXIT = {"sigint": {130}, "sigterm": {130, 143}, "sigkill": {-signal.SIGKILL}, "drop": {0, 4}}
DEVICE = {"ssh": "jet", "adb": "pixel"}


def model_for(transport: str, lab):
    """What the device runs: an .onnx for the ssh board, a .tflite for the phone (the stand-in's
    benchmark_model reads only the path; the host checks the TFLite identifier)."""
    if transport == "ssh":
        from ecutil import tripling_model

        return tripling_model(lab.folder / "m.onnx")
    path = lab.folder / "m.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(2000))
    return path


def bench_host(lab, transport: str, model, seconds: float, name: str = "bench"):
    extra = ["--seconds", str(seconds), "--runs", "10", "--rounds", "1"]
    if transport == "ssh":
        extra += ["--lock-clocks", "--threads", "1"]
    return lab.bench(model, DEVICE[transport], *extra, name=name)


def measuring(lab, transport: str) -> bool:
    return lab.clocks.state() == "pinned" if transport == "ssh" else lab.phone.busy


def params():
    for fault, transport in BENCH_FAULTS:
        marks = [] if (fault, transport) in DEFAULT else [pytest.mark.slow, pytest.mark.faults_slow]
        yield pytest.param(fault, transport, id=f"{fault}-bench-cmd-{transport}", marks=marks)


@pytest.mark.parametrize("fault, transport", list(params()))
def test_a_fault_during_bench_on_a_device_leaves_it_restored_and_free(make_lab, record, tmp_path, fault, transport):
    lab = make_lab(transport)
    model = model_for(transport, lab)
    started, left, rc = time.monotonic(), [], None
    try:
        host = bench_host(lab, transport, model, 4)
        if not host.wait_until(lambda: measuring(lab, transport), 120):
            rc = host.finish()
            left.append(f"the bench ended (exit {rc}) before it measured on the device: {host.tail()}")
        else:
            if fault == "drop":
                if not lab.sshd.kill_sessions(what_they_ran=False):
                    left.append("no sshd session was serving the job when the link was dropped")
            else:
                os.killpg(host.pid, signal.SIGINT) if fault == "sigint" else os.kill(
                    host.pid, signal.SIGTERM if fault == "sigterm" else signal.SIGKILL)
            rc = host.finish()
            if rc not in EXPECTED_EXIT[fault]:
                left.append(f"host exit {rc} after {fault} (expected {sorted(EXPECTED_EXIT[fault])}): {host.tail()}")
        copy_log(host, tmp_path / "host.log")
        settle = SETTLE_S + (JOB_TIMEOUT_S if fault == "sigkill" and transport == "adb" else 0)
        left += [f"after the fault: {x}" for x in lab.wait_clean(lambda: lab.device_left(transport), settle)]
        nxt = bench_host(lab, transport, model, 0.5, name="next")
        rc_next = nxt.finish()
        copy_log(nxt, tmp_path / "next.log")
        if rc_next != 0:
            left.append(f"the next bench on the device exit {rc_next}: {nxt.tail()}")
        left += [f"after the next bench: {x}" for x in lab.wait_clean(lambda: lab.device_left(transport))]
    finally:
        record(left, fault=fault, stage="bench (edgecompress bench)", transport=transport, exit=rc,
               seconds=round(time.monotonic() - started, 1))
    assert not left, "\n".join(left)


def overlaps(lab, transport: str) -> int:
    """How many measurements run on the device right now: the job processes, not counting a child
    caught between fork and exec (it shows its parent's command line for a moment)."""
    if transport == "ssh":
        found = processes(lab.jet_workdir / "jobs", "ec_bench.py")
    else:
        found = processes(lab.phone.root, "benchmark_model")
    pids = {line.split()[0] for line in found}
    return sum(1 for line in found if parent_pid(line.split()[0]) not in pids)


def clock_overlaps(lab) -> list:
    """Pins of one job while another job's pin is not yet restored, from the fake's call log."""
    depth, found = 0, []
    for line in lab.clocks.log():
        if line.startswith("pin "):
            depth += 1
            if depth > 1:
                found.append(f"the clocks were pinned again before the previous job restored them: {line}")
        elif line.startswith("restore done"):
            depth = max(0, depth - 1)
    return found


@pytest.mark.parametrize("transport", ["ssh", pytest.param("adb", marks=[pytest.mark.slow, pytest.mark.faults_slow])])
def test_two_benches_on_one_device_never_measure_at_once(make_lab, record, tmp_path, transport):
    lab = make_lab(transport)
    model = model_for(transport, lab)
    started, left, most = time.monotonic(), [], 0
    try:
        first = bench_host(lab, transport, model, 3, name="first")
        if not first.wait_until(lambda: measuring(lab, transport), 120):
            left.append(f"the first bench ended (exit {first.finish()}) before it measured: {first.tail()}")
        second = bench_host(lab, transport, model, 1, name="second")
        while first.alive() or second.alive():
            most = max(most, overlaps(lab, transport))
            time.sleep(0.02)
        for host in (first, second):
            rc = host.finish()
            copy_log(host, tmp_path / f"{host.name}.log")
            if rc != 0:
                left.append(f"the {host.name} bench exit {rc}: {host.tail()}")
        if most > 1:
            left.append(f"{most} measurements ran on the device at once")
        if transport == "ssh":
            left += clock_overlaps(lab)
        left += [f"afterwards: {x}" for x in lab.wait_clean(lambda: lab.device_left(transport))]
    finally:
        record(left, fault="two benches at once", stage="bench (edgecompress bench)", transport=transport,
               seconds=round(time.monotonic() - started, 1))
    assert not left, "\n".join(left)


def test_two_deploys_into_one_out_one_runs_the_other_exits_2(make_lab, record, tmp_path):
    """Both are `net.py:build` for host-cpu, so both would write OUT/net-host-cpu; they differ in
    width (16 and 32 channels, so 8 and 16 after pruning) and the published model shows whose it is."""

    lab = make_lab("local")
    wide = write_model(lab.folder / "wide", width=32)
    params_of = {}
    for label, path in (("narrow", lab.model), ("wide", wide)):
        scope: dict = {}
        exec(path.read_text(), scope)
        params_of[sum(p.numel() for p in scope["build"]().parameters())] = label
    pruned_width = {"narrow": 8, "wide": 16}
    started, left = time.monotonic(), []
    try:
        first = lab.deploy("local", name="first")
        if not first.wait_until(lambda: first.saw(r"distill 1/1: step") is not None):
            left.append(f"the first deploy ended (exit {first.finish()}) before distilling: {first.tail()}")
        second = lab.deploy("local", model=wide, name="second")
        codes = {host.name: host.finish() for host in (first, second)}
        for host in (first, second):
            copy_log(host, tmp_path / f"{host.name}.log")
        if sorted(codes.values()) != [0, 2]:
            left.append(f"exit codes {codes}: expected one 0 and one 2 ({second.tail(2)})")
        elif codes["second"] == 2 and str(lab.out) not in second.stderr() and "pid" not in second.stderr():
            left.append(f"the refused deploy does not name the --out folder or the running pid: {second.tail(2)}")
        left += lab.bundle_left(TARGETS["local"]) + lab.host_left(after_clean_exit=True)
        left += published_model_is_its_manifests(lab, params_of, pruned_width)
    finally:
        record(left, fault="two deploys at once", stage="all", transport="local",
               seconds=round(time.monotonic() - started, 1))
    assert not left, "\n".join(left)


def published_model_is_its_manifests(lab, params_of: dict, pruned_width: dict) -> list:
    import json

    folder = lab.out / "net-host-cpu"
    if not folder.is_dir():
        return ["no bundle was published"]
    manifest = json.loads((folder / "manifest.json").read_text())
    before = [v for v in find_in(manifest, "params_before") if isinstance(v, int)]
    whose = params_of.get(before[0]) if before else None
    if whose is None:
        return [f"the manifest's params_before {before} is neither run's model"]
    width = classifier_width(folder / "model.onnx")
    if width != pruned_width[whose]:
        return [f"the manifest describes the {whose} run's model, but model.onnx's classifier takes {width} "
                f"channels (the {whose} model has {pruned_width[whose]})"]
    return []
