"""Goal (issue 3): the p50 the device side reports is within 2% of a bare loop over the same
ONNX Runtime session in the same process.

For each model: one session loaded by the device side's own loader (edgecompress/deploy), then
rounds that alternate the device side's timing loop (`ec_bench.run_loop` through the runtime seam)
with a bare `perf_counter_ns(); session.run(); perf_counter_ns()` loop on the same ORT session,
2 s each, 5 rounds. Alternating cancels slow drifts (clocks, other load). Writes
benchmarks/results/runner_overhead.json."""
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "edgecompress" / "deploy"))
sys.path.insert(0, str(HERE / "models"))

import ec_bench  # noqa: E402
import ec_stats  # noqa: E402
import ec_runtimes  # noqa: E402
from ec_runtimes import load_onnxruntime  # noqa: E402

ec_bench.progress = lambda message: None  # no progress lines in this measurement


def bare_loop(ort_session, feeds, seconds: float) -> list:
    perf, out, end = time.perf_counter_ns, [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        before = perf()
        ort_session.run(None, feeds)
        out.append((perf() - before) / 1e6)
    return out


def models(tmp: Path) -> dict:
    import torch

    from edgecompress import demo
    from resnet import resnet18

    paths = {"demo CNN (8x8)": tmp / "demo.onnx", "ResNet-18 (224x224)": tmp / "resnet.onnx"}
    for (name, path), (model, shape) in zip(paths.items(), [(demo.build(), (1, 1, 8, 8)),
                                                             (resnet18(), (1, 3, 224, 224))]):
        torch.onnx.export(model.eval(), (torch.randn(*shape),), str(path), dynamo=False, input_names=["input"])
    return paths


def measure(path: Path, rounds: int = 5, seconds: float = 2.0) -> dict:
    import numpy as np
    import onnxruntime as ort

    session = load_onnxruntime(str(path), {"threads": 2})
    raw = ort.InferenceSession(str(path), ec_runtimes._ort_session_options(ort, 2),
                               providers=["CPUExecutionProvider"])
    shape = [d or 1 for d in session.inputs[0]["shape"]]
    feeds = {session.inputs[0]["name"]: np.random.default_rng(0).normal(size=shape).astype(np.float32)}
    for _ in range(50):
        session.run(feeds), raw.run(None, feeds)
    device_side, bare = [], []
    for _ in range(rounds):
        lat, _, _ = ec_bench.run_loop(session.run, feeds, 100, seconds, 10 ** 7, "timed")
        device_side.append(ec_stats.summarize(lat, "x")["p50"])
        bare.append(ec_stats.summarize(bare_loop(raw, feeds, seconds), "x")["p50"])
    p50_dev, p50_bare = statistics.median(device_side), statistics.median(bare)
    return {"p50_ms_device_side": p50_dev, "p50_ms_bare": p50_bare,
            "overhead_pct": round((p50_dev - p50_bare) / p50_bare * 100, 2),
            "rounds_device_side": device_side, "rounds_bare": bare}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: measure(path) for name, path in models(Path(tmp)).items()}
    met = all(abs(r["overhead_pct"]) <= 2.0 for r in results.values())
    out = {"benchmark": "runner_overhead", "goal": "device-side p50 within 2% of a bare loop",
           "measured_on": f"this host ({platform.machine()}), ONNX Runtime, 2 threads, same process",
           "rounds": 5, "seconds_per_round": 2.0, "results": results, "met": met}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "runner_overhead.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
