"""`edgecompress verify` and `edgecompress bench` on what deploy wrote (a bundle folder or zip) or on
a bare model file (.onnx, .tflite): they read a bundle's manifest and its resolved profile, and run
the same checks and benchmark code deploy runs."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional

from . import bench, bundle, data as data_mod, inventory, manifest_read, models, profile as profile_mod, verify
from .console import log
from .errors import EdgeCompressError, InputError, StageError


def verify_bundle(path: Path) -> dict:
    """Re-check a bundle: every file's checksum, then the model's outputs on the stored samples."""
    with bundle.opened(Path(path)) as folder:
        return _verify_folder(folder, str(path))


def _verify_folder(folder: Path, path: str) -> dict:
    manifest = bundle.read_manifest(folder)
    manifest_read.check_named_files(manifest, f"{path}/{bundle.MANIFEST}")
    problems = bundle.check_files(folder, manifest)
    if problems:
        added = all(p.endswith(": not in the manifest") for p in problems)
        raise StageError("verify", f"bundle {path} does not match its manifest:\n  " + "\n  ".join(problems),
                         hint="move the files you added out of the bundle folder (keep your own files beside it)"
                         if added else "rebuild the bundle with edgecompress deploy; do not edit files inside it")
    model_file = folder / bundle.model_file(manifest)
    mismatches = manifest_read.model_mismatches(manifest, manifest_read.model_facts(model_file))
    if mismatches:
        raise StageError("verify", f"bundle {path}: {model_file.name} is not the model its manifest describes:\n  "
                         + "\n  ".join(mismatches), hint=manifest_read.REBUILD)
    stored = manifest_read.load_parity(folder / bundle.PARITY)
    manifest_read.check_samples_fit(manifest, stored["x"].shape, f"bundle {path}")
    out = _rerun(model_file, stored["x"], manifest)
    tol = _tolerance(manifest, path)
    quantized = manifest["compression"]["quantization"]["precision"] != "fp32"
    # Against the outputs stored at build time: FP32 must match closely; INT8 kernels may round
    # differently on another CPU, so there the decisions must agree.
    rerun = verify.check(verify.compare("model re-run vs its outputs stored at build time", [out[0]],
                                        [stored["expected"]], ["output"], None), quantized, tol)
    reference = "the original ONNX model" if manifest["provenance"].get("source_format") == "onnx" else "PyTorch"
    vs_ref = verify.compare(f"model vs {reference} (information)", [out[0]], [stored["reference"]],
                            ["output"], None)
    vs_original = None
    if "original" in stored and manifest["provenance"].get("source_format") != "onnx":  # bundles since 11
        vs_original = verify.compare("model vs the original model (information)", [out[0]], [stored["original"]],
                                     ["output"], None).to_dict()
    return {"bundle": path, "files_checked": len(manifest["files"]), "rerun": rerun.to_dict(),
            "reference": vs_ref.to_dict(), "reference_is": reference, "original": vs_original,
            "build_check": _build_check(manifest), "ok": True}


def _build_check(manifest: dict) -> Optional[dict]:
    """The deployed model's own check at build time (over every held-out sample, with its tolerance),
    so a figure over the few stored samples is read beside the one that decided the build."""
    checks = (manifest.get("metrics") or {}).get("parity") or []
    last = checks[-1] if checks and isinstance(checks[-1], dict) else None
    if not last or last.get("top1_agreement") is None:
        return None
    return {"samples": last.get("samples"), "top1_agreement": last["top1_agreement"],
            "min_top1_agreement": (last.get("tolerance") or {}).get("min_top1_agreement")}


def _rerun(model_file: Path, x, manifest: dict) -> list:
    """The model's outputs on the stored samples; a runtime that cannot run them names the file."""
    try:
        if model_file.suffix == ".tflite":
            from . import litert

            return litert.tflite_outputs(model_file, x)
        # bundles from before exact checks stored the host kernel's outputs: re-run them the same way
        exact = manifest["metrics"].get("parity_exact_int8", False)
        return verify.onnx_outputs(model_file, x, exact_int8=exact)
    except EdgeCompressError:
        raise
    except Exception as exc:  # onnxruntime's and LiteRT's own errors: a damaged or mismatched bundle
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise StageError("verify", f"{model_file.name} could not be run on the stored samples of {bundle.PARITY}: "
                                   f"{type(exc).__name__}: {first}", hint=manifest_read.REBUILD) from None


def _tolerance(manifest: dict, path: str):
    from pydantic import ValidationError

    try:
        return profile_mod.Verify(**manifest["provenance"]["profile"]["verify"])
    except (ValidationError, TypeError) as exc:
        raise StageError("verify", f"bundle {path}: provenance.profile.verify in its manifest is not a verify "
                                   f"section: {str(exc).splitlines()[0]}", hint=manifest_read.REBUILD) from None


