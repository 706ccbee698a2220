"""TensorRT on the device: build an engine from the job's ONNX here (engines are not portable across
GPUs or TensorRT versions), cache it, and run or time it. Standard library plus TensorRT, numpy and
cuda-python, each imported inside the function that needs it; Python >= 3.8.

`load(model_path, options)` is the loader behind ec_runtimes.RUNTIMES["tensorrt"]. It builds with the
Python API (trt.Builder, OnnxParser, a builder config) when `tensorrt` imports, else with trtexec.
Session.run does H2D copies, one execute (execute_async_v3 with the tensor API of TensorRT >= 8.5,
execute_v2 with the bindings of older 8.x) bracketed by CUDA events, and D2H copies, so ec_bench's
loop measures end-to-end latency; that needs cuda-python (`cuda.bindings.runtime`, or `cuda.cudart`
in older releases). Without it trtexec times the engine: the Session then has no `run` and a
`measure()` that ec_bench calls instead of its own loop.

runtime_options (unknown ones are errors; all reported as applied):
  precision       fp32 (default) | fp16 | int8. TensorRT 8/10: builder flags FP16 / INT8 (trtexec
                  --fp16 / --int8); int8 needs `calibration` or a Q/DQ ONNX (`qdq: true`).
                  TensorRT >= 11 has no such flags: networks are strongly typed, so fp16 builds the
                  types the ONNX declares (said in `warnings`) and int8 needs `qdq: true`.
  qdq             true when the host exported a Q/DQ (QuantizeLinear/DequantizeLinear) ONNX
  calibration     a .npy in the job folder: samples N x (input shape without batch), float32, fed
                  by an IInt8EntropyCalibrator2 in batches of the input's batch dimension (1 when it
                  is dynamic); TensorRT 8/10 only. The calibration cache is kept next to the engine.
  float_layers    layer names (the ONNX node names) an INT8 engine computes in FP32: their precision
                  and output types set to FP32 with OBEY_PRECISION_CONSTRAINTS (trtexec
                  --layerPrecisions / --layerOutputTypes / --precisionConstraints=obey). TensorRT 8/10
                  with calibration only: a Q/DQ ONNX leaves them float by having no Q/DQ around them.
                  Names the network lacks are said in `warnings`.
  sparsity        true sets SPARSE_WEIGHTS (trtexec --sparsity=enable): 2:4 sparse kernels where they
                  pay (Ampere and newer)
  compare_sparse  true builds a dense and a sparse engine, times both and keeps the sparse one only
                  when its median is at least SPARSE_MIN_GAIN faster; `engine.sparse` reports both
  workspace_mb    builder workspace pool limit (MiB); default: TensorRT's
  cache_dir       engine cache folder on the device, default ~/.cache/edgecompress/engines
  timing          api (default when tensorrt and cuda-python import) | trtexec (also reported as
                  `trtexec` and `gpu_compute_ms`; the only way without cuda-python)
  trtexec         path of trtexec; default /usr/src/tensorrt/bin/trtexec, else PATH

Engine cache: key = sha256 of (GPU name, compute capability, TensorRT version, ONNX sha256, build
options) as sorted JSON; files `<key>.engine` and `<key>.json` (metadata, written last). A cached
engine is reused: `build_ms` 0, `engine_cached` true. Dynamic input dimensions are fixed to 1 (one
optimization profile), as ec_bench does for random inputs.

Result keys (Session.extra): build_ms, engine_cached, engine {gpu, compute_capability,
tensorrt_version, jetpack, onnx_sha256, build_options, cache_key, build_ms, builder, flags,
cached_build_ms, sparse {dense_p50_ms, sparse_p50_ms, kept, method, min_gain} or null},
artifacts [file names in the job folder: <stem>.engine, <stem>.engine.json, <stem>.calib],
execute_ms (CUDA-event times of execute over every run: first, warm-up and timed), trtexec and
gpu_compute_ms (trtexec timing), warnings. The job folder is the model's folder (both runners put
the model there).
"""
import json
import os
import shutil
import sys
import time

