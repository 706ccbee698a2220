"""--task auto on the shapes a user's model returns (edgecompress.tasks.choose), beyond the ones the end-to-end
tests deploy: a classifier returning (logits, embedding), keypoint heatmaps, and what auto says when it cannot tell."""
import numpy as np
import pytest

from edgecompress import tasks
from edgecompress.errors import InputError


def _unit(n, d):
    v = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_tuple_of_logits_and_an_embedding_with_labels_is_a_classifier():
    """A walkthrough's (logits, embedding) model with a labelled image folder was distilled as a regressor:
    no cross-entropy, no accuracy, and a reason saying its unit vectors were not unit vectors."""
    logits = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    task = tasks.choose("auto", ["output_0", "output_1"], [(2, 4), (2, 32)], logits, np.array([0, 3, 1, 2]))
    assert task.kind == "classification"
    assert "'output_0', has 4 values" in task.reason and "labels are classes 0..3" in task.reason


def test_several_outputs_without_labels_that_fit_stay_regression_and_say_why():
    first = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    for y in (None, np.array([0, 7])):  # no labels; a label the first output cannot score
        task = tasks.choose("auto", ["output_0", "output_1"], [(2, 4), (2, 32)], first, y)
        assert task.kind == "regression" and "unit vectors" not in task.reason and "labels" in task.reason


def test_an_embedding_first_and_class_scores_second_is_not_called_a_classifier_on_its_embedding():
    """A walkthrough's re-identification net returning {"embedding", "id_scores"} (unit rows first) was judged
    as a regressor, by R^2 over both outputs."""
    task = tasks.choose("auto", ["emb", "out"], [(2, 32), (2, 4)], _unit(2, 32), np.array([0, 1]))
    assert task.kind == "embedding" and "the first of 2 outputs" in task.reason


def test_a_reid_nets_embedding_beside_its_id_heads_logits_is_an_embedding_and_classification_is_refused():
    """{"embedding", "logits"} (the dict's embedding first, as edgecompress.outputs orders it) was a classifier
    under auto and, under --task embedding, was judged by its logits' cosine (0.9875 for an embedding at 0.90)."""
    names, shapes = ["embedding", "logits"], [(2, 64), (2, 10)]
    task = tasks.choose("auto", names, shapes, _unit(2, 64), np.array([0, 9]))
    assert task.kind == "embedding" and "'embedding'" in task.reason and "(logits) are checked by max |diff|" in task.reason
    assert tasks.choose("embedding", names, shapes).kind == "embedding"
    with pytest.raises(InputError) as refused:
        tasks.choose("classification", names, shapes)
    assert "'embedding' comes first" in str(refused.value) and "--task embedding" in refused.value.hint
    assert tasks.choose("auto", ["logits", "aux"], [(2, 10), (2, 64)]).kind == "classification"  # no embedding key


def test_maps_named_as_heatmaps_are_regression_and_other_maps_say_how_to_choose_it():
    heat = tasks.choose("auto", ["heatmaps", "offsets"], [(2, 5, 16, 16), (2, 10, 16, 16)])
    assert heat.kind == "regression" and "'heatmaps'" in heat.reason
    seg = tasks.choose("auto", ["output_0"], [(2, 5, 16, 16)])
    assert seg.kind == "segmentation" and "--task regression" in seg.reason


def test_a_forced_task_the_outputs_do_not_fit_is_refused_naming_them():
    """Two walkthroughs: --task segmentation on a detector crashed in distillation ('float' object has no attribute
    'backward'); --task classification on a segmenter shipped a bundle whose INT8 check compared nothing."""
    import pytest

    from edgecompress.errors import InputError

    detector = (["boxes", "scores"], [(2, 16, 4), (2, 16, 3)])
    segmenter = (["logits"], [(2, 3, 32, 32)])
    for requested, (names, shapes), auto in (("segmentation", detector, "detection"),
                                             ("classification", segmenter, "segmentation"),
                                             ("embedding", segmenter, "segmentation")):
        with pytest.raises(InputError) as info:
            tasks.choose(requested, names, shapes)
        message = str(info.value)
        assert f"--task {requested} needs " in message and names[0] in message
        assert f"auto reads these outputs as {auto}" in message
    assert tasks.choose("regression", *segmenter).kind == "regression"  # any outputs may be regressed
    assert tasks.choose("segmentation", *segmenter).kind == "segmentation"
