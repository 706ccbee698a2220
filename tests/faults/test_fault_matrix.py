"""Faults at every stage of a real `edgecompress deploy` (issue 11, "A fault suite that keeps it
so"): Ctrl-C (SIGINT to the host's process group, as a terminal sends it), SIGTERM and SIGKILL of
the host, and a dropped link (the sshd session process serving the job killed mid-job), during
distillation, export, quantization, bench and bundle writing, for each transport: ssh (a "Jetson"
with a fake jetson_clocks and --lock-clocks), the adb stand-in (a phone whose charging is
suspended while it measures) and this host.

The moment to strike is found by watching, never by sleeping: the stage's progress line on stderr,
the clocks pinned, the phone's benchmark_model running, or the bundle's temporary path appearing.
Afterwards, and again after the same command with --resume: the device is as it was found (clocks
default, charging reset, no job folder, lock or benchmark process), the host holds no temporary
bundle paths or held locks, and any published bundle is whole, verifies, and holds the model its
manifest describes. A fault at bench time must also leave the device usable by the next job: the
--resume run measures on it."""
from __future__ import annotations

import os
import re
import signal
import time

import pytest

from faultlib import (CHECKPOINT_EVERY, DISTILL_STEPS, JOB_TIMEOUT_S, SETTLE_S, STRIKE_AT_STEP, TARGETS,
                      clocks_reported_left, copy_log)

SIGNALS = ("sigint", "sigterm", "sigkill")
STAGES = ("distill", "export", "quantize", "bench", "bundle")
TRANSPORTS = ("ssh", "adb", "local")
LINKS = ("drop", "drop-twice")  # the link dies once (the runner retries), or again on the retry (exit 4)
# the default run's share (about three minutes on 2 cores); the rest runs with -m faults_slow
DEFAULT = {("sigint", "distill", "local"), ("drop", "bench", "ssh")}
EXPECTED_EXIT = {"sigint": {130}, "sigterm": {130, 143}, "sigkill": {-signal.SIGKILL}, "drop": {0, 4},
                 "drop-twice": {4}}
BENCH_SECONDS = "2"  # a bench stage long enough to be caught in; the other stages time briefly


def cases():
    every = [(f, s, t) for f in SIGNALS for s in STAGES for t in TRANSPORTS]
    every += [(f, "bench", "ssh") for f in LINKS]
    for case in every:
        marks = [] if case in DEFAULT else [pytest.mark.slow, pytest.mark.faults_slow]
        yield pytest.param(*case, id="-".join(case), marks=marks)


def distill_step_reached(host) -> bool:
    steps = [int(m.group(1)) for line in list(host.lines) for m in [re.search(r"distill 1/1: step (\d+)/", line)] if m]
    return bool(steps) and max(steps) >= STRIKE_AT_STEP


def temporary_bundle(lab) -> bool:
    try:
        names = os.listdir(lab.out)
    except OSError:
        return False
    return any(n.startswith(".") and "tmp" in n and "work" not in n for n in names)


def bundle_being_written(lab, host) -> bool:
    """The bundle's temporary path exists for tens of milliseconds only: once the last model's bench
    has begun, watch without sleeping until it appears or the host has ended."""
    if host.saw(r"^\s*bench compressed") is None:
        return False
    while host.alive():
        if temporary_bundle(lab):
            return True
        time.sleep(0)
    return temporary_bundle(lab)


def strike_point(stage: str, transport: str, lab, host):
    """A function that is true once the host is inside the stage."""
    if stage == "distill":
        return lambda: distill_step_reached(host)
    if stage == "export":  # the next thing after distillation's summary line is the ONNX export
        return lambda: host.saw(r"distill 1/1: \d+ steps in") is not None
    if stage == "quantize":
        return lambda: host.saw(r"^quantize:") is not None
    if stage == "bundle":
        return lambda: bundle_being_written(lab, host)
    if transport == "ssh":
        return lambda: lab.clocks.state() == "pinned"
    if transport == "adb":
        return lambda: lab.phone.busy
    return lambda: host.saw(r"^\s*bench original on this host.*loading") is not None


