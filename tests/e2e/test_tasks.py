"""Models that are not classifiers, deployed as a user deploys them (tests/models/task_models.py: a
detector returning a tuple of raw heads, a segmenter returning a dict, an embedding net, a two-output
regressor), on data drawn here: squares on a canvas with known boxes and masks. The teachers train
for a few seconds first, so that their outputs mean something and the checks have something to lose."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecutil import fast_sets, run_cli

MODELS = Path(__file__).parents[1] / "models"
SMALL = ("distill.steps=30", "distill.batch_size=16", "prune.ratio=0.25")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def canvas(n: int = 160, seed: int = 0):
    """x (N, 3, 32, 32): one square per image in channel 1 or 2 (its class), with its mask (N, 32, 32:
    0 background, 1 or 2) and its box (cx, cy, w, h in [0, 1]) and class (0 or 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, (n, 3, 32, 32)).astype(np.float32)
    masks, boxes, classes = np.zeros((n, 32, 32), np.int64), np.zeros((n, 4), np.float32), np.zeros(n, np.int64)
    for i in range(n):
        k, s = int(rng.integers(1, 3)), int(rng.integers(8, 14))
        r, c = rng.integers(0, 32 - s, 2)
        x[i, k, r:r + s, c:c + s] += 1.0
        masks[i, r:r + s, c:c + s] = k
        boxes[i], classes[i] = [(c + s / 2) / 32, (r + s / 2) / 32, s / 32, s / 32], k - 1
    return x, masks, boxes, classes


def _trained(factory: str, x, loss_fn, steps: int = 80):
    from edgecompress import models

    model = models.load(f"{MODELS / 'task_models.py'}:{factory}", None).module.train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    torch.manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(x), (32,))
        loss = loss_fn(model(torch.from_numpy(x[idx.numpy()])), idx.numpy())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _detector_loss(boxes, classes):
    def loss(out, idx):
        pred_boxes, scores = out
        cell = (np.clip((boxes[idx, 1] * 8).astype(int), 0, 7) * 8 + np.clip((boxes[idx, 0] * 8).astype(int), 0, 7))
        target = torch.zeros_like(scores)
        target[torch.arange(len(idx)), torch.from_numpy(cell), torch.from_numpy(classes[idx])] = 1
        box_loss = F.l1_loss(pred_boxes[torch.arange(len(idx)), torch.from_numpy(cell)], torch.from_numpy(boxes[idx]))
        return F.binary_cross_entropy_with_logits(scores, target, pos_weight=torch.tensor(30.0)) + box_loss
    return loss


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    x, masks, boxes, classes = canvas()
    np.savez(folder / "shapes.npz", x=x)
    np.savez(folder / "shapes_masks.npz", x=x, y=masks)
    np.savez(folder / "shapes_boxes.npz", x=x, boxes=boxes, classes=classes)  # what the user's --metric reads
    weights = {}
    trained = {
        "detector": _trained("detector", x, _detector_loss(boxes, classes), steps=400),  # boxes at IoU 0.5 take longer
        "segmenter": _trained("segmenter", x, lambda out, idx: F.cross_entropy(out["masks"], torch.from_numpy(masks[idx]))),
        "regressor": _trained("regressor", x, lambda out, idx: F.mse_loss(out[0], torch.from_numpy(boxes[idx, :2]))
                              + F.mse_loss(out[1], torch.from_numpy(boxes[idx, 2:3] ** 2))),
    }
    for name, model in trained.items():
        weights[name] = folder / f"{name}.pt"
        torch.save(model.state_dict(), weights[name])
    return folder, weights


