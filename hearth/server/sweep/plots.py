"""The sweep's figures: a heatmap per metric over the two main axes, and per-seed lines."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

LABELS = {
    "distinct_1": "distinct-1 across seeds", "distinct_2": "distinct-2 across seeds",
    "repeated_ngram_rate": "repeated 3-gram rate", "mean_tokens": "mean length (tokens)",
    "max_tokens_rate": "rate of hitting max_tokens", "mean_logprob": "mean raw logprob / token",
    "json_valid_rate": "JSON-valid rate", "tok_s": "tok/s",
}


def _grid(rows: list[dict], x: str, y: str | None, metric: str) -> tuple[list, list, np.ndarray]:
    """Mean of `metric` per (y, x) value pair, over every other axis."""
    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows}) if y else [None]
    grid = np.full((len(ys), len(xs)), np.nan)
    for j, yv in enumerate(ys):
        for i, xv in enumerate(xs):
            values = [r[metric] for r in rows if r[x] == xv and (y is None or r[y] == yv) and not math.isnan(r[metric])]
            if values:
                grid[j, i] = float(np.mean(values))
    return xs, ys, grid


def heatmaps(rows: list[dict], metrics: list[str], x: str, y: str | None, others: list[str], path: Path) -> Path:
    cols = min(4, len(metrics))
    nrows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.9 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        xs, ys, grid = _grid(rows, x, y, metric)
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
        ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys] if y else [""])
        ax.set_xlabel(x)
        ax.set_ylabel(y or "")
        ax.set_title(LABELS.get(metric, metric), fontsize=9)
        for (j, i), value in np.ndenumerate(grid):
            if not math.isnan(value):
                ax.text(i, j, f"{value:.3g}", ha="center", va="center", fontsize=7, color="white")
        fig.colorbar(image, ax=ax, shrink=0.8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    if others:
        fig.suptitle(f"means over {', '.join(others)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def seed_lines(seed_rows: list[dict], metrics: list[str], x: str, path: Path) -> Path:
    """One line per seed: how far apart the seeds of a setting fall, metric by metric."""
    seeds = sorted({r["seed"] for r in seed_rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 2.8), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for seed in seeds:
            xs, _, grid = _grid([r for r in seed_rows if r["seed"] == seed], x, None, metric)
            ax.plot(xs, grid[0], marker="o", label=f"seed {seed}")
        ax.set_xlabel(x)
        ax.set_title(LABELS.get(metric, metric), fontsize=9)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
