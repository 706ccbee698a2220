"""The host-side INT8 check for a non-x86 target computes INT8 products exactly, as ARM does."""
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from edgecompress import verify

K, N = 64, 8


def saturating_model(path):
    """x (uint8 after Q/DQ) times int8 weights of +-127: pairs of u8 x s8 products reach
    2 x 255 x 127 = 64770, past the int16 range of x86's VPMADDUBSW."""
    w = np.full((K, N), 127, np.int8)
    w[:, 1::2] = -127
    graph = h.make_graph(
        [h.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
         h.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
         h.make_node("DequantizeLinear", ["w", "sw"], ["wd"]),
         h.make_node("MatMul", ["xd", "wd"], ["y"])], "saturating",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])],
        [nh.from_array(np.array(1 / 255, np.float32), "sx"), nh.from_array(np.array(0, np.uint8), "zx"),
         nh.from_array(w, "w"), nh.from_array(np.array(0.01, np.float32), "sw")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w


def test_exact_int8_matches_integer_arithmetic(tmp_path):
    w = saturating_model(tmp_path / "m.onnx")
    x = np.random.default_rng(0).uniform(0.9, 1.0, (16, K)).astype(np.float32)
    exact = (np.round(x * 255).clip(0, 255) / np.float32(255)) @ (w.astype(np.float32) * np.float32(0.01))
    y = verify.onnx_outputs(tmp_path / "m.onnx", x, exact_int8=True)[0]
    np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-3)


def test_without_exact_int8_this_host_saturates(tmp_path):
    """The control: on an x86 CPU without VNNI (this project's machines) the default kernel gets the
    same model badly wrong, so the test above shows the option at work. Elsewhere nothing saturates."""
    import platform

    flags = open("/proc/cpuinfo").read() if platform.system() == "Linux" else ""
    if platform.machine() not in ("x86_64", "AMD64") or "avx2" not in flags or "vnni" in flags:
        pytest.skip("only x86 CPUs with AVX2 and without VNNI saturate u8 x s8 products")
    w = saturating_model(tmp_path / "m.onnx")
    x = np.ones((4, K), np.float32)
    exact = x @ (w.astype(np.float32) * np.float32(0.01))
    y = verify.onnx_outputs(tmp_path / "m.onnx", x)[0]
    assert np.abs(y - exact).max() > 10  # 64 x 255 x 127 x 0.01 / 255 = 81.3 comes out near 41


def test_which_targets_are_checked_exactly():
    from edgecompress.backends import onnxruntime

    assert onnxruntime.exact_int8("arm64") is True and onnxruntime.exact_int8("armv7") is True
    assert onnxruntime.exact_int8("x86_64") is False  # runs ONNX Runtime's x86 kernels, as checked


# ---------------------------------------------------------------------------------------------
# a bundle read back: its model against the manifest's description, the files the manifest names,
# and damaged or hand-edited contents (issue 11 item 4, F5, F7, B12)
# ---------------------------------------------------------------------------------------------

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from ecutil import fast_sets, make_data, run_cli, tripling_model  # noqa: E402

NAME = "net-host-cpu"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two bundles of one model and target with different pruning: {ratio: bundle folder}."""
    from ecutil import MODEL_SRC

    root = tmp_path_factory.mktemp("bundles")
    (root / "net.py").write_text(MODEL_SRC)
    x, y = make_data()
    np.savez(root / "data.npz", x=x, y=y)
    built = {}
    for ratio in ("0.25", "0.75"):
        code, _, err = run_cli("deploy", f"{root}/net.py:build", "--target", "host-cpu", "--data", root / "data.npz",
                               "--out", root / ratio, *fast_sets(f"prune.ratio={ratio}", "distill.steps=10"))
        assert code == 0, err
        built[ratio] = root / ratio / NAME
    return built


def copy_of(bundles, tmp_path, ratio="0.25") -> Path:
    folder = tmp_path / NAME
    shutil.copytree(bundles[ratio], folder, symlinks=True)
    return folder


def edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def relist(folder: Path) -> None:
    """Update the manifest's checksums to the files now in the folder, as a careful forger would."""
    from edgecompress import bundle

    edit_manifest(folder, lambda m: m.update(files=bundle.file_table(folder)))


def refused(code: int, err: str, *words: str, exit_code: int = 3) -> bool:
    assert code == exit_code, err
    assert "Traceback" not in err and "does not handle" not in err, err
    assert all(w in err for w in words), err
    return True


