"""tasks.py's segmenter (its 2-thread speed-up near 3x, set by the CPU): its files side by side, at 1 and 2 threads.

The segmenter tasks.py trained (its .pt in --work) is pruned to 50% channels as --target arm does (no
distillation: the speed does not depend on the weights' values), exported, and quantized three ways: INT8 as
edgecompress made it before session 14 (ORT's pre-processing skipped: its symbolic shape inference stops on the
upsample), INT8 as it makes it now (pre-processed with ONNX's shape inference instead; the final bilinear Resize
left in float), the same with the 3-channel stem conv in float too (tried, not adopted), and the FP32 student
unquantized. Every file is timed in rounds that alternate between the files,
so a change in the host's load touches them alike.

    .venv/bin/python benchmarks/segmenter_speed.py [--work /tmp/tbfinal] [--rounds 5] [--runs 1500]

Writes benchmarks/results/segmenter_speed.json."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "models"))
sys.path.insert(0, str(HERE))
from machine import describe_cpu  # noqa: E402
from tasks import p50_ms  # noqa: E402  (tasks.py's own timing: one zero input, perf_counter_ns, median)

RESULTS = HERE / "results" / "segmenter_speed.json"


def files(work: Path, out: Path) -> dict:
    """{label: .onnx}: the original, the pruned FP32 student, and its INT8 files with and without the float tail."""
    import torch

    import task_bench_models as models
    from edgecompress import export, outputs, profile, prune, quantize

    torch.set_num_threads(1)
    prof = profile.load("raspberry-pi-5")[0]
    model = models.build_segmenter()
    model.load_state_dict(torch.load(work / "segmenter.pt", map_location="cpu", weights_only=True))
    x = np.load(work / "shapes_masks.npz")["x"][:256].astype(np.float32)
    example = torch.from_numpy(x[:2])
    original = export.export_onnx(outputs.flat(model.eval(), example), example[:1], out / "original.onnx", prof.export)
    student = outputs.flat(model, example)
    prune.prune_channels_(student, prof.prune, example)
    fp32 = export.export_onnx(student.eval(), example[:1], out / "student_fp32.onnx", prof.export)
    calib = x[: prof.quantize.calibration_samples]
    made = {"original (FP32)": original, "FP32 student (50% channels)": fp32,
            "INT8, not pre-processed (before session 14)": _unprocessed(fp32, out / "int8_unprocessed.onnx", calib,
                                                                         prof.quantize),
            "INT8, pre-processed, final Resize in float (now)": quantize.quantize_int8(
                fp32, out / "int8_tail.onnx", calib, prof.quantize, "input", float_tail=True),
            # tried, not adopted: the 3-channel stem conv in float too (its inner products are 27 long)
            "INT8, final Resize and stem conv in float": quantize.quantize_int8(
                fp32, out / "int8_tail_stem.onnx", calib, prof.quantize, "input", float_tail=True,
                keep_fp32=["/inner/stem/conv/Conv"])}
    return made


def _unprocessed(fp32: Path, dst: Path, calib, cfg) -> Path:
    """The INT8 file as quantize_int8 made it before session 14: where ORT's symbolic shape inference stopped,
    the model went to the quantizer without any pre-processing."""
    import shutil

    from edgecompress import quantize

    real = quantize._pre_process
    quantize._pre_process = lambda source, pre, tmp: shutil.copy(source, pre)
    try:
        return quantize.quantize_int8(fp32, dst, calib, cfg, "input", float_tail=True)
    finally:
        quantize._pre_process = real


def side_by_side(made: dict, rounds: int, runs: int) -> dict:
    """{label: .onnx} timed in `rounds` rounds that alternate between the files, at 1 and 2 threads: the record's
    cpu, rounds, runs_per_round, load averages, seconds and rows (each file's median round and its speed-up over
    the 'original (FP32)' file), so a change in the host's load touches every file alike."""
    load_before, started = os.getloadavg(), time.time()
    timed = {threads: {label: [] for label in made} for threads in (1, 2)}
    for _ in range(rounds):
        for threads in (1, 2):
            for label, path in made.items():
                timed[threads][label].append(round(p50_ms(Path(path), threads, runs), 4))
    rows = []
    for threads, by_label in timed.items():
        base = float(np.median(by_label["original (FP32)"]))
        for label, per_round in by_label.items():
            p50 = float(np.median(per_round))
            rows.append({"threads": threads, "file": label, "p50_ms": round(p50, 4), "rounds_ms": per_round,
                         "speedup_vs_original": round(base / p50, 2)})
    return {"cpu": describe_cpu(), "rounds": rounds, "runs_per_round": runs,
            "load_average_before_after": [round(v, 2) for v in load_before + os.getloadavg()],
            "seconds": round(time.time() - started, 1), "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tbfinal"), help="tasks.py's --work (segmenter.pt)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=RESULTS, help="the results file (one per machine: name the CPU)")
    args = parser.parse_args(argv)
    tmp = args.work / "segmenter_speed"
    tmp.mkdir(parents=True, exist_ok=True)
    record = {"what": __doc__.split("\n\n")[0], **side_by_side(files(args.work, tmp), args.rounds, args.runs)}
    rows = record["rows"]
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for r in rows:
        print(f"{r['threads']} thread(s)  {r['file']:45s} {r['p50_ms']:.4f} ms  {r['speedup_vs_original']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
