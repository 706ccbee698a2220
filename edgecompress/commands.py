"""`edgecompress verify` and `edgecompress bench` on what deploy wrote (a bundle folder or zip) or on
a bare model file (.onnx, .tflite): they read a bundle's manifest and its resolved profile, and run
the same checks and benchmark code deploy runs."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

from . import bench, bundle, data as data_mod, inventory, manifest_read, profile as profile_mod, verify
from .console import log
from .errors import EdgeCompressError, InputError, StageError
from .registry import closest


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
    n = _stored_outputs(stored, len(out))
    # the model's own output names (a .tflite file calls its tensors StatefulPartitionedCall:0, ...)
    names = [o.get("model_name") or o["name"] for o in manifest["outputs"]][:n]
    task = manifest.get("task") or "classification"
    each = lambda key: [stored[key + ("" if i == 0 else f"_{i}")] for i in range(n)]  # noqa: E731
    rerun = verify.check(verify.compare("model re-run vs its outputs stored at build time", out[:n],
                                        each("expected"), names, None, task=task,
                                        score_threshold=tol.score_threshold), quantized, tol)
    reference = "the original ONNX model" if manifest["provenance"].get("source_format") == "onnx" else "PyTorch"
    vs_ref = verify.compare(f"model vs {reference} (information)", out[:n], each("reference"), names, None, task=task,
                            score_threshold=tol.score_threshold)
    vs_original = None
    if "original" in stored and manifest["provenance"].get("source_format") != "onnx":  # bundles since 11
        vs_original = verify.compare("model vs the original model (information)", out[:n], each("original"),
                                     names, None, task=task, score_threshold=tol.score_threshold).to_dict()
    return {"bundle": path, "files_checked": len(manifest["files"]), "rerun": rerun.to_dict(),
            "reference": vs_ref.to_dict(), "reference_is": reference, "original": vs_original,
            "build_check": _build_check(manifest), "ok": True}


def _stored_outputs(stored: dict, produced: int) -> int:
    """How many outputs the bundle stored (every one since multi-output bundles; output 0 before)."""
    n = 1
    while n < produced and all(f"{k}_{n}" in stored for k in ("expected", "reference")):
        n += 1
    return n


def _build_check(manifest: dict) -> Optional[dict]:
    """The deployed model's own check at build time (over every held-out sample, with its tolerance),
    so a figure over the few stored samples is read beside the one that decided the build."""
    checks = (manifest.get("metrics") or {}).get("parity") or []
    last = checks[-1] if checks and isinstance(checks[-1], dict) else None
    if not last:
        return None
    if last.get("top1_agreement") is None:
        details, tolerance = last.get("task_details") or {}, last.get("tolerance") or {}
        if last.get("task_agreement") is None and details.get("confident_anchors") is None:
            return None  # a detector with no confident anchor is said; another figure-less check has nothing to say
        return {"samples": last.get("samples"), "task_metric": last.get("task_metric"),
                "task_agreement": last["task_agreement"], "original_task_agreement": last.get("original_task_agreement"),
                # the figure's own tolerance; an FP32 file (a Jetson bundle's model.onnx) was held to max |diff|
                "tolerance": tolerance.get("min_" + str(last.get("task_metric"))),
                "max_abs_diff": tolerance.get("max_abs_diff"),
                "confident_anchors": details.get("confident_anchors"), "threshold": details.get("threshold"),
                # what a mean figure can hide: an embedding's neighbours, against the original
                "original_nn_agreement": details.get("original_nn_agreement")}
    return {"samples": last.get("samples"), "top1_agreement": last["top1_agreement"],
            "min_top1_agreement": (last.get("tolerance") or {}).get("min_top1_agreement")}


def _rerun(model_file: Path, x, manifest: dict) -> list:
    """The model's outputs on the stored samples; a runtime that cannot run them names the file."""
    from .backends import BACKENDS

    try:
        return BACKENDS.get(manifest["runtime"]["name"]).outputs(model_file, x, manifest)
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


