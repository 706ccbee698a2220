"""A stand-in adb server for tests: speaks the real adb host protocol on 127.0.0.1 (a free port),
as adbutils uses it, and plays the phone behind it with real `sh` in a sandbox folder.

Host side (what adbutils sends; see adbutils/_adb.py, _device_base.py, sync.py):
  `host:version`, `host:devices[-l]`, `host:tport:serial:S` (OKAY + 8-byte transport id),
  `host:transport:S`, `host-serial:S:features|get-state|get-serialno`; then on a transport
  `shell:CMD` (raw stream until close), `shell,v2:CMD` (packets: id byte, LE u32 length, data;
  1 stdout, 2 stderr, 3 exit code) and `sync:` (STAT, SEND path,mode + DATA/DONE -> OKAY,
  RECV -> DATA/DONE or FAIL, LIST, QUIT). Requests are a 4-hex-digit length and ASCII text;
  replies OKAY, or FAIL with a 4-hex-digit length and a message.

Phone side: shell commands run with `sh -c` in the sandbox, with /data/local/tmp,
/sys/class/power_supply and /sys/devices/system/cpu mapped into it (paths are rewritten in
commands and back in their output). A background thread drives the battery files and PowerStats
rail counters from a known power profile, high while the fake benchmark_model runs (its `busy`
flag) and low otherwise. Fake `dumpsys`, `taskset` and `getprop` log their calls.
`write_fake_benchmark_model` writes the user's "binary": a script that prints the real
benchmark_model output formats and sleeps as long as its flags ask.

As adbd does, a shell whose client closes the connection mid-command gets SIGHUP (its background
children, and anything under `nohup`, go on). `Phone.processes()` lists what still runs on the phone.

Simulated, not real: adbd itself, Android's toybox/mksh (dash or bash plays sh), the fuel gauge,
the PowerStats HAL and thermal service (`shell="mksh"` runs the phone's commands with mksh, Android's
/system/bin/sh, where it is installed). Real: the adb wire protocol, the sockets, the shell, the
files and processes on the "phone"."""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

PHONE_DIRS = ("/data/local/tmp", "/sys/class/power_supply", "/sys/devices/system/cpu")
POWERSTATS = "android.hardware.power.stats.IPowerStats/default"
FEATURES = "shell_v2,cmd,stat_v2,ls_v2,fixed_push_mkdir,apex,abb,fixed_push_symlink_timestamp,abb_exec"
PROPS = {"ro.product.model": "Stand-in Pixel", "ro.build.version.release": "14", "ro.build.version.sdk": "34",
         "ro.product.cpu.abi": "arm64-v8a"}


@dataclass
class PowerProfile:
    """Whole-phone power while idle and while benchmark_model runs, and how the fuel gauge reports
    it: current unit (uA per the Android contract, or mA), voltage unit, and sign (contract:
    negative while discharging; flipped: positive)."""

    idle_mw: float = 1000.0
    run_mw: float = 3000.0
    voltage_v: float = 3.85
    current_unit: str = "uA"
    voltage_unit: str = "uV"
    flipped: bool = False
    status: str = "Discharging"
    rails: Optional[Dict[str, tuple]] = None  # PowerStats rails: {RAIL: (subsystem, idle_mw, run_mw)}

    def readings(self, busy: bool) -> tuple:
        amps = (self.run_mw if busy else self.idle_mw) / 1000.0 / self.voltage_v
        current = amps * {"uA": 1e6, "mA": 1e3}[self.current_unit] * (1 if self.flipped else -1)
        voltage = self.voltage_v * {"uV": 1e6, "mV": 1e3}[self.voltage_unit]
        return int(round(current)), int(round(voltage))


def _python_script(body: str) -> str:
    return f"#!{sys.executable} -S\n" + textwrap.dedent(body)  # -S: no site-packages, a faster start


