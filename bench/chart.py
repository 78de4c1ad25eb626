"""The bar chart of the results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PANELS = (
    ("enqueue_per_s", "enqueue, tasks/s (per task)"),
    ("enqueue_bulk_per_s", "enqueue, tasks/s (bulk API)"),
    ("drain_per_s", "drain, tasks/s"),
    ("p99_ms", "latency p99, ms (lower is better)"),
)


def write_chart(result: dict[str, Any], path: Path) -> str | None:
    """Draw the chart to `path`; returns why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    systems = {n: s for n, s in result["systems"].items() if "skipped" not in s}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    flat = list(axes.flat)
    for ax, (figure, title) in zip(flat, PANELS, strict=False):
        _bars(ax, systems, figure, title)
    _http(flat[4], result["http"])
    _scaling(flat[5], result["scaling"])
    m = result["machine"]
    fig.suptitle(
        f"dtqs and peers — {m['cpu']}, {m['cores']} cores, {m['redis']}, "
        f"median of {m['plan']['runs']} run(s)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _bars(ax: Any, systems: dict[str, Any], figure: str, title: str) -> None:
    names = [n for n, s in systems.items() if s.get(figure)]
    values = [systems[n][figure] for n in names]
    ranges = [systems[n]["range"].get(figure) or [v, v] for n, v in zip(names, values, strict=True)]
    lows = [v - r[0] for v, r in zip(values, ranges, strict=True)]
    highs = [r[1] - v for v, r in zip(values, ranges, strict=True)]
    colors = ["tab:red" if n.startswith("dtqs") else "tab:gray" for n in names]
    ax.barh(names, values, xerr=[lows, highs], color=colors, capsize=3)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    if figure.endswith("_ms"):
        ax.set_xscale("log")
    for y, (v, r) in enumerate(zip(values, ranges, strict=True)):
        ax.annotate(
            f"{v:,.0f}" if v >= 10 else f"{v:.2f}",
            (r[1], y),  # past the error bar, so the two do not overlap
            fontsize=8,
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
        )


def _http(ax: Any, http: dict[str, Any]) -> None:
    names = [n for n, h in http.items() if isinstance(h, dict) and h.get("tasks_per_s")]
    values = [http[n]["tasks_per_s"] for n in names]
    ax.barh(names, values, color=["tab:gray" if n.startswith("bare") else "tab:red" for n in names])
    ax.invert_yaxis()
    ax.set_title("HTTP submit, tasks/s", fontsize=10)
    for y, v in enumerate(values):
        ax.annotate(
            f"{v:,.0f}", (v, y), fontsize=8, xytext=(3, 0), textcoords="offset points", va="center"
        )


def _scaling(ax: Any, scaling: dict[str, Any]) -> None:
    labels, values = [], []
    for axis in ("processes", "queues", "concurrency"):
        for value, s in scaling.get(axis, {}).items():
            if s.get("drain_per_s"):
                labels.append(f"{axis} {value}")
                values.append(s["drain_per_s"])
    ax.barh(labels, values, color="tab:red")
    ax.invert_yaxis()
    ax.set_title("dtqs drain scaling, tasks/s", fontsize=10)
