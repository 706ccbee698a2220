"""ec_trt's logic that needs no TensorRT: options, TensorRT-version branching, the engine cache key,
calibration batches and the calibrator's feeder (device copies faked), JetPack from nv_tegra_release."""
import itertools
import json

import numpy as np
import pytest

import ec_trt


# ---- options ---------------------------------------------------------------------------------------

def test_defaults_and_paths(tmp_path):
    np.save(tmp_path / "calib.npy", np.zeros((2, 3), np.float32))
    opts = ec_trt.read_options({"calibration": "calib.npy", "precision": "int8"}, str(tmp_path))
    assert opts["calibration"] == str((tmp_path / "calib.npy").resolve())
    assert opts["cache_dir"].endswith("/.cache/edgecompress/engines") and not opts["cache_dir"].startswith("~")
    assert (opts["sparsity"], opts["compare_sparse"], opts["qdq"], opts["timing"], opts["workspace_mb"]) == (
        False, False, False, None, None)


@pytest.mark.parametrize("options, message", [
    ({"precison": "fp16"}, "unknown runtime_options for tensorrt: precison; valid: "),
    ({"precision": "bf16"}, "runtime_options.precision must be one of fp32, fp16, int8, got 'bf16'"),
    ({"sparsity": "yes"}, "runtime_options.sparsity must be true or false"),
    ({"workspace_mb": 0}, "runtime_options.workspace_mb must be an integer >= 1"),
    ({"timing": "events"}, "runtime_options.timing must be one of api, trtexec"),
    ({"calibration": "/etc/passwd.npy"}, "must be a .npy file name in the job folder"),
    ({"calibration": "../up.npy"}, "is not a file in the job folder"),
    ({"calibration": "absent.npy"}, "is not a file in the job folder"),
    ({"cache_dir": ""}, "runtime_options.cache_dir must be a path"),
])
def test_bad_options_are_named(tmp_path, options, message):
    (tmp_path.parent / "up.npy").write_bytes(b"")
    with pytest.raises(ValueError) as e:
        ec_trt.read_options(options, str(tmp_path))
    assert message in str(e.value)


# ---- TensorRT-version branching ----------------------------------------------------------------------

def test_network_flags_per_version():
    assert ec_trt.network_flags(8, explicit_batch_bit=0) == 1
    assert ec_trt.network_flags(10) == 0
    assert ec_trt.network_flags(11, strongly_typed_bit=2) == 4
    assert ec_trt.network_flags(11) == 0


@pytest.mark.parametrize("major", [8, 10])
def test_plan_for_tensorrt_8_and_10_uses_builder_flags(major):
    assert ec_trt.plan_build(major, "fp32") == {"flags": [], "calibrate": False, "notes": []}
    assert ec_trt.plan_build(major, "fp16", sparsity=True)["flags"] == ["FP16", "SPARSE_WEIGHTS"]
    assert ec_trt.plan_build(major, "int8", calibration=True) == {"flags": ["INT8"], "calibrate": True, "notes": []}
    assert ec_trt.plan_build(major, "int8", qdq=True) == {"flags": ["INT8"], "calibrate": False, "notes": []}
    with pytest.raises(ValueError, match="needs runtime_options.calibration .* or a Q/DQ ONNX"):
        ec_trt.plan_build(major, "int8")


