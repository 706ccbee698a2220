"""Distillation on a CUDA GPU (issue 15): these skip on a machine without one (CI, this project's 2-core
hosts) and run where a GPU is lent, through benchmarks/gpu_check.sh. Each asserts what a user would check:
the run trained where and how it says, its loss tracks the same recipe in fp32 on the CPU, and the bundle
is built and checked on the CPU as ever."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from edgecompress import demo, distill, prune
from edgecompress.data import Dataset
from edgecompress.profile import Distill, Prune

from ecutil import fast_sets, make_data, run_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _pair():
    torch.manual_seed(0)
    teacher = demo.build().eval()
    student = copy.deepcopy(teacher)
    prune.prune_channels_(student, Prune(ratio=0.5, round_to=8), torch.zeros(1, 1, 8, 8))
    with torch.no_grad():  # a scrambled head: there is a loss curve to compare
        for m in student.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn_like(m.weight))
    return teacher, student


def _train(tmp_path, name, device, precision):
    x, y = make_data(n=256)
    teacher, student = _pair()
    cfg = Distill(steps=60, lr=3e-3, losses=["soft", "ce"], checkpoint_every=1000, device=device, precision=precision)
    report = distill.distill_(student, teacher, Dataset(x, y, "t"), cfg, steps=60, seconds=None,
                              checkpoint=tmp_path / f"{name}.pt", meta={"round": 1})
    return report, teacher, student


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_distilling_on_the_gpu_tracks_the_cpu_in_fp32_and_leaves_the_models_on_the_cpu(tmp_path, precision):
    cpu, _, _ = _train(tmp_path, "cpu", "cpu", "fp32")
    gpu, teacher, student = _train(tmp_path, precision, "cuda", precision)
    assert gpu.training["device"].startswith("cuda") and gpu.training["precision"] == precision
    assert torch.cuda.get_device_name(0) in gpu.training["device_name"]
    start = cpu.loss_curve[0][2]
    assert gpu.final_loss < 0.5 * start, "it learned"
    assert abs(gpu.final_loss - cpu.final_loss) <= 0.15 * start, (cpu.final_loss, gpu.final_loss, start)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in student.parameters())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in teacher.parameters()), \
        "the user's model is not cast: the checks compare against its own weights"


def test_auto_takes_the_gpu_and_bf16_where_it_has_it(tmp_path):
    report, _, _ = _train(tmp_path, "auto", "auto", "auto")
    assert report.training["device"].startswith("cuda")
    assert report.training["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")


def test_a_deploy_trained_on_the_gpu_writes_a_bundle_that_verifies_and_says_where_it_trained(tmp_path):
    out = tmp_path / "o"
    code, _, err = run_cli("deploy", "--target", "arm", "--out", str(out), "--train-device", "cuda",
                           *fast_sets("distill.precision=bf16"))
    assert code == 0, err
    bundle = next(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    training = json.loads((bundle / "manifest.json").read_text())["compression"]["distillation"]["training"]
    assert training["device"].startswith("cuda") and training["precision"] == "bf16" and training["world_size"] == 1
    assert training["steps_per_s"] > 0
    code, _, err = run_cli("verify", str(bundle))
    assert code == 0, err
