"""The ssh runner end to end against a real OpenSSH server on 127.0.0.1 (tests/sshd.py): real
keys, real known_hosts, a real device-side process; the workdir has a space and a quote in it."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgecompress.errors import DeviceError, InputError
from edgecompress.inventory import Device
from edgecompress.runners import RUNNERS, device_side_dir

pytest.importorskip("asyncssh", reason="the ssh runner needs asyncssh: pip install 'edgecompress[ssh]'")

from edgecompress.runners import ssh  # noqa: E402
from edgecompress.runners.ssh import check_ssh, run_ssh  # noqa: E402
from sshd import free_port, keygen  # noqa: E402
from ecutil import processes_inside, tripling_model, wait_until  # noqa: E402


def job(**changes):
    base = {"protocol_version": 1, "runtime": "onnxruntime", "runtime_options": {"threads": 1},
            "warmup": {"runs": 3}, "runs": {"count": 20}}
    base.update(changes)
    return base


LONG = dict(runs={"count": 1, "seconds": 60}, max_runs=10**9)


@pytest.fixture
def model(tmp_path):
    return tripling_model(tmp_path / "tiny net's model.onnx")


@pytest.fixture
def workdir(tmp_path):
    return tmp_path / "work dir'x"


@pytest.fixture
def device(sshd, workdir):
    return sshd.device(workdir)


def job_folders(workdir: Path) -> list:
    jobs = workdir / "jobs"
    return sorted(jobs.iterdir()) if jobs.is_dir() else []


def test_the_ssh_runner_is_registered_and_imports_nothing_heavy():
    from edgecompress.runners.ssh import SshRunner

    assert RUNNERS.get("ssh") is SshRunner and not SshRunner.stoppable
    code = ("import sys, edgecompress.runners.ssh; print(sorted(m for m in ('asyncssh', 'torch', 'onnx', "
            "'onnxruntime', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    agent = Path(ssh.__file__).with_name("ssh_agent.py").read_text()
    assert f'PREFIX = "{ssh.AGENT_PREFIX}"' in agent and f'FOLDER_LOCK = "{ssh.AGENT_FOLDER_LOCK}"' in agent


def test_the_remote_command_survives_the_device_shell_unchanged(tmp_path):
    """What the login shell gets is quoted word by word: `~/` alone is left to the device's $HOME."""
    fake = tmp_path / "bin dir" / "py'x"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import json, sys; print(json.dumps(sys.argv))' \"$@\"\n")
    fake.chmod(0o755)
    workdir = "~/w d'q $HOME `id` \\ \"x\""
    device = Device(name="d", target="host-cpu", host="h", python="~/bin dir/py'x", workdir=workdir)
    command = ssh._agent_command(device, True, 5.0)
    for shell in ("sh", "bash"):
        done = subprocess.run([shell, "-c", command], capture_output=True, text=True, check=True,
                              env=dict(os.environ, HOME=str(tmp_path)))
        argv = json.loads(done.stdout)
        assert argv[1:3] == ["-c", ssh._agent_source()]
        assert json.loads(argv[3])["workdir"] == workdir


@pytest.mark.skipif(shutil.which("vermin") is None and not Path(sys.executable).with_name("vermin").exists(),
                    reason="vermin is not installed (pip install -e '.[dev]')")