def test_plan_for_tensorrt_11_sets_no_precision_flag_and_says_why():
    fp16 = ec_trt.plan_build(11, "fp16")
    assert fp16["flags"] == [] and "no FP16 builder flag" in fp16["notes"][0]
    qdq = ec_trt.plan_build(11, "int8", qdq=True, sparsity=True)
    assert qdq["flags"] == ["SPARSE_WEIGHTS"] and not qdq["calibrate"] and "Q/DQ" in qdq["notes"][0]
    with pytest.raises(ValueError, match="TensorRT 11 takes INT8 only from Q/DQ nodes"):
        ec_trt.plan_build(11, "int8")
    with pytest.raises(ValueError, match="TensorRT 11 has no INT8 calibrator"):
        ec_trt.plan_build(11, "int8", calibration=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "fp16", "calibration": True}, "calibration is for precision int8"),
    ({"precision": "fp32", "qdq": True}, r"qdq \(a Q/DQ ONNX\) goes with precision int8"),
    ({"precision": "int8", "qdq": True, "calibration": True}, "not both"),
])
def test_plan_refuses_options_that_contradict(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ec_trt.plan_build(10, **kwargs)


def test_timing_choice():
    assert ec_trt.choose_timing(None, True, True) == ("api", "default: tensorrt and cuda-python import")
    assert ec_trt.choose_timing(None, True, False)[0] == "trtexec"
    assert "cuda-python does not import" in ec_trt.choose_timing(None, True, False)[1]
    assert ec_trt.choose_timing("trtexec", True, True) == ("trtexec", None)
    with pytest.raises(ValueError, match="timing 'api' needs tensorrt and cuda-python"):
        ec_trt.choose_timing("api", False, False)


# ---- engine cache key and cache --------------------------------------------------------------------

BASE = {"gpu": "Orin", "compute_capability": "8.7", "tensorrt_version": "10.3.0.30", "onnx_sha256": "ab" * 32,
        "build_options": {"precision": "fp16", "sparsity": False, "workspace_mb": None, "qdq": False,
                          "calibration_sha256": None}}


def key_of(parts):
    return ec_trt.cache_key(parts["gpu"], parts["compute_capability"], parts["tensorrt_version"],
                            parts["onnx_sha256"], parts["build_options"])


def test_the_cache_key_is_stable_and_ignores_option_order():
    reordered = dict(BASE, build_options=dict(reversed(list(BASE["build_options"].items()))))
    assert key_of(BASE) == key_of(dict(BASE)) == key_of(reordered)
    assert len(key_of(BASE)) == 64


@pytest.mark.parametrize("change", [
    {"gpu": "Xavier"}, {"compute_capability": "7.2"}, {"tensorrt_version": "10.3.0.31"},
    {"onnx_sha256": "cd" * 32}, {"build_options": dict(BASE["build_options"], precision="int8")},
    {"build_options": dict(BASE["build_options"], sparsity=True)},
    {"build_options": dict(BASE["build_options"], workspace_mb=512)},
    {"build_options": dict(BASE["build_options"], calibration_sha256="ef" * 32)},
])
def test_any_identity_part_changes_the_key(change):
    assert key_of(dict(BASE, **change)) != key_of(BASE)


def test_keys_of_all_single_changes_differ_from_each_other():
    pairs = itertools.product(("Orin", "Xavier"), ("8.7", "7.2"))
    variants = [dict(BASE, gpu=gpu, compute_capability=capability) for gpu, capability in pairs]
    assert len({key_of(v) for v in variants}) == 4


def test_the_cache_reuses_only_an_engine_with_its_metadata(tmp_path):
    cache = ec_trt.EngineCache(str(tmp_path / "engines"))
    assert (tmp_path / "engines").stat().st_mode & 0o777 == 0o700
    partial = cache.partial("k")
    with open(partial, "wb") as f:
        f.write(b"engine")
    assert cache.lookup("k") is None
    cache.store("k", partial, {"build_ms": 5.0})
    assert cache.lookup("k") == {"build_ms": 5.0}
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == ["k.engine", "k.json"]
    (tmp_path / "engines" / "k.json").unlink()  # an engine whose build died before its metadata
    assert cache.lookup("k") is None


# ---- calibration -----------------------------------------------------------------------------------

def test_batches_of_one_and_of_n():
    samples = np.arange(5 * 3 * 2 * 2, dtype=np.float32).reshape(5, 3, 2, 2)
    ones, left = ec_trt.pack_batches(samples, 1)
    assert len(ones) == 5 and left == 0 and ones[0].shape == (1, 3, 2, 2)
    assert all(b.flags["C_CONTIGUOUS"] for b in ones)
    twos, left = ec_trt.pack_batches(samples, 2)
    assert [b.shape[0] for b in twos] == [2, 2] and left == 1
    np.testing.assert_array_equal(np.concatenate(twos), samples[:4])
    all_at_once, left = ec_trt.pack_batches(samples, 5)
    assert len(all_at_once) == 1 and left == 0


def test_batches_refuse_other_dtypes_and_too_few_samples():
    with pytest.raises(ValueError, match="must be float32, got float64"):
        ec_trt.pack_batches(np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="at least 4 sample"):
        ec_trt.pack_batches(np.zeros((2, 3), np.float32), 4)


class FakeDevice:
    """Device memory as a dict: copy_to_device keeps a copy of what was sent and returns its pointer."""

    def __init__(self, pointer=0x7F000000):
        self.pointer, self.received = pointer, []

    def copy(self, array):
        self.received.append(array.copy())
        return self.pointer


def test_the_feeder_hands_out_every_batch_once_then_none(tmp_path):
    samples = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32)
    batches, _ = ec_trt.pack_batches(samples, 1)
    device = FakeDevice()
    feeder = ec_trt.CalibrationFeeder(batches, device.copy, str(tmp_path / "k.calib"))
    assert feeder.get_batch_size() == 1
    assert [feeder.get_batch(["x"]) for _ in range(4)] == [[device.pointer]] * 3 + [None]
    np.testing.assert_array_equal(np.concatenate(device.received), samples)


