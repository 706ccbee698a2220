"""The `edgecompress` command. Maps errors to exit codes (DESIGN.md); imports nothing heavy at
module level so `edgecompress --help` stays fast."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="edgecompress", description="Compress a PyTorch model for one edge device, "
                                "measure it, and write an app-ready bundle.")
    p.add_argument("--version", action="version", version=f"edgecompress {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_targets(sub)
    _add_deploy(sub)
    _add_bench(sub)
    _add_devices(sub)
    _add_verify(sub)
    return p


def _add_targets(sub) -> None:
    t = sub.add_parser("targets", help="list target profiles, or show one resolved")
    t.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    t.add_argument("name", nargs="?", help="profile or family name (with show)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def _add_deploy(sub) -> None:
    d = sub.add_parser("deploy", help="prune, distill, quantize, export, check, benchmark and bundle a model")
    d.add_argument("model", nargs="?", help="path/file.py:factory or model.onnx; omitted: the built-in demo")
    d.add_argument("--target", help="profile name (edgecompress targets), family, or a .yaml file "
                   "(default with --device: the device's target)")
    d.add_argument("--demo", metavar="NAME", help="with no model: the built-in demo to deploy, digits (the default: "
                   "8x8 scans) or animals (28x28 silhouettes; pip install --no-deps animal-mnist)")
    d.add_argument("--data", help=".npz with x (and y), or a folder of images in class sub-folders")
    d.add_argument("--weights", help="state_dict for the factory's model (loaded with weights_only=True)")
    d.add_argument("--teacher", help="a larger teacher, path/file.py:factory (default: the unpruned model)")
    d.add_argument("--teacher-weights", help="state_dict for --teacher")
    d.add_argument("--input-shape", help="e.g. 1x3x224x224 (default: from the data)")
    d.add_argument("--task", choices=["auto", "classification", "detection", "segmentation", "embedding", "regression"],
                   help="what the model does (default: the profile's task, auto: decided from its outputs)")
    d.add_argument("--postprocess", metavar="FILE.py:FN", help="your decode function: raw outputs -> per image "
                   "(boxes, scores, classes); gives box-level parity and travels in the bundle")
    d.add_argument("--metric", metavar="FILE.py:FN", help="your metric: fn(outputs, data) -> {name: number}, "
                   "higher is better; computed for the original, the FP32 student and the deployed model")
    d.add_argument("--device", help="a device from devices.yaml (default: measure on this host)")
    d.add_argument("--out", default="dist", type=Path, help="output folder (default: dist)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile key, e.g. --set prune.ratio=0.3 (repeatable)")
    d.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    d.add_argument("--train-device", metavar="DEVICE", help="where distillation trains: auto (CUDA, else MPS, else "
                   "the CPU), cpu, cuda, cuda:N or mps (= --set distill.device=DEVICE); every other stage runs on the CPU")
    d.add_argument("--lock-clocks", action="store_true", help="Jetson: jetson_clocks --store, pin the clocks for "
                   "the measurement, always --restore afterwards (same as --set bench.lock_clocks=true)")
    d.add_argument("--force", action="store_true", help="replace an existing bundle")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="measure a bundle, an .onnx or a .tflite model, here or on devices",
                       description="The settings are the bundle's profile's bench section (a bare model file: its "
                       "device's target profile, else host or android-arm64), with the keys the command line names "
                       "replaced; each flag below is a shorthand for one bench key.")
    b.add_argument("artifact", type=Path)
    b.add_argument("--device", dest="devices", action="append", default=[], metavar="NAME",
                   help="a device from devices.yaml (repeatable: all run at once); default: this host")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="bench.KEY=VALUE",
                   help="override a key of the bench section, e.g. --set bench.energy=none (repeatable; "
                        "edgecompress targets show NAME lists the keys)")
    b.add_argument("--runs", type=int, help="timed runs (= --set bench.runs=N)")
    b.add_argument("--warmup", type=int, help="warm-up runs (= --set bench.warmup_runs=N)")
    b.add_argument("--seconds", type=float, help="minimum timed seconds (= --set bench.seconds=S)")
    b.add_argument("--threads", type=int, help="runtime threads (= --set bench.threads=N; without it, on this "
                   "host, the profile's are capped at this host's CPUs)")
    b.add_argument("--rounds", type=int, help="split the runs into N separate processes and report the median one "
                   "(= --set bench.rounds=N)")
    b.add_argument("--lock-clocks", action="store_true", default=None, help="Jetson: pin clocks with jetson_clocks, "
                   "then restore (= --set bench.lock_clocks=true)")
    b.add_argument("--input-shape", help="for an .onnx whose height/width are dynamic: the size to time, e.g. "
                   "1x3x224x224 (a bundle uses the shape of its stored samples)")
    b.add_argument("--json", action="store_true")


def _add_devices(sub) -> None:
    dv = sub.add_parser("devices", help="list the device inventory, or check that a device is reachable")
    dv.add_argument("action", nargs="?", choices=["list", "check"], default="list")
    dv.add_argument("name", nargs="?")
    dv.add_argument("--inventory", help="a devices.yaml (default: $EDGECOMPRESS_DEVICES, else ./devices.yaml, "
                                        "then ~/.config/edgecompress/)")
    dv.add_argument("--json", action="store_true")


def _add_verify(sub) -> None:
    v = sub.add_parser("verify", help="re-check a bundle's checksums and output parity")
    v.add_argument("bundle", type=Path)
    v.add_argument("--json", action="store_true")


def cmd_targets(args) -> int:
    from . import profile

    if args.action == "list" and args.name is None:
        if args.overrides:
            from .errors import InputError

            raise InputError("--set changes one profile: name it", hint="edgecompress targets show NAME --set KEY=VALUE")
        for name, path in profile.available().items():
            prof = profile.validate(profile.read_profile_yaml(path), str(path))
            default = f" (default for '{prof.family}')" if prof.default_for_family else ""
            print(f"{name:<18} {prof.family:<8} {prof.runtime:<12} {prof.description}{default}")
        return 0
    name = args.name
    if not name:
        from .errors import InputError

        raise InputError("edgecompress targets show: give a profile name", hint="edgecompress targets lists them")
    prof, note = profile.load(name, args.overrides)
    if note:
        print(f"# {note}")
    print(profile.dump(prof), end="")
    return 0


def cmd_deploy(args) -> int:
    from . import report
    from .errors import InputError
    from .pipeline import DeployOptions, deploy

    target = args.target
    if target is None:
        if not args.device:
            raise InputError("--target is required", hint="edgecompress targets lists them; e.g. --target arm")
        from . import inventory

        target = inventory.get(args.device).target
    options = DeployOptions(model=args.model, target=target, data=args.data, weights=args.weights,
                            teacher=args.teacher, teacher_weights=args.teacher_weights,
                            input_shape=args.input_shape, out=args.out,
                            overrides=args.overrides + (["bench.lock_clocks=true"] if args.lock_clocks else [])
                            + ([f"task={args.task}"] if args.task else [])
                            + ([f"distill.device={args.train_device}"] if args.train_device else []),
                            device=args.device, resume=args.resume, force=args.force,
                            postprocess=args.postprocess, metric=args.metric, demo=args.demo)
    result = deploy(options)
    if result is None:  # a torchrun rank other than 0: rank 0 wrote the bundle and prints the summary
        return 0
    summary = result.to_dict()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        for line in [summary.get("accuracy_note"), *summary["measured_on_text"].split("\n")[1:]]:
            if line:  # the warnings under the table: a script reading the JSON still shows them to a person
                print(line, file=sys.stderr)
    else:
        print(report.table(summary))
        print(f"bundle: {summary['bundle']}  ({summary['zip']})  in {summary['seconds']} s")
        print(f"report: {Path(summary['bundle']) / 'report.html'}")
    return 0


def cmd_bench(args) -> int:
    from .commands import bench_artifact, bench_settings
    from .report_bench import bench_table

    flags = {"--runs": args.runs, "--warmup": args.warmup, "--seconds": args.seconds, "--threads": args.threads,
             "--rounds": args.rounds, "--lock-clocks": args.lock_clocks}
    out = bench_artifact(args.artifact, args.devices, bench_settings(args.overrides, flags),
                         input_shape=args.input_shape, quiet=args.json)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(bench_table(out["results"]))
    failed = [r for r in out["results"] if "error" in r]
    for r in failed:
        print(f"error: {r['device_name']}: {r['error']}", file=sys.stderr)
    return max((r.get("exit_code", 1) for r in failed), default=0)


def cmd_devices(args) -> int:
    from . import inventory

    devices = inventory.load(args.inventory)
    if args.action == "list":
        for name, d in devices.items():
            where = f"{d.user + '@' if d.user else ''}{d.host}{':' + str(d.port) if d.port else ''}" \
                if d.transport == "ssh" else ("this host" if d.transport == "local" else d.serial or "")
            print(f"{name:<16} {d.target:<18} {d.transport:<6} {where}")
        return 0
    if not args.name:
        from .errors import InputError

        raise InputError("edgecompress devices check: give a device name", hint="edgecompress devices list")
    device = inventory.get(args.name, args.inventory)
    from . import runners

    info = runners.check(device)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from .report_bench import devices_text

    print(devices_text(device, info))
    return 0


def cmd_verify(args) -> int:
    from .commands import verify_bundle
    from .report_bench import verify_text

    out = verify_bundle(args.bundle)
    print(json.dumps(out, indent=2) if args.json else verify_text(out))
    return 0


COMMANDS = {"targets": cmd_targets, "deploy": cmd_deploy, "bench": cmd_bench, "verify": cmd_verify,
            "devices": cmd_devices}


def _closed_pipe() -> int:
    """`edgecompress targets | head`: the reader of our output left early, which is not an error.
    Any other closed pipe (stderr's, say, mid-deploy) stopped the command: exit as SIGPIPE would."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    stderr_gone = _reader_left(sys.stderr.fileno())
    os.dup2(devnull, sys.stdout.fileno())
    if stderr_gone:  # progress could not be written (deploy 2>&1 | head): the command did not finish
        os.dup2(devnull, sys.stderr.fileno())
        return 141
    return 0


def _reader_left(fd: int) -> bool:
    """A pipe whose reader has closed polls as an error on the writing end."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(event & select.POLLERR for _, event in poller.poll(0))


class _Terminated:
    """SIGTERM (from `timeout`, CI, `docker stop`, systemd) takes the Ctrl-C path: whatever handles
    SIGINT now handles it (distillation stops at a step boundary and saves), else KeyboardInterrupt,
    so every cleanup that Ctrl-C runs (device restore, job folders, locks) runs for it too."""

    received = False

    @classmethod
    def handle(cls, signum, frame) -> None:
        cls.received = True
        current = signal.getsignal(signal.SIGINT)
        if callable(current) and current is not signal.default_int_handler:
            current(signum, frame)
            return
        raise KeyboardInterrupt

    @classmethod
    def install(cls) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, cls.handle)


def main(argv=None) -> int:
    from .errors import EdgeCompressError

    args = _parser().parse_args(argv)
    _Terminated.install()
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler below, not at exit
        return code
    except EdgeCompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if exc.args:  # deploy says what it kept
            kept = f": {exc.args[0]}"
        else:
            kept = (": no bundle was written; a distillation checkpoint, if one was saved, is kept, and the same "
                    "command with --resume continues from it") if args.command == "deploy" else ""
        print(f"{'terminated (SIGTERM)' if _Terminated.received else 'interrupted'}{kept}", file=sys.stderr)
        return 143 if _Terminated.received else 130
    except BrokenPipeError:
        return _closed_pipe()
    except Exception as exc:  # noqa: BLE001 - not one of ours: a bug, or a case no check foresaw
        import traceback

        traceback.print_exc()
        kept = " No bundle was written (a bundle is published last, in one step)." if args.command == "deploy" else ""
        print(f"error: edgecompress {args.command} failed unexpectedly: {type(exc).__name__}: {exc}\n"
              f"  -> a case edgecompress does not handle yet.{kept} Please report it with the traceback above",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
