"""Goals (issue 2), on the built-in demo (sklearn digits, 8x8, 10 classes):
- `edgecompress deploy --target arm` finishes in under 2 minutes on this 2-core machine, from a
  fresh cache (so the teacher's first-use training is included);
- the distilled student (50% channels, the profile's budget) is within 0.5 accuracy points of its
  teacher on the held-out split;
- the same budget spent on cross-entropy fine-tuning alone, for comparison.

Runs the real CLI and writes benchmarks/results/demo_distill.json."""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def deploy(out: Path, cache: Path, seed: int, *sets: str) -> tuple:
    cmd = [sys.executable, "-m", "edgecompress.cli", "deploy", "--target", "arm", "--out", str(out), "--json"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, EDGECOMPRESS_CACHE=str(cache), EDGECOMPRESS_PROGRESS="0", EDGECOMPRESS_DEMO_SEED=str(seed))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"deploy failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout), seconds


def figures(summary: dict, seconds: float) -> dict:
    return {"wall_seconds": round(seconds, 1), "held_out_samples": summary["accuracy_samples"],
            "teacher_accuracy": summary["before"]["accuracy"],
            "student_accuracy_int8": summary["after"]["accuracy"],
            "points_vs_teacher": round((summary["after"]["accuracy"] - summary["before"]["accuracy"]) * 100, 2),
            "params": [summary["before"]["params"], summary["after"]["params"]],
            "macs": [summary["before"]["macs"], summary["after"]["macs"]],
            "p50_ms": [summary["before"]["p50_ms"], summary["after"]["p50_ms"]], "speedup_p50": summary["speedup_p50"]}


def main(teachers: int = 8) -> int:
    """Teachers trained with seeds 0..teachers-1 ($EDGECOMPRESS_DEMO_SEED; seed 0 is the demo's own),
    each from an empty cache: the goal has to hold for any of them, not for one lucky one."""
    with tempfile.TemporaryDirectory(prefix="ec-demo-") as tmp:
        tmp = Path(tmp)
        kd = [dict(figures(*deploy(tmp / f"kd{i}", tmp / f"cache{i}", i)), teacher_seed=i) for i in range(teachers)]
        ce = figures(*deploy(tmp / "ce", tmp / "cache0", 0, "distill.losses=[ce]"))  # teacher 0, cached
    worst = min(r["points_vs_teacher"] for r in kd)
    result = {
        "benchmark": "demo_distill", "measured_on": f"this host ({platform.machine()}, {os.cpu_count()} cores)",
        "profile": "raspberry-pi-5 (arm default): 50% channels, round_to 8, 1200 steps, "
                                            "INT8; the demo adds distill.shift_pixels=1",
        "int8_accuracy": "ONNX Runtime with exact INT8 products (session.x64quantprecision), as the arm64 target "
                         "computes them",
        "kd_soft_plus_ce": kd, "ce_only_same_budget_teacher0": ce,
        "teachers_within_goal": sum(r["points_vs_teacher"] >= -0.5 for r in kd), "teachers": len(kd),
        "worst_points_vs_teacher": worst, "slowest_deploy_s_with_teacher_training": max(r["wall_seconds"] for r in kd),
        "goal_time_met": all(r["wall_seconds"] < 120 for r in kd), "goal_accuracy_met": worst >= -0.5,
    }
    out = HERE / "results" / "demo_distill.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["goal_time_met"] and result["goal_accuracy_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
