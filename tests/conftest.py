"""Shared fixtures: a user's model file and data written to disk, as a user would have them."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from ecutil import MODEL_SRC, make_data


def pytest_collection_modifyitems(config, items):
    """Without the [tflite] extra (`pip install -e .` is enough for arm and host bundles), the tests that
    convert for a phone skip instead of failing: those marked `litert` and those with an 'android' parameter."""
    import importlib.util

    missing = [m for m in ("litert_torch", "ai_edge_litert") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"the [tflite] extra is not installed (no {', '.join(missing)})")
    for item in items:
        ids = getattr(getattr(item, "callspec", None), "id", "") or ""
        if item.get_closest_marker("litert") or "android" in ids.split("-"):
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGECOMPRESS_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("EDGECOMPRESS_PROGRESS", "0")
    yield
    mp.undo()


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent(MODEL_SRC))
    return path


@pytest.fixture
def npz_data(tmp_path) -> Path:
    x, y = make_data()
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 (tests/sshd.py) for the module; `sshd.device(workdir)`
    is a Device on it."""
    from sshd import SSHD, SSHServer

    if not SSHD.is_file():
        pytest.skip(f"{SSHD} is missing: apt-get install -y openssh-server")
    with SSHServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server
