import copy
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgecompress import demo, distill, losses, prune
from edgecompress.data import Dataset
from edgecompress.errors import InputError, ProfileError
from edgecompress.profile import Distill, Prune

from ecutil import make_data


def data(labels=True):
    x, y = make_data(n=128)
    # the demo net has 10 outputs; labels 0-3 are valid class indices for it
    return Dataset(x, y if labels else None, "test")


def pair():
    torch.manual_seed(0)
    teacher = demo.build().eval()
    student = copy.deepcopy(teacher)
    prune.prune_channels_(student, Prune(ratio=0.5, round_to=8), torch.zeros(1, 1, 8, 8))
    return teacher, student


def test_soft_kd_is_zero_for_identical_logits_and_scaled_by_t_squared():
    logits = torch.randn(8, 10)
    b = losses.Batch([logits], [logits.clone()], None, 4.0, [])
    assert losses.soft_kd(b).item() == pytest.approx(0.0, abs=1e-6)
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    kl = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean")
    assert losses.soft_kd(losses.Batch([s], [t], None, 2.0, [])).item() == pytest.approx(4 * kl.item(), rel=1e-5)


def test_task_losses_are_zero_when_the_student_matches_and_grow_when_it_does_not():
    maps, boxes, scores = torch.randn(2, 3, 8, 8), torch.rand(2, 16, 4), torch.randn(2, 16, 2)
    same = losses.Batch([maps, boxes, scores], [maps.clone(), boxes.clone(), scores.clone()], None, 2.0, [], 1, 2)
    for loss in (losses.pixel_kl, losses.box_l1, losses.cosine, losses.mse, losses.var_mse):
        assert loss(same).item() == pytest.approx(0.0, abs=1e-6), loss.__name__
    other = losses.Batch([torch.randn(2, 3, 8, 8), torch.rand(2, 16, 4), torch.randn(2, 16, 2)],
                          [maps, boxes, scores], None, 2.0, [], 1, 2)
    for loss in (losses.pixel_kl, losses.box_l1, losses.score_bce, losses.score_kl, losses.mse):
        assert loss(other).item() > 0.01, loss.__name__


def test_box_loss_weighs_the_anchors_the_teacher_is_confident_about():
    """A wrong box where the teacher sees an object costs far more than one on background."""
    boxes = torch.zeros(1, 2, 4)
    scores = torch.tensor([[[8.0], [-8.0]]])  # anchor 0 confident, anchor 1 background
    wrong_object = boxes.clone()
    wrong_object[0, 0] = 1.0
    wrong_background = boxes.clone()
    wrong_background[0, 1] = 1.0
    cost = lambda s_boxes: losses.box_l1(losses.Batch([s_boxes, scores], [boxes, scores], None, 1.0, [], 0, 1))  # noqa: E731
    assert cost(wrong_object).item() > 100 * cost(wrong_background).item()


def test_var_mse_weighs_outputs_of_any_scale_alike():
    t = [torch.randn(16, 1) * 1000, torch.randn(16, 1) * 0.001]
    off_big = losses.var_mse(losses.Batch([t[0] * 1.1, t[1]], t, None, 1.0, []))
    off_small = losses.var_mse(losses.Batch([t[0], t[1] * 1.1], t, None, 1.0, []))
    assert off_big.item() == pytest.approx(off_small.item(), rel=0.2)


def test_pixel_ce_uses_masks_and_skips_class_labels():
    logits = torch.randn(2, 3, 4, 4)
    masks = torch.randint(0, 3, (2, 4, 4))
    assert losses.pixel_ce(losses.Batch([logits], [logits], masks, 1.0, [])).item() == pytest.approx(
        F.cross_entropy(logits, masks).item())
    assert losses.pixel_ce(losses.Batch([logits], [logits], torch.tensor([0, 1]), 1.0, [])) is None


def test_hard_kd_uses_teacher_top1_as_label():
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    expected = F.cross_entropy(s, t.argmax(1))
    assert losses.hard_kd(losses.Batch([s], [t], None, 1.0, [])).item() == pytest.approx(expected.item())


