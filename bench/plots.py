"""The benchmark plots in docs/images, redrawn by every full run (matplotlib, no screen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def draw(results: dict[str, dict[str, Any]], out: Path = IMAGES) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    if "push_vs_poll" in results:
        drawn.append(_latency(results["push_vs_poll"], out / "bench-latency-cdf.png"))
    if "throughput" in results:
        drawn.append(_throughput(results["throughput"], out / "bench-throughput.png"))
    return drawn


def _latency(result: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=110)
    for peer, data in result["peers"].items():
        values = sorted(max(v, 0.01) for v in data["created_s"])
        shares = [(i + 1) / len(values) for i in range(len(values))]
        label = f"{data['label']} (p50 {data['created_p50_s']:.1f} s)"
        width = 2.0 if peer == "push" else 1.3
        axes.step(values, shares, where="post", label=label, linewidth=width)
    axes.set_xscale("log")
    axes.set_xlabel("job end → consumer DAG run created (seconds, log scale)")
    axes.set_ylabel("share of jobs")
    axes.set_title(f"Push against polling: {result['jobs']} Azure ML jobs, Airflow 3")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _throughput(result: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    levels = [row["concurrency"] for row in result["levels"]]
    positions = range(len(levels))
    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    width = 0.38
    bridge = [row["bridge_per_s"] for row in result["levels"]]
    raw = [row["raw_per_s"] for row in result["levels"]]
    axes.bar([p - width / 2 for p in positions], raw, width, label="raw POST /assets/events")
    axes.bar([p + width / 2 for p in positions], bridge, width, label="through the bridge")
    for p, row in zip(positions, result["levels"], strict=True):
        axes.annotate(f"{row['ratio']:.2f}x", (p + width / 2, row["bridge_per_s"]),
                      ha="center", va="bottom", fontsize=8)  # fmt: skip
    axes.set_xticks(list(positions), [f"{level} at once" for level in levels])
    axes.set_ylabel("asset events per second")
    axes.set_title("Throughput against Airflow's own (2 cores, shared)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
