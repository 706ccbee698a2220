"""Helpers shared by the CLI deploy tests in tests/e2e (imported as `e2eutil`, beside `ecutil`)."""
from __future__ import annotations

from ecutil import run_cli


def deploy(*args) -> tuple:
    """`edgecompress deploy ARGS` in this process; it must succeed. (stdout, stderr)."""
    code, out, err = run_cli("deploy", *args)
    assert code == 0, err
    return out, err
