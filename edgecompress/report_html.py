"""report.html: a bundle's figures on one page, for the people who get the bundle and do not read
JSON: before/after, where and how latency was measured and how much it spread, the rounds, the
distillation loss, every check, energy and the device's state. Self-contained (inline CSS and SVG,
no script, nothing fetched), so it opens from the zip on any machine."""
from __future__ import annotations

import math
from html import escape
from typing import List, Optional

from . import report
from .summary import metric_words

CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #eee}
th{background:#f6f6f6}.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:.4em .8em}
.ok{color:#17703a}.bad{color:#b00020}.note{color:#555}code{background:#f3f3f3;padding:0 .2em}
svg text{font:12px system-ui,sans-serif}"""
COLOURS = {"original": "#8c8c8c", "compressed": "#1f6feb", "student_fp32": "#9a6700"}
# report.html's trade-off points: (label, the accuracy record's key, the latency's label)
TRADE_OFF = (("original", "teacher", "original"), ("FP32 student", "student_fp32", "student_fp32"),
             ("deployed", "student", "compressed"))


def page(manifest: dict, summary: dict) -> str:
    m = manifest
    sections = [_header(m), _table(summary), _user_figures(m), _trade_off(m), _latency(m), _rounds(m), _checks(m), _compression(m), _energy(m),
                _device(m)]
    title = f"{m['name']} for {m['target']}"
    return (f"<!doctype html>\n<html lang=en><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{CSS}</style>\n<body>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n")


def _rows(rows: List[tuple], head: Optional[tuple] = None) -> str:
    cells = [f"<tr>{''.join(f'<th>{escape(str(c))}</th>' for c in head)}</tr>"] if head else []
    cells += [f"<tr>{''.join(f'<td>{escape(str(c))}</td>' for c in r)}</tr>" for r in rows]
    return f"<table>{''.join(cells)}</table>"


def _header(m: dict) -> str:
    where = m["metrics"]["measured_on"]
    prov = m["provenance"]
    runtime = m["runtime"]
    version = runtime["version"] if runtime.get("version") else f"(version not known: {runtime.get('note', 'not measured')})"
    return (f"<h1>{escape(m['name'])} for <code>{escape(m['target'])}</code></h1>"
            f"<p>{escape(runtime['name'])} {escape(str(version))}, model file "
            f"<code>{escape(m['model']['file'])}</code>; built by edgecompress {escape(prov['edgecompress_version'])} "
            f"with torch {escape(prov['torch_version'])} from data <code>{escape(str(prov.get('data')))}</code>. "
            f"{escape(_where(where))}</p>")


def _where(where: dict) -> str:
    if where.get("where") == "device":
        return f"Latency measured on the device {where.get('device_name')}."
    return "Latency measured on the build host, not on the target device (see the note under the table)."


def _table(summary: dict) -> str:
    """The before/after table deploy prints, with its notes; warnings set apart."""
    head, *rows = report.table_rows(summary)
    notes = summary["measured_on_text"].split("\n") + (summary.get("accuracy_note") or "").split("\n")
    warnings = "".join(f"<p class=warn>{escape(n)}</p>" for n in notes if n.startswith("warning:"))
    others = "".join(f"<p class=note>{escape(n)}</p>" for n in notes if n and not n.startswith("warning:"))
    return "<h2>Before and after</h2>" + _rows(rows, head) + others + warnings


def _latency(m: dict) -> str:
    lat = {k: v for k, v in m["metrics"]["latency_ms"].items() if v and v.get("p50") is not None}
    if not lat:
        return ""
    rows = [(k, *(_ms(v.get(p)) for p in ("p50", "p90", "p99", "mean", "std", "min", "max")), v.get("n"))
            for k, v in lat.items()]
    load = m["metrics"].get("load_ms") or {}
    first = m["metrics"].get("first_run_ms") or {}
    rss = m["metrics"].get("peak_rss_mb") or {}
    extra = [(k, _ms(load.get(k)), _ms(first.get(k)), "-" if rss.get(k) is None else f"{rss[k]:.0f} MiB")
             for k in lat]
    return ("<h2>Latency</h2>" + latency_svg(lat) +
            _rows(rows, ("model", "p50", "p90", "p99", "mean", "std", "min", "max", "runs")) +
            _rows(extra, ("model", "load", "first run", "peak RSS")) +
            f"<p class=note>Timed with {escape(str(next(iter(lat.values())).get('method', '?')))}.</p>")


def _user_figures(m: dict) -> str:
    """--metric's figures and --postprocess's box-level parity for the original, the FP32 student and
    the deployed model."""
    user = m["metrics"].get("user_figures") or {}
    models = ("original", "student_fp32", "deployed")
    fig = lambda v: "-" if v is None else _value(v)  # noqa: E731
    rows = [(f"{name} (--metric)", *(fig((user["metric"].get(k) or {}).get(name)) for k in models))
            for name in ((user.get("metric") or {}).get("original") or {})]
    for key in ("recall", "precision", "class_agreement", "mean_iou"):
        if (user.get("boxes") or {}).get("deployed", {}).get(key) is not None:
            rows.append((f"boxes vs original: {key.replace('_', ' ')}", "1",
                         *(fig((user["boxes"].get(k) or {}).get(key)) for k in models[1:])))
    if not rows:
        return ""
    return "<h2>Your figures</h2>" + _rows(rows, ("figure", "original", "FP32 student", "deployed"))


def _trade_off(m: dict) -> str:
    """The original, the FP32 student and the deployed model as points: p50 latency against the
    accuracy figure (or the task's). A model without a figure or a timing is named, not placed."""
    acc, lat = m["metrics"]["accuracy"], m["metrics"]["latency_ms"]
    placed, missing = [], []
    for name, acc_key, lat_key in TRADE_OFF:
        value, timing = acc.get(acc_key), (lat.get(lat_key) or {}).get("p50")
        (placed.append((name, lat_key, value, timing)) if value is not None and timing else missing.append(name))
    if len(placed) < 2:
        return ""
    note = f"; not placed (no figure or no timing here): {', '.join(missing)}" if missing else ""
    return ("<h2>Accuracy against latency</h2>" + trade_off_svg(placed, acc["metric"]) +
            f"<p class=note>{escape(metric_words(acc['metric']))} on the held-out samples against p50 latency (ms, where the "
            f"table's latency was measured){escape(note)}.</p>")


def trade_off_svg(points: List[tuple], metric: str, width: int = 480, height: int = 260) -> str:
    """points: (name, colour key, figure, p50 ms). x: p50 on a log scale; y: the figure, linear."""
    left, right, top, bottom = 60, 110, 16, 36
    xs, ys = [p[3] for p in points], [p[2] for p in points]
    lo, hi = min(xs) / 1.25, max(xs) * 1.25
    y_lo, y_hi = min(ys), max(ys)
    pad = max((y_hi - y_lo) * 0.15, 0.005)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    x = lambda ms: left + (width - left - right) * math.log(ms / lo) / math.log(hi / lo)  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (y_hi - v) / (y_hi - y_lo)  # noqa: E731
    marks = "".join(f'<circle cx="{x(ms):.1f}" cy="{y(v):.1f}" r="5" fill="{COLOURS.get(key, "#555")}"/>'
                    f'<text x="{x(ms) + 8:.1f}" y="{y(v) + 4:.1f}">{escape(name)} {report.figure_text(metric, v, 2, " ")}</text>'
                    for name, key, v, ms in points)
    base = height - bottom
    ticks = "".join(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{base}" y2="{base + 4}" stroke="#999"/>'
                    f'<text x="{x(t):.1f}" y="{base + 16}" text-anchor="middle">{t:g}</text>' for t in _ticks(lo, hi))
    y_ticks = "".join(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{report.figure_text(metric, v, 1, " ")}</text>'
                      for v in (y_lo + pad, y_hi - pad))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(metric_words(metric))} against p50 latency">'
            f'<line x1="{left}" x2="{width - right}" y1="{base}" y2="{base}" stroke="#999"/>'
            f'<line x1="{left}" x2="{left}" y1="{top}" y2="{base}" stroke="#999"/>{ticks}{y_ticks}{marks}'
            f'<text x="{(width - right + left) / 2:.0f}" y="{height - 4}" text-anchor="middle">p50 ms (log)</text></svg>')


def _ms(v) -> str:
    return "-" if v is None else f"{v:.3g} ms"


def latency_svg(lat: dict, width: int = 640) -> str:
    """Per model: a line from the fastest run to p99, a box from p50 to p90, a mark at p50, on a log
    scale (a shared device's p99 can be a hundred times its p50). The max is printed, not drawn."""
    left, right, row = 110, 20, 52
    lat = {k: v for k, v in lat.items() if v["p50"] > 0}  # a tool that rounds to 0 ms has nothing to place on a log scale
    if not lat:
        return ""
    lo = min(v.get("min") or v["p50"] for v in lat.values() if (v.get("min") or v["p50"]) > 0) / 1.3
    hi = max(v.get("p99") or v["p50"] for v in lat.values()) * 1.3
    span = math.log(hi / lo)
    x = lambda ms: left + (width - left - right) * math.log(ms / lo) / span  # noqa: E731
    parts = []
    for i, (name, v) in enumerate(lat.items()):
        y = 16 + i * row
        colour = COLOURS.get(name, "#555")
        p50 = v["p50"]
        fast, p90, p99 = max(v.get("min") or p50, lo), v.get("p90") or p50, v.get("p99") or p50
        figures = " · ".join(f"{k} {v[k]:.3g}" for k in ("min", "p50", "p90", "p99", "max") if v.get(k) is not None)
        parts.append(f'<text x="0" y="{y + 5}">{escape(name)}</text>'
                     f'<line x1="{x(fast):.1f}" x2="{x(p99):.1f}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>'
                     f'<rect x="{x(p50):.1f}" y="{y - 8}" width="{max(1.0, x(p90) - x(p50)):.1f}" height="16" '
                     f'fill="{colour}" opacity="0.35"/><line x1="{x(p50):.1f}" x2="{x(p50):.1f}" y1="{y - 10}" '
                     f'y2="{y + 10}" stroke="{colour}" stroke-width="3"/>'
                     f'<text x="{left}" y="{y + 26}" fill="#555">{escape(figures)} ms</text>')
    height = 16 + len(lat) * row
    axis = "".join(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{height - 12}" y2="{height - 8}" stroke="#999"/>'
                   f'<text x="{x(t):.1f}" y="{height + 4}" text-anchor="middle">{t:g}</text>' for t in _ticks(lo, hi))
    return (f'<svg width="{width}" height="{height + 8}" role="img" aria-label="latency per model, ms">'
            f'<line x1="{left}" x2="{width - right}" y1="{height - 12}" y2="{height - 12}" stroke="#999"/>'
            f'{axis}{"".join(parts)}</svg><p class=note>ms, log scale; line: fastest run to p99, box: p50 to p90.</p>')


def _ticks(lo: float, hi: float) -> List[float]:
    """1-2-5 marks inside the range; only the decades when there would be too many."""
    marks = [f * 10 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for f in (1, 2, 5)]
    inside = [t for t in marks if lo <= t <= hi]
    return inside if len(inside) <= 8 else [t for t in inside if math.log10(t).is_integer()] or inside[::3]


def _rounds(m: dict) -> str:
    rounds = {k: v for k, v in (m["metrics"].get("latency_rounds") or {}).items() if v}
    if not rounds:
        return ""
    rows = [(k, " / ".join("-" if p is None else f"{p:.3g}" for p in r.get("p50_ms", [])),
             "-" if r.get("spread_pct") is None else f"{r['spread_pct']:.1f} %") for k, r in rounds.items()]
    count = next(iter(rounds.values())).get("count")
    return (f"<h2>Rounds</h2><p>The models took turns in {count} rounds, each a fresh process; each model's "
            "figures above are from its median round.</p>" + _rows(rows, ("model", "p50 per round, ms", "spread")))


def _checks(m: dict) -> str:
    acc = m["metrics"]["accuracy"]
    name = {"accuracy": "accuracy", "agreement": "agreement with the original model"}.get(
        acc["metric"], f"{metric_words(acc['metric'])} with the original model")
    fig = lambda v: report.figure_text(acc["metric"], v, 2, " ")  # noqa: E731  (R^2 and cosine are not shares)
    head = (f"<h2>Accuracy and checks</h2><p>{escape(name)} on {acc.get('samples')} held-out samples: "
            f"original {fig(acc.get('teacher'))}, compressed FP32 {fig(acc.get('student_fp32'))}, deployed "
            f"{fig(acc.get('student'))}.</p>")
    rows, checks = [], m["metrics"].get("parity") or []
    labelled = any(check.get("accuracy") is not None for check in checks)
    for check in checks:
        diffs = ", ".join(f"{o['name']} {o['max_abs_diff']:.3g}" for o in check.get("outputs", []))
        tol = ", ".join(f"{k} {v}" for k, v in (check.get("tolerance") or {}).items())
        row = (check["what"], check.get("samples"), diffs, _check_figure(check), tol)
        rows.append(row[:4] + (report._fmt_pct(check.get("accuracy")),) + row[4:] if labelled else row)
    exact = m["metrics"].get("parity_exact_int8")
    note = ("<p class=note>INT8 products were computed exactly, as the target computes them.</p>" if exact else "")
    note += ("<p class=note>Checks that name a file the bundle does not hold (original.onnx, the FP32 student) "
             "checked an intermediate file of the build, which is not shipped.</p>")
    columns = ("check", "samples", "max abs diff", "agreement", "accuracy", "tolerance")
    return head + _rows(rows, columns if labelled else columns[:4] + columns[5:]) + note


def _check_figure(check: dict) -> str:
    """The figure the check was judged by, named: top-1 agreement for a classifier, the task's own else
    (a segmenter's pixel agreement, an embedding's cosine); "-" for an FP32 file held to max |diff| alone."""
    if check.get("task_metric") is not None:
        metric, value = check["task_metric"], check.get("task_agreement")
    else:
        metric, value = "top1_agreement", check.get("top1_agreement")
    from .verify import judged_output

    words = "top-1 agreement" if metric == "top1_agreement" else metric_words(metric)
    words += judged_output(metric, [o["name"] for o in check.get("outputs") or []])
    return "-" if value is None else f"{words} {report.figure_text(metric, value, 2, ' ')}"


def _compression(m: dict) -> str:
    c = m["compression"]
    p, d, q = c["pruning"], c["distillation"], c["quantization"]
    prune_row = [(k, _value(p.get(k))) for k in ("structure", "ratio", "importance", "round_to", "iterative_steps",
                                                 "params_before", "params_after", "macs_before", "macs_after") if k in p]
    per_round = " per round" if (p.get("iterative_steps") or 1) > 1 else ""
    distill_row = [(k + (per_round if k == "steps" else " (all rounds)" if k == "seconds" and per_round else ""),
                    _value(d.get(k)))
                   for k in ("steps", "seconds", "round_seconds", "losses", "temperature", "alpha", "final_loss",
                             "teacher", "note")
                   if d.get(k) is not None]
    quant_row = ([(k, _value(v)) for k, v in q.items() if k not in ("keep_float", "qat")]
                 + _keep_float_rows(q.get("keep_float")) + _qat_rows(q.get("qat")))
    curve = [p for p in d.get("loss_curve") or [] if math.isfinite(p[2])]  # a diverged step has no place on the axis
    return ("<h2>Compression</h2><h3>Pruning</h3>" + _rows(prune_row) + "<h3>Distillation</h3>" +
            (loss_svg(curve) if len(curve) > 1 else "") + _rows(distill_row) + "<h3>Quantization</h3>" +
            _rows(quant_row))


def _qat_rows(qat) -> list:
    """quantize.method's record (qat.QatRecord) as rows in words, not the manifest's dict."""
    if not isinstance(qat, dict):
        return []
    # the quantization rows above show the profile's method; the one used is said where auto chose
    rows = [] if qat.get("setting") == qat.get("method") else [("method used", _value(qat.get("method")))]
    rows.append(("method: why", str(qat.get("reason") or "-")))
    if qat.get("steps"):
        rows += [("QAT steps", _value(qat["steps"])), ("QAT seconds", _value(qat.get("seconds"))),
                 ("QAT lr", _value(qat.get("lr"))), ("ranges trained", _value(qat.get("ranges")))]
    metric = qat.get("metric") or ""
    for key, words in (("ptq_figure", "PTQ"), ("qat_simulated", "QAT, simulated")):
        if qat.get(key) is not None:
            rows.append((f"{metric_words(metric)}, {words}", report.figure_text(metric, qat[key], 2, " ")))
    return rows


def _keep_float_rows(kf) -> list:
    """quantize.keep_float's choice as rows in words, not the manifest's dict."""
    if not isinstance(kf, dict):
        return [] if kf is None else [("keep_float", _value(kf))]
    metric = metric_words(kf.get("metric") or "")
    rows = [("keep_float", _value(kf.get("setting"))),
            ("layers kept in float", _value(kf.get("layers")) if kf.get("layers") else "none")]
    for key, words in (("int8_everywhere", "INT8 everywhere"), ("kept_in_float", "heads in float")):
        if kf.get(key) is not None:
            rows.append((f"{metric}, {words}", report.figure_text(kf.get("metric") or "", kf[key], 2, " ")))
    if kf.get("reason"):
        rows.append(("keep_float: why", str(kf["reason"])))
    return rows


def _value(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return " + ".join(map(str, v))
    return str(v)


def loss_svg(curve: List[list], width: int = 640, height: int = 180) -> str:
    """The distillation loss over the steps; a dashed line where a pruning round begins. A loss that
    falls by more than 5x is drawn on a log scale: on a linear one the first points squash the rest
    into a flat line, which cannot show whether the loss was still falling at the end."""
    left, bottom = 50, 20
    losses = [p[2] for p in curve]
    lo, hi = min(losses), max(losses)
    log_scale = lo > 0 and hi / lo > 5
    f = math.log10 if log_scale else (lambda v: v)
    span = (f(hi) - f(lo)) or 1.0
    x = lambda i: left + (width - left - 10) * i / (len(curve) - 1)  # noqa: E731
    y = lambda v: 8 + (height - bottom - 16) * (f(hi) - f(v)) / span  # noqa: E731
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(losses))
    marks = "".join(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="8" y2="{height - bottom}" stroke="#bbb" '
                    f'stroke-dasharray="4 3"/><text x="{x(i) + 3:.1f}" y="18">round {curve[i][0]}</text>'
                    for i in range(1, len(curve)) if curve[i][0] != curve[i - 1][0])
    ticks = [lo + (hi - lo) * k / 3 for k in range(4)] if not log_scale else \
        [10 ** (f(lo) + span * k / 3) for k in range(4)]
    labels = "".join(f'<text x="0" y="{y(t) + 4:.1f}">{t:.3g}</text>'
                     f'<line x1="{left - 4}" x2="{left}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#999"/>' for t in ticks)
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="distillation loss">{labels}'
            f'<line x1="{left}" x2="{left}" y1="8" y2="{height - bottom}" stroke="#999"/>{marks}'
            f'<polyline fill="none" stroke="{COLOURS["compressed"]}" stroke-width="2" points="{points}"/>'
            f'<text x="{left}" y="{height - 4}">step {curve[0][1]}</text>'
            f'<text x="{width - 10}" y="{height - 4}" text-anchor="end">step {curve[-1][1]} (round {curve[-1][0]})'
            f'</text></svg><p class=note>Training loss{" on a log scale" if log_scale else ""}, each point the mean '
            f'over the steps since the one before ({len(curve)} points; last {losses[-1]:.3g}, lowest {lo:.3g}); '
            f'a dashed line where a pruning round begins.</p>')


