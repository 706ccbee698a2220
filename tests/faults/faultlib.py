"""The fault suite's lab: a user's model file and data, a device inventory with an ssh "Jetson"
(real OpenSSH on 127.0.0.1, tests/sshd.py, with the fake jetson_clocks of fakes/) and a phone
(the adb stand-in, tests/adb_standin.py, with its fake benchmark_model), the real CLI in a
subprocess whose stderr is watched for the moment to strike, and the checks of what a fault left
behind. Each check returns plain sentences, so a failed case says what it found."""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import yaml

from ecutil import FAST, make_data
from ecutil import train_weights as train_model_weights

FAKES = Path(__file__).parent / "fakes"
HOST_TIMEOUT_S = 300.0  # a host run that takes longer is hung: killed and reported
SETTLE_S = 15.0  # after a fault, how long the device side may take to restore and clean up
JOB_TIMEOUT_S = 30.0  # the inventory's job timeout: a phone watchdog's deadline follows from it
POLL_S = 0.005

# A model as users write one: its own classes, a residual block whose add ties two convolutions'
# channels together (the pruner must cut them as one group), a factory function.
MODEL_SRC = '''
import torch.nn as nn


class Residual(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class Net(nn.Module):
    def __init__(self, width=WIDTH, classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = Residual(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


def build():
    return Net()
'''
CLASSES = 4

# FAST (tests/ecutil.py) with a distillation long enough to be caught in: a progress line every 3
# steps, a checkpoint every 10, so a fault at step 12 or later has a checkpoint to resume from.
DISTILL_STEPS, CHECKPOINT_EVERY, STRIKE_AT_STEP = 30, 10, 12
TARGETS = {"ssh": "host-cpu", "adb": "android-arm64", "local": "host-cpu"}
DEVICES = {"ssh": "jet", "adb": "pixel", "local": None}


def write_model(folder: Path, width: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "net.py"
    path.write_text(MODEL_SRC.replace("WIDTH", str(width)))
    return path


def train_weights(path: Path, steps: int = 100) -> Path:
    """A briefly trained state_dict for the lab's model: clear margins between the classes, so the
    INT8 parity check passes for the model's sake and never by luck of near-tied random logits."""
    return train_model_weights(path, *make_data(), steps=steps, source=MODEL_SRC.replace("WIDTH", "16"))


def write_data(path: Path) -> Path:
    x, y = make_data()
    np.savez(path, x=x, y=y)
    return path


def cli() -> List[str]:
    script = Path(sys.executable).with_name("edgecompress")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from edgecompress.cli import main; sys.exit(main())"]


def settings(*extra: str) -> List[str]:
    pairs = [p for p in FAST if not p.startswith(("distill.steps=", "distill.checkpoint_every="))]
    pairs += [f"distill.steps={DISTILL_STEPS}", f"distill.checkpoint_every={CHECKPOINT_EVERY}", *extra]
    return [arg for pair in pairs for arg in ("--set", pair)]


# A shell starts background jobs with SIGINT ignored, and a Python started so never raises
# KeyboardInterrupt: the host is started with SIGINT back to default, so a Ctrl-C case means the same
# in a terminal, under CI or from `benchmarks/faults.py &`.
WITH_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
               "os.execv(sys.argv[1], sys.argv[1:])")


