"""Scenarios 30 and 31 (issue 12): start order and long outages.

30: Redis absent at start, up 5 s later: `dtqs worker`, `dtqs api` and `dtqs scheduler`
(30a), and `dtqs run` with an external URL (30b), each started while nothing listens
on Redis's port. Each must start, report the outage once per process (one line per
change of state, not one per second), and serve within 2 s of Redis answering:
fetching, heartbeats (the worker registry), /readyz, schedules.

31: Redis gone 30 s under `dtqs run` (SIGKILLed, restarted from its AOF with
appendfsync always) while tasks are submitted: no process needs a restart, nothing
acknowledged is lost, and the invariants hold.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import FAULT_MANIFEST, Stack, _free_port, request

pytestmark = pytest.mark.timeout(150)

#: The fault manifest plus a schedule firing every second.
TICKING = (
    FAULT_MANIFEST
    + """\
schedules:
  tick:
    function: work
    every: 1s
"""
)
#: The issue's bound: fully serving within this long of Redis answering.
SERVING_WITHIN_S = 2.0
#: One process's line that an outage began (runtime/outage.py).
OUTAGE_LINE = re.compile(r"^\S+ \S+ (?P<who>[\w-]+\[\d+\]) WARNING dtqs\.backend: .*unreachable")


def manifest(**values: object) -> str:
    defaults = {"concurrency": 4, "lease": "2s", "grace": "5s", "max_attempts": 3,
                "redis_timeout": "1s"}  # fmt: skip
    return TICKING.format(**{**defaults, **values})


def outage_lines(*outputs: str) -> Counter[str]:
    """How many 'Redis is unreachable' lines each process (role[pid]) logged."""
    found: Counter[str] = Counter()
    for text in outputs:
        for line in text.splitlines():
            if m := OUTAGE_LINE.match(line):
                found[m["who"]] += 1
    return found


@dataclass
class Serving:
    """When each part served again, in seconds after Redis answered (None: never)."""

    readyz_s: float | None
    first_task_s: float | None
    registry_s: float | None
    tick_s: float | None

    def worst(self) -> float:
        return max(x if x is not None else float("inf") for x in vars(self).values())


def watch_serving(s: Stack, port: int, back_wall: float, workers: int) -> tuple[Serving, str]:
    """Poll every part until it serves (or 20 s pass); returns the delays and the id of
    the first task the API accepted after the outage."""
    r = s.node.client()
    seen: dict[str, float] = {}
    task_id = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(seen) < 4:
        now = time.time() - back_wall
        if "readyz" not in seen and request(port, "GET", "/readyz", timeout_s=2).status == 200:
            seen["readyz"] = now
        if not task_id:
            answer = s.submit({})
            task_id = answer.body["id"] if answer.status == 202 else ""
        if task_id and "task" not in seen and s.ledger.dones(task_id):
            seen["task"] = s.ledger.dones(task_id)[0].at - back_wall
        if "registry" not in seen and r.zcard("dtqs:workers") >= workers:
            seen["registry"] = now
        if "tick" not in seen and r.hget("dtqs:schedule:tick", "last_fire_ms"):
            seen["tick"] = now
        time.sleep(0.02)
    delays = (seen.get(k) for k in ("readyz", "task", "registry", "tick"))
    return Serving(*(None if d is None else round(d, 3) for d in delays)), task_id


def during_outage(s: Stack, port: int) -> dict[str, object]:
    """What the API answers while Redis is away: submissions, readiness, liveness."""
    submits = [s.submit({}) for _ in range(5)]
    return {
        "submit_statuses": sorted({a.status for a in submits}),
        "submit_max_s": round(max(a.elapsed_s for a in submits), 3),
        "readyz": request(port, "GET", "/readyz").status,
        "healthz": request(port, "GET", "/healthz").status,
    }


def bring_redis_up_and_check(
    s: Stack, port: int, started: list[Any], workers: int, label: str, title: str,
    fault_report: Any, invariants: Any,
) -> None:  # fmt: skip
    """The second half of scenario 30: what the API says while Redis is away, Redis up
    about 5 s after the start, then every part serving within SERVING_WITHIN_S, one
    outage line per process, no process gone."""
    outage = during_outage(s, port)
    time.sleep(3.0)
    s.node.restart()
    back_wall = time.time()
    serving, task_id = watch_serving(s, port, back_wall, workers=workers)
    s.wait_done([task_id], 20)
    time.sleep(1.5)  # a few more beats and ticks: the log must stay quiet
    outputs = [s.procs.output(p) for p in started]
    lines = outage_lines(*outputs)
    problems = invariants(s.node.client())
    fault_report(label, title, accepted=1, lost=0 if s.ledger.dones(task_id) else 1, dup=None,
                 recover_s=serving.worst(), **vars(serving), **outage,
                 outage_lines_per_process=dict(lines),
                 invariant_violations=len(problems))  # fmt: skip
    assert outage["submit_statuses"] == [503] and outage["readyz"] == 503
    assert outage["healthz"] == 200
    assert serving.worst() <= SERVING_WITHIN_S, serving
    # One line per process for the outage (API, each worker process, the scheduler),
    # not one per retry: before, the worker said nothing and never served.
    assert len(lines) == workers + 2 and set(lines.values()) == {1}, lines
    assert all("Traceback" not in text for text in outputs)
    assert all(p.poll() is None for p in started)
    assert problems == []


def test_30a_redis_absent_at_start_worker_api_scheduler(stack, fault_report, invariants):
    s = stack()
    s.project.write("dtqs.yaml", manifest())
    s.node.kill()  # nothing listens on Redis's port while everything starts
    port = s.api()
    sup = s.worker(2, "--log-level", "info")
    sched = s.procs.spawn(["scheduler", "--log-level", "info"], s.root, s.env())
    s.wait_for(lambda: len(s.procs.workers(sup)) == 2, 20, "2 worker processes")
    time.sleep(2.0)
    bring_redis_up_and_check(s, port, [s.api_proc, sup, sched], 2, "30a",
                             "Redis absent at start, up 5 s later: worker, API, scheduler",
                             fault_report, invariants)  # fmt: skip


def test_30b_redis_absent_at_start_dtqs_run(stack, fault_report, invariants):
    s = stack()
    s.project.write("dtqs.yaml", manifest())
    s.node.kill()
    port = _free_port()
    run = s.procs.spawn(["run", "--port", str(port), "--processes", "1"], s.root, s.env())
    s.wait_for(lambda: request(port, "GET", "/healthz", timeout_s=2).status == 200, 30,
               "the API of dtqs run")  # fmt: skip
    s.api_port = port
    bring_redis_up_and_check(s, port, [run], 1, "30b",
                             "Redis absent at start, up 5 s later: dtqs run (external URL)",
                             fault_report, invariants)  # fmt: skip


def test_31_redis_gone_30s_under_dtqs_run(stack, fault_report, invariants):
    from .test_redis_outage import Submitter

    s = stack(("--appendonly", "yes", "--appendfsync", "always"))
    s.project.write("dtqs.yaml", manifest(concurrency=8))
    port = _free_port()
    run = s.procs.spawn(["run", "--port", str(port), "--processes", "2"], s.root, s.env())
    s.wait_for(lambda: request(port, "GET", "/readyz", timeout_s=2).status == 200, 30,
               "dtqs run to be ready")  # fmt: skip
    s.api_port = port
    s.wait_for(lambda: len(s.procs.workers(run)) == 2, 20, "2 worker processes")
    pids = {p.pid for p in s.procs.workers(run)}
    sub = Submitter(s, rate=20, threads=2)
    threads = sub.run(20 * 45)
    time.sleep(5)
    s.node.kill()
    down_at = time.monotonic()
    time.sleep(30)
    s.node.restart()
    back_wall = time.time()
    back_at = time.monotonic()
    for t in threads:
        t.join(60)
    accepted = sub.accepted()
    s.wait_done(accepted, 60)
    figs = s.figures(accepted)
    after = [x for x in sub.sent if x.began > back_at and x.answer.status == 202]
    first_ok_s = min((x.began + x.answer.elapsed_s - back_at for x in after), default=None)
    during = [x.answer.status for x in sub.sent if down_at + 0.1 < x.began < back_at - 1.1]
    lines = outage_lines(s.procs.output(run))
    alive = {p.pid for p in s.procs.workers(run)}
    first_done = min((e.at for e in s.ledger.dones() if e.at > back_wall), default=None)
    problems = invariants(s.node.client())
    fault_report(31, "Redis gone 30 s under dtqs run (SIGKILL, AOF always), submitting",
                 accepted=len(accepted), lost=figs.lost, dup=figs.dup,
                 recover_s=None if first_done is None else first_done - back_wall,
                 submitted=len(sub.sent), answers_while_down=dict(Counter(during)),
                 first_accepted_after_s=first_ok_s, outage_lines_per_process=dict(lines),
                 worker_processes_replaced=len(pids - alive),
                 invariant_violations=len(problems))  # fmt: skip
    assert set(during) == {503}, Counter(during)
    assert figs.lost == 0, figs.lost_ids[:10]
    assert alive == pids and run.poll() is None, "a process was restarted or exited"
    assert set(lines.values()) == {1}, lines  # one line per process for a 30 s outage
    assert first_ok_s is not None and first_ok_s <= SERVING_WITHIN_S
    assert problems == []