def test_the_feeder_keeps_an_error_instead_of_raising_into_tensorrt(tmp_path):
    def broken(array):
        raise RuntimeError("cudaMemcpy failed")

    feeder = ec_trt.CalibrationFeeder([np.zeros((1, 2), np.float32)], broken, str(tmp_path / "k.calib"))
    assert feeder.get_batch(["x"]) is None and "cudaMemcpy failed" in str(feeder.error)
    two_inputs = ec_trt.CalibrationFeeder([np.zeros((1, 2), np.float32)], FakeDevice().copy, None)
    assert two_inputs.get_batch(["a", "b"]) is None and "one input" in str(two_inputs.error)


def test_the_calibration_cache_is_read_back_after_it_was_written(tmp_path):
    path = tmp_path / "k.calib"
    feeder = ec_trt.CalibrationFeeder([], FakeDevice().copy, str(path))
    assert feeder.read_calibration_cache() is None
    feeder.write_calibration_cache(memoryview(b"TRT-8601-EntropyCalibration2\nx: 3c010a14\n"))
    assert path.read_bytes().startswith(b"TRT-8601-EntropyCalibration2")
    assert ec_trt.CalibrationFeeder([], None, str(path)).read_calibration_cache() == path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["k.calib"]  # no partial file left


# ---- device identity -------------------------------------------------------------------------------

def test_jetpack_from_nv_tegra_release(tmp_path):
    assert ec_trt.jetpack(str(tmp_path)) is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
        "DATE: Wed Jan  8 01:49:37 UTC 2025\n"
        "# KERNEL_VARIANT: oot\n")
    found = ec_trt.jetpack(str(tmp_path))
    assert (found["l4t"], found["jetpack_major"]) == ("36.4.3", 6) and found["release"].startswith("# R36")
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R32 (release), REVISION: 7.1, GCID: 29818004\n")
    assert ec_trt.jetpack(str(tmp_path))["jetpack_major"] == 4


def test_identity_from_the_jetson_device_tree(tmp_path):
    tree = tmp_path / "proc" / "device-tree"
    tree.mkdir(parents=True)
    (tree / "model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    (tree / "compatible").write_bytes(b"nvidia,p3768-0000+p3767-0005\x00nvidia,tegra234\x00")
    found = ec_trt.gpu_identity(None, str(tmp_path))
    assert found == {"gpu": "NVIDIA Jetson Orin Nano Developer Kit", "compute_capability": None,
                     "soc": "nvidia,p3768-0000+p3767-0005,nvidia,tegra234", "source": "device-tree"}
    json.dumps(found)
