"""The distillation recipe each run gets by default (issue 14 item 2): what the profiles and the demos resolve to,
what --set and a profile file override, and that teacher and student see the same augmented view."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from edgecompress import distill, profile
from edgecompress.errors import ProfileError
from edgecompress.inputs import with_demo_defaults
from edgecompress.pipeline import DeployOptions

ANIMALS = DeployOptions(model=None, target="arm", demo="animals")
DIGITS = DeployOptions(model=None, target="arm")
USER = DeployOptions(model="net.py:build", target="arm")


@pytest.mark.parametrize("target", ["arm", "android", "jetson"])
def test_every_family_profile_distills_with_the_documented_recipe(target):
    d = profile.load(target)[0].distill
    # soft KD at T 4 weighted 0.7 against cross-entropy (the task's default losses), AdamW at 1e-3, no extra views
    assert (d.losses, d.temperature, d.alpha, d.lr, d.shift_pixels, d.augment) == (None, 4.0, 0.7, 1e-3, 0, [])


def test_the_animals_demo_teaches_on_its_teachers_views_at_its_learning_rate():
    prof = profile.load("arm")[0]
    d = with_demo_defaults(prof, ANIMALS).distill
    assert (d.shift_pixels, d.augment, d.lr) == (2, ["flip"], 3e-3)
    assert (d.temperature, d.alpha) == (4.0, 0.7)
    digits = with_demo_defaults(prof, DIGITS).distill  # unchanged: one-pixel shifts, the profile's lr
    assert (digits.shift_pixels, digits.augment, digits.lr) == (1, [], 1e-3)
    mine = with_demo_defaults(prof, USER).distill  # a user's model: the profile as it is
    assert (mine.shift_pixels, mine.augment, mine.lr) == (0, [], 1e-3)


def test_set_and_a_profile_file_win_over_a_demos_defaults(tmp_path):
    sets = ["distill.lr=0.001", "distill.augment=[]"]
    prof = profile.load("arm", sets)[0]
    d = with_demo_defaults(prof, DeployOptions(model=None, target="arm", demo="animals", overrides=sets)).distill
    assert (d.lr, d.augment, d.shift_pixels) == (1e-3, [], 2), "what --set names is kept, the rest is the demo's"
    own = tmp_path / "mine.yaml"
    text = profile.dump(profile.load("arm")[0])
    assert "  augment: []\n" in text
    own.write_text(text.replace("  augment: []\n", "  augment: [flip, crop]\n"))
    d = with_demo_defaults(profile.load(str(own))[0], DeployOptions(model=None, target=str(own), demo="animals")).distill
    assert d.augment == ["flip", "crop"] and d.lr == 1e-3, "a user's file names every field: all of them win"


def test_a_bad_augmentation_is_a_profile_error_naming_the_key():
    with pytest.raises(ProfileError) as err:
        profile.load("arm", ["distill.augment=[mirror]"])
    assert "distill.augment" in str(err.value) and "mirror" in str(err.value)
    with pytest.raises(ProfileError, match="distill.lr"):
        profile.load("arm", ["distill.lr=0"])


class Net(nn.Module):
    """A small classifier with a residual block, as a user writes one."""

    def __init__(self, width=8):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        y = y + self.block(y)
        return self.head(y.mean((2, 3)))


def test_teacher_and_student_see_the_same_shifted_and_flipped_view_and_it_is_not_the_stored_image(tmp_path):
    from edgecompress.data import Dataset

    rng = np.random.default_rng(0)
    x = np.zeros((16, 1, 12, 12), np.float32)
    for i in range(16):  # a bright block off-centre: a flip or a shift moves it
        r, c = rng.integers(1, 5, 2)
        x[i, 0, r:r + 4, c:c + 3] = 1.0
    data = Dataset(x, rng.integers(0, 3, 16).astype(np.int64), "drawn", ["a", "b", "c"], {})
    torch.manual_seed(0)
    teacher, student = Net().eval(), Net()
    seen = {"teacher": [], "student": []}
    teacher.register_forward_pre_hook(lambda m, a: seen["teacher"].append(a[0].clone()))
    student.register_forward_pre_hook(lambda m, a: seen["student"].append(a[0].clone()))
    cfg = profile.Distill(steps=6, batch_size=16, shift_pixels=2, augment=["flip"], losses=["soft", "ce"])
    distill.distill_(student, teacher, data, cfg, steps=6, seconds=None, checkpoint=tmp_path / "c.pt", meta={})
    views = list(zip(seen["teacher"], seen["student"]))[:6]
    assert len(views) == 6 and all(torch.equal(t, s) for t, s in views), "one view, given to both"
    stored = {tuple(np.round(img.ravel(), 3)) for img in x}
    moved = sum(tuple(np.round(v.numpy().ravel(), 3)) not in stored for t, _ in views for v in t)
    assert moved > 48, f"most views are shifted or flipped, not the stored images ({moved} of 96)"


def test_the_log_line_names_the_recipe_that_trains():
    """The deploy log's recipe line says what the run resolved (demo defaults, --set) and which losses apply."""
    d = with_demo_defaults(profile.load("arm")[0], ANIMALS).distill
    labels = torch.zeros(4, dtype=torch.long)
    used = distill.used_losses(["soft", "ce"], labels)
    assert distill.recipe_text(d, 1200, None, used) == (
        "1200 steps x batch 64, lr 0.003 (cosine decay), losses soft + ce (T 4, alpha 0.7), "
        "views: shifts up to 2 px, flip")
    # no labels: ce cannot apply and the line does not claim it; a budget in minutes is named as such
    assert distill.used_losses(["soft", "ce"], None) == ["soft"]
    assert distill.recipe_text(profile.load("arm")[0].distill, None, 90.0, ["soft"]).startswith("1.5 min x batch 64")
    # class labels do not feed the per-pixel loss, masks do not feed ce
    assert distill.used_losses(["pixel_kl", "pixel_ce", "ce"], torch.zeros(2, 8, 8, dtype=torch.long)) == ["pixel_kl", "pixel_ce"]
    assert distill.recipe_text(d, 10, None, ["ce"]).count("alpha") == 0
    # T and alpha only where they act: not for an embedding's losses, T alone for label-free per-pixel KL
    assert "(T" not in distill.recipe_text(d, 10, None, ["cosine", "mse"]) and "alpha" not in distill.recipe_text(
        d, 10, None, ["box_l1", "score_bce"])
    assert "losses pixel_kl (T 4)," in distill.recipe_text(d, 10, None, ["pixel_kl"])
