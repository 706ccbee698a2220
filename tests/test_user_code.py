"""--metric's answer checked before any work (edgecompress.user_code.metric): a dict of plain, finite numbers."""
from pathlib import Path

import numpy as np
import pytest

from edgecompress import user_code
from edgecompress.errors import InputError


def _user(fn):
    return user_code.UserFunction(path=Path("metric.py"), name=fn.__name__, fn=fn, flag="--metric")


def test_a_metric_of_numbers_is_taken_and_a_string_that_spells_one_is_refused():
    """A walkthrough's metric returned {"recall": "0.9"}, and the table printed 'recall 0.9 0.9 +0'."""
    outputs, data = {"output": np.zeros((2, 3))}, {"x": np.zeros((2, 1))}

    def recall(outputs, data):
        return {"recall": np.float32(0.5), "hits": 3}

    assert user_code.metric(_user(recall), outputs, data) == {"recall": 0.5, "hits": 3.0}

    def as_text(outputs, data):
        return {"recall": "0.9"}

    with pytest.raises(InputError) as refused:
        user_code.metric(_user(as_text), outputs, data)
    assert "'recall' is '0.9', not a number" in str(refused.value)

    def nan(outputs, data):
        return {"recall": float("nan")}

    with pytest.raises(InputError):
        user_code.metric(_user(nan), outputs, data)
