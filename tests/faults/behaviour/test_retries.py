"""Scenarios 13 and 14: retry timing follows the backoff policy, and a handler that
always fails runs max_attempts times, then is dead-lettered with its last error."""

from __future__ import annotations

import pytest

from tests.faults.behaviour.helpers import LEDGER_HELPER, ledger_lines, settle

pytestmark = pytest.mark.timeout(90)

MANIFEST = """\
version: 1
queues:
  default: {concurrency: 4, visibility_timeout: 5s}
functions:
  flaky:
    handler: functions/tasks.py:flaky
    retry: {max_attempts: 5, backoff: exponential, initial_delay: 500ms, max_delay: 10s,
            jitter: false}
  doomed:
    handler: functions/tasks.py:doomed
    retry: {max_attempts: 4, backoff: fixed, initial_delay: 200ms, jitter: false}
workers: {grace: 5s, heartbeat_interval: 500ms, reclaim_interval: 1s}
"""

TASKS = (
    LEDGER_HELPER
    + """

def flaky(payload, ctx):
    mark(ctx.task_id, ctx.attempt, "start")
    if ctx.attempt <= 2:
        mark(ctx.task_id, ctx.attempt, "fail")
        raise RuntimeError(f"flaky failure number {ctx.attempt}")
    mark(ctx.task_id, ctx.attempt, "done")
    return {"attempt": ctx.attempt}


def _deep(n):
    if n == 0:
        raise ValueError("doomed " + "x" * 50_000)
    return _deep(n - 1)


def doomed(payload, ctx):
    mark(ctx.task_id, ctx.attempt, "start")
    _deep(300)
"""
)


def test_retry_timing_follows_the_backoff_policy(stack, wait_for, fault_report):
    s = stack(MANIFEST, {"functions/tasks.py": TASKS})
    client = s.client()
    s.workers(1)
    task = client.submit("flaky", {})
    info = client.wait(task, timeout=30)
    settle(1.5)  # no further run may follow the success

    lines = [x for x in ledger_lines(s.ledger) if x[0] == task]
    starts = [float(x[4]) for x in lines if x[2] == "start"]
    fails = [float(x[4]) for x in lines if x[2] == "fail"]
    gaps = [round(starts[i + 1] - fails[i], 3) for i in range(len(fails))]
    expected = [0.5, 1.0]  # initial_delay * 2**(attempt-1), no jitter
    fault_report(
        13, "retry timing: fails twice, then succeeds",
        accepted=1, lost=0 if info.state == "succeeded" else 1, dup=max(len(starts) - 3, 0),
        executions=len(starts), gaps_s=gaps, expected_gaps_s=expected,
        errors_kept=len(info.errors),
    )  # fmt: skip
    assert info.state == "succeeded" and info.result == {"attempt": 3}
    assert len(starts) == 3 and info.attempts == 3
    for gap, want in zip(gaps, expected, strict=True):
        # Not before the delay; late by at most one fetcher wake-up under a busy CPU.
        assert want - 0.05 <= gap <= want + 1.0, (gaps, expected)
    assert [e["message"] for e in info.errors] == [
        "flaky failure number 1",
        "flaky failure number 2",
    ]
    assert all(e["type"] == "RuntimeError" for e in info.errors)


def test_always_failing_handler_is_dead_lettered_after_max_attempts(stack, wait_for, fault_report):
    s = stack(MANIFEST, {"functions/tasks.py": TASKS})
    client = s.client()
    s.workers(1)
    task = client.submit("doomed", {})
    wait_for(lambda: client.get(task).state == "dead", 30, "the task to be dead-lettered")
    settle(2.0)  # well past the 200 ms backoff: nothing may run it again
    info = client.get(task)
    runs = [x for x in ledger_lines(s.ledger) if x[0] == task and x[2] == "start"]
    dead_ids = s.redis().zrange("dtqs:{default}:dead", 0, -1)
    fault_report(
        14, "always-failing handler -> dead letter",
        accepted=1, lost=0, dup=None, executions=len(runs), max_attempts=4,
        reason=info.reason, traceback_chars=len(info.traceback or ""),
        message_chars=len(info.error["message"]),
    )  # fmt: skip
    assert len(runs) == 4 and [int(x[1]) for x in runs] == [1, 2, 3, 4]
    assert info.state == "dead" and info.reason == "max_attempts" and info.attempts == 4
    assert dead_ids == [task]
    assert info.error["type"] == "ValueError"
    assert info.error["message"].startswith("doomed xxx")
    assert len(info.error["message"]) <= 2000  # capped, not 50 KB
    assert info.traceback and "_deep" in info.traceback and "ValueError" in info.traceback
    assert len(info.traceback) <= 8000  # capped, yet frames and error both kept
    assert len(info.errors) == 4
