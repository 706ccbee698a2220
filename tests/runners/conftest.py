"""Fixtures for the runner tests: a real OpenSSH server on 127.0.0.1 standing in for a device."""
from __future__ import annotations

import pytest

from sshd import SSHD, SSHServer


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A running sshd (tests/sshd.py) for the module; `sshd.device(workdir)` is a Device on it."""
    if not SSHD.is_file():
        pytest.skip(f"{SSHD} is missing: apt-get install -y openssh-server")
    with SSHServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server