def test_combine_weights_soft_by_alpha_and_goes_label_free_without_labels():
    soft, ce = torch.tensor(2.0), torch.tensor(4.0)
    assert losses.combine({"soft": soft, "ce": ce}, 0.25, 1.0).item() == pytest.approx(0.25 * 2 + 0.75 * 4)
    assert losses.combine({"soft": soft, "ce": None}, 0.25, 1.0).item() == pytest.approx(2.0)
    assert losses.combine({"ce": None}, 0.5, 1.0) is None


def run(student, teacher, train, cfg, tmp_path, **kw):
    return distill.distill_(student, teacher, train, cfg, steps=kw.pop("steps", 12), seconds=None,
                            checkpoint=tmp_path / "ckpt.pt", meta={"round": 1}, **kw)


def test_distillation_lowers_the_loss_and_reports_budget(tmp_path):
    teacher, student = pair()
    cfg = Distill(steps=40, lr=3e-3, losses=["soft", "ce"])
    report = run(student, teacher, data(), cfg, tmp_path, steps=40)
    assert report.steps == 40 and report.seconds > 0 and not report.label_free
    first = distill.distill_(copy.deepcopy(pair()[1]), teacher, data(), cfg, steps=3, seconds=None,
                             checkpoint=tmp_path / "other.pt", meta={}).final_loss
    assert report.final_loss < first


def far_pair():
    """A teacher and a student whose head is scrambled: the pruned demo student starts almost at the
    teacher (KL ~3e-5), too near for a falling loss to show learning. (The student's outputs in eval mode
    cannot be compared with the untrained teacher's: its BatchNorm statistics were never fitted.)"""
    teacher, student = pair()
    with torch.no_grad():
        torch.manual_seed(1)
        student[15].weight.normal_(0, 1.0)
    return teacher, student


def test_label_free_distillation_runs_without_labels(tmp_path):
    teacher, student = far_pair()
    train = data(labels=False)
    report = run(student, teacher, train, Distill(steps=40, lr=3e-3, losses=["soft", "ce"]), tmp_path, steps=40)
    assert report.label_free and report.steps == 40
    # the soft loss alone teaches: the last step's loss is under a tenth of the first's (measured: ~1/200)
    assert report.final_loss < 0.1 * report.loss_curve[0][2], report.loss_curve


def test_ce_only_without_labels_is_a_profile_error(tmp_path):
    teacher, student = pair()
    with pytest.raises(ProfileError, match="need labels"):
        run(student, teacher, data(labels=False), Distill(losses=["ce"]), tmp_path)


def test_feature_matching_learns_a_projection_where_widths_differ(tmp_path):
    teacher, student = far_pair()
    cfg = Distill(losses=["soft", "feature"], feature_layers=[("8", "8")])
    tap = distill.FeatureTap(student, teacher, cfg.feature_layers, torch.zeros(2, 1, 8, 8))
    assert isinstance(tap.proj[0], torch.nn.Conv2d) and (tap.proj[0].in_channels, tap.proj[0].out_channels) == (64, 128)
    tap.close()
    train = data()
    report = run(student, teacher, train, cfg.model_copy(update={"steps": 40, "lr": 3e-3}), tmp_path, steps=40)
    assert report.losses == ["soft", "feature"] and report.steps == 40
    assert report.final_loss < 0.1 * report.loss_curve[0][2], report.loss_curve


def test_feature_layer_typo_is_named(tmp_path):
    teacher, student = pair()
    with pytest.raises(ProfileError, match="'80'"):
        run(student, teacher, data(), Distill(losses=["soft", "feature"], feature_layers=[("80", "8")]), tmp_path)


def test_minutes_budget_stops_on_time(tmp_path):
    teacher, student = pair()
    report = distill.distill_(student, teacher, data(), Distill(steps=None, minutes=0.01), steps=None, seconds=0.6,
                              checkpoint=tmp_path / "c.pt", meta={})
    assert 0.6 <= report.seconds < 3 and report.steps > 0


