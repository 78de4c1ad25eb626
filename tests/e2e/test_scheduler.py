"""Real `dtqs scheduler` processes: N of them still submit each tick exactly once."""

from __future__ import annotations

import json
import signal
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

MANIFEST = """\
version: 1
queues: {default: {}}
functions:
  echo: {handler: functions/tasks.py:echo}
schedules:
  tick: {function: echo, every: 1s, payload: {n: 1}}
  nightly: {function: echo, cron: "0 2 * * *", timezone: Europe/Paris}
"""
FILES = {"functions/tasks.py": "def echo(payload):\n    return payload\n"}


def test_three_schedulers_fire_every_tick_once(procs, project, redis_url, r, wait_for):
    p = project(MANIFEST, FILES)
    env = procs.env(redis_url)
    schedulers = [
        procs.spawn(["scheduler", "--log-level", "warning"], p.root, env) for _ in range(3)
    ]
    try:
        wait_for(lambda: r.llen("dtqs:{default}:pending:2") >= 1, 15, "a first tick")
        time.sleep(10)
    finally:
        for proc in schedulers:
            proc.send_signal(signal.SIGTERM)
        for proc in schedulers:
            procs.wait_exit(proc, 5)
    ids = r.lrange("dtqs:{default}:pending:2", 0, -1)
    assert len(ids) == len(set(ids)), "a tick was submitted twice"
    ticks = sorted(int(i.rsplit("-", 1)[1]) for i in ids)
    assert len(ticks) >= 10
    assert [b - a for a, b in zip(ticks, ticks[1:], strict=False)] == [1000] * (len(ticks) - 1)
    assert all(t % 1000 == 0 for t in ticks)  # on the interval's grid, whoever fired it
    assert all(proc.returncode == 0 for proc in schedulers)

    shown = procs.run(["schedules", "--json"], p.root, env)
    rows = {row["name"]: row for row in json.loads(shown.stdout)}
    assert rows["tick"]["last_task_id"] == f"default.cron-tick-{ticks[-1]}"
    assert len(rows["nightly"]["next"]) == 3 and rows["nightly"]["last_task_id"] is None


def test_scheduler_prints_cloudwatch_emf_lines_when_asked(procs, project, redis_url, wait_for):
    p = project(MANIFEST, FILES)
    env = procs.env(redis_url, DTQS_CLOUDWATCH_EMF="1")
    proc = procs.spawn(["scheduler", "--log-level", "warning"], p.root, env)

    def emf_docs() -> list[dict]:
        lines = procs.output(proc).splitlines()
        return [json.loads(line) for line in lines if line.startswith('{"_aws"')]

    wait_for(lambda: emf_docs(), 15, "an EMF line on stdout")
    proc.send_signal(signal.SIGTERM)
    procs.wait_exit(proc, 5)
    (doc,) = emf_docs()  # one queue, and the next line is due only in 60 s
    assert doc["Queue"] == "default" and doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "dtqs"
    assert doc["Backlog"] >= 0 and proc.returncode == 0
