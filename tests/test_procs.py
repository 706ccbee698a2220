"""procs.pid_alive, the test behind every "left by a dead run" cleanup, on real processes."""
from __future__ import annotations

import os
import subprocess
import sys

from edgecompress.procs import pid_alive


def test_this_process_and_a_running_child_are_alive():
    assert pid_alive(os.getpid()) is True
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(child.pid) is True
    finally:
        child.kill()
        child.wait()


def test_a_reaped_child_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid no longer names a process (a zombie would still count)
    assert pid_alive(child.pid) is False


def _as_nobody_sees_pid_1() -> tuple:
    """(pid_alive(1), whether os.kill(1, 0) was refused), as an account that may not signal pid 1 (root's):
    this process itself when it is not root, else a forked child that drops to uid 65534."""
    def look() -> tuple:
        try:
            os.kill(1, 0)
            refused = False
        except PermissionError:
            refused = True
        return pid_alive(1), refused

    if os.geteuid() != 0:
        return look()
    pid = os.fork()
    if pid == 0:  # the child: only os calls, then out without running the parent's cleanup
        try:
            os.setgid(65534)
            os.setuid(65534)
            alive, refused = look()
            os._exit(10 * int(alive) + int(refused))
        except BaseException:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code != 99, "could not drop to uid 65534"
    return bool(code // 10), bool(code % 10)


def test_a_process_this_account_may_not_signal_counts_as_alive():
    assert _as_nobody_sees_pid_1() == (True, True)