def bench_artifact(artifact: Path, devices: List[str], bench: Optional[profile_mod.Bench] = None, *,
                   input_shape: Optional[str] = None, quiet: bool = False) -> dict:
    """`edgecompress bench`: a bundle (its profile's bench settings, and the shape of its stored
    samples) or a bare .onnx / .tflite (see _profile_for_file; --input-shape where an .onnx's size
    is dynamic), on this host or on each named device at once. `bench`: the command line's settings
    (bench_settings); only the keys it names (its model_fields_set) replace the profile's."""
    from .backends import bare_file_backends

    request = _Request(Path(artifact), [inventory.get(name) for name in devices] or [None],
                       bench if bench is not None else profile_mod.Bench(),
                       data_mod.parse_shape(input_shape) if input_shape else None, quiet)
    if request.artifact.suffix in bare_file_backends():
        return _bench_file(request)
    return _bench_bundle(request)


@dataclass(frozen=True)
class _Request:
    """What the command line asked bench for, as one record through its helpers."""

    artifact: Path
    targets: list  # inventory.Device each, or [None]: this host
    asked: profile_mod.Bench  # only its model_fields_set replace the profile's values
    shape: Optional[tuple]  # --input-shape
    quiet: bool


def _bench_file(request: _Request) -> dict:
    from . import backends

    backend = backends.for_file(request.artifact)
    prof = _profile_for_file(request.artifact, request.targets)
    with tempfile.TemporaryDirectory(prefix="ec-bench-") as tmp:
        return _bench_model(request, backend.bare_file(request.artifact, Path(tmp)), prof, request.shape)


def _bench_bundle(request: _Request) -> dict:
    artifact, shape = request.artifact, request.shape
    with bundle.opened(artifact) as folder:
        manifest = bundle.read_manifest(folder)
        manifest_read.check_named_files(manifest, f"{artifact}/{bundle.MANIFEST}")
        bundle.check_checksums(folder, manifest, set(manifest_read.named_files(manifest).values()), str(artifact))
        prof = profile_mod.validate(manifest["provenance"]["profile"], f"{artifact}/manifest.json")
        model = _bundle_model(folder, manifest, prof, request)
        if shape is None and bundle.PARITY in manifest["files"]:
            bundle.check_checksums(folder, manifest, [bundle.PARITY], str(artifact))
            stored = manifest_read.load_parity(folder / bundle.PARITY, keys=("x",))
            shape = (1, *stored["x"].shape[1:])  # the data the bundle was built on
        return _bench_model(request, model, prof, shape)


def _bundle_model(folder: Path, manifest: dict, prof, request: _Request):
    """What bench runs from a bundle, as its runtime's back end says: its model file (a plain name the
    files list: manifest_read.check_named_files), or for TensorRT the ONNX the engine is built from,
    with the build settings deploy chose; a runtime that runs only on the device refuses this host."""
    from .backends import BACKENDS

    here = all(t is None for t in request.targets)
    return BACKENDS.get(prof.runtime).bench_model(folder, manifest, here, request.artifact)


def _profile_for_file(model: Path, targets: list):
    """The bench settings for a bare model file: the first named device's target profile where its
    runtime loads this kind of file (ONNX Runtime for .onnx, LiteRT for .tflite), else the back end's
    own default profile (host-cpu, android-arm64). TensorRT targets build engines from a bundle's
    ONNX: bench the bundle for those."""
    from . import backends

    backend = backends.for_file(model)
    for device in targets:
        if device is not None:
            prof, _ = profile_mod.load(device.target)
            if prof.runtime == backend.runtime:
                return prof
    prof, _ = profile_mod.load(backend.bare_file_profile)
    return prof


class _Given(NamedTuple):
    """One bench key as the command line gave it."""

    where: str  # "--runs" or "--set bench.runs": named in every message about it
    value: Any
    text: str  # as typed


# Each bench flag is a shorthand for one key of the profile's bench section.
BENCH_FLAGS = {"--runs": "runs", "--warmup": "warmup_runs", "--seconds": "seconds", "--threads": "threads",
               "--rounds": "rounds", "--lock-clocks": "lock_clocks"}