def _deploy(model: str, target: str, data_file: Path, out: Path, weights=None, *extra: str):
    args = ["deploy", f"{MODELS / 'task_models.py'}:{model}", "--target", target, "--data", str(data_file),
            "--out", str(out), *(["--weights", str(weights)] if weights else []), *extra, *fast_sets(*SMALL)]
    code, stdout, err = run_cli(*args)
    assert code == 0, err
    bundle = next(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    return json.loads((bundle / "manifest.json").read_text()), stdout, err, bundle


def test_a_detector_returning_raw_heads_deploys_and_is_checked_on_its_confident_anchors(data, tmp_path):
    folder, weights = data
    m, stdout, err, bundle = _deploy("detector", "arm", folder / "shapes.npz", tmp_path / "out", weights["detector"])
    assert m["task"] == "detection" and "a box output (N, A, 4)" in m["task_reason"]
    assert "task: detection (auto:" in err and "--task classification|segmentation" in err
    assert [(o["name"], o["shape"][1:]) for o in m["outputs"]] == [("output_0", [64, 4]), ("output_1", [64, 2])]
    assert m["compression"]["distillation"]["losses"] == ["box_l1", "score_bce"]
    deployed = m["metrics"]["parity"][-1]
    assert deployed["task_metric"] == "confident_agreement" and deployed["top1_agreement"] is None
    assert deployed["task_agreement"] >= deployed["tolerance"]["min_confident_agreement"] == 0.9
    acc = m["metrics"]["accuracy"]
    assert acc["metric"] == "confident_agreement" and acc["teacher"] == 1.0 and 0.5 < acc["student"] <= 1.0
    assert "confident-anchor agreement" in stdout
    code, _, verify_err = run_cli("verify", str(bundle))
    assert code == 0, verify_err
    printed = _example(bundle)
    assert len(printed) == 5 and all(line.startswith("anchor ") and " box " in line for line in printed), printed


def _example(bundle: Path) -> list:
    """The bundle's example.py on its first stored sample, as an app developer runs it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "example.py"], cwd=bundle, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


@pytest.mark.litert
def test_a_segmenter_returning_a_dict_deploys_to_litert_with_its_masks_as_labels(data, tmp_path):
    folder, weights = data
    m, stdout, err, bundle = _deploy("segmenter", "android", folder / "shapes_masks.npz", tmp_path / "out",
                                     weights["segmenter"])
    assert m["task"] == "segmentation" and m["task_reason"] == "the data's y holds masks (N, H, W)"
    assert [o["shape"][1:] for o in m["outputs"]] in ([[32, 32, 3]], [[3, 32, 32]])  # NHWC on the phone
    assert m["compression"]["distillation"]["losses"] == ["pixel_kl", "pixel_ce"]
    assert "(pixel_kl + pixel_ce)" in err  # the masks taught it, not only the teacher
    acc = m["metrics"]["accuracy"]
    assert acc["metric"] == "pixel_agreement" and acc["student"] > 0.9, acc
    details = m["metrics"]["parity"][-1]["task_details"]  # the original's own score on the masks, beside the others
    assert 0.5 < details["original_mean_iou_labels"] <= 1 and f"the original {details['original_mean_iou_labels']:.4f})" in err
    printed = _example(bundle)  # the class areas of the first stored sample's mask, then the mask's PNG
    areas = [line for line in printed if line.startswith("class ")]
    assert areas[0].startswith("class   0") and abs(sum(float(a.split()[2].rstrip("%")) for a in areas) - 100) < 0.5
    assert printed[-1].startswith("mask: mask.png") and (bundle / "mask.png").read_bytes()[:4] == b"\x89PNG"


def test_an_embedding_net_is_taught_by_cosine_and_judged_by_it(data, tmp_path):
    folder, _ = data
    m, stdout, err, bundle = _deploy("embedder", "arm", folder / "shapes.npz", tmp_path / "out")
    assert m["task"] == "embedding" and m["compression"]["distillation"]["losses"] == ["cosine", "mse"]
    assert m["metrics"]["accuracy"]["metric"] == "cosine"
    assert m["metrics"]["parity"][-1]["tolerance"] == {"min_cosine": 0.98}
    assert "top-1" not in err.split("task:")[1]  # no classifier's figure for a vector
    nn = m["metrics"]["parity"][-1]["task_details"]["original_nn_agreement"]
    assert 0.0 <= nn <= 1.0 and "(with the original: worst cosine" in err
    code, out, verify_err = run_cli("verify", str(bundle))  # the build's figures beside the stored samples' re-run
    assert code == 0, verify_err
    assert (f"at build time, over {m['metrics']['parity'][-1]['samples']} held-out samples: mean cosine similarity"
            in out and f"nearest-neighbour agreement with the original {nn:.2%}" in out), out


def test_a_reid_nets_embedding_beside_its_id_logits_is_what_is_judged(data, tmp_path):
    """A walkthrough's {"embedding", "logits"} net was a classifier under auto and, under --task embedding, was
    judged by the cosine of its logits; its 10 ID names were refused against the embedding's width."""
    folder, _ = data
    x, _, _, classes = canvas()
    np.savez(folder / "shapes_ids.npz", x=x, y=classes, labels=np.array(["green", "blue"]))
    m, stdout, err, bundle = _deploy("reid", "arm", folder / "shapes_ids.npz", tmp_path / "out")
    assert m["task"] == "embedding" and "an output named 'embedding' (32 values" in m["task_reason"]
    assert [o["name"] for o in m["outputs"]] == ["embedding", "logits"]  # the embedding first, in the file too
    assert m["metrics"]["accuracy"]["metric"] == "cosine"
    assert "mean cosine similarity of 'embedding'" in err and "top-1" not in err.split("task:")[1]
    assert (bundle / "labels.txt").read_text() == "green\nblue\n"  # the ID head's names, kept
    printed = _example(bundle)
    assert printed[0].startswith("embedding: 32 values, |v| ")  # the embedding, not the 2 ID scores


def test_a_two_output_regressor_deploys_for_jetson_with_both_outputs(data, tmp_path):
    folder, weights = data
    m, stdout, err, bundle = _deploy("regressor", "jetson", folder / "shapes.npz", tmp_path / "out",
                                     weights["regressor"])
    assert m["task"] == "regression" and m["compression"]["distillation"]["losses"] == ["var_mse"]
    assert [(o["name"], o["shape"][1:]) for o in m["outputs"]] == [("output_0", [2]), ("output_1", [1])]
    assert m["metrics"]["accuracy"]["metric"] == "r2" and m["metrics"]["accuracy"]["student"] > 0.5
    assert (bundle / "model.onnx").is_file()
    code, out, verify_err = run_cli("verify", str(bundle))
    assert code == 0, verify_err
    # the engine is built on the device: the build checked model.onnx in FP32, against max |diff|, not an R^2 limit
    assert "held to max |diff| 0.001 instead" in out and "(tolerance 0.0010)" not in out, out


def test_task_can_be_overridden_and_a_wrong_one_is_refused_naming_the_outputs(data, tmp_path):
    folder, _ = data
    m, _, err, _ = _deploy("embedder", "arm", folder / "shapes.npz", tmp_path / "a", None, "--task", "regression")
    assert m["task"] == "regression" and "task: regression\n" in err
    code, _, err = run_cli("deploy", f"{MODELS / 'task_models.py'}:embedder", "--target", "arm", "--data",
                           str(folder / "shapes.npz"), "--out", str(tmp_path / "b"), "--task", "detection")
    assert code == 2 and "--task detection needs a box output" in err and "'output' [32]" in err


def test_a_model_whose_attention_breaks_when_pruned_deploys_with_those_layers_left_whole(data, tmp_path):
    """A MobileViT-like block reshapes its channels into a fixed number of heads: pruning its value
    projection breaks the forward pass. The deploy prunes the rest, names what it left whole in the log
    and the manifest, and never blames the data."""
    folder, _ = data
    args = ["deploy", f"{MODELS / 'adapt_models.py'}:mobilevit", "--target", "arm", "--data",
            str(folder / "shapes.npz"), "--out", str(tmp_path / "out"), *fast_sets(*SMALL), "--set", "prune.ratio=0.3"]
    code, _, err = run_cli(*args)
    assert code == 0, err
    bundle = next(p for p in (tmp_path / "out").iterdir() if p.is_dir() and not p.name.startswith("."))
    pruning = json.loads((bundle / "manifest.json").read_text())["compression"]["pruning"]
    assert pruning["left_whole"] and all("attention" in name or "vit" in name for name in pruning["left_whole"])
    assert pruning["macs_after"] < pruning["macs_before"]
    assert "prune: left whole (pruning them breaks the" in err and "do not fit" not in err


def test_the_users_decode_and_metric_give_box_parity_and_map_for_every_model(data, tmp_path):
    folder, weights = data
    code_file = MODELS / "task_user_code.py"
    m, stdout, err, bundle = _deploy("detector", "arm", folder / "shapes_boxes.npz", tmp_path / "out",
                                     weights["detector"], "--postprocess", f"{code_file}:decode",
                                     "--metric", f"{code_file}:map50")
    figures = m["metrics"]["user_figures"]
    assert set(figures["metric"]) == {"original", "student_fp32", "deployed"}
    assert figures["metric"]["original"]["map50"] > 0.3  # the teacher learned the boxes: the metric means something
    boxes = figures["boxes"]["deployed"]
    assert boxes["reference_boxes"] > 0 and 0 < boxes["recall"] <= 1 and boxes["mean_iou"] > 0.5
    assert "metric map50 (task_user_code.py:map50): original" in err and "boxes (task_user_code.py:decode)" in err
    assert "map50 (--metric)" in stdout and "box recall vs original" in stdout
    assert m["postprocess"] == {"file": "postprocess.py", "function": "decode"} and (bundle / "postprocess.py").is_file()
    printed = _example(bundle)  # decoded with the shipped decode function: class, score, box
    assert printed and all(line.startswith("class ") and " box " in line for line in printed), printed
    code, _, err = run_cli("deploy", f"{MODELS / 'task_models.py'}:detector", "--target", "arm", "--data",
                           str(folder / "shapes_boxes.npz"), "--out", str(tmp_path / "strict"),
                           "--weights", str(weights["detector"]), "--metric", f"{code_file}:map50",
                           "--set", "verify.max_metric_drop=0", *fast_sets(*SMALL))
    assert code == 3 and "verify.max_metric_drop 0" in err or code == 0  # exactly equal mAP may pass


def test_a_model_that_fails_by_itself_is_not_blamed_on_the_data(data, tmp_path):
    """As a Hugging Face EfficientNet config whose head width does not match its last conv: the first
    layers take the input, then top_bn fails. The error names the layer and the model's own error."""
    folder, _ = data
    (tmp_path / "broken.py").write_text(
        "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.stem = nn.Conv2d(3, 8, 3, padding=1)\n        self.top_conv = nn.Conv2d(8, 16, 1)\n"
        "        self.top_bn = nn.BatchNorm2d(32)\n        self.fc = nn.Linear(32, 2)\n\n"
        "    def forward(self, x):\n        return self.fc(self.top_bn(self.top_conv(self.stem(x))).mean((2, 3)))\n\n\n"
        "def build():\n    return Net()\n")
    code, _, err = run_cli("deploy", f"{tmp_path / 'broken.py'}:build", "--target", "arm", "--data",
                           str(folder / "shapes.npz"), "--out", str(tmp_path / "out"))
    assert code == 2 and "fails by itself in layer 'top_bn'" in err and "running_mean should contain 16" in err
    assert "do not fit" not in err


def test_a_detector_whose_head_is_shared_by_two_levels_deploys_to_arm_in_int8(data, tmp_path):
    """An FPN head read by both levels is a weight two ONNX nodes share: the exact-INT8 checks (ONNX Runtime's
    x64quantprecision) used to fail to load such a file; the check, the bundle and its example all work."""
    folder, _ = data
    m, _, err, bundle = _deploy("shared_head_detector", "arm", folder / "shapes.npz", tmp_path / "out")
    assert m["task"] == "detection" and m["metrics"]["parity_exact_int8"] is True
    assert m["compression"]["quantization"]["precision"] == "int8"
    assert [(o["name"], o["shape"][1:]) for o in m["outputs"]] == [("boxes", [80, 4]), ("logits", [80, 2])]
    code, _, verify_err = run_cli("verify", str(bundle))
    assert code == 0, verify_err
    assert len(_example(bundle)) == 5


@pytest.mark.parametrize("target", ["arm", "android"])
def test_a_detector_ending_in_its_own_sigmoid_is_read_as_probabilities_everywhere(data, tmp_path, target):
    """The checks, the manifest and the example programs read probability scores as they are (a walkthrough's
    example printed sigmoid(0.95) = 0.72 for an anchor the model gave 0.95, and 0.50 for every background one)."""
    folder, weights = data
    m, _, _, bundle = _deploy("probability_detector", target, folder / "shapes.npz", tmp_path / "out",
                              weights["detector"])
    details = m["metrics"]["parity"][-1]["task_details"]
    assert details["scores_are_logits"] is False and details["confident_anchors"] < 0.5 * 64 * details.get("samples", 32)
    expected = np.load(bundle / "parity.npz")["expected_1"][0]  # the deployed model's scores on the first sample
    top = float(_example(bundle)[0].split("score ")[1].split()[0])
    assert top == pytest.approx(float(expected.max()), abs=2e-3)
    if target == "android":
        assert "const val SCORES_ARE_LOGITS = false" in (bundle / "ModelRunner.kt").read_text()


def test_a_yolo_style_detector_s_example_ranks_anchors_by_class_times_objectness(data, tmp_path):
    """The checks read an anchor's confidence as sigmoid(class) * sigmoid(objectness); the example programs
    ranked by the class scores alone, so their top anchors were not the ones the checks call confident."""
    folder, _ = data
    m, _, _, bundle = _deploy("objectness_detector", "arm", folder / "shapes.npz", tmp_path / "out")
    details = m["metrics"]["parity"][-1]["task_details"]
    assert details["objectness"] == [{"output": 2, "are_logits": True}]
    stored = np.load(bundle / "parity.npz")
    sig = lambda v: 1 / (1 + np.exp(-v.astype(np.float64)))  # noqa: E731
    conf = (sig(stored["expected_1"][0]) * sig(stored["expected_2"][0])).max(-1)  # the first sample, as example.py runs
    lines = _example(bundle)
    assert [int(line.split()[1]) for line in lines][:3] == list(np.argsort(-conf)[:3])
    assert float(lines[0].split("score ")[1].split()[0]) == pytest.approx(float(conf.max()), abs=2e-3)


def test_a_mistake_in_the_users_metric_is_said_before_any_training(data, tmp_path):
    """A walkthrough's --metric read a key the data does not hold: the KeyError came after the whole
    distillation. The functions now run once on the original's outputs first."""
    folder, weights = data
    (tmp_path / "metric_typo.py").write_text("def score(outputs, data):\n    return {'x': float(data['kps'].mean())}\n")
    code, _, err = run_cli("deploy", f"{MODELS / 'task_models.py'}:detector", "--target", "arm", "--data",
                           str(folder / "shapes_boxes.npz"), "--out", str(tmp_path / "out"), "--weights",
                           str(weights["detector"]), "--metric", f"{tmp_path / 'metric_typo.py'}:score",
                           *fast_sets(*SMALL))
    assert code == 2 and "--metric metric_typo.py:score raised KeyError: 'kps'" in err, err
    assert "found before training" in err and "data: x, boxes, classes" in err
    assert "distill 1/" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "nothing written"


@pytest.mark.litert
def test_a_litert_regressors_example_names_its_outputs_as_the_model_does(data, tmp_path):
    """The Android bundle's example printed 'serving_default_output_0_output: ...' where the arm one printed
    'output_0: ...'; the manifest keeps the model's name beside the tensor's."""
    folder, weights = data
    m, _, _, bundle = _deploy("regressor", "android", folder / "shapes.npz", tmp_path / "out", weights["regressor"])
    assert m["outputs"][0]["name"].startswith("serving_default")
    printed = _example(bundle)
    assert [line.split(":")[0] for line in printed] == ["output_0", "output_1"], printed


def test_a_detector_with_no_confident_anchor_is_warned_not_passed_as_100_percent(data, tmp_path):
    """A walkthrough's untrained detector marked no anchor confident: the summary showed the original's 100% and
    said nothing. The threshold is the profile's (verify.score_threshold), and an empty comparison is said."""
    folder, _ = data
    m, stdout, err, bundle = _deploy("detector", "arm", folder / "shapes.npz", tmp_path / "out", None,
                                     "--set", "verify.score_threshold=0.995")
    details = m["metrics"]["parity"][-1]["task_details"]
    assert details["confident_anchors"] == 0 and details["threshold"] == 0.995
    assert details["original_confident_anchors"] == 0 and 0 < details["original_max_score"] < 0.995
    assert f"its highest score {details['original_max_score']:.4g}" in stdout
    assert "marks no anchor confident" in stdout and "verify.score_threshold 0.995" in stdout
    assert m["metrics"]["accuracy"]["teacher"] is None and "100.00 %" not in stdout
    assert "no anchor was compared" in err
    code, out, verify_err = run_cli("verify", str(bundle))
    assert code == 0, verify_err
    assert not any(line.strip() == "compared with the original model" for line in out.splitlines()), out
    assert "no anchor was compared" in out, out  # verify says it too, not just OK
