"""bench.py's host-side pieces that need no device: the runner job a profile's bench section becomes,
each round's share of it, the median round, the speed-ups, the random inputs of a model whose
sizes are dynamic, and the threads this host can time with. Exact values throughout."""
from __future__ import annotations

import pytest

from edgecompress import bench, profile
from edgecompress.errors import InputError
from edgecompress.inventory import Device


def _host_bench():
    return profile.load("host-cpu")[0].bench


def test_a_job_carries_the_profiles_bench_section_key_for_key():
    assert bench.make_job(_host_bench(), "onnxruntime") == {
        "protocol_version": bench.PROTOCOL_VERSION, "runtime": "onnxruntime", "runtime_options": {"threads": 2},
        "warmup": {"runs": 10, "seconds": 1.0}, "runs": {"count": 100, "seconds": 3.0}, "energy": "auto",
        "energy_interval_ms": None, "idle_seconds": 1.0, "max_runs": 100000}
    assert bench.PROTOCOL_VERSION == 1


def test_a_job_takes_the_runtimes_own_options_the_inputs_and_lock_clocks_only_when_asked():
    cfg = profile.load("host-cpu", ["bench.lock_clocks=true"])[0].bench
    inputs = [{"name": "x", "shape": [1, 3, 16, 16]}]
    job = bench.make_job(cfg, "tensorrt", {"workspace_mb": 64}, inputs)
    assert job["runtime_options"] == {"workspace_mb": 64}, "the options replace the threads, not join them"
    assert job["inputs"] == {"random": inputs} and job["lock_clocks"] is True
    plain = bench.make_job(_host_bench(), "onnxruntime", inputs=[])
    assert "inputs" not in plain and "lock_clocks" not in plain, "absent keys: the device side's defaults"


def test_a_round_gets_its_share_of_the_runs_and_seconds_but_a_whole_warmup():
    cfg = _host_bench()  # 100 runs, 3 s, 3 rounds
    share = bench.round_share(cfg)
    assert (share.runs, share.seconds, share.rounds) == (34, 1.0, 3)  # ceil(100 / 3): the rounds add up to >= 100
    assert (share.warmup_runs, share.warmup_seconds) == (cfg.warmup_runs, cfg.warmup_seconds) == (10, 1.0)
    assert cfg.runs == 100, "the profile itself is left as it was"
    assert bench.round_share(cfg.model_copy(update={"runs": 2, "rounds": 5})).runs == 1  # never 0 runs
    one = cfg.model_copy(update={"rounds": 1})
    assert bench.round_share(one) is one


def test_the_median_of_an_even_count_is_the_lower_middle_and_the_spread_is_over_it():
    rounds = [{"latency_ms": {"p50": p}, "id": i} for i, p in enumerate([4.0, 1.0, 3.0, 2.0])]
    chosen = bench.median_round(rounds)
    assert chosen["id"] == 3 and chosen["latency_ms"]["p50"] == 2.0  # 2.0 and 3.0 in the middle: the lower
    assert chosen["rounds"] == {"count": 4, "p50_ms": [4.0, 1.0, 3.0, 2.0], "chosen": 4, "spread_pct": 150.0}
    assert chosen["warnings"] == ["the rounds' p50s spread by 150%: the device was busy or throttling, so the p50 "
                                  "will not repeat to better than that"]
    calm = bench.median_round([{"latency_ms": {"p50": 10.5}}, {"latency_ms": {"p50": 10.0}}])
    assert calm["rounds"] == {"count": 2, "p50_ms": [10.5, 10.0], "chosen": 2, "spread_pct": 5.0}
    assert calm["warnings"] == [], "5% is within NOISY_SPREAD_PCT"
    edge = bench.median_round([{"latency_ms": {"p50": 1.0}}, {"latency_ms": {"p50": 1.1}}])
    assert edge["rounds"]["spread_pct"] == 10.0 and edge["warnings"] == [], "the threshold itself does not warn"


