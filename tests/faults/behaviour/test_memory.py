"""Scenario 16: a handler leaking 50 MB per call. The worker process recycles itself
past `max_memory` (or after `max_tasks_per_child` tasks), a fresh one takes over, and
the worker as a whole keeps serving: every task succeeds, once."""

from __future__ import annotations

import signal
from collections import Counter, defaultdict

import pytest

from tests.faults.behaviour.helpers import LEDGER_HELPER, ledger_lines

pytestmark = pytest.mark.timeout(90)

MANIFEST = """\
version: 1
queues:
  default: {{concurrency: 1, visibility_timeout: 5s}}
functions:
  leak: {{handler: functions/tasks.py:leak, timeout: 30s}}
workers: {{grace: 5s, heartbeat_interval: 500ms, reclaim_interval: 1s, {limit}}}
"""

TASKS = (
    LEDGER_HELPER
    + """
KEPT = []


def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def leak(payload, ctx):
    KEPT.append("x" * (50 * 2**20))  # 50 MB, every page touched, never freed
    mark(ctx.task_id, ctx.attempt, "done", round(rss_mb(), 1))
    return len(KEPT)
"""
)
LEAK_MB = 50


def run_leaks(stack, procs, wait_for, limit: str, n: int):
    s = stack(MANIFEST.format(limit=limit), {"functions/tasks.py": TASKS})
    client = s.client()
    sup = s.workers(1)
    ids = [client.submit("leak", {}) for _ in range(n)]
    wait_for(lambda: all(client.get(t).state == "succeeded" for t in ids), 60,
             f"{n} leaking tasks to succeed")  # fmt: skip
    alive = sup.poll() is None
    sup.send_signal(signal.SIGTERM)
    procs.wait_exit(sup, 15)
    procs.assert_no_orphans(s.root)
    # ledger line: task attempt "done" rss pid time
    done = ledger_lines(s.ledger)
    per_pid: dict[str, list[float]] = defaultdict(list)
    for line in done:
        per_pid[line[4]].append(float(line[3]))
    dup = sum(c - 1 for c in Counter(x[0] for x in done).values())
    lost = len(set(ids) - {x[0] for x in done})
    return s, ids, per_pid, dup, lost, alive


def test_worker_process_recycles_past_max_memory(stack, procs, wait_for, fault_report):
    limit_mb = 200
    _, ids, per_pid, dup, lost, alive = run_leaks(
        stack, procs, wait_for, f"max_memory: {limit_mb}MiB", 12
    )
    peak = max(max(v) for v in per_pid.values())
    fault_report(
        "16a", "memory: 50 MB leak per call, max_memory 200MiB",
        accepted=len(ids), lost=lost, dup=dup, processes=len(per_pid),
        tasks_per_process=[len(v) for v in per_pid.values()], peak_rss_mb=peak,
        limit_mb=limit_mb,
    )  # fmt: skip
    assert lost == 0 and dup == 0 and alive
    assert len(per_pid) >= 3  # recycled, again and again
    for rss in per_pid.values():
        # At most one task runs in a process already over the limit: the one that
        # crossed it. No task starts in a process over the limit.
        assert sum(1 for r in rss if r > limit_mb) <= 1, per_pid
    assert peak <= limit_mb + LEAK_MB + 10


def test_worker_process_recycles_after_max_tasks_per_child(stack, procs, wait_for, fault_report):
    _, ids, per_pid, dup, lost, alive = run_leaks(
        stack, procs, wait_for, "max_tasks_per_child: 3", 9
    )
    fault_report(
        "16b", "memory: 50 MB leak per call, max_tasks_per_child 3",
        accepted=len(ids), lost=lost, dup=dup, processes=len(per_pid),
        tasks_per_process=[len(v) for v in per_pid.values()],
        peak_rss_mb=max(max(v) for v in per_pid.values()),
    )  # fmt: skip
    assert lost == 0 and dup == 0 and alive
    assert sorted(len(v) for v in per_pid.values()) == [3, 3, 3]
