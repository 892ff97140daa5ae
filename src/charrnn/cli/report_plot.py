"""charrnn-report's ``report.png``: best val/bpc against each swept parameter, and the validation curves."""

from __future__ import annotations

import math
from pathlib import Path

from charrnn.cli.report_jobs import Job


def as_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def write_plot(path: Path, keys: list[str], jobs: list[Job], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [j for j in jobs if j.best is not None]
    panels = len(keys) + 1
    cols = min(panels, 3)
    nrows = math.ceil(panels / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.2 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax, key in zip(flat, keys):
        values = [j.overrides.get(key, "") for j in scored]
        numbers = [as_number(v) for v in values]
        colors = [
            "tab:red"
            if j.status in ("failed", "cancelled")
            else "tab:blue"
            if j.status == "done"
            else "tab:orange"
            for j in scored
        ]
        if len(set(values)) > 6 and all(
            n is not None for n in numbers
        ):  # a continuous search (optuna): a numeric axis
            xs: list[float] = [float(n) for n in numbers if n is not None]
            if min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
        else:  # a grid or a choice: one column per value, numbers in numeric order
            categories = sorted(set(values), key=lambda v: (as_number(v) is None, as_number(v) or 0.0, v))
            xs = [float(categories.index(v)) for v in values]
            ax.set_xticks(
                range(len(categories)),
                categories,
                rotation=30 if max(map(len, categories), default=0) > 6 else 0,
            )
            ax.set_xlim(-0.5, max(len(categories), 1) - 0.5)
        ax.scatter(xs, [j.best for j in scored], c=colors)
        for x, j in zip(xs, scored):
            ax.annotate(str(j.num), (x, j.best), textcoords="offset points", xytext=(5, 3), fontsize=7)
        ax.set(xlabel=key, ylabel="best val/bpc")
        ax.grid(alpha=0.3)
    curves = flat[len(keys)]
    for j in jobs:
        if j.curve:
            label = f"{j.num}: " + ", ".join(f"{k}={j.overrides.get(k, '')}" for k in keys)
            curves.plot(
                [s for s, _ in j.curve], [v for _, v in j.curve], marker="o", markersize=3, label=label[:60]
            )
    curves.set(xlabel="step", ylabel="val/bpc", title="validation curves")
    curves.grid(alpha=0.3)
    if any(j.curve for j in jobs):
        curves.legend(fontsize=7)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