def test_a_model_swapped_for_another_prunings_fails_verify_naming_the_mismatch(bundles, tmp_path):
    """F3's published bundle: the manifest of one pruning, the model.onnx of the other, checksums that
    match. The checksums alone said OK."""
    folder = copy_of(bundles, tmp_path)
    shutil.copy(bundles["0.75"] / "model.onnx", folder / "model.onnx")
    relist(folder)
    code, _, err = run_cli("verify", folder)
    assert refused(code, err, "model.onnx is not the model its manifest describes", "parameters in the model file",
                   "(model.parameters)", "rebuild the bundle")


def test_a_model_with_other_inputs_and_outputs_fails_verify_naming_them(bundles, tmp_path):
    folder = copy_of(bundles, tmp_path)
    tripling_model(folder / "model.onnx")
    relist(folder)
    code, _, err = run_cli("verify", folder)
    assert refused(code, err, "input 'input': name 'x' in the model file, 'input' in the manifest",
                   "output 'output': shape ['batch', 8] in the model file, ['batch', 4] in the manifest")


@pytest.mark.parametrize("named", ["absolute", "parent", "unlisted"])
def test_a_model_file_outside_the_bundle_is_neither_verified_nor_benched(bundles, tmp_path, named):
    """F5: model.file was joined to the folder as given: an absolute path or ../ ran (and bench --device
    uploaded) a file from outside the bundle."""
    folder = copy_of(bundles, tmp_path)
    elsewhere = tmp_path / "elsewhere.onnx"
    shutil.copy(bundles["0.75"] / "model.onnx", elsewhere)
    if named == "unlisted":
        shutil.copy(elsewhere, folder / "extra.onnx")
    target = {"absolute": str(elsewhere), "parent": "../elsewhere.onnx", "unlisted": "extra.onnx"}[named]
    edit_manifest(folder, lambda m: m["model"].update(file=target))
    why = "which its files do not list" if named == "unlisted" else "not a plain file name"
    for command in (["verify", folder], ["bench", folder, "--runs", "5", "--seconds", "0"]):
        code, _, err = run_cli(*command)
        assert refused(code, err, "names files outside the bundle", f"model.file is {target!r}, {why}")


def test_a_tensorrt_build_setting_naming_a_file_outside_is_refused(bundles, tmp_path):
    folder = copy_of(bundles, tmp_path)
    edit_manifest(folder, lambda m: m.update(engine={"build_settings": {"onnx": "/etc/passwd", "calibration": None}}))
    code, _, err = run_cli("verify", folder)
    assert refused(code, err, "engine.build_settings.onnx is '/etc/passwd', not a plain file name")


def test_bench_checks_the_checksum_of_the_model_it_runs(bundles, tmp_path):
    folder = copy_of(bundles, tmp_path)
    shutil.copy(bundles["0.75"] / "model.onnx", folder / "model.onnx")  # the manifest not updated
    code, _, err = run_cli("bench", folder, "--runs", "5", "--seconds", "0")
    assert refused(code, err, "does not match its manifest", "model.onnx: sha256")


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_symlink_inside_a_bundle_fails_verify_and_bench(bundles, tmp_path, link):
    """A link to /etc/hostname passed verify once its hash was listed; a linked folder was skipped."""
    folder = copy_of(bundles, tmp_path)
    if link == "file":
        (folder / "host.txt").symlink_to("/etc/hostname")
        edit_manifest(folder, lambda m: m["files"].update({"host.txt": {
            "sha256": __import__("hashlib").sha256(Path("/etc/hostname").read_bytes()).hexdigest(),
            "bytes": Path("/etc/hostname").stat().st_size}}))
    else:
        (tmp_path / "outside").mkdir()
        (folder / "more").symlink_to(tmp_path / "outside")
    for command in (["verify", folder], ["bench", folder, "--runs", "5", "--seconds", "0"]):
        code, _, err = run_cli(*command)
        assert refused(code, err, "holds symbolic links", "host.txt" if link == "file" else "more")


