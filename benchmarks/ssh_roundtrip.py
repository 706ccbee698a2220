"""Goal (issue 3): the ssh runner adds under 2 s to a job, against the local runner, for a 10 MB
model: connect, take the device lock, push the device side and the model, run, read the result,
remove the job folder.

Runs both runners on the same short job against a real sshd on 127.0.0.1 (tests/sshd.py), each
REPEATS times after one untimed run, and writes benchmarks/results/ssh_roundtrip.json with the
median wall seconds of each, the added seconds, and the parts (connect, 10 MB SFTP push) timed
alone. Loopback has no network latency: on a real link add its round trips and the model's
transfer time at the link's speed."""
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from sshd import SSHServer  # noqa: E402

from edgecompress.runners import ssh  # noqa: E402
from edgecompress.runners.local import run_local  # noqa: E402
from edgecompress.runners.ssh import run_ssh  # noqa: E402

REPEATS = 5
MODEL_FLOATS = 1600 * 1600  # one 1600x1600 float32 initializer: 10.24 MB
JOB = {"protocol_version": 1, "runtime": "onnxruntime", "runtime_options": {"threads": 1},
       "warmup": {"runs": 3, "seconds": 0}, "runs": {"count": 20, "seconds": 0}}
GOAL_ADDED_S = 2.0


def ten_mb_model(path: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    side = int(MODEL_FLOATS ** 0.5)
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((side, side)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, side])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "ten_mb", [x], [y],
                              initializer=[weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def parts(device, model: Path) -> dict:
    """Connect alone, and the SFTP push of the model alone (into a scratch folder)."""
    asyncssh = ssh._asyncssh()
    endpoint = ssh._endpoint(asyncssh, device)
    scratch = Path(device.workdir) / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)

    async def connect_then_push() -> tuple:
        started = time.perf_counter()
        async with await ssh._connect(asyncssh, endpoint) as conn:
            connected = time.perf_counter()
            await ssh._upload(conn, str(scratch), [(model.name, model)], None)
            return connected - started, time.perf_counter() - connected

    samples = [asyncio.run(connect_then_push()) for _ in range(REPEATS)]
    return {"connect_s": round(statistics.median(s[0] for s in samples), 3),
            "push_model_s": round(statistics.median(s[1] for s in samples), 3)}


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp, SSHServer(Path(tmp) / "sshd") as server:
        model = ten_mb_model(Path(tmp) / "ten_mb.onnx")
        device = server.device(Path(tmp) / "work dir")
        runs = {"local": lambda: run_local(JOB, model), "ssh": lambda: run_ssh(JOB, model, device=device)}
        for run in runs.values():
            run()  # untimed: page cache, first imports
        seconds = {name: [] for name in runs}
        for _ in range(REPEATS):  # interleaved, so drift hits both alike
            for name, run in runs.items():
                seconds[name].append(timed(run))
        local_s, ssh_s = (statistics.median(seconds[n]) for n in ("local", "ssh"))
        openssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
        import asyncssh

        return {
            "goal": f"ssh runner adds < {GOAL_ADDED_S} s per job (10 MB model, short job) over the local runner",
            "added_s": round(ssh_s - local_s, 3), "meets_goal": ssh_s - local_s < GOAL_ADDED_S,
            "local_s_median": round(local_s, 3), "ssh_s_median": round(ssh_s, 3),
            "local_s": [round(s, 3) for s in seconds["local"]], "ssh_s": [round(s, 3) for s in seconds["ssh"]],
            "parts": parts(device, model), "model_mb": round(model.stat().st_size / 1e6, 2), "repeats": REPEATS,
            "job": JOB, "link": "loopback 127.0.0.1 (no network latency)",
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "load_avg_1m_at_end": round(os.getloadavg()[0], 2), "python": platform.python_version(),
                        "asyncssh": asyncssh.__version__, "openssh": openssh},
        }


if __name__ == "__main__":
    summary = main()
    out = HERE / "results" / "ssh_roundtrip.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
