"""The restructure of issue 12 must not change what a bundle says: the demo's manifests for
--target arm, android and jetson are written by the code as it is (`--save DIR`), and compared
later with the same command's (`--against DIR`): the same keys everywhere, and the same values
apart from the timings (latency, load, memory, energy, the seconds distillation took) and the
versions and paths that name this run. Every other difference is listed, with its key path.

    python benchmarks/same_manifests.py --save benchmarks/results/manifests_before
    python benchmarks/same_manifests.py --against benchmarks/results/manifests_before

The deploys run with the CLI (`python -m edgecompress.cli`), so the code under test is the one on
PYTHONPATH (a worktree of an older commit, for the "before" half). Each deploy takes a minute or
two on a 2-core host. Results: benchmarks/results/same_manifests.json."""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TARGETS = ["arm", "android", "jetson"]
# Values that differ between two runs of the same code: times measured, sizes of memory, and
# what names the run (its output folder, the checksums of the texts that quote the timings).
TIMING = [
    "metrics.latency_ms*", "metrics.first_run_ms*", "metrics.load_ms*", "metrics.peak_rss_mb*",
    "metrics.latency_stability*", "metrics.latency_rounds*", "metrics.energy*", "metrics.device_state*",
    "metrics.measured_on.clocks_mhz_*", "metrics.measured_on.governor", "metrics.measured_on.throttled",
    "compression.distillation.seconds", "files.README.md*", "files.report.html*",
    "metrics.measured_on.runs*", "engine.build_ms",
]


def deploy(target: str, out: Path) -> dict:
    """The demo deployed for `target` into `out`; its manifest."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    cmd = [sys.executable, "-m", "edgecompress.cli", "deploy", "--target", target, "--out", str(out), "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"deploy --target {target} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    return json.loads((Path(summary["bundle"]) / "manifest.json").read_text())


def flatten(node, prefix: str = "") -> dict:
    """{dotted.key.path: leaf value}; lists by index, so an added or removed list item shows."""
    if isinstance(node, dict):
        flat = {prefix.rstrip(".") or ".": {}} if not node else {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(node, list):
        flat = {prefix.rstrip(".") or ".": []} if not node else {}
        for i, value in enumerate(node):
            flat.update(flatten(value, f"{prefix}{i}."))
        return flat
    return {prefix.rstrip("."): node}


def is_timing(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in TIMING)


def keyed_checks(manifest: dict) -> dict:
    """metrics.parity keyed by each check's `what`, so a check added or dropped shows as itself
    rather than as every later check shifted by one."""
    m = json.loads(json.dumps(manifest))
    m["metrics"]["parity"] = {c["what"]: c for c in m["metrics"].get("parity", [])}
    return m


def compare(before: dict, after: dict) -> dict:
    a, b = flatten(keyed_checks(before)), flatten(keyed_checks(after))
    return {"only_before": sorted(set(a) - set(b)), "only_after": sorted(set(b) - set(a)),
            "values": {k: [a[k], b[k]] for k in sorted(set(a) & set(b)) if a[k] != b[k] and not is_timing(k)},
            "timings_differing": sorted(k for k in set(a) & set(b) if a[k] != b[k] and is_timing(k))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path, help="write each target's manifest into this folder")
    group.add_argument("--against", type=Path, help="compare with the manifests saved in this folder")
    p.add_argument("--targets", nargs="*", default=TARGETS)
    p.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "same_manifests.json")
    args = p.parse_args()
    report = {}
    with tempfile.TemporaryDirectory(prefix="ec-manifests-") as tmp:
        for target in args.targets:
            print(f"deploy --target {target} ...", file=sys.stderr, flush=True)
            manifest = deploy(target, Path(tmp) / target)
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / f"{target}.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
                continue
            report[target] = compare(json.loads((args.against / f"{target}.json").read_text()), manifest)
    if args.save:
        print(f"saved {len(args.targets)} manifests in {args.save}")
        return 0
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=1) + "\n")
    for target, diff in report.items():
        print(f"{target}: {len(diff['only_before'])} keys only before, {len(diff['only_after'])} only after, "
              f"{len(diff['values'])} values differ (timings aside; {len(diff['timings_differing'])} timings differ)")
        for key in diff["only_before"]:
            print(f"  - {key}")
        for key in diff["only_after"]:
            print(f"  + {key}")
        for key, (was, now) in diff["values"].items():
            print(f"  ~ {key}: {json.dumps(was)[:80]} -> {json.dumps(now)[:80]}")
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