def strike(fault: str, host, lab) -> list:
    """Deliver the fault; what went wrong delivering it (a drop that found no session to drop)."""
    if fault == "sigint":
        os.killpg(host.pid, signal.SIGINT)
    elif fault == "sigterm":
        os.kill(host.pid, signal.SIGTERM)
    elif fault == "sigkill":
        os.kill(host.pid, signal.SIGKILL)
    else:
        if not lab.sshd.kill_sessions(what_they_ran=False):
            return ["no sshd session was serving the job when the link was dropped"]
        if fault == "drop-twice":
            again = host.wait_until(lambda: lab.clocks.pins() >= 2 and lab.clocks.state() == "pinned", 90)
            if not again:
                return [f"the retry never pinned the clocks again (calls: {'; '.join(lab.clocks.log()[-4:])})"]
            lab.sshd.kill_sessions(what_they_ran=False)
    return []


def exit_left(fault: str, stage: str, rc: int, host) -> list:
    expected = EXPECTED_EXIT[fault] | ({0} if stage == "bundle" and fault in SIGNALS else set())
    left = [] if rc in expected else [f"host exit {rc} after {fault} (expected {sorted(expected)}): {host.tail()}"]
    if fault != "sigkill" and "Traceback" in host.stderr():
        left.append(f"the host printed a traceback: {host.tail(1)}")
    return left


def resume_left(fault: str, stage: str, host) -> list:
    """--resume must go on from the checkpoint: the distilled student after distillation, else at
    least the last periodic checkpoint (Ctrl-C and SIGTERM save at the step boundary they stop at)."""
    said = host.saw(r"--resume: continuing .*step (\d+)")
    if said is None:
        return [f"--resume did not continue from a checkpoint: {host.saw('--resume') or host.tail(1)}"]
    step = int(re.search(r"step (\d+)", said).group(1))
    saved_at_stop = STRIKE_AT_STEP if fault in ("sigint", "sigterm") else CHECKPOINT_EVERY
    least = saved_at_stop if stage == "distill" else DISTILL_STEPS
    return [] if step >= least else [f"--resume continued at step {step}, expected at least {least}: {said}"]


@pytest.mark.parametrize("fault, stage, transport", list(cases()))
def test_a_fault_leaves_the_device_restored_and_no_partial_bundle(make_lab, record, tmp_path, fault, stage, transport):
    lab = make_lab(transport)
    target = TARGETS[transport]
    sets = (f"bench.seconds={BENCH_SECONDS if stage == 'bench' else 0}",)
    started = time.monotonic()
    left, rc, rc_resume = [], None, None
    try:
        host = lab.deploy(transport, *sets)
        reached = host.wait_until(strike_point(stage, transport, lab, host))
        if not reached:
            rc = host.finish()
            left.append(f"the run ended (exit {rc}) before reaching the {stage} stage: {host.tail()}")
        else:
            left += strike(fault, host, lab)
            rc = host.finish()
            left += exit_left(fault, stage, rc, host)
        copy_log(host, tmp_path / "host.log")
        settle = SETTLE_S + (JOB_TIMEOUT_S if fault == "sigkill" and transport == "adb" else 0)
        left += [f"after the fault: {x}" for x in lab.wait_clean(lambda: lab.device_left(transport), settle)]
        if fault != "sigkill":  # a killed host cannot clean up: the next run must (checked after --resume)
            left += [f"after the fault: {x}" for x in lab.wait_clean(lambda: lab.host_left(rc == 0))]
        left += [f"after the fault: {x}" for x in lab.bundle_left(target) + clocks_reported_left(lab, target)]
        if reached and rc != 0:
            rc_resume = resume_and_check(lab, transport, target, sets, fault, stage, tmp_path, left)
    finally:
        record(left, fault=fault, stage=stage, transport=transport, exit=rc, resume_exit=rc_resume,
               seconds=round(time.monotonic() - started, 1))
    assert not left, "\n".join(left)


def resume_and_check(lab, transport: str, target: str, sets: tuple, fault: str, stage: str, tmp_path, left: list):
    again = lab.deploy(transport, *sets, flags=("--resume",), name="resume")
    rc = again.finish()
    copy_log(again, tmp_path / "resume.log")
    if rc != 0:
        left.append(f"--resume exit {rc}: {again.tail()}")
    else:
        left += resume_left(fault, stage, again)
        if not (lab.out / f"net-{target}").is_dir():
            left.append("--resume exited 0 but published no bundle")
    left += [f"after --resume: {x}" for x in lab.wait_clean(lambda: lab.device_left(transport))]
    left += [f"after --resume: {x}" for x in lab.wait_clean(lambda: lab.host_left(rc == 0))]
    left += [f"after --resume: {x}" for x in lab.bundle_left(target) + clocks_reported_left(lab, target)]
    return rc