DUMPSYS = _python_script('''
    import json, os, sys, time
    root = os.environ["EC_STANDIN_ROOT"]
    args = sys.argv[1:]
    with open(os.path.join(root, "log", "calls.txt"), "a") as f:
        f.write("%.6f dumpsys %s\\n" % (time.monotonic(), " ".join(args)))
    state = os.path.join(root, "state")
    if args[:1] == ["battery"]:
        sys.exit(0)
    if args[:1] == ["thermalservice"]:
        status = open(os.path.join(state, "thermal_status")).read().strip()
        print("IsStatusOverride: false\\nThermal Status: %s\\nCached temperatures:" % status)
        print("\\tTemperature{mValue=31.5, mType=3, mName=battery, mStatus=0}")
        print("HAL Ready: true\\nCurrent temperatures from HAL:")
        print("\\tTemperature{mValue=41.25, mType=0, mName=cpu_big, mStatus=%s}" % status)
        print("\\tTemperature{mValue=31.5, mType=2, mName=battery, mStatus=0}")
        sys.exit(0)
    if args[:1] == ["@POWERSTATS@"]:
        rails_file = os.path.join(state, "rails.json")
        if not os.path.exists(rails_file):
            print("Can't find service: @POWERSTATS@")
            sys.exit(0)
        now = json.load(open(rails_file))
        last_file = os.path.join(state, "rails_last.json")
        last = json.load(open(last_file)) if os.path.exists(last_file) else {"t": now["t"], "mj": {}}
        json.dump(now, open(last_file, "w"))
        print("============= PowerStats HAL 2.0 energy meter ==============")
        print("Elapsed time: %d ms" % round((now["t"] - last["t"]) * 1000))
        for rail, (subsystem, mj) in sorted(now["mj"].items()):
            before = last["mj"].get(rail, [subsystem, 0.0])[1]
            print("  [%s]:%s   %.1f mWs (%.1f)" % (rail, subsystem, mj, mj - before))
        print("========== End of PowerStats HAL 2.0 energy meter ==========")
        sys.exit(0)
    print("Can't find service: %s" % args[0] if args else "usage: dumpsys SERVICE")
''').replace("@POWERSTATS@", POWERSTATS)

TASKSET = '''#!/bin/sh
echo "$(cut -d' ' -f1 /proc/uptime) taskset $*" >> "$EC_STANDIN_ROOT/log/calls.txt"
shift
exec "$@"
'''

GETPROP = _python_script('''
    import json, os, sys
    props = json.load(open(os.path.join(os.environ["EC_STANDIN_ROOT"], "state", "props.json")))
    print(props.get(sys.argv[1], "") if len(sys.argv) > 1 else "")
''')