def bench_artifact(artifact: Path, devices: List[str], runs: Optional[int], warmup: Optional[int],
                   threads: Optional[int], seconds: Optional[float], quiet: bool = False,
                   lock_clocks: bool = False, rounds: Optional[int] = None,
                   input_shape: Optional[str] = None) -> dict:
    """`edgecompress bench`: a bundle (its profile's bench settings, and the shape of its stored
    samples) or a bare .onnx / .tflite (see _profile_for_file; --input-shape where an .onnx's size
    is dynamic), on this host or on each named device at once."""
    artifact = Path(artifact)
    targets = [inventory.get(name) for name in devices] or [None]
    shape = data_mod.parse_shape(input_shape) if input_shape else None
    if artifact.suffix in (".onnx", ".tflite"):
        model = models.load_onnx(str(artifact)).onnx_path if artifact.suffix == ".onnx" else _tflite_file(artifact)
        prof = _profile_for_file(model, targets)
        with tempfile.TemporaryDirectory(prefix="ec-bench-") as tmp:
            if model.suffix == ".onnx" and models.external_data_files(model):
                model = models.write_single_file(model, Path(tmp) / model.name)  # the device gets one file
            return _bench_model(artifact, model, prof, targets, runs, warmup, threads, seconds, quiet, lock_clocks,
                                rounds, shape, shape_asked=input_shape is not None)
    with bundle.opened(artifact) as folder:
        manifest = bundle.read_manifest(folder)
        manifest_read.check_named_files(manifest, f"{artifact}/{bundle.MANIFEST}")
        bundle.check_checksums(folder, manifest, set(manifest_read.named_files(manifest).values()), str(artifact))
        prof = profile_mod.validate(manifest["provenance"]["profile"], f"{artifact}/manifest.json")
        if prof.runtime == "tensorrt" and targets == [None]:
            onnx_file = artifact / "model.onnx" if artifact.is_dir() else "FOLDER/model.onnx (unzipped)"
            raise InputError(f"{artifact} is a TensorRT bundle, and TensorRT runs only on the Jetson: its engines "
                             "are built there", hint="bench it on a device (--device NAME from devices.yaml), or time "
                                                     f"its ONNX here with ONNX Runtime: edgecompress bench {onnx_file}")
        if shape is None and bundle.PARITY in manifest["files"]:
            bundle.check_checksums(folder, manifest, [bundle.PARITY], str(artifact))
            stored = manifest_read.load_parity(folder / bundle.PARITY, keys=("x",))
            shape = (1, *stored["x"].shape[1:])  # the data the bundle was built on
        return _bench_model(artifact, _bundle_model(folder, manifest, prof), prof, targets, runs, warmup, threads,
                            seconds, quiet, lock_clocks, rounds, shape, shape_asked=input_shape is not None)


def _bundle_model(folder: Path, manifest: dict, prof):
    """What bench runs from a bundle: its model file, or for TensorRT the ONNX the engine is built from,
    with the build settings deploy chose (and the calibration samples when they are needed)."""
    path = folder / bundle.model_file(manifest)  # a plain name the files list: manifest_read.check_named_files
    if prof.runtime != "tensorrt":
        return path
    settings = dict((manifest.get("engine") or {}).get("build_settings") or {})
    source = folder / settings.pop("onnx", path.name)
    extra = {settings["calibration"]: folder / settings["calibration"]} if settings.get("calibration") else {}
    return bench.Model(source, "tensorrt", settings, extra)


def _profile_for_file(model: Path, targets: list):
    """The bench settings for a bare model file: the first named device's target profile where its
    runtime loads this kind of file (ONNX Runtime for .onnx, LiteRT for .tflite), else host-cpu's or
    android-arm64's. TensorRT targets build engines from a bundle's ONNX: bench the bundle for those."""
    runtime = "onnxruntime" if model.suffix == ".onnx" else "litert"
    for device in targets:
        if device is not None:
            prof, _ = profile_mod.load(device.target)
            if prof.runtime == runtime:
                return prof
    prof, _ = profile_mod.load("host" if runtime == "onnxruntime" else "android-arm64")
    return prof


def _tflite_file(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"model file {path} does not exist", hint="check the path")
    with open(path, "rb") as f:
        if f.read(8)[4:8] != b"TFL3":  # the FlatBuffer file identifier of every .tflite model
            raise InputError(f"{path} is not a TFLite model (no TFL3 identifier)",
                             hint="pass a .tflite written by a TFLite converter, or a bundle folder")
    return path


BENCH_FLAGS = {"runs": "--runs", "warmup_runs": "--warmup", "threads": "--threads", "seconds": "--seconds",
               "rounds": "--rounds", "lock_clocks": "--lock-clocks"}


def _bench_settings(base, flags: dict):
    """The profile's bench settings with the command line's, checked by the same schema."""
    from pydantic import ValidationError

    try:
        return type(base).model_validate(dict(base.model_dump(), **flags))
    except ValidationError as exc:
        problems = "; ".join(f"{BENCH_FLAGS.get(e['loc'][0], e['loc'][0])}: {e['msg']}" for e in exc.errors())
        raise InputError(f"edgecompress bench: {problems}", hint="see edgecompress bench --help") from None


def _bench_model(artifact: Path, model: Path, prof, targets, runs, warmup, threads, seconds, quiet,
                 lock_clocks: bool = False, rounds: Optional[int] = None, shape=None, shape_asked: bool = False) -> dict:
    flags = {"runs": runs, "warmup_runs": warmup, "threads": threads, "seconds": seconds, "rounds": rounds,
             "lock_clocks": lock_clocks or None}
    cfg = _bench_settings(prof.bench, {k: v for k, v in flags.items() if v is not None})
    if threads is None and all(t is None or t.transport == "local" for t in targets):  # all on this host
        cfg = bench.settings_here(cfg, None)
    path = model.path if isinstance(model, bench.Model) else model
    # a size it cannot tell is refused once, here, not once per device
    if bench.random_inputs(path, prof.runtime, shape) is None and shape_asked:
        log(f"note: --input-shape is not used: {path.name} has a fixed size (or its runtime times it as built)")
    results = bench.measure_on_devices(model, cfg, prof.runtime, targets, quiet=quiet, input_shape=shape)
    return {"results": [dict(r, artifact=str(artifact)) for r in results]}
