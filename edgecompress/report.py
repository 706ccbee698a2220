"""Human-facing output: the before/after table printed at the end of deploy, and the bundle's texts
(README.md, report.html through report_html, the runtime's own)."""
from __future__ import annotations

from typing import Optional

from .console import log


def _fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _fmt_count(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def _fmt_pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v * 100:.2f} %"


def _fmt_ms(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.3f} ms"


OPPOSITE = {"smaller": "larger", "fewer": "more", "faster": "slower"}


def _ratio(a, b, fmt="{:.2f}x") -> str:
    """'2.00x faster', or '1.41x slower' when the change went the wrong way: never '0.71x faster'."""
    if not (a and b):
        return "-"
    if a >= b:
        return fmt.format(a / b)
    word = fmt.split()[-1]
    return fmt.replace(word, OPPOSITE.get(word, word)).format(b / a)


def table(s: dict) -> str:
    """The before/after table from a deploy summary."""
    rows = table_rows(s)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"latency: {s['measured_on_text']}")
    if s.get("accuracy_note"):
        lines.append(s["accuracy_note"])
    return "\n".join(lines)


def table_rows(s: dict) -> list:
    """The table's cells, a header row first: the text table and report.html show the same."""
    b, a = s["before"], s["after"]
    from .summary import metric_words

    from .verify import METRIC_WORDS

    acc_name = metric_words(s["accuracy_metric"])
    if s["accuracy_metric"] in METRIC_WORDS:  # a task's figure is against the original, whose own cell reads 100%
        acc_name += " w/ original"
    rows = [
        ("", "original", "compressed", "change"),
        ("model file", _fmt_bytes(b["bytes"]), _fmt_bytes(a["bytes"]), _ratio(b["bytes"], a["bytes"], "{:.2f}x smaller")),
        ("model zipped", _fmt_bytes(b.get("deflated_bytes")), _fmt_bytes(a.get("deflated_bytes")),
         _ratio(b.get("deflated_bytes"), a.get("deflated_bytes"), "{:.2f}x smaller")),
        ("params", _fmt_count(b["params"]), _fmt_count(a["params"]), _ratio(b["params"], a["params"], "{:.2f}x fewer")),
        ("MACs", _fmt_count(b["macs"]), _fmt_count(a["macs"]), _ratio(b["macs"], a["macs"], "{:.2f}x fewer")),
        (acc_name, *_accuracy_cells(s["accuracy_metric"], b["accuracy"], a["accuracy"])),
        ("p50 latency", _fmt_ms(b["p50_ms"]), _fmt_ms(a["p50_ms"]), _ratio(b["p50_ms"], a["p50_ms"], "{:.2f}x faster")),
    ]
    user = s.get("user_figures") or {}
    for key, before in ((user.get("metric") or {}).get("original") or {}).items():  # --metric: the user's own
        after = user["metric"]["deployed"][key]
        rows.insert(-1, (f"{key} (--metric)", f"{before:.4g}", f"{after:.4g}", f"{after - before:+.4g}"))
    iou = s.get("mask_iou")
    if iou:  # a segmenter with masks: the score on them, beside the agreement with the original
        rows.insert(-1, ("mean IoU on the masks", f"{iou['original']:.4f}", f"{iou['deployed']:.4f}",
                         f"{iou['deployed'] - iou['original']:+.4f}"))
    boxes = (user.get("boxes") or {}).get("deployed")
    if boxes:  # --postprocess: the original's boxes the deployed model finds
        rows.insert(-1, ("box recall vs original", "100.00 %", _fmt_pct(boxes["recall"]), "-"))
    return rows


NOT_A_SHARE = ("r2", "cosine")  # figures that are no share of anything (R^2 goes below 0): numbers, not %


def figure_text(metric: str, value: Optional[float], digits: int = 2, sep: str = "") -> str:
    """A check's figure as every line prints it: a share in % (`digits` decimals; sep " " as the table has it),
    R^2 and cosine as numbers (digits + 2 decimals); "-" for none."""
    if value is None:
        return "-"
    return f"{value:.{digits + 2}f}" if metric in NOT_A_SHARE else f"{value * 100:.{digits}f}{sep}%"


def _accuracy_cells(metric: str, before, after) -> tuple:
    if metric not in NOT_A_SHARE:
        return _fmt_pct(before), _fmt_pct(after), _delta_points(before, after)
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    return fmt(before), fmt(after), "-" if before is None or after is None else f"{after - before:+.4f}"


def _delta_points(before, after) -> str:
    return "-" if before is None or after is None else f"{(after - before) * 100:+.2f} points"


