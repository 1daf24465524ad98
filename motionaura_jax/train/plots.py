"""Curves a person can look at: metrics.jsonl of one or more runs -> one PNG with a panel per metric."""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping, Sequence

from etils import epath

from motionaura_jax import paths
from motionaura_jax.atomic import atomic_path
from motionaura_jax.train.logging import read_metrics

X_AXES = ("step", "minutes")


def curve(lines: Sequence[Mapping], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    """(x values, values) of `key` in a run's metrics lines; x as in `plot_runs`."""
    start = min(ln["time"] for ln in lines) if lines else 0.0
    xs = [ln["step"] if x == "step" else (ln["time"] - start) / 60.0 for ln in lines if key in ln]
    return xs, [float(ln[key]) for ln in lines if key in ln]


def plot_runs(
    runs: Mapping[str, str | os.PathLike],
    keys: Sequence[str],
    out: str | os.PathLike,
    *,
    title: str | None = None,
    x: str = "step",
) -> pathlib.Path | epath.Path:
    """Plots `keys` against `x` for every run (label -> workdir) and writes `out` atomically.

    x="step", or x="minutes": wall-clock minutes since the run's first logged line (compilation and evaluation
    included), for comparing runs at equal wall time. A key missing from every run is an error naming the keys
    that do exist.
    """
    if x not in X_AXES:
        raise ValueError(f"plot_runs: x={x!r}; use one of {X_AXES}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    seen: set[str] = set()
    for label, workdir in runs.items():
        lines = read_metrics(workdir)
        if not lines:
            raise FileNotFoundError(f"no metrics in {paths.as_path(workdir) / 'metrics.jsonl'}")
        for line in lines:
            seen.update(k for k in line if k not in ("step", "time"))
        series[label] = {key: curve(lines, key, x) for key in keys}
    missing = [k for k in keys if not any(series[label][k][0] for label in series)]
    if missing:
        raise KeyError(f"metrics {missing} not found in any run; available: {sorted(seen)}")

    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for label, by_key in series.items():
            steps, values = by_key[key]
            if steps:
                ax.plot(steps, values, label=label, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("step" if x == "step" else "wall minutes")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = paths.as_path(out)  # a local file or a URL (gs://...): atomic_path uploads it whole
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return paths.native(out)
