"""The `edgecompress` command. Maps errors to exit codes (DESIGN.md); imports nothing heavy at
module level so `edgecompress --help` stays fast."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="edgecompress", description="Compress a PyTorch model for one edge device, "
                                "measure it, and write an app-ready bundle.")
    p.add_argument("--version", action="version", version=f"edgecompress {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("targets", help="list target profiles, or show one resolved")
    t.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    t.add_argument("name", nargs="?", help="profile or family name (with show)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    d = sub.add_parser("deploy", help="prune, distill, quantize, export, check, benchmark and bundle a model")
    d.add_argument("model", nargs="?", help="path/file.py:factory or model.onnx; omitted: the built-in demo")
    d.add_argument("--target", required=True, help="profile name (edgecompress targets), family, or a .yaml file")
    d.add_argument("--data", help=".npz with x (and y), or a folder of images in class sub-folders")
    d.add_argument("--weights", help="state_dict for the factory's model (loaded with weights_only=True)")
    d.add_argument("--teacher", help="a larger teacher, path/file.py:factory (default: the unpruned model)")
    d.add_argument("--teacher-weights", help="state_dict for --teacher")
    d.add_argument("--input-shape", help="e.g. 1x3x224x224 (default: from the data)")
    d.add_argument("--device", help="a device from devices.yaml (default: measure on this host)")
    d.add_argument("--out", default="dist", type=Path, help="output folder (default: dist)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile key, e.g. --set prune.ratio=0.3 (repeatable)")
    d.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    d.add_argument("--force", action="store_true", help="replace an existing bundle")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")

    b = sub.add_parser("bench", help="measure a bundle or an .onnx model")
    b.add_argument("artifact", type=Path)
    b.add_argument("--runs", type=int)
    b.add_argument("--warmup", type=int)
    b.add_argument("--seconds", type=float, help="minimum timed seconds")
    b.add_argument("--threads", type=int)
    b.add_argument("--json", action="store_true")

    v = sub.add_parser("verify", help="re-check a bundle's checksums and output parity")
    v.add_argument("bundle", type=Path)
    v.add_argument("--json", action="store_true")
    return p


def cmd_targets(args) -> int:
    from . import profile

    if args.action == "list" and args.name is None:
        for name, path in profile.available().items():
            prof = profile.validate(profile._read_yaml(path), str(path))
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
    from .pipeline import DeployOptions, deploy

    summary = deploy(DeployOptions(model=args.model, target=args.target, data=args.data, weights=args.weights,
                                   teacher=args.teacher, teacher_weights=args.teacher_weights,
                                   input_shape=args.input_shape, out=args.out, overrides=args.overrides,
                                   device=args.device, resume=args.resume, force=args.force))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(report.table(summary))
        print(f"bundle: {summary['bundle']}  ({summary['zip']})  in {summary['seconds']} s")
    return 0


def cmd_bench(args) -> int:
    from .pipeline import bench_artifact

    out = bench_artifact(args.artifact, args.runs, args.warmup, args.threads, args.seconds, quiet=args.json)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for r in out["results"]:
        lat = r["latency_ms"]
        print(f"{r['artifact']} on {r['device_name']} ({r['device']['arch']}, {r['device'].get('runtime')} "
              f"{r['device'].get('runtime_version')}):")
        print("  " + "  ".join(f"{k} {lat[k]:.3f}" for k in ("p50", "p90", "p99", "mean", "std", "min", "max"))
              + f" ms  n={lat['n']}")
        print(f"  load {r['load_ms']:.1f} ms, first run {r['first_run_ms']:.2f} ms, peak RSS {r['peak_rss_mb']:.0f} MB")
        print(f"  energy: {r['energy'] or 'not measured: ' + str(r.get('energy_reason'))}")
    return 0


def cmd_verify(args) -> int:
    from .pipeline import verify_bundle

    out = verify_bundle(args.bundle)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        rerun, ref = out["rerun"], out["reference"]
        print(f"{out['bundle']}: {out['files_checked']} files match their checksums")
        print(f"  re-run on {rerun['samples']} stored samples: max |diff| {rerun['outputs'][0]['max_abs_diff']:.2g}, "
              f"top-1 agreement {rerun['top1_agreement']:.2%} with the build-time outputs")
        print(f"  top-1 agreement with the PyTorch reference: {ref['top1_agreement']:.2%}")
        print("OK")
    return 0


COMMANDS = {"targets": cmd_targets, "deploy": cmd_deploy, "bench": cmd_bench, "verify": cmd_verify}


def main(argv=None) -> int:
    from .errors import EdgeCompressError

    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except EdgeCompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