CORRUPT_MANIFESTS = {
    "a list": (lambda f: f.write_text("[]"), "holds a JSON list, not a manifest"),
    "no metrics": (lambda f: f.write_text(json.dumps({k: v for k, v in json.loads(f.read_text()).items()
                                                      if k != "metrics"})), "metrics: missing"),
    "no provenance": (lambda f: f.write_text(json.dumps({k: v for k, v in json.loads(f.read_text()).items()
                                                         if k != "provenance"})), "provenance: missing"),
    "not UTF-8": (lambda f: f.write_bytes(f.read_bytes().replace(b'"target"', b'"t\xe4rget"')), "is not UTF-8 text"),
    "not JSON": (lambda f: f.write_text(f.read_text()[:-20]), "is not valid JSON"),
    "files not a table": (lambda f: f.write_text(json.dumps(dict(json.loads(f.read_text()), files=["model.onnx"]))),
                          "files: is list"),
    "a file key outside": (lambda f: f.write_text(json.dumps(dict(json.loads(f.read_text()), files={
        "../x": {"sha256": "0", "bytes": 1}}))), "'../x' is not a path inside the bundle folder"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_MANIFESTS))
def test_a_corrupt_or_hand_edited_manifest_is_named_with_the_remedy(bundles, tmp_path, case):
    """F7/B12: each of these was a traceback (AttributeError, KeyError, UnicodeDecodeError)."""
    folder = copy_of(bundles, tmp_path)
    corrupt, words = CORRUPT_MANIFESTS[case]
    corrupt(folder / "manifest.json")
    for command in (["verify", folder], ["bench", folder, "--runs", "5", "--seconds", "0"]):
        code, _, err = run_cli(*command)
        assert refused(code, err, str(folder / "manifest.json"), words, "rebuild the bundle")


def test_a_manifest_from_a_newer_edgecompress_says_to_upgrade(bundles, tmp_path):
    folder = copy_of(bundles, tmp_path)
    edit_manifest(folder, lambda m: m.update(schema_version=2))
    code, _, err = run_cli("verify", folder)
    assert refused(code, err, "has schema_version 2, newer than the 1 this edgecompress", "upgrade edgecompress",
                   exit_code=2)


def write_pickled(path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"x": [1, 2, 3]}))


def write_object_array(path: Path) -> None:
    np.savez(path, x=np.array([{"a": 1}], dtype=object), expected=np.zeros(1), reference=np.zeros(1))


def write_other_sample_shape(path: Path) -> None:
    np.savez(path, x=np.zeros((32, 1, 4, 4), np.float32), expected=np.zeros((32, 4)), reference=np.zeros((32, 4)))


@pytest.mark.parametrize("damage, words", [
    (write_pickled, "is not an .npz of plain numeric arrays"),
    (write_object_array, "is not an .npz of plain numeric arrays"),
    (lambda p: p.write_bytes(b"not an npz at all"), "is not an .npz of plain numeric arrays"),
    (lambda p: np.savez(p, x=np.zeros((4, 1, 8, 8), np.float32)), "lacks the arrays expected, reference"),
    (write_other_sample_shape, "the stored samples in parity.npz are [1, 4, 4] per sample and the model's input 'input' takes "
                               "[1, 8, 8]"),
], ids=["pickle", "object array", "garbage", "missing arrays", "other shape"])
def test_damaged_stored_samples_are_named_without_numpys_unsafe_advice(bundles, tmp_path, damage, words):
    folder = copy_of(bundles, tmp_path)
    (folder / "parity.npz").unlink()
    damage(folder / "parity.npz")
    relist(folder)
    code, _, err = run_cli("verify", folder)
    assert refused(code, err, "parity.npz", words, "rebuild the bundle")
    assert "unsafely" not in err and "allow_pickle" not in err, err


@pytest.fixture(scope="module")
def tflite_bundle(tmp_path_factory):
    pytest.importorskip("litert_torch", reason="the [tflite] extra is not installed")
    from ecutil import MODEL_SRC

    root = tmp_path_factory.mktemp("tflite")
    (root / "net.py").write_text(MODEL_SRC)
    x, y = make_data()
    np.savez(root / "data.npz", x=x, y=y)
    code, _, err = run_cli("deploy", f"{root}/net.py:build", "--target", "android-arm64", "--data", root / "data.npz",
                           "--out", root / "dist", *fast_sets("distill.steps=10"))
    assert code == 0, err
    return root / "dist" / "net-android-arm64"