def _preprocessing(pre: dict) -> str:
    """x = (pixel * scale - mean) / std, in words an app developer copies from."""
    if pre.get("scale") is None or pre.get("mean") is None:
        return pre.get("note") or str(pre.get("layout"))
    size = f"{pre['size'][0]}x{pre['size'][1]} " if pre.get("size") else ""
    text = (f"{size}{pre.get('layout', 'NCHW')}, x = (pixel * {pre['scale']:.6g} - mean) / std, "
            f"mean {pre['mean']}, std {pre['std']}")
    return text + (f" ({pre['note']})" if pre.get("note") else "")


def _runtime_text(runtime: dict) -> str:
    """A runtime that only runs on the device (TensorRT) has no version until it has run there."""
    if runtime.get("version"):
        return f"{runtime['name']} {runtime['version']}"
    return f"{runtime['name']}, version not known until it runs on the device"


def bundle_readme(manifest: dict, summary: dict) -> str:
    from .backends import BACKENDS

    m, backend = manifest, BACKENDS.get(manifest["runtime"]["name"])
    inp = m["inputs"][0]
    lat = m["metrics"]["latency_ms"]["compressed"]
    return f"""# {m['name']} for {m['target']}

A compressed model built by edgecompress {m['provenance']['edgecompress_version']} for the
`{m['target']}` target ({_runtime_text(m['runtime'])}).

- Model file: `{m['model']['file']}` ({backend.precision_text(m)})
- Input `{inp['name']}`: shape {inp['shape']}, {inp['dtype']}; preprocessing: {_preprocessing(inp['preprocessing'])}
- {_labels_line(m)}

## Run it

{backend.run_section(m)}

## What was measured

```
{table(summary)}
```

p50 {lat.get('p50', float('nan')):.3f} ms over n={lat.get('n')} runs. {m['metrics']['measured_on']['note']}{_budget_text(m)}
Energy: {m['metrics']['energy_mj_per_inference'] if m['metrics']['energy_mj_per_inference'] is not None else 'not measured: ' + str(m['metrics'].get('energy_reason'))}

`report.html` shows these figures with the latency spread, every check and the distillation loss.
`manifest.json` holds the full figures, the resolved target profile and a checksum for every
file; `edgecompress verify` re-checks them and re-runs the stored parity samples.
"""


def _budget_text(m: dict) -> str:
    """prune.latency_budget_ms's outcome, where one was set: the ratio it chose, and whether the deployed model met it."""
    b = (m["compression"]["pruning"] or {}).get("latency_budget")
    if not b or b.get("budget_ms") is None:
        return ""
    met = {True: "met", False: "missed", None: "not judged"}[b.get("met")]
    return (f"\nLatency budget {b['budget_ms']} ms (prune.latency_budget_ms): {b['ratio']:.0%} of the channels "
            f"removed; the deployed model's p50 {b.get('p50_ms', float('nan')):.3f} ms: {met}.")


def _labels_line(m: dict) -> str:
    """What the outputs mean: class names where the bundle has them; else what the task's outputs are."""
    outputs = ", ".join(f"`{o['name']}`" + (f" (the model's `{o['model_name']}`)" if o.get("model_name")
                                             and o["model_name"] != o["name"] else "") + f" {o['shape']}"
                        for o in m.get("outputs", []))
    task = m.get("task") or "classification"
    if m.get("labels"):
        return f"Labels: `labels.txt` ({len(m['labels'])} classes); outputs: {outputs}"
    meaning = {"classification": "class scores, indexed by class (no class names were given)",
               "segmentation": "per-pixel class scores, indexed by class (no class names were given)",
               "detection": "boxes and scores per anchor" + (" (`postprocess.py` decodes them)" if m.get("postprocess") else ""),
               "embedding": "an embedding vector per input (compare two with cosine similarity)",
               "regression": "the model's values as they are"}.get(task, "as the model returns them")
    return f"Outputs ({task}): {outputs}: {meaning}"


def _report_page(manifest: dict, summary: dict) -> str:
    """report.html; a page that cannot be drawn must not cost the finished run its bundle."""
    try:
        from . import report_html

        return report_html.page(manifest, summary)
    except Exception as exc:  # noqa: BLE001 - any figure the page did not foresee
        log(f"report: warning: report.html could not be drawn ({type(exc).__name__}: {exc}); manifest.json holds "
            "every figure")
        from html import escape

        return (f"<!doctype html><meta charset=utf-8><title>{escape(manifest['name'])}</title><p>This report could "
                f"not be drawn ({escape(type(exc).__name__)}: {escape(str(exc))}); manifest.json holds every figure.")


def bundle_texts(dataset, manifest: dict, summary: dict) -> dict:
    """The bundle's texts: its README, report.html, the runtime's own (the Kotlin runner) and the labels."""
    from .backends import BACKENDS

    texts = {"README.md": bundle_readme(manifest, summary), "report.html": _report_page(manifest, summary),
             **BACKENDS.get(manifest["runtime"]["name"]).bundle_texts(manifest)}
    if dataset.labels:
        texts["labels.txt"] = "\n".join(dataset.labels) + "\n"
    return texts
