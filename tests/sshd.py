"""A real OpenSSH server on 127.0.0.1 standing in for a device (DESIGN.md: what is real here).

`SSHServer(root)` writes its own host key, a fresh client key, an authorized_keys file and an
sshd_config under `root`, starts `/usr/sbin/sshd -D -f CONFIG -e` on a free port, waits until the
port answers with an SSH banner, and stops it by pid. The login user is the current user; as
root, `PermitRootLogin prohibit-password` lets the key in. Used by tests/runners/conftest.py and
benchmarks/ssh_roundtrip.py."""
from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> Path:
    for old in (path, Path(f"{path}.pub")):
        old.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


def process_tree(root_pid: int) -> list:
    """(pid, comm) of every live descendant of root_pid, parents before children."""
    children: dict = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid, rest = text.split(" (", 1)
        comm, fields = rest.rsplit(") ", 1)
        children.setdefault(int(fields.split()[1]), []).append((int(pid), comm))
    found, todo = [], [root_pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child[0])
    return found


class SSHServer:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = keygen(self.root / "host_ed25519", "test-sshd-host")
        self.client_key = keygen(self.root / "client_ed25519", "test-client")
        (self.root / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text(self.known_hosts_line())
        self.config = self.root / "sshd_config"
        self.config.write_text(self._config_text())
        self.log = self.root / "sshd.log"
        self.process: subprocess.Popen | None = None

    def known_hosts_line(self) -> str:
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"

    def _config_text(self) -> str:
        return "\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}", f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "StrictModes no", "UsePAM no", "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "Subsystem sftp internal-sftp", "MaxStartups 50", "MaxSessions 50", "LogLevel VERBOSE", ""])

    def start(self) -> "SSHServer":
        if os.geteuid() == 0:  # sshd as root insists on its privilege separation directory
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = open(self.log, "ab")
        self.process = subprocess.Popen([str(SSHD), "-D", "-f", str(self.config), "-e"],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}:\n{self.log.read_text()}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not answer on port {self.port} within {START_TIMEOUT_S} s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        for pid, _ in reversed(process_tree(self.process.pid)):
            _signal(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill_sessions(self, what_they_ran: bool = True) -> list:
        """SIGKILL the sshd processes serving connections (the client sees the connection drop,
        as when a link dies), then, unless what_they_ran is False, the processes they started."""
        tree = process_tree(self.process.pid)
        ordered = [p for p in tree if p[1].startswith("sshd")]
        if what_they_ran:
            ordered += [p for p in tree if not p[1].startswith("sshd")]
        for pid, _ in ordered:
            _signal(pid, signal.SIGKILL)
        return [pid for pid, _ in ordered]

    def device(self, workdir: Path, **changes):
        from edgecompress.inventory import Device

        fields = dict(name="test-device", target="host-cpu", transport="ssh", host="127.0.0.1",
                      port=self.port, user=self.user, key=str(self.client_key),
                      known_hosts=str(self.known_hosts), python=sys.executable, workdir=str(workdir),
                      connect_timeout_s=10.0, job_timeout_s=60.0)
        fields.update(changes)
        return Device(**fields)

    def __enter__(self) -> "SSHServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
