"""The texts `edgecompress bench`, `verify` and `devices check` print (cli prints what these return):
the bench table with the notes under it, the verify summary, and a device's check."""
from __future__ import annotations

from typing import List

HEAD = ("device", "arch", "runtime", "p50 ms", "p90 ms", "p99 ms", "mean ms", "n", "p50 drift", "load ms",
        "mJ/inference")


def bench_table(results: List[dict]) -> str:
    """One row per device (bench.measure_on_devices' results), then each device's notes."""
    rows = [HEAD] + [_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEAD))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        lines += _notes(r)
    if any(r.get("stability") for r in results):
        from .bench import NOISY_SPREAD_PCT

        lines.append(f"p50 drift: how far the p50s of consecutive parts (>= 0.5 s each) of the timed window spread; "
                     f"above {NOISY_SPREAD_PCT:.0f}% the numbers will not repeat to better than that")
    return "\n".join(lines)


def _row(r: dict) -> tuple:
    if "error" in r:
        return (r["device_name"], "-", "-", "failed", "", "", "", "", "", "", "")
    lat, dev, energy, drift = r["latency_ms"], r.get("device", {}), r.get("energy"), r.get("stability")
    return (r["device_name"], str(dev.get("arch")), f"{dev.get('runtime')} {dev.get('runtime_version')}",
            *("-" if lat.get(k) is None else f"{lat[k]:.3f}" for k in ("p50", "p90", "p99", "mean")),
            str(lat["n"]),
            f"{drift['spread_pct']:.1f}%" if drift else "-", f"{r['load_ms']:.1f}",
            f"{energy['mj_per_inference_total']:.3f}" if energy else "n/a")


def _notes(r: dict) -> List[str]:
    """What was timed, why energy is missing, the rounds and the device's warnings."""
    name, lines = r["device_name"], []
    if r.get("inputs"):
        timed = ", ".join(f"{i['name']} {'x'.join(map(str, i['shape']))} {i['dtype']}" for i in r["inputs"])
        threads = (r.get("runtime_options") or {}).get("threads")
        lines.append(f"timed on {name}: {timed}"
                     + (f", {threads} thread{'s' if threads != 1 else ''}" if threads else ""))
    if "error" not in r and not r.get("energy"):
        lines.append(f"energy on {name}: not measured: {r.get('energy_reason')}")
    if r.get("rounds"):
        rounds, spread = r["rounds"], r["rounds"].get("spread_pct")
        each = ", ".join("-" if p is None else f"{p:.3f}" for p in rounds["p50_ms"])
        which = f"the median; spread {spread:.0f}%" if spread is not None else "the first (no p50 to rank by)"
        lines.append(f"rounds on {name}: p50 {each} ms; the row is round {rounds['chosen']}, {which}")
    lines += [f"warning on {name}: {warning}" for warning in r.get("warnings") or []]
    return lines


def verify_text(out: dict) -> str:
    """commands.verify_bundle's result for a person: the checksums, the re-run, the agreements and
    the build-time check that decided the build, so the figure over a few stored samples is read beside it."""
    rerun, ref = out["rerun"], out["reference"]
    lines = [f"{out['bundle']}: {out['files_checked']} files match their checksums",
             f"  re-run on {rerun['samples']} stored samples: max |diff| {_diffs(rerun)}"
             + (f", {_agreement(rerun)} with the build-time outputs" if _agreement(rerun) else ""),
             f"  {_agreement(ref, 'with ' + out['reference_is']) or 'max |diff| ' + _diffs(ref) + ' with ' + out['reference_is']}"
             + (" (the FP32 student the model was made from)" if out["reference_is"] == "PyTorch" else "")]
    if out.get("original"):
        lines.append(f"  {_agreement(out['original'], 'with the original model') or 'max |diff| ' + _diffs(out['original']) + ' with the original model'}")
    build = out.get("build_check")
    if build and build.get("task_metric"):
        lines.append(_build_task_line(build, out["reference_is"], rerun["samples"]))
    elif build:
        tol = build["min_top1_agreement"]
        lines.append(f"  at build time, over {build['samples']} held-out samples: {build['top1_agreement']:.2%} with "
                     f"{out['reference_is']}" + (f" (tolerance {tol:.2%})" if tol is not None else "")
                     + f"; the {rerun['samples']} stored samples here are a few of those, so one sample moves this "
                       f"figure by {1 / max(1, rerun['samples']):.1%}")
    lines.append("OK")
    return "\n".join(lines)