def test_interrupt_keeps_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path):
    teacher, student_a = pair()
    student_b = copy.deepcopy(student_a)
    cfg = Distill(steps=10, checkpoint_every=100)
    run(student_a, teacher, data(), cfg, tmp_path / "a", steps=10)

    calls = {"n": 0}

    def ctrl_c_at_step_6():
        calls["n"] += 1
        if calls["n"] == 6:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered mid-run

    with pytest.raises(distill.Interrupted, match="--resume"):
        run(student_b, teacher, data(), cfg, tmp_path / "b", steps=10, after_step=ctrl_c_at_step_6)
    state = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)  # tensors and plain data only
    assert state["step"] == 6  # stopped at the step boundary, not mid-step
    fresh = copy.deepcopy(teacher)  # a new process starts from the unpruned model ...
    distill.restore_(fresh, state)  # ... and takes the pruned shape from the checkpoint
    run(fresh, teacher, data(), cfg, tmp_path / "b", steps=10, resume=state)
    for (name, pa), pb in zip(student_a.state_dict().items(), fresh.state_dict().values()):
        assert torch.allclose(pa.float(), pb.float(), atol=1e-5), name


def test_batches_are_a_function_of_the_step():
    assert np.array_equal(distill.batch_indices(100, 8, 7), distill.batch_indices(100, 8, 7))
    assert not np.array_equal(distill.batch_indices(100, 8, 7), distill.batch_indices(100, 8, 8))