class Host:
    """The CLI in a subprocess, in its own process group (a terminal's Ctrl-C reaches the whole
    group), with its stderr lines collected as they come."""

    def __init__(self, argv: List[str], env: dict, cwd: Path, name: str = "host"):
        self.argv, self.name, self.lines = argv, name, []
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", WITH_SIGINT, *argv], env=env, cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, errors="replace", start_new_session=True)
        self.stdout: List[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def saw(self, pattern: str) -> Optional[str]:
        rx = re.compile(pattern)
        return next((line for line in list(self.lines) if rx.search(line)), None)

    def wait_until(self, ready: Callable[[], bool], timeout_s: float = HOST_TIMEOUT_S) -> bool:
        """True as soon as ready() holds while the host still runs; False when it ended first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return True
            if not self.alive():
                return ready()
            time.sleep(POLL_S)
        return False

    def finish(self, timeout_s: float = HOST_TIMEOUT_S) -> int:
        try:
            self.proc.wait(timeout=max(1.0, timeout_s - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.lines.append(f"[fault suite: {self.name} hung for {timeout_s:.0f} s and was killed]")
            _killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        return self.proc.returncode

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def tail(self, n: int = 3) -> str:
        useful = [line for line in self.lines if line.strip()]
        return " | ".join(useful[-n:]) or "(no output)"


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- processes and locks

def _proc_cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _proc_cwd(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def parent_pid(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1]
    except (OSError, IndexError):
        return ""


def processes(under: Path, needle: str = "") -> List[str]:
    """'PID CMDLINE' of live processes that work under a folder (their cwd or an argument is in it)
    and whose command line holds `needle`; zombies are gone already, so they are not counted."""
    root, found, me = str(under), [], str(os.getpid())
    for entry in Path("/proc").glob("[0-9]*"):
        pid = entry.name
        if pid == me:
            continue
        cmd = _proc_cmdline(pid)
        if not cmd or needle not in cmd:
            continue
        if _proc_cwd(pid).startswith(root) or root in cmd:
            found.append(f"{pid} {cmd.strip()[:160]}")
    return found


def kill_processes(under: Path) -> None:
    """The case's own leftovers, once recorded: never leave them to the next case."""
    for line in processes(under):
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def held(lock: Path) -> bool:
    """Whether some living process holds a flock on the file (we can't take it at once)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the case's lab

class Clocks:
    """The fake Jetson's clock state and its call log."""

    def __init__(self, folder: Path):
        self.state_file, self.log_file = folder / "clocks.state", folder / "clocks.log"
        self.state_file.write_text("default\n")
        self.log_file.touch()

    def state(self) -> str:
        try:
            return self.state_file.read_text().strip()
        except OSError:
            return "unreadable"

    def log(self) -> List[str]:
        return [line.split(" ", 2)[2] for line in self.log_file.read_text().splitlines() if line.count(" ") >= 2]

    def pins(self) -> int:
        return sum(1 for line in self.log() if line.startswith("pin "))


class Lab:
    """One case's world: its folder, model, data, --out, inventory, clock state and phone."""

    def __init__(self, folder: Path, sshd, adb_server, serial: str, weights: Path):
        from adb_standin import Phone, PowerProfile, write_fake_benchmark_model

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.model, self.weights = write_model(folder / "model"), weights
        self.data = write_data(folder / "data.npz")
        self.out = folder / "out"
        self.tmp = folder / "tmp"  # the host's TMPDIR: the local runner's job folders go here
        self.tmp.mkdir()
        self.clocks = Clocks(folder)
        self.jet_workdir = folder / "jet-workdir"
        self.sshd, self.adb_server, self.serial = sshd, adb_server, serial
        self.phone = Phone(folder / "phone", serial, PowerProfile(idle_mw=900, run_mw=2500))
        adb_server.phones[serial] = self.phone
        self.inventory = folder / "devices.yaml"
        self.inventory.write_text(yaml.safe_dump({"devices": {
            "jet": self._ssh_entry(),
            "pixel": {"target": "android-arm64", "transport": "adb", "serial": serial,
                      "benchmark_model": str(write_fake_benchmark_model(folder / "benchmark_model")),
                      "job_timeout_s": JOB_TIMEOUT_S}}}))

    def _ssh_entry(self) -> dict:
        wrapper = self.folder / "device-python"
        # the device's interpreter with the board's tools on PATH (sshd passes no environment)
        wrapper.write_text("#!/bin/sh\n"
                           f"PATH='{FAKES}':\"$PATH\"; export PATH\n"
                           f"EC_FAKE_CLOCKS_STATE='{self.clocks.state_file}'; export EC_FAKE_CLOCKS_STATE\n"
                           f"EC_FAKE_CLOCKS_LOG='{self.clocks.log_file}'; export EC_FAKE_CLOCKS_LOG\n"
                           f"exec '{sys.executable}' \"$@\"\n")
        wrapper.chmod(0o755)
        return {"target": "host-cpu", "transport": "ssh", "host": "127.0.0.1", "port": self.sshd.port,
                "user": self.sshd.user, "key": str(self.sshd.client_key), "known_hosts": str(self.sshd.known_hosts),
                "python": str(wrapper), "workdir": str(self.jet_workdir), "connect_timeout_s": 10.0,
                "job_timeout_s": JOB_TIMEOUT_S}

    def env(self) -> dict:
        env = dict(os.environ, EDGECOMPRESS_PROGRESS="1", EDGECOMPRESS_DEVICES=str(self.inventory),
                   ANDROID_ADB_SERVER_PORT=str(self.adb_server.port), TMPDIR=str(self.tmp), PYTHONUNBUFFERED="1")
        env.pop("ADB_SERVER_SOCKET", None)
        return env

    def deploy(self, transport: str, *extra: str, flags: tuple = (), model: Optional[Path] = None,
               name: str = "deploy") -> Host:
        """`edgecompress deploy` of the lab's model for the transport; extra: --set pairs."""
        argv = cli() + ["deploy", f"{model or self.model}:build", "--target", TARGETS[transport], "--data",
                        str(self.data), "--out", str(self.out), *flags]
        if model is None:
            argv += ["--weights", str(self.weights)]
        if DEVICES[transport]:
            argv += ["--device", DEVICES[transport]]
        if transport == "ssh":
            argv.append("--lock-clocks")
        if transport == "adb":
            extra = ("bench.energy=battery",) + extra  # so charging is suspended, and must come back
        return Host(argv + settings(*extra), self.env(), self.folder, name)

    def bench(self, artifact: Path, device: str, *extra: str, name: str = "bench") -> Host:
        argv = cli() + ["bench", str(artifact), "--device", device, *extra]
        return Host(argv, self.env(), self.folder, name)

    def close(self) -> None:
        kill_processes(self.folder)
        self.adb_server.phones.pop(self.serial, None)
        self.phone.close()

    # ------------------------------------------------------------ what a fault left behind

    def phone_base(self) -> Path:
        return self.phone.root / "data/local/tmp/edgecompress"

    def device_left(self, transport: str) -> List[str]:
        """Sentences for each way the device is not as it was found; [] when it is."""
        if transport == "ssh":
            return self._jetson_left()
        if transport == "adb":
            return self._phone_left()
        return [f"benchmark process left running: {p}" for p in processes(self.tmp, "ec_bench")]

    def _jetson_left(self) -> List[str]:
        left = []
        if self.clocks.state() != "default":
            left.append(f"Jetson clocks left {self.clocks.state()} (calls: {'; '.join(self.clocks.log()[-4:])})")
        jobs = self.jet_workdir / "jobs"
        folders = sorted(p.name for p in jobs.glob("job-*")) if jobs.is_dir() else []
        if folders:
            left.append(f"job folder(s) left on the device: {', '.join(folders)}")
        if held(self.jet_workdir / "device.lock"):
            left.append("device lock still held")
        left += [f"device process left running: {p}" for p in processes(self.jet_workdir)]
        return left

    def _phone_left(self) -> List[str]:
        left = []
        battery = self.phone.calls("dumpsys battery")
        if "dumpsys battery unplug" in battery and battery[-1] != "dumpsys battery reset":
            left.append(f"phone charging left suspended (battery calls: {', '.join(battery)})")
        folders = [p.name for p in self.phone.job_folders()]
        if folders:
            left.append(f"job folder(s) left on the phone: {', '.join(folders)}")
        if (self.phone_base() / "lock").exists():
            owner = self.phone_base() / "lock" / "owner"
            left.append(f"phone lock left ({owner.read_text().strip() if owner.is_file() else 'no owner'})")
        left += [f"benchmark_model left running: {p}" for p in processes(self.phone.root, "benchmark_model")]
        return left

    def host_left(self, after_clean_exit: bool) -> List[str]:
        """Leftovers on the host: hidden temporary bundle paths, held locks, local job folders, and
        after a run that finished, its work folder."""
        left = []
        if self.out.is_dir():
            for entry in sorted(self.out.iterdir()):
                if entry.name.startswith(".") and "tmp" in entry.name and "work" not in entry.name:
                    left.append(f"temporary bundle path left in --out: {entry.name}")
                elif after_clean_exit and entry.name.startswith(".") and "work" in entry.name:
                    left.append(f"work folder left after the run finished: {entry.name}")
            left += [f"lock still held: {p.relative_to(self.out)}" for p in self.out.rglob("*lock*")
                     if p.is_file() and held(p)]
        stale = sorted(p.name for p in self.tmp.glob("edgecompress-*"))
        if stale:
            left.append(f"local job folder(s) left in TMPDIR: {', '.join(stale)}")
        return left

    def bundle_left(self, target: str) -> List[str]:
        """A published bundle must be whole (folder and zip), verify, and hold the model its
        manifest describes; [] when none is published or it is sound."""
        folder = self.out / f"net-{target}"
        zipped = self.out / f"net-{target}.zip"
        if not folder.exists() and not zipped.exists():
            return []
        if folder.exists() != zipped.exists():
            return [f"half-published bundle: {'folder' if folder.exists() else 'zip'} only"]
        left = []
        done = subprocess.run(cli() + ["verify", str(folder)], env=self.env(), cwd=self.folder,
                              capture_output=True, text=True, timeout=HOST_TIMEOUT_S)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
            left.append(f"published {folder.name} fails verify (exit {done.returncode}): {tail}")
        return left + zip_matches_folder(zipped, folder) + model_matches_manifest(folder)

    def wait_clean(self, check: Callable[[], List[str]], settle_s: float = SETTLE_S) -> List[str]:
        """The check's findings once it comes back clean, or what is still left after settle_s."""
        deadline = time.monotonic() + settle_s
        while True:
            left = check()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.25)