def test_the_device_end_runs_on_python_3_8():
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    agent = Path(ssh.__file__).with_name("ssh_agent.py")
    done = subprocess.run([vermin, "-t=3.8-", "--no-tips", "--violations", str(agent)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_benchmark_runs_on_the_device_in_a_private_folder_that_is_removed(device, model, workdir, tmp_path):
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8) + 0.5
    np.save(tmp_path / "batch.npy", x)
    messages, modes = [], []

    def progress(message):
        messages.append(message)
        if message.startswith("loading"):
            modes.extend(stat.S_IMODE(p.stat().st_mode) for p in job_folders(workdir))

    result = run_ssh(job(inputs={"npy": {"x": "x.npy"}}, report_outputs=True), model, device=device,
                     extra_files={"x.npy": tmp_path / "batch.npy"}, on_progress=progress)
    latency = result["latency_ms"]
    assert latency["n"] >= 20 and 0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
    assert (result["runner"], result["measured_on"], result["device_name"]) == ("ssh", "device", "test-device")
    assert result["device"]["runtime"] == "onnxruntime" and result["device"]["arch"]
    assert result["outputs"][0]["sum"] == pytest.approx(3 * float(x.sum()), rel=1e-6)
    assert messages[0] == "loading tiny net's model.onnx with onnxruntime"
    assert modes == [0o700]
    assert job_folders(workdir) == []


def test_two_jobs_on_one_device_never_overlap(device, model):
    seen = {"a": [], "b": []}
    a_started = threading.Event()
    results = {}

    def run(name, job_):
        def progress(message):
            seen[name].append((time.monotonic(), message))
            if message.startswith("loading"):
                a_started.set()
        results[name] = run_ssh(job_, model, device=device, on_progress=progress)

    a = threading.Thread(target=run, args=("a", job(runs={"count": 20, "seconds": 1.0})))
    a.start()
    assert a_started.wait(30)
    b = threading.Thread(target=run, args=("b", job()))
    b.start()
    a.join(60)
    b.join(60)
    assert set(results) == {"a", "b"}

    def bench_window(name):
        times = [t for t, m in seen[name] if not m.startswith("waiting")]
        return times[0], times[-1]

    (_, a_end), (b_start, _) = bench_window("a"), bench_window("b")
    assert a_end < b_start, "job b ran while job a held the device"
    waits = [m for _, m in seen["b"] if m.startswith("waiting")]
    assert waits and waits[0].startswith("waiting for device test-device: busy with job from host "
                                         f"{socket.gethostname()} (pid {os.getpid()}")


def test_a_busy_device_is_waited_for_then_given_up_with_the_owner(device, model, workdir):
    workdir.mkdir()
    with open(workdir / "device.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(json.dumps({"host": "other-laptop", "pid": 4242, "user": "ana", "since": "2030-01-01 10:00:00 UTC"}))
        held.flush()
        messages = []
        started = time.monotonic()
        with pytest.raises(DeviceError) as caught:
            run_ssh(job(), model, device=device, on_progress=messages.append, timeout_s=1.5)
    assert time.monotonic() - started < 10
    assert "stayed busy for 1.5 s with job from host other-laptop (pid 4242, user ana) since 2030-01-01" \
        in str(caught.value)
    assert messages[0].startswith("waiting for device test-device: busy with job from host other-laptop")
    assert job_folders(workdir) == []


def test_an_unknown_host_is_refused_with_the_command_that_trusts_it(sshd, model, tmp_path):
    known_hosts = tmp_path / "my known_hosts"
    device = sshd.device(tmp_path / "w", known_hosts=str(known_hosts))
    with pytest.raises(DeviceError) as caught:
        run_ssh(job(), model, device=device)
    message = str(caught.value)
    command = f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> '{known_hosts}'"
    assert f"device test-device ({sshd.user}@127.0.0.1:{sshd.port}) is not in {known_hosts}" in message
    assert command in message and "fingerprint" in message and "SHA256:" in message
    assert not (tmp_path / "w").exists(), "nothing may run on an unverified host"
    subprocess.run(command, shell=True, check=True, capture_output=True)  # the user follows the advice
    assert run_ssh(job(), model, device=device)["measured_on"] == "device"


def test_a_changed_host_key_is_refused_loudly(sshd, model, tmp_path):
    other = keygen(tmp_path / "other_host_key", "impostor")
    known_hosts = tmp_path / "known_hosts"
    kind, blob = Path(f"{other}.pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    with pytest.raises(DeviceError) as caught:
        run_ssh(job(), model, device=sshd.device(tmp_path / "w", known_hosts=str(known_hosts)))
    message = str(caught.value)
    assert message.startswith("HOST KEY CHANGED for device test-device")
    assert "ssh-keygen -R" in message and "ssh-keyscan" not in message
    assert not (tmp_path / "w").exists()


def probe_dir(tmp_path) -> Path:
    """The device side as shipped; with a stand-in ec_probe.py until the real one lands."""
    if (device_side_dir() / ssh.PROBE_SCRIPT).is_file():
        return device_side_dir()
    folder = tmp_path / "deploy"
    shutil.copytree(device_side_dir(), folder)
    (folder / ssh.PROBE_SCRIPT).write_text(
        "import json, platform\nimport onnxruntime\n"
        "print(json.dumps({'hostname': platform.node(), 'arch': platform.machine(), "
        "'python': platform.python_version(), 'runtimes': {'onnxruntime': onnxruntime.__version__}, "
        "'power_sources': []}))\n")
    return folder


def test_check_reports_the_device_through_an_ssh_config_alias(sshd, tmp_path, monkeypatch):
    monkeypatch.setattr(ssh, "device_side_dir", lambda: probe_dir(tmp_path))
    config = tmp_path / "ssh config"
    config.write_text(f"Host lab-pi\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
                      f"  IdentityFile {sshd.client_key}\n  IdentitiesOnly yes\n")
    wrapper = tmp_path / "py dir'q" / "python3"  # a device python whose path needs quoting
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    device = sshd.device(tmp_path / "work dir'x", host="lab-pi", port=None, user=None, key=None,
                         ssh_config=str(config), python=str(wrapper))
    info = check_ssh(device)
    assert (info["host"], info["port"], info["user"]) == ("127.0.0.1", sshd.port, sshd.user)
    assert info["arch"] and info["python"].count(".") == 2 and "onnxruntime" in info["runtimes"]
    assert 0 < info["connect_s"] < 10 and info["busy"] is None
    assert job_folders(tmp_path / "work dir'x") == []



def test_a_dropped_connection_is_retried_once_then_reported_and_leaves_nothing_stale(sshd, device, model,
                                                                                      workdir):
    kills = {"left": 1, "all": True}
    messages = []

    def drop(message):
        messages.append(message)
        if message.startswith("loading") and kills["left"] > 0:
            kills["left"] -= 1
            sshd.kill_sessions(what_they_ran=kills["all"])

    # the session and everything it ran die at once: the folder is left for the next connect
    assert run_ssh(job(), model, device=device, on_progress=drop)["measured_on"] == "device"
    assert any(m.startswith("connection to device test-device dropped while running the benchmark of tiny net's "
                            "model.onnx; retrying on a new connection") for m in messages)
    assert job_folders(workdir) == [], "the retry's connect removed the folder its killed attempt left"

    # only the link dies, twice: the device side sees its stdin close, kills the job and cleans up
    kills.update(left=2, all=False)
    with pytest.raises(DeviceError) as caught:
        run_ssh(job(**LONG), model, device=device, on_progress=drop)
    message = str(caught.value)
    assert f"the connection to device test-device ({sshd.user}@127.0.0.1:{sshd.port}) dropped while running " \
           "the benchmark of tiny net's model.onnx" in message
    assert "again after one retry on a new connection" in message and "devices check test-device" in message
    assert wait_until(lambda: processes_inside(workdir) == [] and job_folders(workdir) == [])

    messages.clear()
    started = time.monotonic()
    run_ssh(job(), model, device=device, on_progress=drop)
    assert time.monotonic() - started < 10
    assert not any(m.startswith("waiting") for m in messages), "no stale lock"
    assert job_folders(workdir) == []


def test_an_exception_in_the_progress_callback_stops_the_job_on_the_device(device, model, workdir):
    def interrupt(message):
        if message.startswith("timed"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ssh(job(**LONG), model, device=device, on_progress=interrupt)
    assert wait_until(lambda: processes_inside(workdir) == [] and job_folders(workdir) == [])


def test_a_job_timeout_kills_the_job_on_the_device(device, model, workdir):
    started = time.monotonic()
    with pytest.raises(DeviceError) as caught:
        run_ssh(job(**LONG), model, device=device, timeout_s=3)
    assert time.monotonic() - started < 15
    message = str(caught.value)
    assert ("the benchmark of tiny net's model.onnx on device test-device (" in message
            and "did not finish within the job timeout of 3 s and was killed" in message)
    assert "last progress: timed " in message
    assert processes_inside(workdir) == []
    assert job_folders(workdir) == []


def test_a_failing_job_names_the_device_and_keeps_the_reason(device, tmp_path, workdir):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage, not an onnx protobuf")
    with pytest.raises(DeviceError) as caught:
        run_ssh(job(), corrupt, device=device)
    message = str(caught.value)
    assert "the benchmark of corrupt.onnx failed on device test-device (" in message
    assert "loading corrupt.onnx with onnxruntime failed" in message
    assert job_folders(workdir) == []
    with pytest.raises(DeviceError, match="could not start the device side with `/no/such/python`"):
        run_ssh(job(), corrupt, device=device.model_copy(update={"python": "/no/such/python"}))


def test_login_problems_are_device_errors_that_say_what_to_do(sshd, device, model, tmp_path):
    stranger = keygen(tmp_path / "stranger", "not-authorized")
    with pytest.raises(DeviceError, match="refused the key login.*\n.*ssh-copy-id"):
        run_ssh(job(), model, device=device.model_copy(update={"key": str(stranger)}))
    with pytest.raises(DeviceError, match=r"cannot reach device test-device \(.*:\d+\)"):
        run_ssh(job(), model, device=device.model_copy(update={"port": free_port()}))
    with socket.socket() as silent:  # accepts TCP, never says a word of SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(DeviceError, match="could not connect to device test-device .* within 1 s"):
            run_ssh(job(), model, device=device.model_copy(
                update={"port": silent.getsockname()[1], "connect_timeout_s": 1.0}))
        assert time.monotonic() - started < 5
    with pytest.raises(InputError, match="device 'test-device': key file .*nothing does not exist"):
        run_ssh(job(), model, device=device.model_copy(update={"key": str(tmp_path / "nothing")}))
    with pytest.raises(InputError, match="model file not found"):
        run_ssh(job(), tmp_path / "missing.onnx", device=device)


def test_ssh_habits_in_devices_yaml_are_input_errors_that_say_the_fix(sshd, device, model, workdir):
    public = Path(f"{sshd.client_key}.pub")
    with pytest.raises(InputError) as caught:
        run_ssh(job(), model, device=device.model_copy(update={"key": str(public)}))
    assert f"device 'test-device': key file {public} is a public key" in str(caught.value)
    assert f"use the private key, without .pub: devices.test-device.key: {sshd.client_key}" in str(caught.value)
    with pytest.raises(InputError) as caught:
        run_ssh(job(), model, device=device.model_copy(update={"host": f"{sshd.user}@127.0.0.1"}))
    assert f"device 'test-device': host '{sshd.user}@127.0.0.1' holds a user name as well" in str(caught.value)
    assert (f"split it in devices.yaml: devices.test-device.user: {sshd.user} and devices.test-device.host: "
            "127.0.0.1") in str(caught.value)
    assert not workdir.exists()


def test_the_job_writes_through_the_agent_and_shared_files_are_open_to_every_account(device, model, workdir):
    """The job's stderr is a pipe of the agent's own (so a dropped link never reaches it as EPIPE),
    and the files several device accounts share are 0666, jobs/ sticky and open to all."""
    seen = {}

    def progress(message):
        if message.startswith("loading") and not seen:
            for pid in processes_inside(workdir):
                agent_pid = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1]
                seen[pid] = (os.readlink(f"/proc/{pid}/fd/2"), os.readlink(f"/proc/{agent_pid}/fd/2"))

    run_ssh(job(), model, device=device, on_progress=progress)
    assert seen and all(job_stderr != agent_stderr for job_stderr, agent_stderr in seen.values()), seen
    for name in ("device.lock", "jobs.lock"):
        assert stat.S_IMODE((workdir / name).stat().st_mode) == 0o666, name
    assert stat.S_IMODE((workdir / "jobs").stat().st_mode) == 0o1777
