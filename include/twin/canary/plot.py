"""The canary over time: requests, error rate, p50 latency and feedback per version, hour by hour."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from twin.canary.compare import over_time
from twin.canary.store import Feedback, ServedRequest


def plot_canary(requests: Sequence[ServedRequest], feedback: Sequence[Feedback], path: Path, *,
                title: str, bucket_s: float = 3600.0) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in tests
    import matplotlib.pyplot as plt

    buckets = over_time(requests, feedback, bucket_s=bucket_s)
    panels = [("requests", "requests"), ("error_rate", "error rate"), ("p50_ms", "p50 latency (ms)"),
              ("feedback_mean", "feedback (mean of ±1)")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 9), sharex=True)
    for version in sorted({b.version for b in buckets}):
        mine = [b for b in buckets if b.version == version]
        for ax, (key, _) in zip(axes, panels, strict=True):
            ax.plot([b.start for b in mine], [getattr(b, key) for b in mine], marker="o", label=f"v{version}")
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left")
    axes[0].set_title(title)
    fig.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path
