"""Runs -> medians (with min and max) -> the JSON, the markdown table and the ratios.

JSON shape: ``{"machine": {...}, "systems": {name: {"enqueue_per_s", "enqueue_bulk_per_s",
"drain_per_s", "p50_ms", "p99_ms", "rss_mb", ...}}, "http": {...}, "scaling": {...}}``.
Each figure is the median over the runs; ``range`` holds [min, max] of the same figure.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from bench.systems import WorkerConfig

#: The six figures of a system, and whether more is better.
FIGURES = {
    "enqueue_per_s": True,
    "enqueue_bulk_per_s": True,
    "drain_per_s": True,
    "p50_ms": False,
    "p99_ms": False,
    "rss_mb": False,
}
Run = dict[str, Any]


def spread(values: Sequence[float | None]) -> tuple[float | None, list[float]]:
    """Median and [min, max] of the values that were measured."""
    got = sorted(v for v in values if v is not None)
    if not got:
        return None, []
    return round(statistics.median(got), 3), [got[0], got[-1]]


def _dig(run: Run, *path: str) -> Any:
    node: Any = run
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _per_run(cfg: WorkerConfig, first: str) -> dict[str, Callable[[Run], Any]]:
    """Where each figure of `cfg` lives in one run; enqueue is measured on the lib's first row."""
    return {
        "enqueue_per_s": lambda r: _dig(r, "systems", first, "enqueue", "per_s"),
        "enqueue_bulk_per_s": lambda r: _dig(r, "systems", first, "bulk", "per_s"),
        "drain_per_s": lambda r: _dig(r, "systems", cfg.name, "drain", "per_s"),
        "p50_ms": lambda r: _dig(r, "systems", cfg.name, "latency", "p50_ms"),
        "p99_ms": lambda r: _dig(r, "systems", cfg.name, "latency", "p99_ms"),
        "rss_mb": lambda r: _dig(r, "systems", cfg.name, "memory", "per_worker_mb"),
    }


def system_entry(cfg: WorkerConfig, first: str, runs: Sequence[Run]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    ranges: dict[str, list[float]] = {}
    for figure, get in _per_run(cfg, first).items():
        entry[figure], ranges[figure] = spread([get(r) for r in runs])
    rows = [_dig(r, "systems", cfg.name) or {} for r in runs]
    errors = [row["error"] for row in rows if "error" in row]
    bulk_errors = [_dig(row, "bulk", "error") for row in rows if _dig(row, "bulk", "error")]
    entry.update(
        {
            "range": ranges,
            "label": cfg.label,
            "command": next((row["command"] for row in rows if "command" in row), None),
            "runs_ok": len(rows) - len(errors),
            "n": next((_dig(row, "drain", "n") for row in rows if "drain" in row), None),
            "startup_s": spread([_dig(row, "drain", "startup_s") for row in rows])[0],
            "steady_per_s": spread([_dig(row, "drain", "steady_per_s") for row in rows])[0],
            "redis_cpu_us_per_task": spread(
                [_dig(row, "drain", "redis_cpu_us_per_task") for row in rows]
            )[0],
            "rss_total_mb": spread([_dig(row, "memory", "total_mb") for row in rows])[0],
            "bulk_api": next(
                (
                    _dig(r, "systems", first, "bulk", "api")
                    for r in runs
                    if _dig(r, "systems", first, "bulk", "api")
                ),
                None,
            ),
            "latency_samples": next(
                (_dig(row, "latency", "samples") for row in rows if "latency" in row), None
            ),
            "think_time": next(
                (_dig(row, "latency", "think_time") for row in rows if "latency" in row), None
            ),
        }
    )
    if first != cfg.name:
        entry["enqueue_measured_with"] = first
    if errors or bulk_errors:
        entry["errors"] = errors + bulk_errors
    return entry


def systems_section(
    configs: Sequence[WorkerConfig], runs: Sequence[Run], skipped: dict[str, str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    first_of: dict[str, str] = {}
    for cfg in configs:
        if cfg.lib in skipped:
            out[cfg.name] = {
                **dict.fromkeys(FIGURES),
                "label": cfg.label,
                "skipped": skipped[cfg.lib],
            }
            continue
        first = first_of.setdefault(cfg.lib, cfg.name)
        out[cfg.name] = system_entry(cfg, first, runs)
    return out


def http_section(runs: Sequence[Run]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = dict.fromkeys(name for r in runs for name in r.get("http", {}))
    for name in names:
        rows = [r["http"][name] for r in runs if name in r.get("http", {})]
        entry: dict[str, Any] = {"range": {}}
        for figure in ("requests_per_s", "tasks_per_s", "p50_ms", "p99_ms"):
            entry[figure], entry["range"][figure] = spread([row.get(figure) for row in rows])
        entry["errors"] = sum(row.get("errors", 0) for row in rows)
        entry["tasks_stored"] = [row.get("tasks_stored") for row in rows]
        failures = [row["error"] for row in rows if "error" in row]
        if failures:
            entry["failures"] = failures
        entry["command"] = next((row["command"] for row in rows if "command" in row), None)
        entry["loadgen"] = next((row["loadgen"] for row in rows if "loadgen" in row), None)
        out[name] = entry
    bare = _dig(out, "bare_lpush", "requests_per_s")
    single = _dig(out, "dtqs_submit", "requests_per_s")
    if bare and single:
        out["submit_vs_bare"] = round(single / bare, 3)
    return out


def scaling_section(runs: Sequence[Run], command: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"command": command}
    for axis in ("processes", "queues", "concurrency"):
        values = dict.fromkeys(v for r in runs for v in _dig(r, "scaling", axis) or {})
        axis_out: dict[str, Any] = {}
        for value in values:
            rows = [_dig(r, "scaling", axis, value) or {} for r in runs]
            median, rng = spread([row.get("per_s") for row in rows])
            axis_out[value] = {
                "drain_per_s": median,
                "range": rng,
                "rss_mb": spread([row.get("rss_mb") for row in rows])[0],
                "n": next((row["n"] for row in rows if "n" in row), None),
                "command": next((row["command"] for row in rows if "command" in row), None),
            }
            failures = [row["error"] for row in rows if "error" in row]
            if failures:
                axis_out[value]["errors"] = failures
        out[axis] = axis_out
    one = _dig(out, "processes", "1", "drain_per_s")
    two = _dig(out, "processes", "2", "drain_per_s")
    if one and two:
        out["two_vs_one_process"] = round(two / one, 3)
    return out


def fastest_peer(systems: dict[str, Any], figure: str) -> tuple[str, float] | None:
    """The best peer (not a dtqs row) for one figure."""
    more_is_better = FIGURES[figure]
    found = [
        (name, s[figure])
        for name, s in systems.items()
        if not name.startswith("dtqs") and s.get(figure)
    ]
    if not found:
        return None
    return max(found, key=lambda x: x[1]) if more_is_better else min(found, key=lambda x: x[1])


def advantage(value: float | None, best: float, figure: str) -> float | None:
    """How many times better than the best peer (> 1: dtqs is better)."""
    if not value or not best:
        return None
    return value / best if FIGURES[figure] else best / value
