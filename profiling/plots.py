"""PNG plots of a sweep's summary: where the time goes, and how it scales with concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator, ScalarFormatter

from cvserve.profiling.attribution import END_TO_END
from cvserve.profiling.categories import CATEGORIES, COLOURS

SHARES_PNG, CONCURRENCY_PNG = "shares.png", "concurrency.png"


def plot_shares(summary: dict[str, Any], path: Path) -> Path:
    """Stacked bars: each category's share of end-to-end time per image size and placement,
    one panel per concurrency (the paper's breakdown figure)."""
    points = [p for p in summary["points"] if p["categories"]]
    levels = sorted({p["concurrency"] for p in points}) or [1]
    fig, axes = plt.subplots(
        1, len(levels), figsize=(max(6, 3.2 * len(levels) + 2), 4.8), sharey=True, squeeze=False
    )
    for ax, level in zip(axes[0], levels, strict=True):
        mine = [p for p in points if p["concurrency"] == level]
        labels = [f"{p['size']}\n{p['placement']}" for p in mine]
        bottom = [0.0] * len(mine)
        for category in CATEGORIES:
            values = [100 * p["categories"][category]["share"] for p in mine]
            ax.bar(
                labels,
                values,
                bottom=bottom,
                color=COLOURS.get(category),
                label=category.replace("_", " "),
            )
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_title(f"concurrency {level}")
        ax.tick_params(axis="x", labelsize=7, rotation=45)
    axes[0][0].set_ylabel("share of end-to-end latency (%)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.suptitle(f"{summary['pipeline']}: where a request's time goes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_concurrency(summary: dict[str, Any], path: Path) -> Path:
    """Throughput and p99 latency against concurrency, one line per placement and size."""
    points = [p for p in summary["points"] if p["categories"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    series = sorted({(p["placement"], p["size"]) for p in points})
    for placement, size in series:
        mine = sorted(
            (p for p in points if (p["placement"], p["size"]) == (placement, size)),
            key=lambda p: p["concurrency"],
        )
        xs = [p["concurrency"] for p in mine]
        label = f"{placement} {size}"
        left.plot(xs, [p["images_per_s"] for p in mine], marker="o", label=label)
        right.plot(xs, [p["categories"][END_TO_END]["p99_ms"] for p in mine], marker="o")
    levels = sorted({p["concurrency"] for p in points})
    for ax, title in ((left, "throughput (images/s)"), (right, "p99 latency (ms)")):
        ax.set_xlabel("concurrency (clients in flight)")
        ax.set_title(title)
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle(f"{summary['pipeline']}: scaling with concurrency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(summary: dict[str, Any], folder: Path) -> list[Path]:
    return [
        plot_shares(summary, folder / SHARES_PNG),
        plot_concurrency(summary, folder / CONCURRENCY_PNG),
    ]