FAKE_BENCHMARK_MODEL = _python_script(r'''
    """A stand-in for LiteRT's benchmark_model: prints its real output formats (devices.md) and
    sleeps for its --warmup_min_secs and --min_secs. Behaviour from $EC_STANDIN_ROOT/state/benchmark.json:
    format (info_percentiles | plain | all_same), latency_us, mode (ok | fail | hang)."""
    import os
    root = os.environ["EC_STANDIN_ROOT"]
    busy = os.path.join(root, "state", "busy")
    overlap = os.path.exists(busy)  # another benchmark_model still runs: two jobs at once
    open(busy, "w").close()  # first: a native binary is busy within milliseconds of its start
    import json, math, signal, sys, time
    cfg = json.load(open(os.path.join(root, "state", "benchmark.json")))
    log = os.path.join(root, "log", "benchmark_model.txt")

    def note(text):
        with open(log, "a") as f:
            f.write(text + "\n")

    def stop(*_):
        note("killed")
        if os.path.exists(busy):
            os.remove(busy)
        os._exit(143)

    signal.signal(signal.SIGTERM, stop)
    flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    note("argv " + json.dumps(sys.argv[1:]))
    note("pid %d" % os.getpid())
    if overlap:
        note("overlap")
    if not os.path.isfile(flags.get("graph", "")):
        print("ERROR: Could not open '%s'." % flags.get("graph"), flush=True)
        os.remove(busy)
        sys.exit(1)
    lat = cfg.get("latency_us", 20000.0)
    pre = "INFO: " if cfg["format"] != "plain" else ""
    print(pre + "The input model file size (MB): %.5f" % (os.path.getsize(flags["graph"]) / 1e6), flush=True)
    time.sleep(0.03)
    print(pre + "Initialized session in 30.5ms.", flush=True)
    if cfg.get("mode") == "fail":
        print("ERROR: Node number 3 (CONV_2D) failed to prepare.", flush=True)
        os.remove(busy)
        sys.exit(1)
    if cfg.get("mode") == "hang":
        time.sleep(600)
    warm = max(int(flags.get("warmup_runs", 1)), math.ceil(float(flags.get("warmup_min_secs", 0.5)) * 1e6 / lat))
    time.sleep(warm * lat / 1e6)
    print(pre + "count=%d first=%d curr=%d min=%d max=%d avg=%.1f std=%d" % (
        warm, lat * 2.5, lat, lat * 0.97, lat * 2.5, lat * 1.05, lat * 0.1), flush=True)
    n = max(int(flags.get("num_runs", 50)), math.ceil(float(flags.get("min_secs", 1.0)) * 1e6 / lat))
    time.sleep(n * lat / 1e6)
    if cfg["format"] == "all_same":
        print(pre + "count=%d curr=%d(all same)" % (n, lat))
    elif cfg["format"] == "plain":
        print("count=%d first=%d curr=%d min=%d max=%d avg=%.1f std=%d" % (n, lat, lat, lat * 0.98, lat * 1.1,
                                                                          lat, lat * 0.02))
    else:
        print("INFO: count=%d first=%d curr=%d min=%d max=%d avg=%.1f std=%d p5=%d median=%d p95=%d" % (
            n, lat, lat, lat * 0.98, lat * 1.1, lat, lat * 0.02, lat * 0.985, lat * 0.999, lat * 1.03))
    print(pre + "Inference timings in us: Init: 30500, First inference: %d, Warmup (avg): %.1f, Inference (avg): %.1f"
          % (lat * 2.5, lat * 1.05, lat))
    print(pre + "Memory footprint delta from the start of the tool (MB): init=54.2852 overall=73.4102")
    print(pre + "Overall peak memory footprint (MB) via periodic monitoring: 93.2383", flush=True)
    os.remove(busy)
    os._exit(0)  # no interpreter teardown: a native binary is gone right after its last output
''')


