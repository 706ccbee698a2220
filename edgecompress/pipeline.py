"""The deploy pipeline: the only module that calls every stage, one call per stage in the order they
run: inputs and their checks -> compress (prune, distill) -> the runtime's back end (export,
quantize, check) -> bench -> manifest -> bundle. Each stage returns a typed record (records.py)."""
from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from . import (backends, bench, budget, bundle, compress, console, distributed, inputs, manifest_build, outlock, report,
               summary, user_code, workdir)
from .console import log
from .records import Measurement, Summary


@dataclass
class DeployOptions:
    model: Optional[str] = None
    target: str = "host"
    data: Optional[str] = None
    weights: Optional[str] = None
    teacher: Optional[str] = None
    teacher_weights: Optional[str] = None
    input_shape: Optional[str] = None
    out: Path = Path("dist")
    overrides: List[str] = field(default_factory=list)
    device: Optional[str] = None
    resume: bool = False
    force: bool = False
    quiet: bool = False
    postprocess: Optional[str] = None  # --postprocess file.py:decode
    metric: Optional[str] = None  # --metric file.py:fn
    demo: Optional[str] = None  # --demo NAME (digits | animals); None: digits when no model is given


def deploy(opts: DeployOptions) -> Optional[Summary]:
    """The bundle's Summary; under torchrun, None on every rank but 0 (which alone writes the bundle)."""
    world = distributed.from_env()
    if not world.distributed:
        return _deploy(opts)
    console.mute(not world.main)
    if world.restart:  # torchrun restarted the ranks after a failure (--max-restarts): go on from the checkpoint
        log(f"torchrun restart {world.restart}: continuing from the checkpoint (as --resume)")
        opts = dataclasses.replace(opts, resume=True)
    try:
        return _deploy(opts, distributed.start())
    except RuntimeError as exc:
        raise distributed.lost_peer(exc, world, Path(opts.out)) from exc
    finally:
        distributed.stop()


def _deploy(opts: DeployOptions, world: Optional[distributed.World] = None) -> Optional[Summary]:
    t_start, out = time.perf_counter(), Path(opts.out)
    run = inputs.load_and_check(opts)
    if world is not None:
        world = _join(run, world)
        if not world.main:
            return _follow(run, opts)
    backend = backends.get(run.prof.runtime)
    # the run owns its work folder: a second run into OUT/<name> is refused before --force could delete it
    with outlock.held(out, run.name), bundle.disk_errors_named(out):
        # again under the lock: a run that held it may have published OUT/<name> since the check at load
        # (CI caught the second of two deploys distilling in full, then refused at publishing)
        bundle.check_destination(out, run.name, opts.force)
        workdir.keep_interrupted_progress(run.work, opts)
        run.work.mkdir(parents=True, exist_ok=True)
        _log_start(run)
        with workdir.progress_kept_on_failure(run.work):
            run, found = budget.fit(run, backend, opts.resume)
            compressed = compress.run(run, opts.resume, latency_budget=found)
            deployed = backend.convert(compressed, run)
            figures = user_code.check(user_code.evaluate(run, compressed, deployed), run.prof.verify)
            measurement = measure(run, deployed, opts.quiet)
            accuracy = summary.accuracy(compressed, deployed.parity, run.held.y)
            outcome = budget.outcome(found, measurement.compressed) if found else None
            manifest = manifest_build.build(run, compressed, deployed, measurement, backend, accuracy, figures,
                                            outcome)
            result = summary.build(run, compressed, deployed, measurement, accuracy, outcome, figures)
            if outcome:
                log(outcome["note"])
            files = {**backend.bundle_files(deployed, run.work),
                     **({"postprocess.py": run.postprocess.path} if run.postprocess else {})}
            published = bundle.write(out, run.name, files=files,
                                     texts=report.bundle_texts(run.dataset, manifest, result.to_dict()),
                                     manifest=manifest, parity=deployed.parity_samples, force=opts.force)
        shutil.rmtree(run.work, ignore_errors=True)  # the run finished: its checkpoint is no longer needed
    distributed.barrier()  # the other ranks wait for the bundle, then exit 0
    return dataclasses.replace(result, after=dataclasses.replace(result.after, zip_bytes=bundle.zip_bytes(published)),
                               bundle=str(published), zip=str(bundle.zip_path(published)),
                               seconds=round(time.perf_counter() - t_start, 1))


def _join(run, world):
    """The process group under torchrun, after the checks every rank makes alike (a bad input stops them all)."""
    from . import accel
    from .errors import ProfileError

    d = run.prof.distill
    if run.source.kind != "torch" or d.steps == 0:
        raise ProfileError(f"torchrun with {world.size} processes: this run does not distill "
                           f"({'an .onnx model' if run.source.kind != 'torch' else 'distill.steps=0'})",
                           hint="run it as one process: edgecompress deploy ...")
    for what, refused in (("prune.latency_budget_ms", run.prof.prune.latency_budget_ms is not None),
                          (f"quantize.method={run.prof.quantize.method}", run.prof.quantize.method != "ptq")):
        if refused:
            raise ProfileError(f"{what} is not supported under torchrun yet (it trains or times on one process)",
                               hint="run it as one process, or find the ratio / use quantize.method=ptq with torchrun")
    distributed.check_batch(d.batch_size, world)
    accel.resolve(distributed.device_for(d.device, world), d.precision)  # a device this machine lacks: said now
    log(f"torchrun: {world.size} processes ({world.backend}), rank 0 writes the bundle; a global batch of "
        f"{d.batch_size} is {d.batch_size // world.size} samples on each")
    return world


def _follow(run, opts) -> None:
    """A rank other than 0: train its share of every batch, then wait until rank 0 has written the bundle."""
    compress.run(run, opts.resume)
    distributed.barrier()
    return None


def _log_start(run) -> None:
    log(f"deploy {run.source.name} -> {run.prof.name}: {len(run.train)} training / {len(run.held)} held-out samples "
        f"from {run.dataset.source}")
    if Path(run.dataset.source).is_dir():  # an image folder: which size its images were given
        log(f"data: {run.dataset.preprocessing['note']}")


def measure(run, deployed, quiet: bool = False) -> Measurement:
    """The original and the compressed model on the bench device, in the same run."""
    prof, device = run.prof, run.device
    cfg = bench.host_turns(prof.bench, device, prof.runtime)
    turns = (f"taking turns in {cfg.rounds} rounds, each model's median round reported"
             if cfg.rounds > 1 else "one after the other")
    log(f"bench: original and compressed model on {device.name if device else 'this host'}, {turns}")
    results = bench.measure(deployed.bench_models, bench.settings_here(cfg, device), prof.runtime,
                            device=device, quiet=quiet, input_shape=(1, *run.dataset.x.shape[1:]))
    return Measurement(results=results, device=device,
                       measured_on=summary.measured_on(results, prof, device, deployed.stand_in))