def zip_matches_folder(zipped: Path, folder: Path) -> List[str]:
    """The zip holds the verified folder's files byte for byte (verify on the folder read them; a
    second verify run on the zip would only repeat that, at the cost of a process start)."""
    import hashlib
    import zipfile

    try:
        with zipfile.ZipFile(zipped) as zf:
            inside = {i.filename.split("/", 1)[-1]: hashlib.sha256(zf.read(i)).hexdigest()
                      for i in zf.infolist() if not i.is_dir()}
    except (OSError, zipfile.BadZipFile) as exc:
        return [f"published {zipped.name} cannot be read: {exc}"]
    here = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}
    return [] if inside == here else [f"published {zipped.name} differs from the folder {folder.name}: "
                                      f"{sorted(set(inside.items()) ^ set(here.items()))[:3]}"]


def model_matches_manifest(folder: Path) -> List[str]:
    """The model file's own inputs and outputs against the manifest's description of them."""
    manifest = json.loads((folder / "manifest.json").read_text())
    described = manifest.get("model", {})
    path = folder / described.get("file", "model.onnx")
    if path.suffix != ".onnx" or not path.is_file():
        return []
    import onnx

    graph = onnx.load(str(path)).graph
    inits = {i.name for i in graph.initializer}
    have = {"inputs": [i.name for i in graph.input if i.name not in inits], "outputs": [o.name for o in graph.output]}
    left = []
    for side in ("inputs", "outputs"):
        listed = [entry.get("name") for entry in described.get(side, []) if isinstance(entry, dict)]
        if listed and listed != have[side]:
            left.append(f"{path.name}'s {side} {have[side]} differ from the manifest's {listed}")
    return left


