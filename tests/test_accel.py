"""accel.py: distill.device / distill.precision resolved against what the machine has. Here (no GPU) the real
torch answers for the CPU; a stand-in with torch's attribute names answers for machines with GPUs."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgecompress import accel
from edgecompress.errors import ProfileError


def _torch_with(gpus=0, bf16=True, mps=False, name="NVIDIA H200"):
    cuda = SimpleNamespace(is_available=lambda: gpus > 0, device_count=lambda: gpus,
                           is_bf16_supported=lambda: bf16, get_device_name=lambda i: f"{name} #{i}")
    return SimpleNamespace(cuda=cuda, backends=SimpleNamespace(mps=SimpleNamespace(is_available=lambda: mps)),
                           version=SimpleNamespace(cuda="12.4" if gpus else None), __version__="2.13.0")


def test_auto_on_this_cpu_host_is_the_cpu_in_fp32():
    p = accel.resolve("auto", "auto")
    assert (p.device, p.precision, p.on_gpu) == ("cpu", "fp32", False)
    assert p.device_name.startswith("CPU (") and "no CUDA" in p.reason


def test_cuda_where_there_is_none_says_what_the_machine_has_and_what_to_do():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ProfileError) as err:
        accel.resolve("cuda", "auto")
    assert "no CUDA device" in str(err.value) and "--train-device cpu" in err.value.hint
    assert err.value.exit_code == 2


def test_auto_takes_the_gpu_and_bf16_where_it_has_it_else_fp16():
    assert (accel.resolve("auto", "auto", _torch_with(gpus=2)).device, accel.resolve("auto", "auto", _torch_with(gpus=2)).precision) == ("cuda:0", "bf16")
    old = accel.resolve("auto", "auto", _torch_with(gpus=1, bf16=False))
    assert old.precision == "fp16" and "gradient scaler" in old.reason
    assert accel.resolve("cuda:1", "fp32", _torch_with(gpus=2)).device_name == "NVIDIA H200 #1"


def test_a_gpu_index_past_the_last_is_refused_with_the_range():
    with pytest.raises(ProfileError, match=r"has 2 CUDA device\(s\) \(cuda:0 \.\. cuda:1\)"):
        accel.resolve("cuda:2", "auto", _torch_with(gpus=2))


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu"])
def test_a_device_that_is_not_one_names_the_choices(device):
    with pytest.raises(ProfileError, match="is not a device") as err:
        accel.resolve(device, "auto", _torch_with(gpus=1))
    assert "cuda:N" in err.value.hint


def test_bf16_on_a_gpu_without_it_points_to_fp16():
    with pytest.raises(ProfileError, match="has no bf16") as err:
        accel.resolve("cuda", "bf16", _torch_with(gpus=1, bf16=False))
    assert "fp16" in err.value.hint


def test_mps_where_there_is_none_is_refused():
    with pytest.raises(ProfileError, match="no MPS device"):
        accel.resolve("mps", "auto", _torch_with())
    assert accel.resolve("auto", "auto", _torch_with(mps=True)).device == "mps"


def test_bf16_autocast_on_the_cpu_computes_in_bf16_and_fp32_does_not():
    import torch

    lin = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with accel.autocast(accel.resolve("cpu", "bf16")):
        assert lin(x).dtype == torch.bfloat16
    with accel.autocast(accel.resolve("cpu", "fp32")):
        assert lin(x).dtype == torch.float32
    assert accel.grad_scaler(accel.resolve("cpu", "bf16")) is None
    assert accel.grad_scaler(accel.resolve("cpu", "fp16")) is not None


def test_on_the_cpu_the_teacher_is_the_model_itself_in_eval_and_fp32():
    import torch

    teacher = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    assert accel.training_teacher(teacher, accel.resolve("cpu", "bf16")) is teacher
    assert not teacher.training and next(teacher.parameters()).dtype == torch.float32
