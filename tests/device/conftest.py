"""The device side runs as loose scripts (`python ec_bench.py job.json`), so its modules import each
other by plain name: the tests put its folder on sys.path the same way the script's folder is."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "edgecompress" / "deploy"
sys.path.insert(0, str(DEPLOY))


def doubling_model(path: Path) -> Path:
    """y = x + x with a dynamic batch: its output sum tells which input values were fed."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "double", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by older onnxruntime releases too (e.g. a Python 3.8 device)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def job_dir(tmp_path):
    doubling_model(tmp_path / "model.onnx")
    return tmp_path


def _run_bench(folder: Path, job: dict, python: str = sys.executable, timeout: float = 60):
    """(exit code, parsed last stdout line, stdout lines, stderr lines) of ec_bench.py on `job`."""
    (folder / "job.json").write_text(json.dumps(job))
    done = subprocess.run([python, str(DEPLOY / "ec_bench.py"), "job.json"], cwd=folder,
                          capture_output=True, text=True, timeout=timeout)
    out = done.stdout.splitlines()
    return done.returncode, json.loads(out[-1]) if out else None, out, done.stderr.splitlines()


@pytest.fixture
def run_bench():
    return _run_bench


STANDIN = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import ec_bench, ec_runtimes, ec_stats

PATTERN_S = json.loads(sys.argv[2])
if sys.argv[3] != "-":
    ec_stats.KEEP_LATENCIES = int(sys.argv[3])

def load_standin(model_path, options):
    # The real model, each run made to last as long as the pattern says (cycled): a CPU of any speed.
    session = ec_runtimes.load_onnxruntime(model_path, options)
    calls = [0]
    def run(feeds):
        pause = PATTERN_S[calls[0] % len(PATTERN_S)]
        calls[0] += 1
        if pause:
            time.sleep(pause)
        return session.run(feeds)
    return ec_runtimes.Session(run, session.inputs, session.outputs, "standin-1.0", session.options,
                               session.load_ms)

ec_bench.RUNTIMES["standin"] = load_standin
sys.exit(ec_bench.main(["ec_bench.py", "job.json"]))
"""


def _run_standin(folder: Path, job: dict, pattern_s=(0.0,), keep=None, timeout: float = 60):
    """_run_bench's answer for a stand-in runtime whose runs last `pattern_s` (s, cycled) on top of
    the tiny model's own microseconds: the slow CPU (or the stalls) a test needs, on any CPU. `keep`
    lowers ec_stats.KEEP_LATENCIES, so thinning can be seen without millions of runs."""
    (folder / "job.json").write_text(json.dumps(dict(job, runtime="standin")))
    done = subprocess.run([sys.executable, "-c", STANDIN, str(DEPLOY), json.dumps(list(pattern_s)),
                           "-" if keep is None else str(keep)], cwd=folder, capture_output=True, text=True,
                          timeout=timeout)
    out = done.stdout.splitlines()
    return done.returncode, json.loads(out[-1]) if out else None, out, done.stderr.splitlines()


@pytest.fixture
def run_standin():
    return _run_standin


@pytest.fixture
def small_job():
    """A job that finishes in well under a second; tests change only what they examine."""
    def make(**changes) -> dict:
        # energy "none": a machine with a readable power source would otherwise spend the idle
        # baseline on every test; the energy tests name their source.
        base = {"protocol_version": 1, "model": "model.onnx", "runtime": "onnxruntime",
                "runtime_options": {"threads": 1}, "warmup": {"runs": 2}, "runs": {"count": 5}, "energy": "none"}
        base.update(changes)
        return base
    return make


@pytest.fixture
def memory_root(tmp_path):
    """A folder for a fixture sysfs tree, in memory (/dev/shm) where there is one, like sysfs itself.
    Replacing a file on a disk can take over a millisecond (ext4 flushes on rename), and a writer
    that far behind its power profile would use up the 2 % the energy tests allow the reader."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(str(shm), os.W_OK)):
        yield tmp_path
        return
    root = Path(tempfile.mkdtemp(prefix="ec-sysfs-", dir=str(shm)))
    try:
        yield root
    finally:
        shutil.rmtree(str(root), ignore_errors=True)