def test_rounds_timed_at_zero_ms_have_no_spread_rather_than_a_division_by_zero():
    chosen = bench.median_round([{"latency_ms": {"p50": 0.0}} for _ in range(3)])
    assert chosen["rounds"] == {"count": 3, "p50_ms": [0.0, 0.0, 0.0], "chosen": 2, "spread_pct": None}
    assert chosen["warnings"] == []


def test_speedups_per_round_pair_the_rounds_and_refuse_what_cannot_be_paired():
    def rounds(*p50s):
        return {"rounds": {"p50_ms": list(p50s)}}

    assert bench.round_speedups(rounds(1.0, 3.0), rounds(3.0, 7.0)) == [0.333, 0.429]  # rounded to 3 places
    assert bench.round_speedups(rounds(4.0, 6.0), rounds(2.0)) is None, "a round missing on one side"
    assert bench.round_speedups(rounds(4.0, None), rounds(2.0, 2.0)) is None
    assert bench.round_speedups(rounds(4.0, 6.0), rounds(2.0, 0.0)) is None
    assert bench.round_speedups({}, rounds(2.0)) is None, "one round: no per-round figures"


def test_the_speedup_is_the_ratio_of_the_p50s_or_none():
    assert bench.speedup({"latency_ms": {"p50": 3.0}}, {"latency_ms": {"p50": 1.5}}) == 2.0
    assert bench.speedup({"latency_ms": {"p50": 3.0}}, {"latency_ms": {"p50": 0.0}}) is None
    assert bench.speedup({"latency_ms": {"p50": None}}, {"latency_ms": {"p50": 1.0}}) is None
    assert bench.speedup({"error": "unreachable"}, {"latency_ms": {"p50": 1.0}}) is None


