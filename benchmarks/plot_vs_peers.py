"""Draw benchmarks/results/vs_peers.json as accuracy against p50 latency, one PNG per model.

  pip install -e '.[bench]'      # matplotlib
  python benchmarks/plot_vs_peers.py [--results benchmarks/results/vs_peers.json]

Writes benchmarks/results/vs_peers_<model>.png beside the results. The latency axis is logarithmic (Olive's
dynamic quantization is 20x slower than the rest); the dashed line is one point below the FP32 original,
the issue's accuracy floor."""
import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def plot(rows: list, model: str, out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on a build host
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["model"] == model and r.get("failed") is None and r.get("p50_ms")]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for i, r in enumerate(sorted(mine, key=lambda r: r["p50_ms"])):
        ours = r["row"].startswith("edgecompress")
        ax.scatter(r["p50_ms"], 100 * r["accuracy"], s=60 if ours else 40, marker="*" if ours else "o",
                   color="tab:red" if ours else "tab:blue", zorder=3)
        ax.annotate(r["row"], (r["p50_ms"], 100 * r["accuracy"]), textcoords="offset points", xytext=(6, 4 if i % 2 else -11),
                    fontsize=8)
    original = next((r for r in mine if r["row"] == "fp32"), None)
    if original:
        ax.axhline(100 * original["accuracy"] - 1, color="grey", linestyle="--", linewidth=1)
        ax.annotate("1 point below the original", (max(r["p50_ms"] for r in mine), 100 * original["accuracy"] - 1),
                    textcoords="offset points", xytext=(0, -11), fontsize=7, color="grey", ha="right")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, ms (log scale)")
    ax.set_ylabel("held-out accuracy, %")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", linewidth=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=HERE / "results" / "vs_peers.json")
    args = ap.parse_args()
    data = json.loads(args.results.read_text())
    cpu = data.get("cpu") or data.get("cpu (added after the run, same host)") or {}
    for model in sorted({r["model"] for r in data["rows"]}):
        title = (f"{model}: ONNX Runtime, {data.get('threads', '?')} thread(s), {data.get('runs', '?')} runs each, "
                 f"{cpu.get('model', 'unknown CPU')}")
        print(plot(data["rows"], model, args.results.parent / f"vs_peers_{model}.png", title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