def classifier_width(model: Path) -> Optional[int]:
    """The classifier's input width in an exported model: the 2-D weight with CLASSES on one side."""
    import onnx

    for init in onnx.load(str(model)).graph.initializer:
        dims = list(init.dims)
        if len(dims) == 2 and CLASSES in dims:
            return dims[1] if dims[0] == CLASSES else dims[0]
    return None


def find_in(value, key: str) -> list:
    """Every value stored under `key` anywhere in a JSON document."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += [v] if k == key else []
            found += find_in(v, key)
    elif isinstance(value, list):
        for v in value:
            found += find_in(v, key)
    return found


def clocks_reported_left(lab: Lab, target: str) -> List[str]:
    """A bundle measured with --lock-clocks must not record pinned clocks as the device's own state."""
    manifest = lab.out / f"net-{target}" / "manifest.json"
    if not manifest.is_file():
        return []
    doc = json.loads(manifest.read_text())
    before = [line for v in find_in(doc, "jetson_clocks_show_before") for line in (v or []) if "pinned" in str(line)]
    return ["the manifest records the clocks before the measurement as pinned (a retry stored the pinned state as "
            "the baseline)"] if before else []


def copy_log(host: Host, into: Path) -> None:
    into.write_text(f"$ {' '.join(host.argv)}\nexit {host.proc.returncode}\n{host.stderr()}\n")


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
