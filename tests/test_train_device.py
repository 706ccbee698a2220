"""Where and how distillation trains, on this CPU host: bf16 autocast runs and tracks fp32, a CUDA device the
machine lacks stops the deploy before any work (exit 2), DataLoader workers read the batches one process reads,
and a memory-mapped .npz distills without being loaded whole."""
from __future__ import annotations

import copy
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from edgecompress import demo, distill, prune
from edgecompress.data import Dataset, load_npz
from edgecompress.profile import Distill, Prune

from ecutil import fast_sets, make_data, run_cli


def _pair():
    torch.manual_seed(0)
    teacher = demo.build().eval()
    student = copy.deepcopy(teacher)
    prune.prune_channels_(student, Prune(ratio=0.5, round_to=8), torch.zeros(1, 1, 8, 8))
    # a scrambled head: the pruned student starts far from the teacher, so there is a loss curve to compare
    with torch.no_grad():
        for p in student.modules():
            if isinstance(p, torch.nn.Linear):
                p.weight.copy_(torch.randn_like(p.weight))
    return teacher, student


def _train(tmp_path, name, data, **cfg):
    teacher, student = _pair()
    settings = dict(steps=60, lr=3e-3, losses=["soft", "ce"], checkpoint_every=1000)
    settings.update(cfg)
    report = distill.distill_(student, teacher, data, Distill(**settings), steps=settings["steps"], seconds=None,
                              checkpoint=tmp_path / f"{name}.pt", meta={"round": 1})
    return report, student


def test_bf16_autocast_on_the_cpu_trains_and_its_loss_tracks_fp32(tmp_path):
    x, y = make_data(n=256)
    fp32, s32 = _train(tmp_path, "fp32", Dataset(x, y, "t"), precision="fp32")
    bf16, s16 = _train(tmp_path, "bf16", Dataset(x, y, "t"), precision="bf16")
    assert bf16.training["precision"] == "bf16" and fp32.training["precision"] == "fp32"
    start = fp32.loss_curve[0][2]
    assert bf16.final_loss < 0.5 * start, "bf16 learned"
    assert abs(bf16.final_loss - fp32.final_loss) <= 0.1 * start, (fp32.final_loss, bf16.final_loss, start)
    assert next(s16.parameters()).dtype == torch.float32, "the student keeps fp32 weights for export"
    assert bf16.training["steps_per_s"] > 0 and bf16.training["images_per_s"] == pytest.approx(
        bf16.training["steps_per_s"] * 64, rel=0.01)


def test_dataloader_workers_read_the_batches_one_process_reads(tmp_path):
    x, y = make_data(n=256)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    data = load_npz(path)
    inline, a = _train(tmp_path, "w0", data, steps=20, workers=0)
    ahead, b = _train(tmp_path, "w2", data, steps=20, workers=2)
    assert inline.final_loss == pytest.approx(ahead.final_loss, rel=1e-6)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


def test_a_cuda_train_device_on_a_machine_without_one_stops_before_any_work(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli("deploy", "--target", "arm", "--out", str(tmp_path / "o"), "--train-device", "cuda",
                           *fast_sets())
    assert code == 2, err
    assert "distill.device=cuda, and this machine has no CUDA device" in err
    assert "--train-device cpu" in err
    assert "demo: trained" not in err and "distill 1/1" not in err, "refused before any training"
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


_DISTILL_MAPPED = """
import sys
from pathlib import Path
import torch
from edgecompress import data, distill
from edgecompress.profile import Distill

def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))

torch.set_num_threads(1)
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, 2, 1)
        self.head = torch.nn.Linear(8, 4)
    def forward(self, x):
        return self.head(self.conv(x).relu().mean((2, 3)))

torch.manual_seed(0)
teacher, student = Net().eval(), Net()
train, _ = data.split(data.load_npz(Path(sys.argv[1])), 0.2)
student(torch.zeros(2, 4, 64, 64)); teacher(torch.zeros(2, 4, 64, 64))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS:")
report = distill.distill_(student, teacher, train, Distill(steps=40, losses=["soft"], batch_size=32), steps=40,
                          seconds=None, checkpoint=Path(sys.argv[2]), meta={"round": 1})
print(report.steps, (status("VmHWM:") - base) // 1024)
"""


def _mapped_npz(folder, n: int):
    folder.mkdir(parents=True, exist_ok=True)
    big = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(n, 4, 64, 64))
    big[::3] = 0.5
    big.flush()
    del big
    path = folder / "data.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        z.write(folder / "x.npy", "x.npy")
    (folder / "x.npy").unlink()
    return path


def _peak_growth(path, checkpoint) -> int:
    done = subprocess.run([sys.executable, "-c", _DISTILL_MAPPED, str(path), str(checkpoint)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    steps, grown_mib = (int(v) for v in done.stdout.split()[-2:])
    assert steps == 40
    return grown_mib


def test_a_memory_mapped_npz_larger_than_the_budget_distills_without_being_read_whole(tmp_path):
    """A 256 MiB x (4096 samples of 4x64x64) against a 16 MiB one, the same 40 steps of batch 32: training
    itself (backward, AdamW) costs the same in both, and the large file adds far less than its size to the
    peak RSS (a whole read would add 256 MiB; the budget the test sets: 64 MiB more than the small file)."""
    small = _peak_growth(_mapped_npz(tmp_path / "small", 256), tmp_path / "s.pt")
    large = _peak_growth(_mapped_npz(tmp_path / "large", 4096), tmp_path / "l.pt")
    assert large - small < 64, f"peak RSS grew {large} MiB from a 256 MiB file, {small} MiB from a 16 MiB one"
