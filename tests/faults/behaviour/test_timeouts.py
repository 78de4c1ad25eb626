"""Scenario 15: a sleeping and a pure-CPU handler past their 2 s timeout fail as
`timeout` within ~3 s, trivial tasks keep completing beside them, and no process is
left behind (the stuck threads make their worker process recycle itself)."""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from tests.faults.behaviour.helpers import LEDGER_HELPER, ledger_lines

pytestmark = pytest.mark.timeout(90)

MANIFEST = """\
version: 1
queues:
  default: {concurrency: 4, visibility_timeout: 2s}
functions:
  sleeper: {handler: functions/tasks.py:sleeper, timeout: 2s, retry: {max_attempts: 1}}
  spinner: {handler: functions/tasks.py:spinner, timeout: 2s, retry: {max_attempts: 1}}
  trivial: {handler: functions/tasks.py:trivial, timeout: 2s}
workers: {grace: 3s, heartbeat_interval: 500ms, reclaim_interval: 1s}
"""

TASKS = (
    LEDGER_HELPER
    + """

def sleeper(payload, ctx):
    mark(ctx.task_id, ctx.attempt, "start")
    time.sleep(60)
    mark(ctx.task_id, ctx.attempt, "done")


def spinner(payload, ctx):
    mark(ctx.task_id, ctx.attempt, "start")
    while True:
        pass


def trivial(payload, ctx):
    mark(ctx.task_id, ctx.attempt, "done")
    return payload
"""
)


def test_timeouts_of_sleeping_and_spinning_handlers(stack, procs, wait_for, fault_report):
    s = stack(MANIFEST, {"functions/tasks.py": TASKS})
    client = s.client()
    sup = s.workers(1)
    wait_for(lambda: procs.workers(sup), 15, "a worker process")
    first_pid = procs.workers(sup)[0].pid
    stuck = [client.submit("sleeper", {}), client.submit("spinner", {})]

    # A stream of trivial tasks, 10/s for 9 s, while the two handlers hang.
    trivial, began = [], time.monotonic()
    while time.monotonic() - began < 9:
        trivial.append(client.submit("trivial", {"n": len(trivial)}))
        time.sleep(0.1)
    wait_for(lambda: all(client.get(t).state == "succeeded" for t in trivial), 20,
             "every trivial task to succeed")  # fmt: skip
    infos = [client.get(t) for t in stuck]
    fail_after = [
        round((i.finished_at - i.started_at).total_seconds(), 3) if i.finished_at else None
        for i in infos
    ]
    latency = sorted(
        (client.get(t).finished_at - client.get(t).created_at).total_seconds() for t in trivial
    )
    recycled = wait_for(lambda: [w.pid for w in procs.workers(sup) if w.pid != first_pid], 20,
                        "the worker process with stuck threads to be replaced")  # fmt: skip
    sup.send_signal(signal.SIGTERM)
    exit_s = procs.wait_exit(sup, 15)
    procs.assert_no_orphans(s.root)
    zombies = [p for p in psutil.Process().children(recursive=True)
               if p.status() == psutil.STATUS_ZOMBIE and p.pid != sup.pid]  # fmt: skip
    done = [x for x in ledger_lines(s.ledger) if x[2] == "done"]
    fault_report(
        15, "timeouts: sleep(60) and while True with timeout 2 s",
        accepted=len(trivial) + 2,
        lost=sum(1 for t in trivial if client.get(t).state != "succeeded"),
        dup=len(done) - len(trivial), timeout_after_s=fail_after,
        trivial_completed=len(trivial), trivial_p50_s=round(latency[len(latency) // 2], 3),
        trivial_max_s=round(latency[-1], 3), recycled_process=bool(recycled),
        stop_s=round(exit_s, 2), zombies=len(zombies),
    )  # fmt: skip
    for info in infos:
        assert info.state == "dead" and info.reason == "timeout", info
        assert info.error["type"] == "Timeout"
    assert all(f is not None and 2.0 <= f <= 3.5 for f in fail_after), fail_after
    assert len(done) == len(trivial)  # each trivial task ran once
    # They kept completing while the handlers hung: none waited for a timeout.
    assert latency[-1] < 2.0, latency[-5:]
    assert not zombies
