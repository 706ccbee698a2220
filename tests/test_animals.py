"""The animals demo's loader: animal-mnist's data are gzipped pickles, read by an unpickler that
builds numpy arrays and refuses (without running) anything else; and the real data, deduplicated."""
import collections
import gzip
import importlib.util
import json
import os
import pickle
import sys

import numpy as np
import pytest

from ecutil import fast_sets, run_cli
from edgecompress.demo import animals

HAS_ANIMALS = importlib.util.find_spec("animal_mnist") is not None
needs_animals = pytest.mark.skipif(not HAS_ANIMALS, reason="animal-mnist not installed (pip install --no-deps "
                                   "animal-mnist)")


def _write(path, payload: bytes):
    with gzip.open(path, "wb") as f:
        f.write(payload)
    return path


class _Shell:
    """What an attacker's pickle does: unpickling it calls os.system."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_pickle_that_would_run_a_command_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = _write(tmp_path / "evil.gz", pickle.dumps(_Shell(f"touch {marker}")))
    with pytest.raises(animals.RefusedPickle) as err:
        animals.load_array(path)
    assert f"{os.system.__module__}.system" in str(err.value) and str(path) in str(err.value)
    assert "--no-deps animal-mnist" in err.value.hint
    assert not marker.exists()


def test_a_pickle_naming_any_other_global_is_refused(tmp_path):
    path = _write(tmp_path / "dict.gz", pickle.dumps(collections.OrderedDict(a=np.arange(3))))
    with pytest.raises(animals.RefusedPickle, match="collections.OrderedDict"):
        animals.load_array(path)


@pytest.mark.parametrize("module", ["numpy._core.multiarray", "numpy.core.multiarray"])
def test_a_numpy_array_pickle_loads_under_either_numpy_module_name(tmp_path, module):
    """numpy 2 pickles name numpy._core; animal-mnist's file (numpy 1) names numpy.core."""
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    payload = pickle.dumps(array, protocol=3)  # protocol 3 names globals as text lines, easy to rewrite
    assert b"cnumpy._core.multiarray\n_reconstruct\n" in payload
    payload = payload.replace(b"cnumpy._core.multiarray\n", f"c{module}\n".encode())
    loaded = animals.load_array(_write(tmp_path / "a.gz", payload))
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, array)


def test_a_pickle_of_something_else_than_an_array_is_an_input_error(tmp_path):
    from edgecompress.errors import InputError

    with pytest.raises(InputError, match="holds a list, not a numpy array"):
        animals.load_array(_write(tmp_path / "list.gz", pickle.dumps([1, 2, 3])))
    with pytest.raises(InputError, match="could not be read"):
        animals.load_array(_write(tmp_path / "cut.gz", pickle.dumps(np.arange(100))[:-20]))


def test_without_the_package_the_error_gives_the_install_command(monkeypatch):
    from edgecompress.errors import InputError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "animal_mnist" else real(name, *a))
    with pytest.raises(InputError, match="not installed") as err:
        animals.data_files()
    assert "pip install --no-deps animal-mnist" in err.value.hint


@needs_animals
def test_the_real_data_deduplicated_without_importing_the_package():
    from edgecompress.data import split_indices

    data = animals.dataset()
    assert data.x.shape == (9716, 1, 28, 28) and data.x.dtype == np.float32
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert data.labels == ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
    assert animals.images().duplicates_removed == 284 and "284 exact duplicates removed" in data.source
    assert sorted(set(data.y.tolist())) == list(range(10)) and np.bincount(data.y).min() >= 800
    rows = {r.tobytes() for r in animals.images().x}
    assert len(rows) == len(data)  # no image twice
    # the split is seeded and disjoint, so no held-out image is also a training image
    train, held = split_indices(len(data), 0.2)
    assert np.array_equal(train, split_indices(len(data), 0.2)[0]) and len(held) == 1943
    assert not {data.x[i].tobytes() for i in train} & {data.x[i].tobytes() for i in held}
    # the package's own modules (which import TensorFlow) were never imported
    assert not [m for m in sys.modules if m.startswith("animal_mnist")]


def test_a_model_given_with_demo_is_refused_naming_what_to_drop(tmp_path, model_file, npz_data):
    code, _, err = run_cli("deploy", f"{model_file}:build", "--demo", "animals", "--data", npz_data,
                           "--target", "arm", "--out", tmp_path)
    assert code == 2
    assert "drop --demo animals" in err and f"drop {model_file}:build" in err
    code, _, err = run_cli("deploy", "--demo", "cats", "--target", "arm", "--out", tmp_path)
    assert code == 2 and "digits, animals" in err


@needs_animals
@pytest.mark.slow
def test_the_animals_demo_deploys(tmp_path):
    """The first use trains the teacher (12 epochs: 848 s on the build host's 2 cores shared with other
    jobs; 18-36 s an epoch, 4-7 minutes, when they were less busy), then a 30-step deploy. Run with -m slow."""
    code, out, err = run_cli("deploy", "--demo", "animals", "--target", "arm", "--out", tmp_path, "--json",
                             *fast_sets())
    assert code == 0, err
    summary = json.loads(out)
    assert "demo animals: trained the teacher" in err
    assert summary["name"] == "animals" and summary["before"]["accuracy"] > 0.95
    folder = tmp_path / "animals-raspberry-pi-5"
    assert (folder / "labels.txt").read_text().split() == animals.LABELS
