"""commands.py: `bench` on a real .onnx exported from a user's nn.Module, with the command line's
bench settings (`--set bench.KEY=VALUE` and the flags that are shorthands for those keys) checked by
the profile's Bench schema and laid over the profile's own bench section."""
import os

import pytest

from edgecompress.commands import bench_artifact, bench_settings
from edgecompress.errors import InputError

QUICK = ["bench.seconds=0", "bench.warmup_seconds=0", "bench.idle_seconds=0", "bench.rounds=1", "bench.energy=none"]


@pytest.fixture(scope="module")
def user_onnx(tmp_path_factory):
    """A model as a user writes one (a class with its own forward), exported by torch.onnx."""
    import torch
    import torch.nn as nn

    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x)))
            return self.head(x.mean(dim=(2, 3)))

    path = tmp_path_factory.mktemp("user") / "tinynet.onnx"
    torch.onnx.export(TinyNet().eval(), (torch.zeros(1, 1, 8, 8),), str(path), input_names=["input"],
                      output_names=["logits"], dynamo=False)
    return path


def test_bench_times_the_named_runs_and_keeps_the_profiles_other_settings(user_onnx):
    settings = bench_settings(QUICK, {"--runs": 7, "--warmup": None, "--threads": None})
    assert settings.model_fields_set == {"runs", "seconds", "warmup_seconds", "idle_seconds", "rounds", "energy"}
    (result,) = bench_artifact(user_onnx, [], settings, quiet=True)["results"]
    assert result["latency_ms"]["n"] == 7 and result["artifact"] == str(user_onnx)
    assert result["warmup_done"]["runs"] == 10  # not named: the host profile's bench.warmup_runs
    assert result["inputs"][0]["shape"] == [1, 1, 8, 8] and result["energy"] is None


def test_threads_named_on_the_command_line_are_not_capped_at_this_hosts_cpus(user_onnx):
    more = (os.cpu_count() or 1) + 1
    (named,) = bench_artifact(user_onnx, [], bench_settings(QUICK + ["bench.runs=3"], {"--threads": more}),
                              quiet=True)["results"]
    assert named["runtime_options"]["threads"] == more


def test_threads_of_the_profile_are_capped_on_this_host(user_onnx, tmp_path, monkeypatch):
    """A local device whose target (a Pi 5) has 4 cores: without bench.threads, its 4 threads are capped
    at this host's CPUs, as bench without --device does."""
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  mylocal:\n    target: raspberry-pi-5\n    transport: local\n")
    monkeypatch.setenv("EDGECOMPRESS_DEVICES", str(path))
    (result,) = bench_artifact(user_onnx, ["mylocal"], bench_settings(QUICK + ["bench.runs=3"]),
                               quiet=True)["results"]
    assert result["device_name"] == "mylocal"
    assert result["runtime_options"]["threads"] == min(4, os.cpu_count() or 1)


def test_set_values_are_parsed_as_yaml_and_typed_by_the_schema():
    settings = bench_settings(["bench.runs=12", "bench.lock_clocks=true", "bench.energy_interval_ms=",
                               "bench.delegate=gpu"])
    assert (settings.runs, settings.lock_clocks, settings.energy_interval_ms, settings.delegate) == \
        (12, True, None, "gpu")
    assert settings.model_fields_set == {"runs", "lock_clocks", "energy_interval_ms", "delegate"}
    assert bench_settings([], {"--lock-clocks": True, "--seconds": 0.5}).model_dump(exclude_unset=True) == \
        {"lock_clocks": True, "seconds": 0.5}
    assert bench_settings([]).model_fields_set == set()


def test_a_misspelt_key_is_named_with_the_closest_one():
    with pytest.raises(InputError) as err:
        bench_settings(["bench.rnus=5"])
    assert "--set bench.rnus: unknown key. Did you mean 'runs'?" in str(err.value)
    assert "warmup_runs" in str(err.value) and err.value.exit_code == 2


def test_a_key_outside_bench_is_refused():
    for pair in ("prune.ratio=0.3", "runs=5", "bench=3"):
        with pytest.raises(InputError) as err:
            bench_settings([pair])
        assert f"--set {pair.split('=')[0]}: bench takes only bench.* keys" in str(err.value)
    with pytest.raises(InputError, match="is not key=value"):
        bench_settings(["bench.runs"])


def test_a_flag_and_a_set_of_the_same_key_must_agree():
    with pytest.raises(InputError) as err:
        bench_settings(["bench.runs=7"], {"--runs": 5})
    assert "--runs 5 and --set bench.runs=7 disagree" in str(err.value)
    with pytest.raises(InputError, match="--lock-clocks true and --set bench.lock_clocks=false disagree"):
        bench_settings(["bench.lock_clocks=false"], {"--lock-clocks": True})
    # the same value twice is no conflict (1 and 1.0 are the same seconds)
    assert bench_settings(["bench.runs=5", "bench.seconds=1"], {"--runs": 5, "--seconds": 1.0}).runs == 5


def test_bad_values_are_all_reported_with_where_they_came_from():
    with pytest.raises(InputError) as err:
        bench_settings(["bench.runs=abc", "bench.energy=solar"], {"--rounds": 0})
    text = str(err.value)
    assert "3 problem(s) in the bench settings" in text
    assert "--set bench.runs: Input should be a valid integer" in text and "(got 'abc')" in text
    assert "--set bench.energy: Input should be" in text and "'solar'" in text
    assert "--rounds (bench.rounds): Input should be greater than or equal to 1 (got 0)" in text
