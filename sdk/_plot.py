"""Loss curves as a picture (matplotlib, from ``anytune[local]``; imported only when asked for)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anytune._types import MetricPoint
from anytune.errors import ConfigError, MissingDependencyError


def plot_loss(points: Sequence[MetricPoint], path: str | Path, *, title: str | None = None) -> Path:
    """Write train and validation loss against step to ``path`` (PNG, SVG or PDF by its suffix).

    Raises:
        MissingDependencyError: matplotlib is not installed.
        ConfigError: there is no loss to plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed, none opened
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "local", "plotting loss curves") from exc

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
