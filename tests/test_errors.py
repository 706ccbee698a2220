"""The error hierarchy: the exit code per class (DESIGN.md: 2 user input, 3 a stage failed, 4 the
device failed), the stage tag, and the hint that travels with the message."""
from __future__ import annotations

import pytest

from edgecompress.errors import (DeviceError, EdgeCompressError, InputError, ProfileError, StageError,
                                 ToleranceError)


@pytest.mark.parametrize("error, code", [
    (EdgeCompressError("x"), 1), (InputError("x"), 2), (ProfileError("x"), 2), (StageError("export", "x"), 3),
    (ToleranceError("x", report="r"), 3), (DeviceError("x"), 4),
])
def test_each_class_maps_to_its_exit_code(error, code):
    assert error.exit_code == code and isinstance(error, EdgeCompressError)


def test_the_hint_is_kept_and_printed_under_the_message():
    err = InputError("weights w.pt do not exist", hint="check the --weights path")
    assert (err.message, err.hint) == ("weights w.pt do not exist", "check the --weights path")
    assert str(err) == "weights w.pt do not exist\n  -> check the --weights path"
    assert str(InputError("no model given")) == "no model given" and InputError("m").hint is None


def test_a_stage_error_is_tagged_with_its_stage_and_keeps_its_hint():
    err = StageError("quantize", "INT8 failed", hint="try --set quantize.precision=fp32")
    assert err.stage == "quantize" and err.message == "[quantize] INT8 failed"
    assert str(err) == "[quantize] INT8 failed\n  -> try --set quantize.precision=fp32"


def test_a_tolerance_error_is_a_verify_stage_error_carrying_its_report():
    err = ToleranceError("outputs differ", report="output  max |diff| 0.5", hint="loosen verify.max_abs_diff")
    assert isinstance(err, StageError) and err.stage == "verify" and err.report == "output  max |diff| 0.5"
    assert err.message == "[verify] outputs differ\noutput  max |diff| 0.5"
    assert str(err).endswith("\n  -> loosen verify.max_abs_diff")


def test_a_profile_error_is_caught_as_the_users_input():
    with pytest.raises(InputError):
        raise ProfileError("unknown key prune.ratoi", hint="did you mean prune.ratio?")
