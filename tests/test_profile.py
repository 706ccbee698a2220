from pathlib import Path

import pytest
import yaml

from edgecompress import profile
from edgecompress.errors import ProfileError


@pytest.mark.parametrize("name", sorted(profile.available()))
def test_every_shipped_profile_validates_and_round_trips(name):
    prof, _ = profile.load(name)
    assert prof.name == name, "a profile's name must match its file name"
    again = profile.validate(yaml.safe_load(profile.dump(prof)), "dump")
    assert again == prof


def test_each_family_has_exactly_one_default():
    defaults = {}
    for path in profile.available().values():
        data = yaml.safe_load(path.read_text())
        if data.get("default_for_family"):
            assert data["family"] not in defaults, f"two defaults for {data['family']}"
            defaults[data["family"]] = data["name"]
    assert defaults == {"arm": "raspberry-pi-5", "host": "host-cpu", "jetson": "jetson-orin-nano",
                        "android": "android-arm64"}


def test_family_resolves_to_default_and_says_so():
    prof, note = profile.load("arm")
    assert prof.name == "raspberry-pi-5"
    assert "raspberry-pi-5" in note and "arm" in note


def test_required_arm_profiles_prune_channels_rounded_to_8_with_int8_qdq():
    for name in ("raspberry-pi-5", "arm64-cpu"):
        prof, _ = profile.load(name)
        assert (prof.family, prof.runtime, prof.prune.structure, prof.prune.round_to) == ("arm", "onnxruntime", "channel", 8)
        assert (prof.quantize.precision, prof.quantize.activations, prof.quantize.weights) == ("int8", "uint8", "int8")
        assert prof.quantize.per_channel


def test_set_overrides_any_nested_key_with_typed_values():
    prof, _ = profile.load("host-cpu", ["prune.ratio=0.25", "distill.losses=[hard]", "bench.threads=1",
                                        "prune.ignore=[features.0]"])
    assert prof.prune.ratio == 0.25 and prof.distill.losses == ["hard"] and prof.bench.threads == 1
    assert prof.prune.ignore == ["features.0"]


def test_all_problems_reported_together_with_suggestion(tmp_path):
    data = yaml.safe_load((profile.TARGETS_DIR / "host-cpu.yaml").read_text())
    data["prune"]["ratoi"] = 0.3
    data["prune"]["ratio"] = 0
    data["bench"]["threads"] = "two"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError) as exc:
        profile.load(str(path))
    msg = str(exc.value)
    assert str(path) in msg and "3 problem(s)" in msg
    assert "prune.ratoi" in msg and "Did you mean 'ratio'" in msg
    assert "prune.ratio" in msg and "bench.threads" in msg


def test_set_that_is_not_key_value_is_refused():
    with pytest.raises(ProfileError, match="not key=value"):
        profile.load("host-cpu", ["prune.ratio"])


def test_distillation_budget_and_feature_layers_are_checked():
    with pytest.raises(ProfileError, match="budget"):
        profile.load("host-cpu", ["distill.steps=null"])
    with pytest.raises(ProfileError, match="feature_layers"):
        profile.load("host-cpu", ["distill.losses=[soft, feature]"])


def test_user_profile_file_is_accepted(tmp_path):
    path = tmp_path / "board.yaml"
    path.write_text("name: board\nfamily: arm\nruntime: onnxruntime\ndevice: {arch: arm64, cores: 2}\n")
    prof, _ = profile.load(str(path))
    assert prof.prune.round_to == 8 and prof.quantize.precision == "int8"  # documented defaults


def test_profile_docs_say_unstructured_gives_no_speed_up():
    doc = Path(profile.__file__).read_text() + (Path(profile.__file__).parents[1] / "README.md").read_text()
    assert "unstructured" in doc and "size" in doc


def test_unquoted_two_four_is_read_as_the_structure(tmp_path):
    prof, _ = profile.load("host-cpu", ["prune.structure=2:4"])
    assert prof.prune.structure == "2:4"
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nfamily: arm\nruntime: onnxruntime\ndevice: {arch: arm64, cores: 4}\n"
                    "prune: {structure: 2:4}\n")
    assert profile.load(str(path))[0].prune.structure == "2:4"


