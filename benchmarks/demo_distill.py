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


def deploy(out: Path, cache: Path, *sets: str) -> tuple:
    cmd = [sys.executable, "-m", "edgecompress.cli", "deploy", "--target", "arm", "--out", str(out), "--json"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, EDGECOMPRESS_CACHE=str(cache), EDGECOMPRESS_PROGRESS="0")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"deploy failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout), seconds


def figures(summary: dict, seconds: float) -> dict:
    return {"wall_seconds": round(seconds, 1), "teacher_accuracy": summary["before"]["accuracy"],
            "student_accuracy_int8": summary["after"]["accuracy"],
            "points_vs_teacher": round((summary["after"]["accuracy"] - summary["before"]["accuracy"]) * 100, 2),
            "params": [summary["before"]["params"], summary["after"]["params"]],
            "macs": [summary["before"]["macs"], summary["after"]["macs"]],
            "p50_ms": [summary["before"]["p50_ms"], summary["after"]["p50_ms"]], "speedup_p50": summary["speedup_p50"]}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ec-demo-") as tmp:
        tmp = Path(tmp)
        kd, kd_s = deploy(tmp / "kd", tmp / "cache")  # fresh cache: includes training the teacher
        ce, ce_s = deploy(tmp / "ce", tmp / "cache", "distill.losses=[ce]")
    result = {
        "benchmark": "demo_distill", "measured_on": f"this host ({platform.machine()}, {os.cpu_count()} cores)",
        "held_out_samples": kd.get("accuracy_samples"), "profile": "raspberry-pi-5 (arm default): 50% channels, round_to 8, 600 steps, INT8",
        "kd_soft_plus_ce": figures(kd, kd_s), "ce_only_same_budget": figures(ce, ce_s),
        "goal_time_met": kd_s < 120, "goal_accuracy_met": figures(kd, kd_s)["points_vs_teacher"] >= -0.5,
    }
    out = HERE / "results" / "demo_distill.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["goal_time_met"] and result["goal_accuracy_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
