"""The results as markdown: the table, ratios to the fastest peer, targets, HTTP, scaling."""

from __future__ import annotations

from typing import Any

from bench.report import FIGURES, advantage, fastest_peer

HEADS = {
    "enqueue_per_s": "enqueue/s",
    "enqueue_bulk_per_s": "bulk enqueue/s",
    "drain_per_s": "drain/s",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "rss_mb": "RSS MB/proc",
}
#: Said of a --quick run, whose figures mean little.
QUICK_NOTE = "--quick (one run, small N: a smoke test of the harness, not figures)"


def number(value: float | None, figure: str) -> str:
    if value is None:
        return "–"
    if figure.endswith("_ms"):
        return f"{value:,.2f}"
    if figure.startswith("rss"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def cell(value: float | None, rng: list[float] | None, figure: str) -> str:
    text = number(value, figure)
    if value is not None and rng and rng[0] != rng[1]:
        text += f" ({number(rng[0], figure)}–{number(rng[1], figure)})"
    return text


def systems_table(systems: dict[str, Any]) -> list[str]:
    lines = ["| system | " + " | ".join(HEADS.values()) + " |", "|---" * (len(HEADS) + 1) + "|"]
    for name, s in systems.items():
        if "skipped" in s:
            lines.append(f"| {name} | skipped: {s['skipped']} |" + " |" * (len(HEADS) - 1))
            continue
        cells = [cell(s.get(f), s.get("range", {}).get(f), f) for f in FIGURES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def drain_table(systems: dict[str, Any]) -> list[str]:
    """What the drain figure is made of: start-up, the steady rate, Redis CPU per task."""
    head = "| system | N | drain/s | steady/s (after 1st task) | start-up s | Redis CPU µs/task |"
    lines = [head, "|---|---|---|---|---|---|"]
    for name, s in systems.items():
        if s.get("drain_per_s") is None:
            continue
        lines.append(
            f"| {name} | {s['n']:,} | {number(s['drain_per_s'], 'x')} "
            f"| {number(s.get('steady_per_s'), 'x')} | {number(s.get('startup_s'), 'x_ms')} "
            f"| {number(s.get('redis_cpu_us_per_task'), 'x')} |"
        )
    return lines


def ratio_table(systems: dict[str, Any]) -> list[str]:
    rows = [name for name in systems if name.startswith("dtqs") and "skipped" not in systems[name]]
    lines = [
        "| figure | fastest peer | " + " | ".join(f"{r} (× better)" for r in rows) + " |",
        "|---|---|" + "---|" * len(rows),
    ]
    for figure in FIGURES:
        best = fastest_peer(systems, figure)
        if best is None:
            continue
        cells = []
        for r in rows:
            value = systems[r].get(figure)
            times = advantage(value, best[1], figure)
            cells.append(f"{number(value, figure)} ({times:.2f}×)" if times else "–")
        lines.append(
            f"| {HEADS[figure]} | {best[0]}: {number(best[1], figure)} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def _check(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def targets_table(result: dict[str, Any]) -> list[str]:
    """The targets of issue 5, checked against the dtqs row (sync handler)."""
    systems, http, scaling = result["systems"], result["http"], result["scaling"]
    d = systems.get("dtqs", {})

    def vs_best(figure: str, times: float) -> tuple[str, bool | None]:
        best = fastest_peer(systems, figure)
        adv = advantage(d.get(figure), best[1], figure) if best else None
        return (f"{adv:.2f}×" if adv else "–"), (adv >= times if adv else None)

    rows: list[tuple[str, str, bool | None]] = []
    text, ok = vs_best("drain_per_s", 5)
    rows.append(("drain ≥ 5× fastest peer", text, ok))
    drain = d.get("drain_per_s")
    rows.append(
        (
            "drain ≥ 20,000/s (2 processes)",
            number(drain, "drain_per_s"),
            drain >= 20_000 if drain else None,
        )
    )
    text, ok = vs_best("enqueue_per_s", 3)
    rows.append(("enqueue per task ≥ 3× fastest peer", text, ok))
    bulk = d.get("enqueue_bulk_per_s")
    rows.append(
        ("bulk enqueue ≥ 50,000/s", number(bulk, "drain_per_s"), bulk >= 50_000 if bulk else None)
    )
    p99 = d.get("p99_ms")
    peers = [
        s["p99_ms"] for n, s in systems.items() if not n.startswith("dtqs") and s.get("p99_ms")
    ]
    rows.append(
        (
            "p99 below every peer and < 5 ms",
            number(p99, "p99_ms"),
            (p99 < 5 and all(p99 < x for x in peers)) if p99 else None,
        )
    )
    ratio = http.get("submit_vs_bare")
    rows.append(
        (
            "POST /v1/tasks ≥ 75% of bare Falcon+LPUSH",
            f"{ratio:.0%}" if ratio else "–",
            ratio >= 0.75 if ratio else None,
        )
    )
    batch = http.get("dtqs_batch", {}).get("tasks_per_s")
    rows.append(
        (
            "batch endpoint ≥ 20,000 tasks/s",
            number(batch, "drain_per_s"),
            batch >= 20_000 if batch else None,
        )
    )
    two = scaling.get("two_vs_one_process")
    rows.append(
        ("2 processes ≥ 1.7× one", f"{two:.2f}×" if two else "–", two >= 1.7 if two else None)
    )
    rss = d.get("rss_mb")
    rows.append(
        ("worker RSS ≤ 60 MB per process", number(rss, "rss_mb"), rss <= 60 if rss else None)
    )
    lines = ["| target | dtqs | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {_check(ok)} |" for name, value, ok in rows]
    return lines


def http_table(http: dict[str, Any]) -> list[str]:
    lines = [
        "| endpoint | requests/s | tasks/s | p50 ms | p99 ms | errors | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, h in http.items():
        if not isinstance(h, dict):
            continue
        rng = h.get("range", {})
        if h.get("requests_per_s") is None:
            lines.append(
                f"| {name} | failed: {'; '.join(h.get('failures', []))[:200]} |||||"
                f" `{h.get('command')}` |"
            )
            continue
        lines.append(
            f"| {name} | {cell(h['requests_per_s'], rng.get('requests_per_s'), 'x_per_s')} "
            f"| {cell(h['tasks_per_s'], rng.get('tasks_per_s'), 'x_per_s')} "
            f"| {number(h['p50_ms'], 'p50_ms')} | {number(h['p99_ms'], 'p99_ms')} "
            f"| {h['errors']} | `{h['command']}` |"
        )
    return lines


def scaling_table(scaling: dict[str, Any]) -> list[str]:
    lines = ["| dtqs drain | tasks/s | RSS MB/proc | command |", "|---|---|---|---|"]
    for axis in ("processes", "queues", "concurrency"):
        for value, s in scaling.get(axis, {}).items():
            figure = cell(s.get("drain_per_s"), s.get("range"), "drain_per_s")
            if s.get("errors"):
                figure += f" ({len(s['errors'])} failed: {s['errors'][0][:120]})"
            lines.append(
                f"| {axis} = {value} | {figure} | {number(s.get('rss_mb'), 'rss_mb')} "
                f"| `{s.get('command')}` |"
            )
    return lines


def redis_table(bench: dict[str, Any]) -> list[str]:
    if "skipped" in bench:
        return [f"redis-benchmark skipped: {bench['skipped']}"]
    p1, p16 = bench.get("P1", {}), bench.get("P16", {})
    lines = [
        f"`{bench.get('command')}`, 50 clients:",
        "",
        "| op | -P 1 req/s | -P 16 req/s |",
        "|---|---|---|",
    ]
    for op in dict.fromkeys([*p1, *p16]):
        if op == "error":
            continue
        lines.append(f"| {op.upper()} | {number(p1.get(op), 'x')} | {number(p16.get(op), 'x')} |")
    return lines


def commands_list(systems: dict[str, Any]) -> list[str]:
    lines = []
    for name, s in systems.items():
        if s.get("command"):
            lines.append(f"- **{name}** ({s['label']}): `{s['command']}`")
            if s.get("bulk_api"):
                lines.append(f"  - bulk: {s['bulk_api']}")
    return lines


def header(m: dict[str, Any]) -> list[str]:
    plan = m["plan"]
    caps = ", ".join(f"{k} {v:,}" for k, v in plan["n_caps"].items())
    return [
        f"{m['when']} on {m['cpu']} ({m['cores']} cores), {m['memory_gb']} GiB, {m['os']}, "
        f"Python {m['python']}, {m['redis']} (private, no RDB/AOF, shared by every system).",
        f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.",
        f"Mode: {QUICK_NOTE if plan['quick'] else 'full'}; each figure is the median of "
        f"{plan['runs']} run(s) (min–max); N = {plan['n']:,}"
        + (f" ({caps})" if caps else "")
        + f"; latency: {plan['latency_samples']} samples (arq {plan['arq_latency_samples']}); "
        f"the whole run took {m.get('seconds', 0):.0f} s.",
    ]


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        "# dtqs beside Celery, RQ, Dramatiq, arq and Huey",
        "",
        *header(m),
        "",
        *systems_table(result["systems"]),
        "",
        "## Drain detail",
        "",
        *drain_table(result["systems"]),
        "",
        "## dtqs against the fastest peer per figure",
        "",
        *ratio_table(result["systems"]),
        "",
        "## Targets (issue 5)",
        "",
        *targets_table(result),
        "",
        f"## HTTP submit ({result['http'].get('dtqs_submit', {}).get('loadgen') or 'n/a'})",
        "",
        *http_table(result["http"]),
        "",
        "## dtqs scaling (sync handler)",
        "",
        *scaling_table(result["scaling"]),
        "",
        "## Redis ceiling",
        "",
        *redis_table(m["redis_benchmark"]),
        "",
        "## Worker command lines",
        "",
        *commands_list(result["systems"]),
    ]
    notes = m.get("notes", [])
    if notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"
