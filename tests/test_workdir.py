"""What a run that fails after distilling says about its kept progress (edgecompress.workdir)."""
import pytest

from edgecompress import workdir
from edgecompress.errors import InputError, StageError


@pytest.mark.parametrize("error", [StageError("verify", "outside the tolerance", hint="loosen verify.*"),
                                   InputError("--metric m.py:f raised ValueError: empty", hint="fix m.py")])
def test_a_failure_after_distilling_says_the_student_is_kept_and_how_to_go_on(tmp_path, error):
    (tmp_path / "checkpoint.pt").write_bytes(b"progress")
    with pytest.raises(type(error)) as raised:
        with workdir.progress_kept_on_failure(tmp_path):
            raise error
    assert raised.value.hint.count("--resume") == 1 and str(tmp_path) in raised.value.hint
    assert raised.value.hint.startswith(error.hint.split(";")[0])


def test_an_error_about_resuming_itself_gets_no_second_resume_advice(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"progress")
    error = InputError("--resume: the checkpoint was made with another profile", hint="run with --force instead")
    with pytest.raises(InputError) as raised:
        with workdir.progress_kept_on_failure(tmp_path):
            raise error
    assert raised.value.hint == "run with --force instead"


def test_without_a_checkpoint_nothing_is_promised(tmp_path):
    with pytest.raises(StageError) as raised:
        with workdir.progress_kept_on_failure(tmp_path):
            raise StageError("export", "failed", hint="try opset 17")
    assert raised.value.hint == "try opset 17"