def _build_task_line(build: dict, reference_is: str, stored: int) -> str:
    """The build's own check for a task other than classification, as its verify line printed it."""
    from .report import figure_text
    from .verify import METRIC_WORDS

    metric = build["task_metric"]

    def fmt(v):  # the figure as the build's verify line printed it
        return figure_text(metric, v)
    line = (f"  at build time, over {build['samples']} held-out samples: {METRIC_WORDS.get(metric, metric)} "
            f"{fmt(build['task_agreement'])} with {reference_is}"
            + (f" (tolerance {fmt(build['tolerance'])})" if build.get("tolerance") is not None else
               f" (an FP32 file, held to max |diff| {build['max_abs_diff']:g} instead)"
               if build.get("max_abs_diff") is not None else "")
            + (f", {fmt(build['original_task_agreement'])} with the original" if build.get("original_task_agreement")
               is not None else ""))
    if build.get("original_nn_agreement") is not None:
        line += f"; nearest-neighbour agreement with the original {build['original_nn_agreement']:.2%}"
    line += f" (the {stored} stored samples here are a few of those)"
    if build.get("confident_anchors") is not None and build.get("task_agreement") is None:
        line += (f"\n  no anchor was compared: {build['confident_anchors']} of the reference's scores exceeded "
                 f"verify.score_threshold {build.get('threshold', 0.5):g} at build time (too few to judge), so the "
                 "agreement above checks no detection")
    return line


def _diffs(report: dict) -> str:
    """max |diff| of each output: the bare figure for one output (as single-output bundles always said)."""
    outs = report["outputs"]
    if len(outs) == 1:
        return f"{outs[0]['max_abs_diff']:.2g}"
    return ", ".join(f"{o['name']} {o['max_abs_diff']:.2g}" for o in outs)


def _agreement(report: dict, against: str = "") -> str:
    """A check's decision figure in words: a classifier's top-1 agreement, another task's own figure;
    `against` ('with X') is put where it reads: 'top-1 agreement with X: 99%'."""
    from .verify import METRIC_WORDS

    if report.get("top1_agreement") is not None:
        return (f"top-1 agreement {against}: {report['top1_agreement']:.2%}" if against
                else f"top-1 agreement {report['top1_agreement']:.2%}")
    if report.get("task_agreement") is not None:  # as the build-time line prints it: a share in %, R^2 as a number
        from .report import figure_text

        words = METRIC_WORDS.get(report["task_metric"], report["task_metric"])
        value = figure_text(report["task_metric"], report["task_agreement"])
        return f"{words} {against}: {value}" if against else f"{words} {value}"
    return ""


def devices_text(device, info: dict) -> str:
    """`devices check NAME`: the device (an inventory.Device) reachable, its runtimes and power sources,
    from its runner's check."""
    if device.transport == "adb":
        configured = (info.get("benchmark_model") or {}).get("configured")
        lines = [f"{device.name}: reachable ({info.get('model')}, Android {info.get('android_version')}, "
                 f"{info.get('arch')}; benchmark_model {'configured' if configured else 'missing'})"]
    else:
        lines = [f"{device.name}: reachable ({info.get('hostname')}, {info.get('arch')}, Python {info.get('python')})"]
    lines += [f"  runtime {runtime:<16} {version or 'not installed'}"
              for runtime, version in (info.get("runtimes") or {}).items()]
    lines += [f"  power   {src['name']:<16} {'available' if src['available'] else 'no'}: {src.get('reason', '')}"
              for src in info.get("power_sources") or []]
    return "\n".join(lines)
