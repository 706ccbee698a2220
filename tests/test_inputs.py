"""A model right no more often than chance: the warning names the likely causes in the order to check
them (the walkthrough forgot --weights, then used other preprocessing, and both times was told only
about the folder order)."""
from types import SimpleNamespace

from edgecompress.inputs import chance_causes as _chance_causes


def test_a_missing_weights_file_is_named_first_then_the_preprocessing_then_the_order(tmp_path):
    source = SimpleNamespace(kind="torch", weights=None, name="net")
    train = SimpleNamespace(source=str(tmp_path), preprocessing={"scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                                                                 "std": [0.229, 0.224, 0.225]})
    causes = _chance_causes(source, train)
    assert "--weights" in causes[0] and "preprocess.mean" in causes[1] and "sorted folder-name order" in causes[2]
    source.weights = "net.pt"
    causes = _chance_causes(source, train)
    assert len(causes) == 2 and "preprocess.mean" in causes[0]


def test_npz_data_is_told_to_match_the_training_preprocessing(tmp_path):
    source = SimpleNamespace(kind="torch", weights="w.pt", name="net")
    train = SimpleNamespace(source=str(tmp_path / "calib.npz"), preprocessing={})
    assert "calib.npz's x is not preprocessed as the model was trained" in _chance_causes(source, train)[0]
