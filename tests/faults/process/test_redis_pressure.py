"""Scenarios 11 and 12 of issue 6: Redis frozen past the lease (DEBUG SLEEP) with tasks
running, and Redis out of memory under `noeviction` (and another eviction policy).
"""

from __future__ import annotations

import time

import pytest

from dtqs.runtime.redis.keys import QueueKeys
from dtqs.runtime.redis.scripts import EndPolicy, FunctionEnd, Scripts, _source

from .conftest import request

pytestmark = pytest.mark.timeout(90)


def _refused(stack) -> int:
    """Outcomes the workers report as refused (their lease moved on: fencing)."""
    return sum(stack.procs.output(p).count("refused: its lease moved on")
               for p, _ in stack.procs.started)  # fmt: skip


def freeze_then_sweep(r, seconds: int) -> None:
    """DEBUG SLEEP, and the reclaim sweep as the very first command after it (one
    MULTI): a sweep, not a heartbeat, is first to reach Redis when it wakes, so every
    lease that lapsed during the freeze is taken over, and the late completions of the
    runs that held them must be refused."""
    src = _source("reclaim")
    sha = r.script_load(src)
    policy = EndPolicy({"work": FunctionEnd(3, True, 86_400_000)}, 10_000)
    keys, args = Scripts.reclaim_call(QueueKeys("dtqs", "default", 4), policy, 86_400_000)
    pipe = r.pipeline(transaction=True)
    pipe.execute_command("DEBUG", "SLEEP", str(seconds))
    pipe.evalsha(sha, len(keys), *keys, *args)
    _, (requeued, *_) = pipe.execute()
    assert requeued == 20, requeued


def test_11_redis_frozen_past_the_lease_fences_late_completions(stack, fault_report, invariants):
    s = stack(lease="2s", concurrency=10)
    s.api()
    sups = [s.worker(1), s.worker(1)]
    s.wait_for(lambda: all(s.procs.workers(p) for p in sups), 20, "2 worker processes")
    pids = {c.pid for p in sups for c in s.procs.workers(p)}
    long_ids = [s.submit({"sleep": 2.5}).body["id"] for _ in range(20)]
    s.wait_for(lambda: len(s.ledger.starts()) == 20, 20, "20 tasks to start")

    freeze_then_sweep(s.node.client(timeout_s=15), 4)  # the lease is 2 s
    woke, woke_wall = time.monotonic(), time.time()
    short = s.submit_batch(200, {"sleep": 0.01})
    assert short.status == 202, short
    short_ids = short.body["ids"]
    s.wait_done(long_ids + short_ids, 60)
    s.wait_for(lambda: s.node.client().zcard("dtqs:{default}:active") == 0, 10, "no lease left")
    first_short = min(e.at for e in s.ledger.dones() if e.at > woke_wall
                      and s.ledger.starts(e.task_id)[-1].at > woke_wall)  # fmt: skip
    figs = s.figures(long_ids + short_ids)
    long_dones = {i: len(s.ledger.dones(i)) for i in long_ids}
    taken_over = sum(1 for i in long_ids if len(s.ledger.starts(i)) > 1)
    r = s.node.client()
    processed = int(r.hget("dtqs:{default}:stats", "processed") or 0)
    states = {r.hget(f"dtqs:{{default}}:t:{i}", "state") for i in long_ids + short_ids}
    alive = {c.pid for p in sups for c in s.procs.workers(p)}
    problems = invariants(r)
    fault_report(11, "Redis frozen past the lease (DEBUG SLEEP 4 s, lease 2 s), 20 running",
                 accepted=len(long_ids) + len(short_ids), lost=figs.lost, dup=figs.dup,
                 recover_s=first_short - woke_wall, taken_over=taken_over,
                 late_completions_refused=_refused(s), outcomes_recorded=processed,
                 worker_processes_replaced=len(pids - alive),
                 invariant_violations=len(problems))  # fmt: skip
    assert figs.lost == 0 and states == {"succeeded"}
    # Fencing: however many runs finished, exactly one outcome per task was recorded.
    assert processed == len(long_ids) + len(short_ids)
    assert taken_over == 20 and _refused(s) == 20
    assert all(n == 2 for n in long_dones.values())  # the late run and the rerun
    assert alive == pids and all(p.poll() is None for p in sups), "no crash loop"
    assert first_short - woke_wall <= 5.0 and time.monotonic() > woke
    assert {s.ledger.starts(i)[-1].attempt for i in long_ids} == {2}
    assert problems == []


def test_12_maxmemory_noeviction_refuses_never_2xx(stack, fault_report, invariants):
    s = stack(("--maxmemory-policy", "noeviction"))
    r = s.node.client()
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", used + 3 * 2**20)
    port = s.api()
    blob = "x" * 200_000
    answers = []
    for _ in range(60):
        answers.append(s.submit({"blob": blob}))
        if answers[-1].status not in (202,) and len(answers) > 1:
            break
    full_at = len(answers)
    answers += [s.submit({"blob": blob}) for _ in range(10)]
    after_full = answers[full_at - 1 :]
    accepted = [a.body["id"] for a in answers if a.status == 202]
    stored = {k.rsplit(":", 1)[1] for k in r.scan_iter("dtqs:{default}:t:*")}
    evicted = int(r.info("stats")["evicted_keys"])
    # NOTE: /readyz answers from a check run every second: within a few, it says so.
    s.wait_for(lambda: request(port, "GET", "/readyz").status == 503, 5, "/readyz to see it")
    ready_full = request(port, "GET", "/readyz")
    # NOTE: checked before the allkeys-lru phase: under that policy at maxmemory Redis
    # evicts keys (a pending list, say) as soon as the new worker writes, which is what
    # its warning is about, and what would leave orphan records behind.
    problems = invariants(r)

    r.config_set("maxmemory-policy", "allkeys-lru")
    s.wait_for(lambda: "maxmemory-policy" in str(request(port, "GET", "/readyz").body), 5,
               "/readyz to name the policy")  # fmt: skip
    ready_lru = request(port, "GET", "/readyz")
    sup = s.worker(1)
    s.wait_for(lambda: "maxmemory-policy" in s.procs.output(sup), 20, "the worker's warning")
    r.config_set("maxmemory-policy", "noeviction")
    fault_report(12, "maxmemory + noeviction filled; another policy fails /readyz",
                 accepted=len(accepted), lost=len(set(accepted) - stored), dup=None,
                 recover_s=None, refused=[a.status for a in after_full].count(503),
                 refused_statuses=sorted({a.status for a in after_full}), evicted_keys=evicted,
                 readyz_full=ready_full.status, readyz_lru=ready_lru.status,
                 invariant_violations=len(problems))  # fmt: skip
    assert all(a.status in (503, 507) for a in after_full), [a.status for a in after_full]
    assert all(a.status in (202, 503, 507) for a in answers)
    assert set(accepted) <= stored and len(stored) == len(accepted)
    assert evicted == 0
    assert ready_lru.status == 503 and "maxmemory-policy" in ready_lru.body["detail"]
    # NOTE: answered 200 before: Redis answered PING while it refused every write.
    assert ready_full.status == 503 and "out of memory" in ready_full.body["detail"]
    assert problems == []
