"""The harness's invariant check finds what it is there to find (else a scenario's
`invariant_violations=0` would prove nothing)."""

from __future__ import annotations


def test_invariant_check_reports_each_kind_of_damage(redis_node, invariants):
    r = redis_node().client()
    base = "dtqs:{default}"
    r.hset(f"{base}:t:ok", mapping={"state": "queued"})
    r.lpush(f"{base}:pending:2", "ok")
    assert invariants(r) == []

    r.hset(f"{base}:t:twice", mapping={"state": "queued"})
    r.lpush(f"{base}:pending:2", "twice")
    r.zadd(f"{base}:scheduled", {"twice": 1})
    r.hset(f"{base}:t:nolease", mapping={"state": "running"})
    r.zadd(f"{base}:active", {"nolease": 1})
    r.hset(f"{base}:t:orphan", mapping={"state": "queued"})
    r.lpush(f"{base}:pending:0", "norecord")
    r.hset(f"{base}:t:wrong", mapping={"state": "succeeded"})
    r.zadd(f"{base}:dead", {"wrong": 1})
    r.set(f"{base}:stray", "1")
    found = "\n".join(invariants(r))
    assert "task twice is in 2 structures" in found
    assert "task nolease is running without a lease" in found
    assert "task orphan (queued) is in no structure" in found
    assert "task norecord is in ['pending'] but has no record" in found
    assert "task wrong is succeeded but sits in dead" in found
    assert "orphan key dtqs:{default}:stray" in found