def bench_settings(sets: List[str], flags: Optional[Dict[str, Any]] = None) -> profile_mod.Bench:
    """The command line's bench settings: `--set bench.KEY=VALUE` pairs and the flags' values
    ({flag: value, or None where not given}), checked by the profile's Bench schema. The returned
    Bench's model_fields_set are the keys the command line named: bench_artifact lays only those
    over the profile's own bench section."""
    given = _set_values(profile_mod.parse_overrides(sets))
    for flag, value in (flags or {}).items():
        key = BENCH_FLAGS[flag]
        if value is None:
            continue
        if key in given and given[key].value != value:
            raise InputError(f"edgecompress bench: {flag} {_shown(value)} and {given[key].where}={given[key].text} "
                             "disagree", hint=f"give bench.{key} once: {flag} or --set bench.{key}")
        given[key] = _Given(flag, value, _shown(value))
    from pydantic import ValidationError

    try:
        return profile_mod.Bench.model_validate({key: g.value for key, g in given.items()})
    except ValidationError as exc:
        problems = [_bench_problem(e, given) for e in exc.errors()]
        raise InputError(f"edgecompress bench: {len(problems)} problem(s) in the bench settings:\n  "
                         + "\n  ".join(problems), hint="see edgecompress bench --help; "
                                                       "edgecompress targets show NAME prints a profile's bench section"
                         ) from None


def _set_values(pairs: Dict[str, str]) -> Dict[str, _Given]:
    """{bench key: how it was given} for the --set pairs; a key outside
    bench.*, or one the Bench section does not have, is refused here by name."""
    import yaml

    fields = list(profile_mod.Bench.model_fields)
    given = {}
    for dotted, raw in pairs.items():
        section, _, key = dotted.partition(".")
        if section != "bench" or not key:
            raise InputError(f"edgecompress bench: --set {dotted}: bench takes only bench.* keys (a bundle's other "
                             "settings were fixed when it was built)",
                             hint=f"--set bench.KEY=VALUE with KEY one of {', '.join(fields)}; to change "
                                  f"{dotted}, deploy again with --set {dotted}=...")
        if key not in fields:
            raise InputError(f"edgecompress bench: --set {dotted}: unknown key.{closest(key, fields)} "
                             f"Valid keys here: {', '.join(fields)}", hint="see edgecompress bench --help")
        given[key] = _Given(f"--set {dotted}", yaml.safe_load(raw) if raw.strip() else None, raw)
    return given


def _shown(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _bench_problem(err: dict, given: Dict[str, _Given]) -> str:
    key = str(err["loc"][0]) if err["loc"] else ""
    where = given[key].where if key in given else f"bench.{key}"
    if where in BENCH_FLAGS:  # a flag: name the key it stands for too
        where = f"{where} (bench.{key})"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"


def _settings_for(request: _Request, prof) -> profile_mod.Bench:
    """The profile's bench section with the keys the command line named laid over it."""
    return prof.bench.model_copy(update=request.asked.model_dump(exclude_unset=True))


def _bench_model(request: _Request, model, prof, shape) -> dict:
    cfg = _settings_for(request, prof)
    path = model.path if isinstance(model, bench.Model) else model
    # a size it cannot tell is refused once, here, not once per device
    if bench.random_inputs(path, prof.runtime, shape) is None and request.shape is not None:
        log(f"note: --input-shape is not used: {path.name} has a fixed size (or its runtime times it as built)")
    # the profile's threads are capped at this host's CPUs on each device that is this host (not where
    # --set bench.threads named them), also beside a remote device in the same command
    results = bench.measure_on_devices(model, cfg, prof.runtime, request.targets, quiet=request.quiet,
                                       input_shape=shape,
                                       cap_local_threads="threads" not in request.asked.model_fields_set)
    return {"results": [dict(r, artifact=str(request.artifact)) for r in results]}