import ec_trtexec
from ec_runtimes import Session, check_options
from ec_trt_cache import EngineCache, cache_key, gpu_identity, jetpack, sha256_file  # noqa: F401 (re-exported)
from ec_trt_cuda import (COMPARE_RUNS, COMPARE_WARMUP_RUNS, CalibrationFeeder, Cuda, EngineRunner,  # noqa: F401
                         TrtError, fixed_shape, import_cudart, make_calibrator, make_logger, pack_batches)

OPTIONS = ("precision", "qdq", "calibration", "float_layers", "sparsity", "compare_sparse", "workspace_mb", "cache_dir",
           "timing", "trtexec")
PRECISIONS = ("fp32", "fp16", "int8")
TIMINGS = ("api", "trtexec")
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "edgecompress", "engines")
SPARSE_MIN_GAIN = 0.02  # keep sparse only when its median is >= 2 % faster: noise must not pick it


def progress(message):
    """A progress line on stderr, best effort: a dropped link (BrokenPipeError) must not end the job
    before it restores what it changed (ec_clocks) and writes its result. ec_clocks.progress's twin:
    ec_trt also ships alone in Jetson bundles (trt_example.py), without ec_clocks."""
    try:
        sys.stderr.write("progress: " + message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# ---- options and version branching (pure) --------------------------------------------------------

def _flag(options, key):
    value = options.get(key, False)
    if not isinstance(value, bool):
        raise ValueError("runtime_options.%s must be true or false, got %r" % (key, value))
    return value


def _choice(options, key, choices, default):
    value = options.get(key, default)
    if value is not None and value not in choices:
        raise ValueError("runtime_options.%s must be one of %s, got %r" % (key, ", ".join(choices), value))
    return value


def _calibration_path(value, folder):
    if value is None:
        return None
    if not isinstance(value, str) or not value.endswith(".npy") or os.path.isabs(value):
        raise ValueError("runtime_options.calibration must be a .npy file name in the job folder, got %r" % (value,))
    path = os.path.realpath(os.path.join(folder, value))
    if os.path.dirname(path) != os.path.realpath(folder) or not os.path.isfile(path):
        raise ValueError("runtime_options.calibration %s is not a file in the job folder %s" % (value, folder))
    return path


def read_options(options, folder):
    """The checked options with defaults; paths made absolute."""
    check_options("tensorrt", options, OPTIONS)
    workspace = options.get("workspace_mb")
    if workspace is not None and (isinstance(workspace, bool) or not isinstance(workspace, int) or workspace < 1):
        raise ValueError("runtime_options.workspace_mb must be an integer >= 1, got %r" % (workspace,))
    for key in ("cache_dir", "trtexec"):
        if options.get(key) is not None and not (isinstance(options[key], str) and options[key]):
            raise ValueError("runtime_options.%s must be a path, got %r" % (key, options[key]))
    return {
        "precision": _choice(options, "precision", PRECISIONS, "fp32"), "qdq": _flag(options, "qdq"),
        "calibration": _calibration_path(options.get("calibration"), folder),
        "sparsity": _flag(options, "sparsity"), "compare_sparse": _flag(options, "compare_sparse"),
        "workspace_mb": workspace, "timing": _choice(options, "timing", TIMINGS, None),
        "cache_dir": os.path.expanduser(options.get("cache_dir") or DEFAULT_CACHE_DIR),
        "trtexec": options.get("trtexec"), "float_layers": _names(options, "float_layers"),
    }


def _names(options, key):
    value = options.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("runtime_options.%s must be a list of layer names, got %r" % (key, value))
    return value


def major_of(version):
    return int(str(version).split(".")[0])


def network_flags(major, explicit_batch_bit=None, strongly_typed_bit=None):
    """create_network's flags: EXPLICIT_BATCH on TensorRT 8 (implicit batch is its default), 0 from
    10 on (explicit batch is the only mode); STRONGLY_TYPED from 11 on where the enum still has it."""
    if major < 10:
        return 1 << explicit_batch_bit
    if major >= 11 and strongly_typed_bit is not None:
        return 1 << strongly_typed_bit
    return 0


def plan_build(major, precision, sparsity=False, qdq=False, calibration=False, float_layers=()):
    """{"flags": [trt.BuilderFlag names], "calibrate": bool, "notes": [...]} for this TensorRT major
    version; ValueError for a combination the version cannot build."""
    if calibration and precision != "int8":
        raise ValueError("runtime_options.calibration is for precision int8, not %s" % precision)
    if qdq and precision != "int8":
        raise ValueError("runtime_options.qdq (a Q/DQ ONNX) goes with precision int8, not %s" % precision)
    if qdq and calibration:
        raise ValueError("give runtime_options.calibration or qdq, not both: a Q/DQ ONNX carries its own scales")
    flags, notes, calibrate = [], [], False
    if float_layers and not (precision == "int8" and calibration):
        raise ValueError("runtime_options.float_layers goes with precision int8 and calibration (a Q/DQ ONNX "
                         "leaves its float layers without Q/DQ instead)")
    if float_layers:
        flags.append("OBEY_PRECISION_CONSTRAINTS")
    if major >= 11:
        if calibration:
            raise ValueError("TensorRT %d has no INT8 calibrator: quantize on the host to a Q/DQ ONNX and send "
                             "qdq: true instead of calibration" % major)
        if precision == "int8" and not qdq:
            raise ValueError("TensorRT %d takes INT8 only from Q/DQ nodes in the ONNX (it has no INT8 flag): "
                             "export a Q/DQ ONNX and send qdq: true" % major)
        if precision == "fp16":
            notes.append("TensorRT %d has no FP16 builder flag (networks are strongly typed): the engine computes "
                         "in the types the ONNX declares; export it in float16 for an fp16 engine" % major)
        elif precision == "int8":
            notes.append("TensorRT %d is strongly typed: INT8 comes from the ONNX's Q/DQ nodes" % major)
    elif precision == "fp16":
        flags.append("FP16")
    elif precision == "int8":
        if not (qdq or calibration):
            raise ValueError("precision int8 on TensorRT %d needs runtime_options.calibration (a .npy of samples) "
                             "or a Q/DQ ONNX (qdq: true)" % major)
        flags.append("INT8")
        calibrate = calibration
    if sparsity:
        flags.append("SPARSE_WEIGHTS")
    return {"flags": flags, "calibrate": calibrate, "notes": notes}


def choose_timing(asked, have_trt, have_cuda):
    """(timing, why) with `why` None when the job chose it."""
    missing = [m for m, ok in (("tensorrt", have_trt), ("cuda-python", have_cuda)) if not ok]
    if asked == "api" and missing:
        raise ValueError("timing 'api' needs %s, which %s not import here; use timing 'trtexec' or install "
                         "%s (on a Jetson, JetPack's tensorrt with a venv made --system-site-packages)"
                         % (" and ".join(missing), "does" if len(missing) == 1 else "do",
                            "it" if len(missing) == 1 else "them"))
    if asked:
        return asked, None
    if missing:
        return "trtexec", "default: %s does not import, so trtexec times the engine" % " and ".join(missing)
    return "api", "default: tensorrt and cuda-python import"


# ---- building with the Python API ----------------------------------------------------------------

def _network_inputs(network):
    return [network.get_input(i) for i in range(network.num_inputs)]


def _profile(builder, inputs):
    """One optimization profile fixing every dynamic dimension to 1, or None when all are static."""
    dynamic = [i for i in inputs if any(d < 0 for d in i.shape)]
    if not dynamic:
        return None
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        shape = fixed_shape(tensor.shape)
        profile.set_shape(tensor.name, shape, shape, shape)
    return profile


def _parse_onnx(trt, network, logger, onnx_path):
    parser = trt.OnnxParser(network, logger)
    if hasattr(parser, "parse_from_file"):  # reads external-data weights next to the model too
        ok = parser.parse_from_file(onnx_path)
    else:
        with open(onnx_path, "rb") as f:
            ok = parser.parse(f.read())
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TrtError("TensorRT's ONNX parser rejected %s:\n%s\n--- builder log ---\n%s"
                       % (os.path.basename(onnx_path), "\n".join(errors), logger.tail()))
    return parser


def _calibration_feeder(ctx, inputs, cache_path):
    import numpy as np

    trt, cuda = ctx["trt"], ctx["cuda"]
    if cuda is None:
        raise TrtError("INT8 calibration copies its samples to the GPU with cuda-python, which does not import "
                       "here: install cuda-python, or quantize to a Q/DQ ONNX on the host (qdq: true)")
    if len(inputs) != 1 or inputs[0].dtype != trt.float32:
        raise TrtError("calibration feeds one float32 input; this network has %s"
                       % ", ".join("%s (%s)" % (i.name, i.dtype) for i in inputs))
    shape = fixed_shape(inputs[0].shape)
    samples = np.load(ctx["opts"]["calibration"], allow_pickle=False)
    if list(samples.shape[1:]) != shape[1:]:
        raise ValueError("calibration samples have shape %s; input '%s' needs N x %s"
                         % (list(samples.shape), inputs[0].name, " x ".join(map(str, shape[1:]))))
    batches, left = pack_batches(samples, shape[0])
    if left:
        ctx["notes"].append("calibration used %d of %d samples (batches of %d)"
                            % (len(samples) - left, len(samples), shape[0]))
    pointer = cuda.malloc(batches[0].nbytes)
    return CalibrationFeeder(batches, lambda array: cuda.copy_in(pointer, array), cache_path)


def api_build(ctx, engine_path, plan, calib_cache):
    """Build with trt.Builder into `engine_path`; TrtError with the builder log when it fails."""
    trt, major, opts = ctx["trt"], ctx["major"], ctx["opts"]
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    creation = trt.NetworkDefinitionCreationFlag
    network = builder.create_network(network_flags(
        major, int(creation.EXPLICIT_BATCH) if major < 10 else None,
        int(creation.STRONGLY_TYPED) if major >= 11 and hasattr(creation, "STRONGLY_TYPED") else None))
    _parse_onnx(trt, network, logger, ctx["onnx"])
    _float_layers(ctx, trt, network)
    config = builder.create_builder_config()
    if opts["workspace_mb"]:
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts["workspace_mb"] << 20)
        else:  # TensorRT < 8.4
            config.max_workspace_size = opts["workspace_mb"] << 20
    for flag in plan["flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    inputs = _network_inputs(network)
    profile = _profile(builder, inputs)
    if profile is not None:
        config.add_optimization_profile(profile)
    feeder = None
    if plan["calibrate"]:
        feeder = _calibration_feeder(ctx, inputs, calib_cache)
        config.int8_calibrator = make_calibrator(trt, feeder)
        if profile is not None:
            config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if feeder is not None and feeder.error is not None:
        raise TrtError("INT8 calibration failed: %s: %s" % (type(feeder.error).__name__, feeder.error))
    if serialized is None:
        raise TrtError("TensorRT could not build the engine (flags %s):\n%s"
                       % (", ".join(plan["flags"]) or "none", logger.tail()))
    with open(engine_path, "wb") as f:
        f.write(serialized)
    return {}


def _float_layers(ctx, trt, network):
    """FP32 precision and output types for the layers runtime_options.float_layers names."""
    wanted = set(ctx["opts"]["float_layers"])
    if not wanted:
        return
    found = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in wanted:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            found.add(layer.name)
    missing = sorted(wanted - found)
    if missing:
        ctx["notes"].append("float_layers: the network has no layer named %s (the ONNX parser may have merged "
                            "them); those run at the engine's precision" % ", ".join(missing))


# ---- building and timing with trtexec ------------------------------------------------------------

def trtexec_build(ctx, engine_path, plan, calib_cache):
    if plan["calibrate"] and not os.path.isfile(calib_cache):
        raise TrtError("INT8 calibration from samples needs TensorRT's Python bindings, which do not import here: "
                       "trtexec reads only a calibration cache, and there is none yet for this model and data (%s)"
                       % calib_cache)
    parsed = ec_trtexec.build(ctx["trtexec"], ctx["onnx"], engine_path, plan["flags"], ctx["opts"]["workspace_mb"],
                              ctx["major"], calib_cache if plan["calibrate"] else None, ctx["opts"]["float_layers"])
    return {"trtexec_device": {"gpu": parsed["device"], "compute_capability": parsed["compute_capability"]}}


def trtexec_timing(ctx, engine_path):
    progress("timing %s with trtexec (%s)" % (os.path.basename(engine_path), " ".join(ec_trtexec.TIMING_ARGS)))
    return ec_trtexec.time_engine(ctx["trtexec"], engine_path)


# ---- engines: cache, build, compare --------------------------------------------------------------

def _utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def get_engine(ctx, sparse):
    """The engine for these options, from the cache or built now: {key, path, meta, cached, build_ms}."""
    opts, identity = ctx["opts"], ctx["identity"]
    build_options = {"precision": opts["precision"], "qdq": opts["qdq"], "sparsity": sparse,
                     "workspace_mb": opts["workspace_mb"], "calibration_sha256": ctx["calibration_sha256"]}
    if opts["float_layers"]:  # only then: engines cached before the option keep their keys
        build_options["float_layers"] = sorted(opts["float_layers"])
    key = cache_key(identity["gpu"], identity["compute_capability"], ctx["version"], ctx["onnx_sha256"], build_options)
    plan = plan_build(ctx["major"], opts["precision"], sparse, opts["qdq"], opts["calibration"] is not None,
                      opts["float_layers"])
    cache = ctx["cache"]
    meta = cache.lookup(key)
    if meta is not None:
        progress("engine %s... found in the cache (built in %.0f ms)" % (key[:12], meta.get("build_ms") or 0))
        return {"key": key, "path": cache.path(key), "meta": meta, "cached": True, "build_ms": 0.0, "plan": plan}
    progress("building the TensorRT %s engine (%s%s) with %s" % (
        ctx["version"], opts["precision"], ", sparse" if sparse else "", "the Python API" if ctx["trt"] else "trtexec"))
    partial = cache.partial(key)
    start = time.perf_counter()
    try:
        build = api_build if ctx["trt"] is not None else trtexec_build
        found = build(ctx, partial, plan, ctx["calib_cache"])
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    build_ms = (time.perf_counter() - start) * 1000.0
    progress("engine built in %.1f s" % (build_ms / 1000.0))
    meta = dict(found, cache_key=key, gpu=identity["gpu"], compute_capability=identity["compute_capability"],
                identity_source=identity["source"], tensorrt_version=ctx["version"], jetpack=ctx["jetpack"],
                onnx_sha256=ctx["onnx_sha256"], build_options=build_options, build_ms=build_ms,
                builder="api" if ctx["trt"] is not None else "trtexec", flags=plan["flags"], built_at=_utc_now(),
                engine_bytes=os.path.getsize(partial))
    cache.store(key, partial, meta)
    return {"key": key, "path": cache.path(key), "meta": meta, "cached": False, "build_ms": build_ms, "plan": plan}


def compare_sparse(ctx, dense, sparse):
    """(kept engine, the `sparse` report): each engine timed on this device; sparse kept only when it
    is at least SPARSE_MIN_GAIN faster."""
    medians = []
    if ctx["cuda"] is not None and ctx["trt"] is not None:
        method = "median CUDA-event time of %d executes after %d warm-up" % (COMPARE_RUNS, COMPARE_WARMUP_RUNS)
        for engine in (dense, sparse):
            runner = EngineRunner(ctx["trt"], ctx["cuda"], engine["path"])
            medians.append(runner.median_execute_ms())
            runner.close()
    else:
        method = "median GPU Compute Time of trtexec --loadEngine %s" % " ".join(ec_trtexec.TIMING_ARGS)
        for engine in (dense, sparse):
            stats = trtexec_timing(ctx, engine["path"])["stats"]
            medians.append(stats.get("gpu_compute_ms", stats["latency_ms"])["median"])
    keep_sparse = medians[1] <= medians[0] * (1.0 - SPARSE_MIN_GAIN)
    progress("dense %.3f ms, sparse %.3f ms: keeping %s" % (medians[0], medians[1],
                                                           "sparse" if keep_sparse else "dense"))
    report = {"dense_p50_ms": medians[0], "sparse_p50_ms": medians[1], "kept": "sparse" if keep_sparse else "dense",
              "method": method, "min_gain": SPARSE_MIN_GAIN}
    return (sparse if keep_sparse else dense), report


def engine_report(ctx, engine, sparse_report):
    meta = engine["meta"]
    return {"gpu": meta.get("gpu"), "compute_capability": meta.get("compute_capability"),
            "identity_source": meta.get("identity_source"), "trtexec_device": meta.get("trtexec_device"),
            "tensorrt_version": ctx["version"], "jetpack": ctx["jetpack"], "onnx_sha256": ctx["onnx_sha256"],
            "build_options": meta.get("build_options"), "cache_key": engine["key"], "build_ms": engine["build_ms"],
            "cached": engine["cached"], "cached_build_ms": meta.get("build_ms") if engine["cached"] else None,
            "builder": meta.get("builder"), "flags": engine["plan"]["flags"], "sparse": sparse_report}


def _place(source, target):
    """Hard-link (engines can be large) or copy `source` to `target`."""
    if os.path.lexists(target):
        os.remove(target)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def export_artifacts(ctx, engine, report):
    """Engine, its metadata and the calibration cache into the job folder; their file names."""
    folder, stem = ctx["folder"], os.path.splitext(os.path.basename(ctx["onnx"]))[0]
    _place(engine["path"], os.path.join(folder, stem + ".engine"))
    with open(os.path.join(folder, stem + ".engine.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    names = [stem + ".engine", stem + ".engine.json"]
    if ctx["calib_cache"] and os.path.isfile(ctx["calib_cache"]):
        _place(ctx["calib_cache"], os.path.join(folder, stem + ".calib"))
        names.append(stem + ".calib")
    return names


# ---- the loader ----------------------------------------------------------------------------------

def _import_tensorrt():
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # a wheel without its libraries raises OSError
        return None, "%s: %s" % (type(e).__name__, e)
    return trt, None


def _import_cuda():
    try:
        return Cuda(import_cudart()), None
    except (ImportError, OSError, AttributeError) as e:
        return None, "%s: %s" % (type(e).__name__, e)


def _find_trtexec(opts, trt_error):
    try:
        return ec_trtexec.find(opts["trtexec"])
    except ec_trtexec.TrtexecError as e:
        if trt_error:
            raise TrtError("TensorRT's Python bindings do not import here (%s), and %s" % (trt_error, e))
        raise TrtError("timing 'trtexec' asked, but %s" % e)


def context(model_path, opts):
    """Everything the build and run steps share."""
    trt, trt_error = _import_tensorrt()
    cuda, cuda_error = _import_cuda()
    timing, timing_why = choose_timing(opts["timing"], trt is not None, cuda is not None)
    if timing_why and (trt_error or cuda_error):
        timing_why += " (%s)" % "; ".join(e for e in (trt_error, cuda_error) if e)
    trtexec = _find_trtexec(opts, trt_error) if trt is None or timing == "trtexec" else None
    version = trt.__version__ if trt is not None else ec_trtexec.version(trtexec)
    identity = gpu_identity(cuda)
    onnx_sha256 = sha256_file(model_path)
    calibration_sha256 = sha256_file(opts["calibration"]) if opts["calibration"] else None
    cache = EngineCache(opts["cache_dir"])
    calib_cache = None
    if calibration_sha256:
        calib_key = cache_key(identity["gpu"], identity["compute_capability"], version, onnx_sha256,
                              {"calibration_sha256": calibration_sha256})
        calib_cache = cache.path(calib_key, ".calib")
    return {"trt": trt, "cuda": cuda, "trtexec": trtexec, "version": version, "major": major_of(version),
            "timing": timing, "timing_why": timing_why, "identity": identity,
            "jetpack": jetpack(), "onnx": os.path.abspath(model_path), "folder": os.path.dirname(os.path.abspath(
                model_path)), "onnx_sha256": onnx_sha256, "calibration_sha256": calibration_sha256,
            "calib_cache": calib_cache, "cache": cache, "opts": opts, "notes": []}


def applied_options(ctx, engine):
    opts = ctx["opts"]
    return {"precision": opts["precision"], "qdq": opts["qdq"],
            "calibration": os.path.basename(opts["calibration"]) if opts["calibration"] else None,
            "sparsity": engine["meta"]["build_options"]["sparsity"], "compare_sparse": opts["compare_sparse"],
            "workspace_mb": opts["workspace_mb"], "cache_dir": opts["cache_dir"], "timing": ctx["timing"],
            "timing_reason": ctx["timing_why"], "trtexec": ctx["trtexec"],
            "builder": "api" if ctx["trt"] is not None else "trtexec", "flags": engine["plan"]["flags"],
            "float_layers": opts["float_layers"]}


def load(model_path, options):
    """ec_runtimes loader: build (or reuse) the engine for `model_path` (an ONNX file) and return a Session."""
    started = time.perf_counter()
    opts = read_options(options, os.path.dirname(os.path.abspath(model_path)))
    ctx = context(model_path, opts)
    spent_ms = 0.0  # building and timing, left out of load_ms
    mark = time.perf_counter()
    if opts["compare_sparse"]:
        engines = [get_engine(ctx, False), get_engine(ctx, True)]
        engine, sparse_report = compare_sparse(ctx, engines[0], engines[1])
    else:
        engines = [get_engine(ctx, opts["sparsity"])]
        engine, sparse_report = engines[0], None
    report = engine_report(ctx, engine, sparse_report)
    extra = {"build_ms": sum(e["build_ms"] for e in engines), "engine_cached": all(e["cached"] for e in engines),
             "engine": report, "warnings": list(engine["plan"]["notes"]) + ctx["notes"]}
    if ctx["timing"] == "trtexec" and ctx["cuda"] is not None and ctx["trt"] is not None:
        timed = trtexec_timing(ctx, engine["path"])  # before this process holds the GPU's memory
        extra.update(trtexec=timed, gpu_compute_ms=timed["stats"].get("gpu_compute_ms"))
    spent_ms += (time.perf_counter() - mark) * 1000.0
    extra["artifacts"] = export_artifacts(ctx, engine, report)
    applied = applied_options(ctx, engine)
    if ctx["trt"] is not None and ctx["cuda"] is not None:
        runner = EngineRunner(ctx["trt"], ctx["cuda"], engine["path"])
        extra["execute_ms"] = runner.execute_ms
        load_ms = (time.perf_counter() - started) * 1000.0 - spent_ms
        return Session(runner.run, runner.describe_inputs(), [t["name"] for t in runner.outputs], ctx["version"],
                       applied, load_ms, extra)
    load_ms = (time.perf_counter() - started) * 1000.0 - spent_ms
    session = Session(None, [], [], ctx["version"], applied, load_ms, extra)

    def measure():
        """trtexec times the engine (ec_bench calls this instead of its loop); the latency block."""
        timed = trtexec_timing(ctx, engine["path"])
        extra.update(trtexec=timed, gpu_compute_ms=timed["stats"].get("gpu_compute_ms"))
        return ec_trtexec.latency(timed)

    session.measure = measure
    session.measured_by = "trtexec"
    return session