def test_jetson_profiles_fit_tensor_cores_and_size_distillation_to_pruning():
    profs = [profile.load(n)[0] for n in ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin")]
    for p in profs:
        assert (p.family, p.runtime, p.quantize.precision) == ("jetson", "tensorrt", "fp16")
        assert p.prune.round_to % 16 == 0
    ratios = [p.prune.ratio for p in profs]
    steps = [p.distill.steps for p in profs]
    assert ratios == sorted(ratios, reverse=True) and steps == sorted(steps, reverse=True), \
        "the smaller the device, the harder it prunes and the longer it distills"
    assert profile.load("jetson")[0].name == "jetson-orin-nano"


def test_int8_on_tensorrt_needs_channels_in_multiples_of_32():
    with pytest.raises(ProfileError, match="multiple of 32"):
        profile.load("jetson-orin-nano", ["quantize.precision=int8"])
    prof, _ = profile.load("jetson-orin-nano", ["quantize.precision=int8", "prune.round_to=32"])
    assert prof.prune.round_to == 32


def test_fp16_is_not_an_onnxruntime_cpu_precision():
    with pytest.raises(ProfileError, match="not available on onnxruntime"):
        profile.load("host-cpu", ["quantize.precision=fp16"])


def test_android_profiles_quantize_full_integer_and_refuse_uint8():
    prof, _ = profile.load("android")
    assert (prof.name, prof.runtime, prof.quantize.precision, prof.quantize.activations) == \
        ("android-arm64", "litert", "int8", "int8")
    assert prof.prune.round_to == 8 and prof.export.channels_last
    assert profile.load("android-gpu")[0].quantize.precision == "fp16"
    with pytest.raises(ProfileError, match="must be int8 on litert"):
        profile.load("android-arm64", ["quantize.activations=uint8"])


def test_rules_across_keys_are_all_reported_each_on_its_own_line_without_the_profile_dump():
    with pytest.raises(ProfileError) as err:
        profile.load("jetson-orin-nano", ["prune.round_to=8", "bench.rounds=3", "export.format=tflite"])
    lines = str(err.value).splitlines()
    assert lines[0].endswith("jetson-orin-nano.yaml with your --set values has 3 problem(s):")
    assert lines[1] == "  export.format tflite: the tensorrt runtime loads onnx models (--set export.format=onnx, " \
                       "or choose a target whose runtime takes tflite)"
    assert lines[2].startswith("  prune.round_to 8 leaves tensor cores idle at fp16: use a multiple of 16")
    assert lines[3].startswith("  bench.rounds 3: TensorRT targets measure in one round")
    assert "Value error" not in str(err.value) and "{" not in str(err.value), "no pydantic prefix, no dict"


def test_a_rule_inside_a_section_names_the_set_flag_once():
    with pytest.raises(ProfileError) as err:
        profile.load("arm", ["distill.steps=null"])
    assert str(err.value).splitlines()[1] == "  --set distill.steps: give a budget: distill.steps and/or " \
                                             "distill.minutes (steps: 0 skips distillation)"


def test_the_export_format_must_be_what_the_runtime_loads():
    with pytest.raises(ProfileError, match="the litert runtime loads tflite models"):
        profile.load("android", ["export.format=onnx"])
    with pytest.raises(ProfileError, match="export.format: Input should be 'onnx' or 'tflite'"):
        profile.load("host-cpu", ["export.format=tensorrt"])


@pytest.mark.parametrize("name", ["android-arm64", "jetson-orin-nano", "host-cpu"])
def test_a_latency_budget_validates_on_every_runtime_with_channel_pruning(name):
    prof, _ = profile.load(name, ["prune.latency_budget_ms=5", "prune.structure=channel"])
    assert prof.prune.latency_budget_ms == 5


def test_a_latency_budget_is_refused_for_structures_other_than_channel():
    with pytest.raises(ProfileError, match="structure 2:4: set prune.structure=channel or prune.ratio"):
        profile.load("android-arm64", ["prune.latency_budget_ms=5", "prune.structure=2:4"])


def test_a_profile_that_leaves_out_the_export_format_gets_the_runtimes(tmp_path):
    mine = tmp_path / "phone.yaml"
    mine.write_text("name: phone\nfamily: android\nruntime: litert\ndevice: {arch: arm64, cores: 8}\n"
                    "quantize: {precision: int8, activations: int8}\n")
    prof, _ = profile.load(str(mine))
    assert prof.export.format == "tflite" and "format: tflite" in profile.dump(prof)


def test_a_missing_section_is_named_with_its_keys_not_dumped(tmp_path):
    mine = tmp_path / "board.yaml"
    mine.write_text("name: board\nfamily: arm\nruntime: onnxruntime\n")
    with pytest.raises(ProfileError) as err:
        profile.load(str(mine))
    assert "device: required, and missing (a section with arch, cores, accelerator, memory_gb)" in str(err.value)
    assert "{" not in str(err.value)


def test_a_key_given_twice_is_named_by_its_path_and_lines_at_any_depth(tmp_path):
    """PyYAML keeps the last of two equal keys without a word: `bench: {runs: 50}` then `runs: 100`
    further down silently won."""
    prof = tmp_path / "twice.yaml"
    prof.write_text("name: twice\nfamily: arm\nruntime: onnxruntime\ndevice: {arch: arm64, cores: 4}\n"
                    "bench:\n  runs: 50\n  seconds: 1\n  runs: 100\nverify: {samples: 64, samples: 32}\n")
    with pytest.raises(ProfileError) as caught:
        profile.load(str(prof))
    message = str(caught.value)
    assert f"profile {prof} has 2 key(s) given twice" in message
    assert "'bench.runs' is given twice, on lines 6 and 8" in message
    assert "'verify.samples' is given twice, on lines 9 and 9" in message


def test_anchors_and_merge_keys_are_not_duplicates(tmp_path):
    prof = tmp_path / "anchors.yaml"
    prof.write_text("name: anchors\nfamily: arm\nruntime: onnxruntime\ndevice: {arch: arm64, cores: 4}\n"
                    "bench: &fast\n  runs: 50\nverify:\n  samples: 64\n")
    assert profile.load(str(prof))[0].bench.runs == 50
    data = profile.load_yaml(_write(tmp_path / "merge.yaml", "base: &b {a: 1}\nmine:\n  <<: *b\n  c: 2\n"), "file")
    assert data["mine"] == {"a": 1, "c": 2}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