def _onnx(path, *inputs):
    """A model of Relu per input, each input's shape as given (strings: dynamic dimensions)."""
    import onnx
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    outs = [helper.make_tensor_value_info(f"y_{n}", TensorProto.FLOAT, s) for n, s in inputs]
    nodes = [helper.make_node("Relu", [n], [f"y_{n}"]) for n, _ in inputs]
    model = helper.make_model(helper.make_graph(nodes, "relu", ins, outs), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_random_inputs_are_sized_by_the_data_only_where_the_model_leaves_sizes_open(tmp_path):
    images = _onnx(tmp_path / "any_size.onnx", ("x", ["n", 3, "h", "w"]))
    assert bench.random_inputs(images, "onnxruntime", (2, 3, 16, 24)) == [{"name": "x", "shape": [2, 3, 16, 24]}]
    fixed_batch = _onnx(tmp_path / "one_at_a_time.onnx", ("x", [1, 3, "h", "w"]))
    assert bench.random_inputs(fixed_batch, "onnxruntime", (8, 3, 16, 16)) == [{"name": "x", "shape": [1, 3, 16, 16]}]
    batch_only = _onnx(tmp_path / "batch.onnx", ("x", ["n", 3, 8, 8]))
    assert bench.random_inputs(batch_only, "onnxruntime", None) is None, "the device side sets the batch to 1"
    assert bench.random_inputs(images, "tensorrt", None) is None, "a runtime that times static models"
    assert bench.random_inputs(tmp_path / "m.tflite", "onnxruntime", None) is None


def test_an_open_size_without_a_fitting_shape_is_the_users_input_error_with_an_example(tmp_path):
    images = _onnx(tmp_path / "any_size.onnx", ("x", ["n", 3, "h", "w"]))
    with pytest.raises(InputError) as missing:
        bench.random_inputs(images, "onnxruntime", None)
    said = missing.value.message
    assert "any_size.onnx: input 'x' ['n', 3, 'h', 'w'] has dynamic dimensions besides the batch" in said
    assert missing.value.hint == "pass --input-shape, e.g. --input-shape 1x3x224x224"
    with pytest.raises(InputError) as wrong:
        bench.random_inputs(images, "onnxruntime", (1, 4, 16, 16))
    assert "(the shape given, 1x4x16x16, does not fit it)" in wrong.value.message, "3 channels, not 4"
    with pytest.raises(InputError, match="the shape given, 1x3x16, does not fit it"):
        bench.random_inputs(images, "onnxruntime", (1, 3, 16))
    two = _onnx(tmp_path / "two.onnx", ("a", ["n", "t"]), ("b", ["n", "t"]))
    with pytest.raises(InputError) as both:
        bench.random_inputs(two, "onnxruntime", (1, 5))
    assert "inputs 'a' ['n', 't'], 'b' ['n', 't'] have dynamic dimensions" in both.value.message


def test_the_build_host_times_with_no_more_threads_than_it_has(monkeypatch, capsys):
    """A Pi profile's 4 threads on a 2-CPU build host would time the threads' fight over the CPUs."""
    pi = profile.load("raspberry-pi-5")[0].bench
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert pi.threads == 4 and bench.settings_here(pi, None, quiet=True).threads == 2
    assert capsys.readouterr().err == ""
    assert bench.settings_here(pi, Device(name="lab-pi", target="raspberry-pi-5"), quiet=True).threads == 4
    local = Device(name="desk", target="raspberry-pi-5", transport="local")  # this host under a name
    assert bench.settings_here(pi, local).threads == 2
    assert "bench: 2 threads on this host, which has 2 CPUs (the profile's 4 are the target's cores" in \
        capsys.readouterr().err
    assert pi.threads == 4, "the profile (saved in the bundle) keeps the target's threads"
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert bench.settings_here(pi, None, quiet=True) is pi


def test_a_one_turn_profile_takes_three_turns_on_the_build_host_but_not_on_its_device():
    """An Android profile timed on the build host in one 1 s turn per model: a walkthrough's net read 15.79x
    where three turns read 4.77x."""
    phone = profile.load("android-arm64")[0].bench
    assert phone.rounds == 1
    here = bench.host_turns(phone, None, "litert")
    assert (here.rounds, here.seconds) == (3, 3.0) and bench.round_share(here).seconds == 1.0
    assert bench.host_turns(phone, Device(name="pixel", target="android-arm64", transport="adb"), "litert") is phone
    chosen = profile.load("android-arm64", ["bench.rounds=1"])[0].bench
    assert bench.host_turns(chosen, None, "litert") is chosen  # --set bench.rounds=1 is the user's choice
    jetson = profile.load("jetson-orin-nano")[0].bench
    assert bench.host_turns(jetson, None, "tensorrt") is jetson
    pi = profile.load("raspberry-pi-5")[0].bench
    assert bench.host_turns(pi, None, "onnxruntime") is pi  # already 3 turns


def test_a_local_device_beside_a_remote_one_is_capped_and_the_remote_one_is_not(monkeypatch):
    """`bench --device lab-pi --device here` timed 'here' at the Pi's 4 threads on a 2-CPU host: the cap
    applied only when every device was local."""
    pi = profile.load("raspberry-pi-5")[0].bench
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    seen = {}

    def measure(models, cfg, runtime, device, quiet, input_shape, stop):
        seen[device.name] = cfg.threads
        return {label: {"device_name": device.name} for label in models}

    monkeypatch.setattr(bench, "measure", measure)
    devices = [Device(name="lab-pi", target="raspberry-pi-5"),
               Device(name="here", target="raspberry-pi-5", transport="local")]
    bench.measure_on_devices("m.onnx", pi, "onnxruntime", devices, quiet=True, cap_local_threads=True)
    assert seen == {"lab-pi": 4, "here": 2}
    seen.clear()
    bench.measure_on_devices("m.onnx", pi, "onnxruntime", devices, quiet=True, cap_local_threads=False)
    assert seen == {"lab-pi": 4, "here": 4}, "bench.threads named on the command line is used as it is"
