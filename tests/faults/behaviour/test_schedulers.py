"""Scenarios 20 and 21: schedulers under faults, and clock skew.

20: three schedulers, `every: 2s` for 60 s; one SIGKILLed at 20 s, another
SIGSTOPped for 5 s at 40 s -> exactly one task per tick, >= 28 of 30 ticks fired.
21: clock skew of +-90 s (libfaketime) on a worker and a scheduler -> no extra reruns
of healthy tasks, no double cron fires: leases and run times use Redis's clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.faults.behaviour.helpers import LEDGER_HELPER, ledger_lines

pytestmark = pytest.mark.timeout(120)

MANIFEST = """\
version: 1
queues:
  default: {concurrency: 8, visibility_timeout: 2s}
functions:
  work: {handler: functions/tasks.py:work, timeout: 30s}
schedules:
  tick: {function: work, every: 2s, payload: {tick: true}}
workers: {grace: 5s, heartbeat_interval: 500ms, reclaim_interval: 500ms}
"""

TASKS = (
    LEDGER_HELPER
    + """
import threading


def work(payload, ctx):
    mark(ctx.task_id, ctx.attempt, "start")
    # NOTE: not time.sleep: under libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC
    # its clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) fails with EINVAL.
    threading.Event().wait(payload.get("sleep", 0))
    mark(ctx.task_id, ctx.attempt, "done")
    return payload
"""
)

SCHEDULER = ["scheduler", "--log-level", "warning"]


def tick_ms(task_id: str) -> int:
    return int(task_id.rsplit("-", 1)[1])


def test_three_schedulers_with_kill_and_stop(stack, procs, wait_for, fault_report):
    s = stack(MANIFEST, {"functions/tasks.py": TASKS})
    s.workers(1)
    schedulers = [procs.spawn(SCHEDULER, s.root, s.env()) for _ in range(3)]
    first = wait_for(lambda: [x[0] for x in ledger_lines(s.ledger) if "cron" in x[0]], 20,
                     "a first tick")[0]  # fmt: skip
    began = time.monotonic()
    window = (tick_ms(first) + 2000, tick_ms(first) + 2000 + 29 * 2000)  # 30 ticks

    def at(second: float) -> None:
        time.sleep(max(began + second - time.monotonic(), 0))

    at(20)
    schedulers[0].send_signal(signal.SIGKILL)
    at(40)
    schedulers[1].send_signal(signal.SIGSTOP)
    at(45)
    schedulers[1].send_signal(signal.SIGCONT)
    at(63)
    for proc in schedulers[1:]:
        proc.send_signal(signal.SIGTERM)
    for proc in schedulers[1:]:
        procs.wait_exit(proc, 10)
    time.sleep(1)  # the last ticks' tasks finish
    done = Counter(x[0] for x in ledger_lines(s.ledger) if x[2] == "done" and "cron" in x[0])
    ticks = sorted(t for t in done if window[0] <= tick_ms(t) <= window[1])
    dup = sum(c - 1 for c in done.values())
    fault_report(
        20, "three schedulers, every 2s for 60 s, one SIGKILLed, one SIGSTOPped 5 s",
        accepted=None, lost=None, dup=dup, ticks_fired=len(ticks), ticks_expected=30,
        grid_ok=all(tick_ms(t) % 2000 == 0 for t in ticks),
    )  # fmt: skip
    assert dup == 0  # exactly one task per tick
    assert len(ticks) >= 28, ticks
    assert all(tick_ms(t) % 2000 == 0 for t in ticks)


FAKETIME_LIB = next(
    (
        p
        for p in (
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/faketime/libfaketime.so.1",
        )
        if os.path.exists(p)
    ),
    None,
)


def skewed(offset: str) -> dict[str, str]:
    """Environment that shifts a process's wall clock by `offset` (libfaketime)."""
    return {
        "LD_PRELOAD": str(FAKETIME_LIB),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }


@pytest.mark.skipif(
    FAKETIME_LIB is None and os.environ.get("CI") != "true",
    reason="libfaketime is not installed (apt-get install faketime)",
)
def test_clock_skew_on_a_worker_and_a_scheduler(stack, procs, wait_for, fault_report):
    assert FAKETIME_LIB, "libfaketime is required in CI (apt-get install faketime)"
    s = stack(MANIFEST, {"functions/tasks.py": TASKS})
    client = s.client()
    # The skew must really be there: a skewed interpreter's clock is 90 s ahead.
    probe = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env={**os.environ, **skewed("+90s")}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    ahead = float(probe.stdout) - time.time()
    assert 85 < ahead < 95, ahead
    s.workers(1, **skewed("+90s"))
    s.workers(1, **skewed("-90s"))
    schedulers = [procs.spawn(SCHEDULER, s.root, s.env(**skewed(o))) for o in ("+90s", "-90s")]
    # Healthy tasks longer than the 2 s lease: renewals must keep them from rerunning
    # on either worker, whichever clock it has.
    ids = [client.submit("work", {"sleep": 4}) for _ in range(12)]
    wait_for(lambda: all(client.get(t).state == "succeeded" for t in ids), 60,
             "the long tasks to succeed")  # fmt: skip
    wait_for(lambda: sum("cron" in x[0] and x[2] == "done" for x in ledger_lines(s.ledger)) >= 8,
             30, "8 cron ticks")  # fmt: skip
    for proc in schedulers:
        proc.send_signal(signal.SIGTERM)
    for proc in schedulers:
        procs.wait_exit(proc, 10)
    lines = ledger_lines(s.ledger)
    starts = Counter(x[0] for x in lines if x[2] == "start")
    ticks = [t for t in starts if "cron" in t]
    cron_dup = sum(starts[t] - 1 for t in ticks)
    # A tick fires on Redis's clock: its task is created at (not 90 s before or after)
    # its fire time.
    lag = [(client.get(t).created_at.timestamp() * 1000 - tick_ms(t)) / 1000 for t in ticks]
    reruns = sum(starts[t] - 1 for t in ids)
    pids = {x[3] for x in lines if x[0] in ids}
    fault_report(
        21, "clock skew +-90 s on workers and schedulers (libfaketime)",
        accepted=len(ids), lost=sum(1 for t in ids if not starts[t]), dup=reruns,
        cron_ticks=len(ticks), cron_dup=cron_dup,
        tick_lag_s=[round(min(lag), 3), round(max(lag), 3)] if lag else None,
        worker_pids=len(pids), clock_ahead_s=round(ahead, 1),
    )  # fmt: skip
    assert reruns == 0 and all(starts[t] == 1 for t in ids)
    assert len(ticks) >= 8 and cron_dup == 0
    assert all(-0.5 < x < 2.0 for x in lag), lag
    assert Path(FAKETIME_LIB).exists()
