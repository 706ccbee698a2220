"""models.py on files as users have them: a model file that is not importable by name, weights saved
by a training script, a pickle planted to run code, .onnx files with their weights beside them."""
from __future__ import annotations

import hashlib
import pickle
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ecutil import MODEL_SRC
from edgecompress import models
from edgecompress.errors import InputError

OWN_CLASS = '''
import torch.nn as nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


def build():
    return Tiny()


def tiny_v2():
    return Tiny()
'''


def _write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


class _Planted:
    """Unpickled, it creates the marker file: what a weights file from a stranger could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_model_file_is_a_module_registered_under_a_name_unique_to_its_path(tmp_path):
    a = _write(tmp_path / "a" / "net.py", OWN_CLASS)
    b = _write(tmp_path / "b" / "net.py", OWN_CLASS)
    first, second = models.load(f"{a}:build", None), models.load(f"{b}:build", None)
    digest = hashlib.sha1(str(a.resolve()).encode()).hexdigest()[:8]
    name = type(first.module).__module__
    assert name == f"edgecompress_user_net_{digest}" and sys.modules[name].__file__ == str(a)
    assert type(second.module).__module__ != name, "two files named net.py stay two modules"
    assert not first.module.training, "handed over in eval mode"
    again = pickle.loads(pickle.dumps(first.module))  # pickle finds the class by its module's name
    assert type(again) is type(first.module)
    assert str(tmp_path / "a") not in sys.path, "the file's folder is on sys.path only while it is imported"


def test_the_source_records_name_kind_and_a_digest_of_the_file(tmp_path):
    path = _write(tmp_path / "tiny.py", OWN_CLASS)
    source = models.load(f"{path}:tiny_v2", None)
    assert (source.name, source.kind, source.weights, source.onnx_path) == ("tiny_v2", "torch", None, None)
    assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("spec, name", [
    (None, "demo"), ("models/resnet.py:build", "resnet"), ("models/resnet.py:model", "resnet"),
    ("models/zoo.py:create", "zoo"), ("models/zoo.py:mobilenet_v2", "mobilenet_v2"), ("exported/net.onnx", "net"),
    ("C:/models/net.py:build", "net"),  # the factory is after the last colon
])
def test_the_bundle_name_comes_from_the_command_line_alone(spec, name):
    assert models.name_for(spec) == name


def test_weights_load_with_weights_only_and_join_the_digest(tmp_path):
    path = _write(tmp_path / "tiny.py", OWN_CLASS)
    torch.manual_seed(3)
    trained = models.load(f"{path}:build", None).module
    with torch.no_grad():
        trained.fc.weight.fill_(0.25)
    weights = tmp_path / "w.pt"
    torch.save(trained.state_dict(), weights)
    source = models.load(f"{path}:build", str(weights))
    assert torch.equal(source.module.fc.weight, torch.full((3, 4), 0.25)) and source.weights == weights
    want = hashlib.sha256(path.read_bytes())
    want.update(bytes.fromhex(models.sha256_file(weights)))
    assert source.sha256 == want.hexdigest()


def test_a_training_checkpoint_and_a_wrapped_models_keys_load_as_its_state_dict(tmp_path, capsys):
    path = _write(tmp_path / "tiny.py", OWN_CLASS)
    state = {k: torch.full_like(v, 0.5) for k, v in models.load(f"{path}:build", None).module.state_dict().items()}
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, ckpt)
    loaded = models.load(f"{path}:build", str(ckpt)).module
    assert torch.equal(loaded.fc.bias, torch.full((3,), 0.5))
    err = capsys.readouterr().err
    assert f"{ckpt} is a training checkpoint; loading its 'model' entry (also in it: epoch)" in err
    assert "loading it without the 'module.' prefix of its keys" in err


def test_a_planted_pickle_in_the_weights_is_refused_and_its_code_never_runs(tmp_path):
    path = _write(tmp_path / "tiny.py", OWN_CLASS)
    marker = tmp_path / "PWNED"
    weights = tmp_path / "w.pt"
    torch.save({"fc.weight": _Planted(marker)}, weights)
    with pytest.raises(InputError) as exc:
        models.load(f"{path}:build", str(weights))
    assert not marker.exists(), "the pickle's code ran"
    assert exc.value.message.startswith(f"weights {weights} could not be loaded with weights_only=True: it holds a "
                                        "pickled ")
    assert exc.value.hint == "save them with torch.save(model.state_dict(), path)"


def test_weights_of_another_architecture_name_every_mismatch(tmp_path):
    path = _write(tmp_path / "tiny.py", OWN_CLASS)
    weights = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(5, 4), "head.bias": torch.zeros(5)}, weights)
    with pytest.raises(InputError) as exc:
        models.load(f"{path}:build", str(weights))
    assert exc.value.message == (f"weights {weights} do not match the model:\n  missing (1): fc.bias\n"
                                 "  unexpected (1): head.bias\n"
                                 "  wrong shape (1): fc.weight: file (5, 4) vs model (3, 4)")


def test_a_factory_that_is_not_there_is_named_with_the_closest_and_every_callable(tmp_path):
    path = _write(tmp_path / "tiny.py", OWN_CLASS)
    with pytest.raises(InputError) as exc:
        models.load(f"{path}:tiny_v1", None)
    assert exc.value.message == f"{path} has no 'tiny_v1'. Did you mean 'tiny_v2'?"
    assert exc.value.hint == "callables in tiny.py: Tiny, build, tiny_v2"  # the module nn is no callable
    assert exc.value.exit_code == 2


def test_a_factory_raising_shows_the_users_traceback_not_ours(tmp_path):
    path = _write(tmp_path / "net.py", MODEL_SRC)
    with pytest.raises(InputError) as exc:
        models.load(f"{path}:broken", None)
    assert exc.value.message.startswith(f"{path}:broken() raised NameError:\nTraceback")
    assert f'File "{path}", line' in exc.value.message and "models.py" not in exc.value.message
    assert exc.value.hint == f"fix the error in {path}"


def _onnx_file(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _split(src: Path, dst: Path) -> Path:
    import onnx

    onnx.save(onnx.load(str(src)), str(dst), save_as_external_data=True, location=f"{dst.name}.data",
              size_threshold=0)
    return dst


def test_an_onnx_file_is_checked_and_digested_with_its_external_weights(tmp_path):
    whole = _onnx_file(tmp_path / "mm.onnx")
    source = models.load(str(whole), None)
    assert (source.name, source.kind, source.onnx_path, source.module) == ("mm", "onnx", whole, None)
    assert source.sha256 == hashlib.sha256(whole.read_bytes()).hexdigest()
    split = _split(whole, tmp_path / "split.onnx")
    data = tmp_path / "split.onnx.data"
    assert models.external_data_files(split) == [data] and models.external_data_files(whole) == []
    parts = models.sha256_file(split) + models.sha256_file(data)
    assert models.load(str(split), None).sha256 == hashlib.sha256(parts.encode()).hexdigest()
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(InputError, match=r"junk.onnx is not a valid ONNX model"):
        models.load(str(tmp_path / "junk.onnx"), None)
    with pytest.raises(InputError, match="--weights applies to a PyTorch factory"):
        models.load(str(whole), str(tmp_path / "w.pt"))


def test_write_single_file_brings_external_weights_into_the_one_file(tmp_path):
    import onnxruntime as ort

    split = _split(_onnx_file(tmp_path / "mm.onnx"), tmp_path / "split.onnx")
    out = tmp_path / "sent"
    out.mkdir()
    one = models.write_single_file(split, out / "model.onnx")
    assert one == out / "model.onnx" and sorted(p.name for p in out.iterdir()) == ["model.onnx"]
    (tmp_path / "split.onnx.data").unlink()  # the device has only the one file
    y = ort.InferenceSession(str(one), providers=["CPUExecutionProvider"]).run(None, {"x": np.ones((1, 4), np.float32)})
    np.testing.assert_array_equal(y[0], [[18.0, 22.0, 26.0]])  # column sums of arange(12).reshape(4, 3)
    whole = _onnx_file(tmp_path / "whole.onnx")
    copy = models.write_single_file(whole, out / "copy.onnx")
    assert copy.read_bytes() == whole.read_bytes()


def test_sha256_file_reads_in_blocks_to_the_same_digest(tmp_path):
    path = tmp_path / "big.bin"
    blob = np.random.default_rng(0).bytes((1 << 20) * 2 + 123)  # across two 1 MiB block boundaries
    path.write_bytes(blob)
    assert models.sha256_file(path) == hashlib.sha256(blob).hexdigest()
