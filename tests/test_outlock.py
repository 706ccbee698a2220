"""One deploy at a time into one --out/<name> (F3): real processes racing for the lock, a holder
killed with SIGKILL, --force against a running run, and two real deploys started together."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ecutil import fast_sets, make_data, run_cli

NAME = "net-host-cpu"

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edgecompress import outlock
    with outlock.held(Path(sys.argv[1]), sys.argv[2]):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
""")


def hold_in_another_process(out: Path, seconds: float = 60) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), NAME, str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_naming_the_pid_and_host(tmp_path):
    import socket

    from edgecompress import outlock
    from edgecompress.errors import InputError

    holder = hold_in_another_process(tmp_path)
    try:
        with pytest.raises(InputError) as refused:
            with outlock.held(tmp_path, NAME):
                pass
        message = str(refused.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert str(tmp_path / NAME) in message and "wait for it to finish, or pass another --out" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_killed_with_sigkill_leaves_no_lock_behind(tmp_path):
    from edgecompress import outlock

    holder = hold_in_another_process(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with outlock.held(tmp_path, NAME) as path:  # the kernel dropped the dead run's flock
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not outlock.lock_path(tmp_path, NAME).exists(), "a finished run removes its lock file"


def test_the_lock_file_removed_by_its_holder_is_not_a_lock_for_two(tmp_path):
    """A run that opened the lock file just before the holder removed it must not count the old
    file's lock as its own while a third run locks the new file."""
    from edgecompress import outlock

    first = outlock.held(tmp_path, NAME)
    first.__enter__()
    stale_fd = os.open(outlock.lock_path(tmp_path, NAME), os.O_RDWR)  # opened before the holder leaves
    first.__exit__(None, None, None)
    try:
        with outlock.held(tmp_path, NAME):
            assert not outlock._same_file(stale_fd, outlock.lock_path(tmp_path, NAME))
    finally:
        os.close(stale_fd)


def test_force_does_not_delete_the_work_folder_of_a_running_deploy(tmp_path, model_file, npz_data):
    out = tmp_path / "out"
    work = out / f".{NAME}.work"
    work.mkdir(parents=True)
    (work / "checkpoint.pt").write_bytes(b"the running deploy's progress")
    holder = hold_in_another_process(out)
    try:
        code, _, err = run_cli("deploy", f"{model_file}:build", "--target", "host-cpu", "--data", npz_data,
                               "--out", out, "--force", *fast_sets())
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and f"pid {holder.pid}" in err and "another edgecompress deploy" in err, err
    assert (work / "checkpoint.pt").read_bytes() == b"the running deploy's progress"


def onnx_parameters(path: Path) -> int:
    import onnx

    return sum(int(np.prod(i.dims)) for i in onnx.load(str(path)).graph.initializer)


def torch_parameters_of(path: Path) -> int:
    """The PyTorch parameter count of MODEL_SRC's pruned model, read back from its INT8 ONNX: the
    quantized weights and biases, plus each BatchNorm's weight and bias (2 per channel of the conv it
    was folded into), which identifies the pruning the file came from."""
    import onnx

    inits = onnx.load(str(path)).graph.initializer
    weights_and_biases = sum(int(np.prod(i.dims)) for i in inits if i.name.endswith("_quantized"))
    conv_channels = sum(int(np.prod(i.dims)) for i in inits if i.name.startswith("onnx::Conv")
                        and i.name.endswith("_quantized") and len(i.dims) == 1)
    return weights_and_biases + 2 * conv_channels


def test_two_deploys_at_once_into_one_out_one_runs_and_its_bundle_is_its_own(tmp_path, model_file):
    """The review's repro: the same model and target with two prunings, started together. Before the
    lock both ran in one work folder and a published bundle could hold the other run's model."""
    x, y = make_data(400)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    out = tmp_path / "out"
    runs = {}
    for ratio in ("0.25", "0.75"):
        args = ["deploy", f"{model_file}:build", "--target", "host-cpu", "--data", str(tmp_path / "data.npz"),
                "--out", str(out), "--json", *fast_sets(f"prune.ratio={ratio}", "distill.steps=150",
                                                        "distill.checkpoint_every=50")]
        runs[ratio] = subprocess.Popen([sys.executable, "-c", "import sys; from edgecompress.cli import main; "
                                        "sys.exit(main(sys.argv[1:]))", *args], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    results = {ratio: (proc.wait(timeout=300), *proc.communicate()) for ratio, proc in runs.items()}
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 2], {r: (c, e[-800:]) for r, (c, _, e) in results.items()}
    winner = next(r for r, (c, _, _) in results.items() if c == 0)
    loser = next(r for r in results if r != winner)
    assert f"pid {runs[winner].pid}" in results[loser][2] and "pass another --out" in results[loser][2]
    manifest = json.loads((out / NAME / "manifest.json").read_text())
    assert manifest["compression"]["pruning"]["ratio"] == float(winner)
    assert manifest["compression"]["pruning"]["params_after"] == torch_parameters_of(out / NAME / "model.onnx")
    assert manifest["model"]["parameters"] == onnx_parameters(out / NAME / "model.onnx")
    code, verified, err = run_cli("verify", out / NAME)
    assert code == 0 and "OK" in verified, err
    assert sorted(p.name for p in out.iterdir()) == [NAME, f"{NAME}.zip"], "no lock, work or temp files left"


def test_a_bundle_published_while_this_run_loaded_is_refused_before_any_work(tmp_path, monkeypatch):
    """The race CI caught: the second of two deploys passed the --out check while the first still ran,
    took the lock once the first had published and left, distilled in full, and was refused only at
    publishing, with its work folder left behind. The check is made again under the lock."""
    from ecutil import FAST, MODEL_SRC

    from edgecompress import inputs
    from edgecompress.errors import InputError
    from edgecompress.pipeline import DeployOptions, deploy

    (tmp_path / "net.py").write_text(MODEL_SRC)
    x, y = make_data(200)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out, loaded = tmp_path / "o", inputs.load_and_check

    def load_then_the_other_run_publishes(opts):
        run = loaded(opts)
        (out / NAME).mkdir(parents=True)  # the other deploy's bundle, published while this one loaded
        return run

    monkeypatch.setattr(inputs, "load_and_check", load_then_the_other_run_publishes)
    with pytest.raises(InputError, match="already exists"):
        deploy(DeployOptions(model=f"{tmp_path / 'net.py'}:build", data=str(tmp_path / "d.npz"), target="host-cpu",
                             out=out, overrides=list(FAST)))
    assert sorted(p.name for p in out.iterdir()) == [NAME], "no work folder or lock is left beside the bundle"
