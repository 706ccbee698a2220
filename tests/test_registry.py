import pytest

from edgecompress.losses import LOSSES
from edgecompress.errors import InputError
from edgecompress.prune import IMPORTANCE
from edgecompress.registry import Registry


def test_miss_lists_valid_names_and_suggests_closest():
    with pytest.raises(InputError) as exc:
        IMPORTANCE.get("taylr")
    assert "Did you mean 'taylor'" in str(exc.value) and "bn_scale" in str(exc.value)


def test_duplicate_registration_is_an_error():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="twice"):
        reg.register("a")(lambda: 2)


def test_profile_choices_and_registries_agree():
    """Adding a loss or importance to the schema without registering it (or the reverse) fails here."""
    from typing import get_args

    from edgecompress.profile import Distill, Prune

    listed = get_args(Distill.model_fields["losses"].annotation)[0]  # Optional[List[Literal[...]]]
    losses = set(get_args(get_args(listed)[0]))
    assert losses == set(LOSSES.names())
    assert set(get_args(Prune.model_fields["importance"].annotation)) == set(IMPORTANCE.names())


def test_profile_energy_names_match_the_device_side_sources():
    import sys
    from typing import get_args

    from edgecompress.profile import Bench
    from edgecompress.runners import device_side_dir

    sys.path.insert(0, str(device_side_dir()))
    try:
        import ec_energy
    finally:
        sys.path.remove(str(device_side_dir()))
    android = {"battery", "powerstats"}  # measured on the phone by the adb runner, not by ec_energy
    assert set(get_args(Bench.model_fields["energy"].annotation)) == set(ec_energy.CHOICES) | android


def test_a_registry_gives_back_what_was_registered_and_lists_names_sorted():
    reg = Registry("runtime")

    @reg.register("onnxruntime")
    def ort():
        return "ort"

    reg.register("litert")(lambda: "litert")
    assert reg.get("onnxruntime") is ort and reg.get("litert")() == "litert"
    assert reg.names() == list(reg) == ["litert", "onnxruntime"]
    assert "litert" in reg and "tensorrt" not in reg


def test_a_miss_with_nothing_close_lists_the_names_without_guessing():
    reg = Registry("runtime")
    for name in ("onnxruntime", "litert"):
        reg.register(name)(lambda: None)
    with pytest.raises(InputError) as exc:
        reg.get("coreml")
    assert exc.value.message == "unknown runtime 'coreml'."
    assert exc.value.hint == "valid runtime names: litert, onnxruntime"
    with pytest.raises(InputError) as close:
        reg.get("onnxruntim")
    assert close.value.message == "unknown runtime 'onnxruntim'. Did you mean 'onnxruntime'?"