def _energy(m: dict) -> str:
    energy = {k: v for k, v in (m["metrics"].get("energy") or {}).items() if v}
    if not energy:
        reason = m["metrics"].get("energy_reason") or "no power source was read"
        return f"<h2>Energy</h2><p>Not measured: {escape(str(reason))}</p>"
    rows = [(k, e.get("source"), _num(e.get("mj_per_inference_total"), "mJ"), _num(e.get("mj_per_inference_net"), "mJ"),
             _num(e.get("avg_power_mw"), "mW"), _num(e.get("idle_power_mw"), "mW"), e.get("samples"),
             _num(e.get("window_s"), "s")) for k, e in energy.items()]
    return "<h2>Energy</h2>" + _rows(rows, ("model", "source", "per inference", "net of idle", "average power",
                                            "idle power", "samples", "window"))


def _num(v, unit: str) -> str:
    return "-" if v is None else f"{v:.4g} {unit}"


def _device(m: dict) -> str:
    state = m["metrics"].get("device_state") or {}
    keep = ("arch", "platform", "python", "runtime", "runtime_version", "cpu_count", "governor",
            "clocks_mhz_before", "clocks_mhz_after", "temperatures_c_before", "temperatures_c_after", "throttled",
            "throttle_reason")
    rows = [(k, state[k]) for k in keep if state.get(k) not in (None, {}, [])]
    return "<h2>Where it ran</h2>" + _rows(rows) if rows else ""