def test_shifts_move_each_image_and_fill_with_zeros():
    x = torch.arange(1, 16 * 1 * 4 * 5 + 1, dtype=torch.float32).reshape(16, 1, 4, 5)
    assert distill.shifted(x, 3, 0) is x
    shifts = set()
    for step in range(10):
        out = distill.shifted(x, step, 1)
        assert torch.equal(out, distill.shifted(x, step, 1))  # a function of the step: resumes see the same
        for i in range(len(x)):  # every image is its own, moved by one of the nine offsets
            dy, dx = next((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                          if torch.equal(out[i, :, max(0, dy):4 + min(0, dy), max(0, dx):5 + min(0, dx)],
                                         x[i, :, max(0, -dy):4 + min(0, -dy), max(0, -dx):5 + min(0, -dx)]))
            shifts.add((dy, dx))
            if dy:  # the row that came in from outside the image is zeros, not wrapped-around pixels
                assert float(out[i, :, 0 if dy > 0 else 3, :].abs().sum()) == 0
        assert len({tuple(o.flatten().tolist()) for o in out}) == len(x)  # no image copied onto another
    assert len(shifts) == 9  # all nine offsets occur


def test_shift_pixels_refuses_data_that_is_not_images(tmp_path):
    net = torch.nn.Linear(6, 3)
    cfg = Distill(steps=2, shift_pixels=1)
    train = Dataset(np.zeros((10, 6), np.float32), np.zeros(10, np.int64), "t", None, {})
    with pytest.raises(ProfileError, match=r"shift_pixels.*\(10, 6\)"):
        distill.distill_(net, copy.deepcopy(net), train, cfg, steps=2, seconds=None,
                         checkpoint=tmp_path / "c.pt", meta={})


def test_a_shift_as_large_as_the_image_is_refused():
    distill.check_data(Distill(steps=1, shift_pixels=7), np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(ProfileError, match=r"shift_pixels=8 would shift the 8x8 images out of the frame"):
        distill.check_data(Distill(steps=1, shift_pixels=8), np.zeros((4, 1, 8, 8), np.float32))
    for step in range(20):  # the largest allowed shift keeps the shapes right
        assert distill.shifted(torch.ones(2, 1, 8, 8), step, 7).shape == (2, 1, 8, 8)


def test_cosine_lr_decays_over_steps_or_time():
    assert distill.cosine_lr(1.0, 0, 100, 0.0, None) == pytest.approx(1.0)
    assert distill.cosine_lr(1.0, 50, 100, 0.0, None) == pytest.approx(0.5)
    assert distill.cosine_lr(1.0, 100, 100, 0.0, None) == pytest.approx(0.0, abs=1e-12)
    assert distill.cosine_lr(1.0, 3, None, 30.0, 60.0) == pytest.approx(0.5)
    assert distill.cosine_lr(1.0, 90, 100, 1.0, 60.0) < distill.cosine_lr(1.0, 10, 100, 1.0, 60.0)


def test_the_loss_curve_stays_small_on_a_budget_in_minutes(tmp_path, monkeypatch):
    """No step count to space the points by: they are thinned as they come, stay evenly spaced, and
    the checkpoint carries them. A Ctrl-C at step 60 ends the (otherwise hour-long) run."""
    monkeypatch.setattr(distill, "CURVE_POINTS", 3)  # so that 60 steps thin several times
    teacher, student = pair()
    calls = {"n": 0}

    def ctrl_c_at_step_60():
        calls["n"] += 1
        if calls["n"] == 60:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(distill.Interrupted):
        distill.distill_(student, teacher, data(), Distill(steps=None, minutes=60), steps=None, seconds=3600,
                         checkpoint=tmp_path / "c.pt", meta={"round": 1}, after_step=ctrl_c_at_step_60)
    curve = torch.load(tmp_path / "c.pt", weights_only=True)["loss_curve"]
    assert 3 <= len(curve) <= 8 and curve[-1][1] <= 60
    gaps = {b[1] - a[1] for a, b in zip(curve, curve[1:])}
    assert len(gaps) == 1 and min(gaps) >= 8, f"evenly spaced, and thinned: {curve}"


def test_thinning_merges_pairs_of_one_round_only():
    curve = [[0, 10, 9.0]] + [[1, s, float(s)] for s in (2, 4, 6, 8, 10)]
    assert distill.thinned(curve, 1) == [[0, 10, 9.0], [1, 4, 3.0], [1, 8, 7.0], [1, 10, 10.0]]


def test_a_budget_in_minutes_shows_progress_in_a_log(tmp_path, monkeypatch, capsys):
    """No step count, so no ETA by steps: a line every tenth of the time, with the time left."""
    monkeypatch.setenv("EDGECOMPRESS_PROGRESS", "1")
    teacher, student = pair()
    distill.distill_(student, teacher, data(), Distill(steps=None, minutes=0.04), steps=None, seconds=2.0,
                     checkpoint=tmp_path / "c.pt", meta={"round": 1})
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("distill: step ")]
    assert len(lines) >= 2 and all(" s left" in line and "loss " in line for line in lines), lines


class Planted:
    """What a planted checkpoint holds: unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_checkpoint_of_a_model_with_its_own_classes_loads_with_weights_only(tmp_path):
    """A user's file is imported under a name that cannot be imported again, so a checkpoint that
    pickled its module objects failed to save (PicklingError: Can't pickle <class ...Basic>)."""
    from pathlib import Path

    from edgecompress import models

    spec = str(Path(__file__).parent / "models" / "resnet.py:tiny")
    teacher = models.load_factory(spec, None).module.eval()
    student = copy.deepcopy(teacher)
    prune.prune_channels_(student, Prune(ratio=0.5, round_to=8), torch.zeros(1, 3, 16, 16))
    x = np.random.default_rng(0).normal(size=(32, 3, 16, 16)).astype(np.float32)
    run(student, teacher, Dataset(x, np.arange(32) % 4, "test"), Distill(batch_size=8), tmp_path, steps=2)
    state = distill.load_checkpoint(tmp_path / "ckpt.pt")
    fresh = models.load_factory(spec, None).module
    distill.restore_(fresh, state)
    assert fresh.layer2[0].conv1.out_channels == student.layer2[0].conv1.out_channels == 16
    for (name, a), b in zip(student.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_checkpoint_that_holds_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"format": distill.CHECKPOINT_FORMAT, "x": Planted(marker)}, tmp_path / "checkpoint.pt")
    with pytest.raises(InputError) as refused:
        distill.load_checkpoint(tmp_path / "checkpoint.pt")
    assert not marker.exists(), "loading the checkpoint ran the code in it"
    message = str(refused.value)
    assert str(tmp_path / "checkpoint.pt") in message and "holds a pickled io.open, not only tensors" in message
    assert "delete" in message and "--force" in message and "weights_only=False" not in message
    (tmp_path / "old.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="could not be read"):
        distill.load_checkpoint(tmp_path / "old.pt")


def dropout_pair():
    torch.manual_seed(1)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                  torch.nn.Linear(32, 4))
    return teacher.eval(), copy.deepcopy(teacher)


def test_the_same_distillation_trains_the_same_student_and_leaves_the_callers_random_state(tmp_path):
    """Dropout draws from torch's generator: unseeded, the same command gave students from 95% to
    98.33% (walkthrough problem 8)."""
    students, callers_state_kept = [], []
    for i in range(2):
        teacher, student = dropout_pair()
        torch.manual_seed(100 + i)  # whatever the caller's generator holds
        before = torch.get_rng_state()
        run(student, teacher, data(), Distill(), tmp_path / str(i), steps=5)
        callers_state_kept.append(torch.equal(torch.get_rng_state(), before))
        students.append(student.state_dict())
    for name in students[0]:
        assert torch.equal(students[0][name], students[1][name]), name
    assert all(callers_state_kept), "the caller's random state is its own"


def test_sigterm_passed_on_by_the_cli_stops_at_the_step_boundary_with_exit_143(tmp_path):
    """The CLI hands SIGTERM to whatever handles SIGINT, with SIGTERM's number."""
    teacher, student = pair()
    calls = {"n": 0}

    def sigterm_at_step_3():
        calls["n"] += 1
        if calls["n"] == 3:
            signal.getsignal(signal.SIGINT)(signal.SIGTERM, None)

    with pytest.raises(distill.Terminated, match="interrupted by SIGTERM at distill step 3") as stopped:
        run(student, teacher, data(), Distill(checkpoint_every=100), tmp_path, steps=10, after_step=sigterm_at_step_3,
            label="distill")
    assert stopped.value.exit_code == 143
    assert distill.load_checkpoint(tmp_path / "ckpt.pt")["step"] == 3


def test_a_classifiers_one_value_side_output_is_taught_too():
    """A classifier with a second, one-value output (a quality score): soft KD covers the logits, and the score
    gets its own loss, zero where the student matches the teacher and growing where it does not."""
    logits_t, score_t = torch.randn(16, 5), torch.randn(16, 1)
    same = losses.Batch([logits_t.clone(), score_t.clone()], [logits_t, score_t], None, 4.0, [])
    off = losses.Batch([logits_t.clone(), score_t + 1.0], [logits_t, score_t], None, 4.0, [])
    assert float(losses.soft_kd(same)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.soft_kd(off)) > 0.1
    moved = logits_t + torch.randn(16, 5)
    only_logits = losses.Batch([moved], [logits_t], None, 4.0, [])
    expected = float(F.kl_div(F.log_softmax(moved / 4, 1), F.log_softmax(logits_t / 4, 1), reduction="batchmean",
                              log_target=True)) * 16
    assert expected > 0.01 and float(losses.soft_kd(only_logits)) == pytest.approx(expected, rel=1e-5), "one output: as before"


def test_augment_flips_and_crops_images_and_their_masks_alike_and_repeats_per_step():
    """distill.augment: one view per step for teacher and student (distill_ passes the same tensor to both); a
    segmentation mask is flipped and cropped with its image, so a pixel's label stays under it."""
    x = torch.arange(4 * 8 * 8, dtype=torch.float32).reshape(4, 1, 8, 8)
    masks = x[:, 0].long()  # each pixel's label is its own value
    fx, fy = distill.augmented(x, masks, 3, ["flip"])
    assert not torch.equal(fx, x) and torch.equal(fx[:, 0].long(), fy), "masks flipped with their images"
    flipped = [i for i in range(4) if not torch.equal(fx[i], x[i])]
    assert flipped and all(torch.equal(fx[i], x[i].flip(-1)) for i in flipped)
    again, _ = distill.augmented(x, masks, 3, ["flip"])
    assert torch.equal(again, fx), "a function of the step: --resume sees the same views"
    cx, cy = distill.augmented(x, masks, 5, ["flip", "crop"])
    assert cx.shape == x.shape and cy.shape == masks.shape and not torch.equal(cx, fx)
    labels = torch.tensor([0, 1, 2, 3])
    assert distill.augmented(x, labels, 5, ["crop"])[1] is labels, "class labels pass through"
    assert torch.equal(distill.augmented(x, None, 5, [])[0], x)


def test_augment_on_data_that_is_not_images_is_a_profile_error():
    with pytest.raises(ProfileError, match=r"distill.augment \['flip'\] flips and crops images"):
        distill.check_data(Distill(augment=["flip"]), np.zeros((10, 5), np.float32))
    with pytest.raises(Exception):
        Distill(augment=["rotate"])


def test_distillation_with_flips_and_crops_still_learns(tmp_path):
    teacher, student = far_pair()
    cfg = Distill(steps=40, lr=3e-3, losses=["soft", "ce"], augment=["flip", "crop"])
    report = run(student, teacher, data(), cfg, tmp_path, steps=40)
    assert report.steps == 40 and report.final_loss < report.loss_curve[0][2]