def write_fake_benchmark_model(path: Path) -> Path:
    """The user's benchmark_model binary, on the host (the runner pushes it to the phone)."""
    path.write_text(FAKE_BENCHMARK_MODEL)
    path.chmod(0o755)
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Phone:
    """The phone behind the server: a sandbox folder, fake tools, a battery driven by a profile."""

    def __init__(self, root: Path, serial: str, profile: PowerProfile, state: str = "device",
                 benchmark: Optional[dict] = None, thermal_status: int = 0, features: str = FEATURES,
                 shell: str = "sh"):
        if any(c in str(root) for c in "'\"\\ $`"):
            raise ValueError(f"sandbox path {root} must not need shell quoting (paths are rewritten in commands)")
        self.root, self.serial, self.profile, self.state, self.features = root, serial, profile, state, features
        for d in ("bin", "log", "state", *[p.lstrip("/") for p in PHONE_DIRS]):
            (root / d).mkdir(parents=True, exist_ok=True)
        # the phone's sh, also for the `sh` its commands start (Android's is mksh: shell="mksh")
        self.shell = str(root / "bin" / "sh")
        if os.path.lexists(self.shell):
            os.remove(self.shell)
        os.symlink(shutil.which(shell) or shell, self.shell)
        for name, text in (("dumpsys", DUMPSYS), ("taskset", TASKSET), ("getprop", GETPROP)):
            (root / "bin" / name).write_text(text)
            (root / "bin" / name).chmod(0o755)
        (root / "log" / "calls.txt").touch()
        self.battery = root / "sys/class/power_supply/battery"
        self.battery.mkdir(parents=True, exist_ok=True)
        (self.battery / "status").write_text(profile.status + "\n")
        for cpu in range(8):
            freq = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
            freq.mkdir(parents=True, exist_ok=True)
            (freq / "scaling_cur_freq").write_text("1803000\n" if cpu < 4 else "2850000\n")
            (freq / "scaling_governor").write_text("schedutil\n")
        (root / "state" / "props.json").write_text(json.dumps(PROPS))
        (root / "state" / "thermal_status").write_text(f"{thermal_status}\n")
        self.set_benchmark(**(benchmark or {}))
        self.env = dict(os.environ, PATH=f"{root / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                        EC_STANDIN_ROOT=str(root), HOME=str(root))
        self._stop = threading.Event()
        self._mj: Dict[str, list] = {r: [sub, 0.0] for r, (sub, _, _) in (profile.rails or {}).items()}
        self._tick(time.monotonic())
        self._thread = threading.Thread(target=self._drive, name=f"battery-{serial}", daemon=True)
        self._thread.start()

    def set_benchmark(self, format: str = "info_percentiles", latency_us: float = 20000.0, mode: str = "ok") -> None:
        (self.root / "state" / "benchmark.json").write_text(
            json.dumps({"format": format, "latency_us": latency_us, "mode": mode}))

    @property
    def busy(self) -> bool:
        return (self.root / "state" / "busy").exists()

    def _tick(self, now: float, dt: float = 0.0) -> None:
        """The readings at `now`; the rail counters integrate the power over the dt before it."""
        busy = self.busy
        current, voltage = self.profile.readings(busy)
        _atomic_write(self.battery / "current_now", f"{current}\n")
        _atomic_write(self.battery / "voltage_now", f"{voltage}\n")
        if self.profile.rails:
            for rail, (_, idle, run) in self.profile.rails.items():
                self._mj[rail][1] += (run if busy else idle) * dt
            _atomic_write(self.root / "state" / "rails.json", json.dumps({"t": now, "mj": self._mj}))

    def _drive(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.005):
            now = time.monotonic()
            self._tick(now, now - last)
            last = now

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    # -- paths and commands
    def to_host(self, text: str) -> str:
        for phone_dir in PHONE_DIRS:
            text = text.replace(phone_dir, str(self.root) + phone_dir)
        return text

    def to_phone(self, text: str) -> str:
        return text.replace(str(self.root), "")

    def host_path(self, path: str) -> Optional[Path]:
        """The sandbox file for a phone path, or None outside the mapped folders."""
        if not any(path == d or path.startswith(d + "/") for d in PHONE_DIRS):
            return None
        return Path(self.to_host(path))

    def run(self, command: str, client: Optional[socket.socket] = None) -> tuple:
        """(exit code, stdout, stderr) of `sh -c COMMAND` on the phone. When the `client` socket
        closes first, the shell gets SIGHUP, as adbd sends it (shell_service.cpp: "protocol FD
        died, sending SIGHUP"): the shell dies, its background children (started with `&`) do not."""
        proc = subprocess.Popen([self.shell, "-c", self.to_host(command)], cwd=self.root, env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        if client is not None:
            threading.Thread(target=_hang_up_when_gone, args=(client, proc), daemon=True).start()
        out, err = proc.communicate()
        fix = lambda b: self.to_phone(b.decode("utf-8", "replace")).encode()  # noqa: E731
        return proc.returncode, fix(out), fix(err)

    def pids(self) -> List[int]:
        """Live processes of the phone: those whose command line names a file in its sandbox."""
        return [pid for pid, _ in self._processes()]

    def processes(self) -> List[str]:
        """The command lines of the phone's live processes (phone paths), e.g. a benchmark_model left running."""
        return [self.to_phone(line) for _, line in self._processes()]

    def _processes(self) -> List[tuple]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            except OSError:  # ended meanwhile
                continue
            if str(self.root) + "/" in line:  # a zombie's command line is empty
                found.append((int(entry.name), line))
        return found

    def calls(self, tool: Optional[str] = None) -> List[str]:
        """Logged tool calls ("dumpsys battery reset", "taskset f0 /data/...") in order."""
        lines = (self.root / "log" / "calls.txt").read_text().splitlines()
        calls = [self.to_phone(line.split(" ", 1)[1]) for line in lines if " " in line]
        return [c for c in calls if tool is None or c.startswith(tool + " ")]

    def benchmark_log(self) -> List[str]:
        path = self.root / "log" / "benchmark_model.txt"
        return self.to_phone(path.read_text()).splitlines() if path.exists() else []

    def job_folders(self) -> List[Path]:
        return sorted((self.root / "data/local/tmp/edgecompress").glob("job-*"))


def _hang_up_when_gone(client: socket.socket, proc: subprocess.Popen) -> None:
    """SIGHUP to the shell once its client has closed the connection (data it sends is dropped)."""
    while proc.poll() is None:
        try:
            ready, _, _ = select.select([client], [], [], 0.05)
            gone = bool(ready) and not client.recv(4096)
        except (OSError, ValueError):  # closed on this side: the command has finished
            return
        if gone:
            try:
                os.kill(proc.pid, signal.SIGHUP)
            except ProcessLookupError:
                pass
            return


class _Conn:
    def __init__(self, sock: socket.socket):
        self.sock = sock

    def exact(self, n: int) -> Optional[bytes]:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def command(self) -> Optional[str]:
        size = self.exact(4)
        if size is None:
            return None
        body = self.exact(int(size, 16))
        return None if body is None else body.decode("utf-8")

    def okay(self, block: Optional[str] = None) -> None:
        data = b"OKAY"
        if block is not None:
            data += b"%04x" % len(block.encode()) + block.encode()
        self.sock.sendall(data)

    def fail(self, message: str) -> None:
        self.sock.sendall(b"FAIL" + b"%04x" % len(message.encode()) + message.encode())


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        standin: AdbStandIn = self.server.standin  # type: ignore[attr-defined]
        conn, phone = _Conn(self.request), None
        try:
            while True:
                command = conn.command()
                if command is None:
                    return
                standin.requests.append(command)
                if phone is None:
                    phone = standin.host_request(conn, command)
                    if phone is None:
                        return
                else:
                    standin.device_request(conn, phone, command)
                    return
        except (OSError, ValueError):
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class AdbStandIn:
    """`with AdbStandIn(phones) as server:` serves on 127.0.0.1:server.port until closed."""

    def __init__(self, phones: Dict[str, Phone], version: int = 41):
        self.phones, self.version = phones, version  # adbutils uses host:tport from 41, host:transport before
        self.requests: List[str] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.standin = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="adb-standin", daemon=True)

    def __enter__(self) -> "AdbStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        for phone in self.phones.values():
            phone.close()

    # -- host services: True-ish (a phone) when a transport was selected
    def _transport(self, conn: _Conn, serial: str) -> Optional[Phone]:
        phone = self.phones.get(serial)
        if phone is None:
            conn.fail(f"device '{serial}' not found")
            return None
        if phone.state != "device":
            conn.fail(f"device {phone.state}")
            return None
        return phone

    def host_request(self, conn: _Conn, command: str) -> Optional[Phone]:
        if command == "host:version":
            conn.okay(f"{self.version:04x}")
        elif command in ("host:devices", "host:devices-l"):
            conn.okay("".join(f"{s}\t{p.state}\n" for s, p in self.phones.items()))
        elif command.startswith("host:tport:serial:"):
            phone = self._transport(conn, command[len("host:tport:serial:"):])
            if phone is not None:
                conn.sock.sendall(b"OKAY" + struct.pack("<Q", 1 + list(self.phones).index(phone.serial)))
            return phone
        elif command.startswith("host:transport:"):
            phone = self._transport(conn, command[len("host:transport:"):])
            if phone is not None:
                conn.okay()
            return phone
        elif command.startswith("host-serial:"):
            serial, _, what = command[len("host-serial:"):].rpartition(":")
            phone = self._transport(conn, serial)
            if phone is not None:
                answers = {"features": phone.features, "get-state": phone.state, "get-serialno": serial}
                if what in answers:
                    conn.okay(answers[what])
                else:
                    conn.fail(f"unsupported host-serial request {what}")
        else:
            conn.fail(f"unsupported request {command}")
        return None

    # -- device services
    def device_request(self, conn: _Conn, phone: Phone, command: str) -> None:
        if command.startswith("shell,v2:") and "shell_v2" in phone.features.split(","):
            conn.okay()
            code, out, err = phone.run(command[len("shell,v2:"):], client=conn.sock)
            packets = b""
            for kind, data in ((1, out), (2, err)):
                if data:
                    packets += struct.pack("<BI", kind, len(data)) + data
            conn.sock.sendall(packets + struct.pack("<BI", 3, 1) + bytes([code & 0xFF]))
        elif command.startswith("shell:"):
            conn.okay()
            _, out, err = phone.run(command[len("shell:"):], client=conn.sock)
            conn.sock.sendall(out + err)
        elif command == "sync:":
            conn.okay()
            _sync(conn, phone)
        else:
            conn.fail(f"unsupported service {command}")


def _sync(conn: _Conn, phone: Phone) -> None:
    while True:
        header = conn.exact(8)
        if header is None or header[:4] == b"QUIT":
            return
        request, size = header[:4], struct.unpack("<I", header[4:])[0]
        path = (conn.exact(size) or b"").decode("utf-8")
        handler = {b"STAT": _stat, b"SEND": _send, b"RECV": _recv, b"LIST": _list}.get(request)
        if handler is None:
            return
        handler(conn, phone, path)


def _stat(conn: _Conn, phone: Phone, path: str) -> None:
    target = phone.host_path(path)
    try:
        st = os.stat(target) if target else None
    except OSError:
        st = None
    values = (st.st_mode, st.st_size, int(st.st_mtime)) if st else (0, 0, 0)
    conn.sock.sendall(b"STAT" + struct.pack("<III", *values))


def _fail(conn: _Conn, message: str) -> None:
    conn.sock.sendall(b"FAIL" + struct.pack("<I", len(message.encode())) + message.encode())


def _send(conn: _Conn, phone: Phone, spec: str) -> None:
    path, _, mode = spec.rpartition(",")
    chunks = []
    while True:
        header = conn.exact(8)
        if header is None:
            return
        if header[:4] == b"DONE":
            break
        chunks.append(conn.exact(struct.unpack("<I", header[4:])[0]) or b"")
    target = phone.host_path(path)
    if target is None:
        return _fail(conn, f"couldn't create file {path}: Permission denied")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(chunks))
    target.chmod(int(mode) & 0o777)
    conn.sock.sendall(b"OKAY" + struct.pack("<I", 0))


def _recv(conn: _Conn, phone: Phone, path: str) -> None:
    target = phone.host_path(path)
    if target is None or not target.is_file():
        return _fail(conn, f"open failed: No such file or directory: {path}")
    data = target.read_bytes()
    out = b"".join(b"DATA" + struct.pack("<I", len(data[i:i + 65536])) + data[i:i + 65536]
                   for i in range(0, len(data), 65536))
    conn.sock.sendall(out + b"DONE" + struct.pack("<I", 0))


def _list(conn: _Conn, phone: Phone, path: str) -> None:
    target = phone.host_path(path)
    out = b""
    for entry in (sorted(target.iterdir()) if target and target.is_dir() else []):
        st = entry.stat()
        name = entry.name.encode()
        out += b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size, int(st.st_mtime), len(name)) + name
    conn.sock.sendall(out + b"DONE" + bytes(16))
