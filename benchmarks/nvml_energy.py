"""Device check for the NVML power source (issue 3), for a machine with an NVIDIA GPU.

Runs the real device side (`edgecompress/deploy/ec_bench.py`, a separate process, as on a device)
on a ResNet-18 ONNX model with `energy: nvml`, twice:
  A. ONNX Runtime on the CPU only: the GPU idles, so the net energy should be near zero;
  B. the same, while a second process loads the GPU with matrix products from the moment the timed
     window starts (it waits, CUDA ready, for the device side's "timed" progress line): the net
     energy must then show the GPU's extra power.
`nvidia-smi` samples power.draw every 100 ms beside both runs, as an independent cross-check.
Writes OUT/nvml_energy.json (OUT: first argument, default benchmarks/results)."""
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEVICE_SIDE = HERE.parent / "edgecompress" / "deploy"
GPU_LOAD = r"""
import sys, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize()
print("ready", flush=True)
sys.stdin.readline()                     # go
import time
end = time.time() + float(sys.argv[1])
while time.time() < end:
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
"""


def export_model(path: Path) -> None:
    import torch

    sys.path.insert(0, str(HERE / "models"))
    from resnet import resnet18

    torch.onnx.export(resnet18().eval(), (torch.randn(1, 3, 224, 224),), str(path), dynamo=False,
                      input_names=["input"], opset_version=17)


def run_job(folder: Path, load_seconds: float = 0.0) -> dict:
    job = {"protocol_version": 1, "model": "model.onnx", "runtime": "onnxruntime",
           "runtime_options": {"threads": 8}, "warmup": {"runs": 5, "seconds": 1.0},
           "runs": {"count": 50, "seconds": 8.0}, "max_runs": 1000000, "energy": "nvml", "idle_seconds": 3.0}
    (folder / "job.json").write_text(json.dumps(job))
    load = None
    if load_seconds:
        load = subprocess.Popen([sys.executable, "-c", GPU_LOAD, str(load_seconds)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert load.stdout.readline().strip() == "ready"
    proc = subprocess.Popen([sys.executable, "ec_bench.py", "job.json"], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t_timed = None
    for line in proc.stderr:
        print("  " + line.rstrip(), flush=True)
        if line.startswith("progress: timed") and " in " not in line and t_timed is None:
            t_timed = time.time()
            if load:
                load.stdin.write("go\n")
                load.stdin.flush()
    out = proc.stdout.read()
    proc.wait()
    if load:
        load.wait()
    result = json.loads(out.strip().splitlines()[-1])
    result["timed_started_at_unix"] = t_timed
    return result


def main() -> int:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,power.draw", "--format=csv,noheader,nounits",
                            "-lms", "100"], stdout=open(out_dir / "nvidia_smi_power.csv", "w"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for f in DEVICE_SIDE.glob("ec_*.py"):
                shutil.copy(f, folder)
            export_model(folder / "model.onnx")
            a = run_job(folder)
            b = run_job(folder, load_seconds=9.0)
    finally:
        smi.terminate()
    summary = {"machine": subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                         capture_output=True, text=True).stdout.strip(),
               "A_cpu_only": {"latency_p50_ms": a["latency_ms"]["p50"], "n": a["latency_ms"]["n"],
                              "energy": a["energy"], "energy_reason": a.get("energy_reason"),
                              "warnings": a["warnings"]},
               "B_with_gpu_load": {"latency_p50_ms": b["latency_ms"]["p50"], "n": b["latency_ms"]["n"],
                                   "energy": b["energy"], "energy_reason": b.get("energy_reason"),
                                   "warnings": b["warnings"]},
               "device_state_B": b["device"]}
    (out_dir / "nvml_energy.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "device_state_B"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
