"""Scenario 17: poison tasks. A handler that calls os._exit(1), one that crashes the
interpreter (SIGSEGV), and task records with garbage written straight into Redis run
a bounded number of times, then are dead-lettered (`worker_lost`, `decode_error`);
1,000 normal tasks behind them all complete."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
import redis

from tests.faults.behaviour.helpers import LEDGER_HELPER, ledger_lines

pytestmark = pytest.mark.timeout(120)

MANIFEST = """\
version: 1
queues:
  default: {concurrency: 4, visibility_timeout: 2s}
functions:
  exiter: {handler: functions/tasks.py:exiter, retry: {max_attempts: 3, initial_delay: 100ms}}
  crasher: {handler: functions/tasks.py:crasher, retry: {max_attempts: 3, initial_delay: 100ms}}
  normal: {handler: functions/tasks.py:normal, retry: {max_attempts: 5, initial_delay: 100ms}}
workers: {grace: 5s, heartbeat_interval: 500ms, reclaim_interval: 1s}
"""

TASKS = (
    LEDGER_HELPER
    + """
import ctypes


def exiter(payload, ctx):
    mark(ctx.task_id, ctx.attempt, "start")
    os._exit(1)


def crasher(payload, ctx):
    mark(ctx.task_id, ctx.attempt, "start")
    ctypes.string_at(0)  # SIGSEGV: the interpreter itself dies


def normal(payload, ctx):
    mark(ctx.task_id, ctx.attempt, "done")
    return payload
"""
)


def test_poison_tasks_end_dead_and_the_rest_complete(stack, procs, wait_for, fault_report):
    s = stack(MANIFEST, {"functions/tasks.py": TASKS})
    client, r = s.client(), s.redis()
    poison = [client.submit("exiter", {}), client.submit("crasher", {})]
    # Garbage straight into Redis: a record that is not a hash, a payload that is not
    # JSON, and one that is not even UTF-8.
    not_hash, not_json, not_utf8 = (client.submit("normal", {"g": i}) for i in range(3))
    key = "dtqs:{default}:t:"
    r.delete(key + not_hash)
    r.set(key + not_hash, "\x00garbage")
    r.hset(key + not_json, "payload", "{not json")
    with redis.Redis.from_url(s.url) as raw:  # bytes in, no decoding
        raw.hset(key + not_utf8, "payload", b'{"a": "\xff\xfe"}')
    garbage = [not_hash, not_json, not_utf8]
    normal = client.submit_many({"function": "normal", "payload": {"n": i}} for i in range(1000))

    sup = s.workers(2)
    everything = poison + garbage + normal

    def settled() -> bool:
        states = Counter(
            (i.state if i else "gone") for i in (client.get(t) for t in poison + garbage)
        )
        return states["dead"] == 5 and all(client.get(t).state == "succeeded" for t in normal[-50:])

    wait_for(settled, 90, "poison tasks dead and normal tasks done")
    wait_for(lambda: all(client.get(t).state == "succeeded" for t in normal), 30,
             "every normal task to succeed")  # fmt: skip
    lines = ledger_lines(s.ledger)
    runs = Counter(x[0] for x in lines if x[2] == "start")
    dones = Counter(x[0] for x in lines if x[2] == "done")
    infos = {t: client.get(t) for t in poison + garbage}
    alive = sup.poll() is None
    sup.send_signal(signal.SIGTERM)
    procs.wait_exit(sup, 15)
    fault_report(
        17, "poison tasks: os._exit, SIGSEGV, garbage records",
        accepted=len(everything), lost=sum(1 for t in normal if dones[t] == 0),
        dup=sum(c - 1 for c in dones.values() if c > 1),
        poison_runs=[runs[t] for t in poison],
        reasons={t.split(".")[0] + f"#{n}": infos[t].reason
                 for n, t in enumerate(poison + garbage)},
        normal_completed=sum(1 for t in normal if dones[t]),
    )  # fmt: skip
    for t in poison:
        assert infos[t].state == "dead" and infos[t].reason == "worker_lost", infos[t]
        # Bounded by max_attempts. A run can be fewer, even none: a task leased by a
        # process that the other poison task killed before it started loses that
        # attempt too (seen in CI: the crasher's three leases all died with the exiter).
        assert runs[t] <= 3 and infos[t].attempts == 3, (runs[t], infos[t])
    assert sum(runs[t] for t in poison) >= 1  # the poison did run, and was stopped
    for t in garbage:
        assert infos[t].state == "dead" and infos[t].reason == "decode_error", infos[t]
        assert dones[t] == 0
    assert all(dones[t] >= 1 for t in normal)
    assert alive, "the supervisor must survive its processes' crashes"
    assert set(r.zrange("dtqs:{default}:dead", 0, -1)) == set(poison + garbage)
