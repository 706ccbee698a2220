"""Fixtures of the fault suite: one real sshd and one adb stand-in for the whole session (each case
gets its own workdir, clock state and phone on them), a lab per case, and the collector that
writes every case's outcome to a JSON file at the end of the session (benchmarks/faults.py points
it at benchmarks/results/faults.json; a plain test run writes it under its own temporary folder,
so running the default part never rewrites the committed numbers with a partial count)."""
from __future__ import annotations

import datetime
import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest

from faultlib import Lab, train_weights

RESULTS_ENV = "EC_FAULTS_RESULTS"
_OUTCOMES: list = []
_WRITTEN: list = []
_SERIALS = itertools.count(1)


@pytest.fixture(scope="session")
def fault_sshd(tmp_path_factory):
    from sshd import SSHD, SSHServer

    if not SSHD.is_file():
        pytest.skip(f"{SSHD} is missing: apt-get install -y openssh-server")
    pytest.importorskip("asyncssh", reason="the ssh runner needs asyncssh: pip install 'edgecompress[ssh]'")
    with SSHServer(tmp_path_factory.mktemp("fault-sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def fault_adb():
    pytest.importorskip("adbutils", reason="the adb runner needs adbutils: pip install 'edgecompress[android]'")
    from adb_standin import AdbStandIn

    server = AdbStandIn({})
    with server:
        yield server


@pytest.fixture(scope="session")
def fault_weights(tmp_path_factory):
    return train_weights(tmp_path_factory.mktemp("fault-weights") / "net.pt")


@pytest.fixture
def make_lab(tmp_path, fault_sshd, fault_adb, fault_weights):
    labs = []

    def make(transport: str) -> Lab:
        if transport == "adb":
            pytest.importorskip("litert_torch", reason="deploy for a phone needs the [tflite] extra")
        labs.append(Lab(tmp_path / f"lab{len(labs)}", fault_sshd, fault_adb, f"EC-FAULT-{next(_SERIALS)}",
                        fault_weights))
        return labs[-1]

    yield make
    for lab in labs:
        lab.close()


@pytest.fixture
def record(request):
    """record(left_behind, **facts): the case's outcome for the session's JSON."""
    def add(left_behind: list, **facts) -> None:
        _OUTCOMES.append(dict(case=request.node.callspec.id if hasattr(request.node, "callspec")
                              else request.node.name, survived=not left_behind, left_behind=list(left_behind),
                              **facts))
    return add


def _cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (no lscpu)"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")),
                "unknown")


def summary(outcomes: list) -> dict:
    by_fault: dict = {}
    for o in outcomes:
        entry = by_fault.setdefault(o["fault"], {"tried": 0, "survived": 0})
        entry["tried"] += 1
        entry["survived"] += bool(o["survived"])
    return {"cases_tried": len(outcomes), "survived": sum(bool(o["survived"]) for o in outcomes),
            "by_fault": by_fault,
            "failures": [{"case": o["case"], "left_behind": o["left_behind"]} for o in outcomes if not o["survived"]],
            "cases": outcomes, "machine": _cpu_model(), "cpus": os.cpu_count(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


@pytest.fixture(scope="session", autouse=True)
def _write_outcomes(tmp_path_factory):
    yield
    if not _OUTCOMES:
        return
    path = Path(os.environ.get(RESULTS_ENV) or tmp_path_factory.getbasetemp() / "faults.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary(_OUTCOMES), indent=2) + "\n")
    _WRITTEN.append(path)


def pytest_terminal_summary(terminalreporter):
    if _OUTCOMES:
        survived = sum(bool(o["survived"]) for o in _OUTCOMES)
        where = f"; written to {_WRITTEN[0]}" if _WRITTEN else ""
        terminalreporter.write_line(f"fault suite: {survived} of {len(_OUTCOMES)} cases survived{where}")
