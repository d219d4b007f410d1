"""Loss curves as a picture (matplotlib, from ``anytune[local]``; imported only when asked for)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anytune._types import MetricPoint
from anytune.errors import ConfigError, MissingDependencyError


def _pyplot(purpose: str) -> Any:
    """matplotlib's pyplot on the file-only backend (no display needed, none opened)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "local", purpose) from exc
    return plt


def plot_loss(points: Sequence[MetricPoint], path: str | Path, *, title: str | None = None) -> Path:
    """Write train and validation loss against step to ``path`` (PNG, SVG or PDF by its suffix).

    Raises:
        MissingDependencyError: matplotlib is not installed.
        ConfigError: there is no loss to plot.
    """
    plt = _pyplot("plotting loss curves")

    train = [(p.step, p.train_loss) for p in points if p.train_loss is not None]
    valid = [(p.step, p.valid_loss) for p in points if p.valid_loss is not None]
    if not train and not valid:
        raise ConfigError("the job has no loss values to plot yet", field="metrics")
    out = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    try:
        if train:
            ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1.5)
        if valid:
            ax.plot(*zip(*valid, strict=True), label="valid loss", marker="o", linewidth=1.5)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if title:
            ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def plot_evaluation(summary: dict[str, dict[str, float]], path: str | Path, *, title: str | None = None) -> Path:
    """Bars of each metric, base model beside fine-tuned model (an :class:`~anytune.EvalReport`'s
    ``summary``), written like :func:`plot_loss`. Perplexity gets its own axis: its scale is not 0..1."""
    plt = _pyplot("plotting evaluation results")

    roles = [r for r in ("base", "fine-tuned") if summary.get(r)]
    metrics = list(dict.fromkeys(m for r in roles for m in summary[r]))
    if not metrics:
        raise ConfigError("the evaluation has no results to plot", field="metrics")
    groups = [
        [m for m in metrics if m not in ("loss", "perplexity")],
        [m for m in metrics if m in ("loss", "perplexity")],
    ]
    groups = [g for g in groups if g]
    out = Path(path)
    fig, axes = plt.subplots(1, len(groups), figsize=(4 + 2 * len(metrics), 4), dpi=120, squeeze=False)
    try:
        width = 0.8 / len(roles)
        for ax, group in zip(axes[0], groups, strict=True):
            for k, role in enumerate(roles):
                values = [summary[role].get(m, 0.0) for m in group]
                ax.bar([i + k * width for i in range(len(group))], values, width, label=role)
            ax.set_xticks([i + width * (len(roles) - 1) / 2 for i in range(len(group))], group)
            ax.grid(True, axis="y", alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