def test_a_tflite_model_is_held_to_its_tensors_and_parameter_count(tflite_bundle, tmp_path):
    """The .tflite's tensors read with ai_edge_litert: the untouched bundle verifies; a manifest that
    says another count or input type does not."""
    code, out, err = run_cli("verify", tflite_bundle)
    assert code == 0 and "OK" in out, err
    manifest = json.loads((tflite_bundle / "manifest.json").read_text())
    assert manifest["model"]["parameters"] > 1000  # this model's weights and biases, INT8
    folder = tmp_path / "b"
    shutil.copytree(tflite_bundle, folder)
    edit_manifest(folder, lambda m: (m["model"].update(parameters=m["model"]["parameters"] + 8),
                                     m["inputs"][0].update(dtype="float32")))
    code, _, err = run_cli("verify", folder)
    assert refused(code, err, "model.tflite is not the model its manifest describes",
                   f"input {manifest['inputs'][0]['name']!r}: dtype 'int8' in the model file, 'float32' in the manifest",
                   f"{manifest['model']['parameters']:,} parameters in the model file")


def _shared_head_int8(tmp_path):
    """A user's net whose 1x1 head is applied to two feature maps (an FPN's levels), as ORT quantizes it."""
    import torch
    import torch.nn as nn
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return torch.cat([self.head(self.a(x)).flatten(2), self.head(self.b(x)).flatten(2)], 2)

    torch.manual_seed(0)
    torch.onnx.export(Net().eval(), torch.randn(1, 3, 16, 16), str(tmp_path / "m.onnx"), input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": rng.random((1, 3, 16, 16), np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    return tmp_path / "q.onnx", rng.random((6, 3, 16, 16), np.float32)


def test_a_weight_two_layers_share_is_checked_with_exact_int8_products(tmp_path):
    """ONNX Runtime's exact-INT8 rewrite fails to load a file whose quantized weight two nodes read; the check
    runs a copy with a weight per use, which computes the same thing, and the file itself is left as it is."""
    path, x = _shared_head_int8(tmp_path)
    before = path.read_bytes()
    exact = verify.onnx_outputs(path, x, exact_int8=True)
    plain = verify.onnx_outputs(path, x)
    assert exact[0].shape == (6, 4, 320) and np.allclose(exact[0], plain[0], atol=0.05)
    assert path.read_bytes() == before
    copy = onnx.load_from_string(verify.unshared_weights(path))
    onnx.checker.check_model(copy)
    inits = {i.name for i in copy.graph.initializer}
    reads = [name for node in copy.graph.node for name in node.input if name in inits]
    dq_outs = [n.output[0] for n in copy.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    uses = [name for node in copy.graph.node for name in node.input if name in dq_outs]
    assert len(uses) == len(set(uses)), "each dequantized weight feeds one node"
    weights = [n.input[0] for n in copy.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(weights) == len(set(weights)) and reads
    # a model without shared weights is left alone
    saturating_model(tmp_path / "s.onnx")
    assert verify.unshared_weights(tmp_path / "s.onnx") is None


def test_a_regressors_details_name_its_outputs_as_the_model_does():
    """task_details.outputs said output_0/output_1 beside parity outputs named heatmaps/offsets."""
    from edgecompress import verify

    ref = [np.random.default_rng(0).normal(size=(4, 5, 8, 8)), np.random.default_rng(1).normal(size=(4, 10, 8, 8))]
    report = verify.compare("x", [r + 0.01 for r in ref], ref, ["heatmaps", "offsets"], None, task="regression")
    assert [o["name"] for o in report.task_details["outputs"]] == ["heatmaps", "offsets"]
    assert re.search(r"of (heatmaps|offsets)'s range", report.table())  # the output the largest error is in


def test_an_embeddings_figure_names_the_output_it_is_on_where_there_are_several():
    """A walkthrough's re-identification net: 'mean cosine similarity 0.9875' was its logits', and nothing said."""
    from edgecompress import report_html
    from edgecompress.verify import OutputDiff, Parity

    outs = [OutputDiff("embedding", 0.03, 0.005), OutputDiff("logits", 0.7, 0.1)]
    p = Parity("INT8 vs FP32 student", 16, outs, task_metric="cosine", task_agreement=0.99)
    assert "  mean cosine similarity of 'embedding' 0.9900 over 16 held-out samples" in p.table()
    html = report_html._check_figure(p.to_dict())
    assert html == "mean cosine similarity of 'embedding' 0.9900"  # report.html's checks table, as verify says
    one = Parity("INT8 vs FP32 student", 16, outs[:1], task_metric="cosine", task_agreement=0.99)
    assert "  mean cosine similarity 0.9900 over" in one.table()  # one output: nothing to name
