"""The Lua scripts against a real server: one behaviour per test, through the client."""

from __future__ import annotations

import json
import threading
import time

import pytest

from dtqs.runtime.client import Client
from dtqs.runtime.errors import PayloadValidationError, TaskStateError, UnknownFunctionError
from dtqs.runtime.redis.scripts import EndPolicy, Outcome

pytestmark = pytest.mark.redis


def qk(client, queue="default"):
    return client.broker.qkeys(queue, len(client.manifest.queues[queue].priorities))


def fetch(client, n=10, order=(0, 1, 2, 3), lease_ms=60_000):
    with client.broker.translated():
        return client.broker.scripts.fetch(
            qk(client), n, lease_ms, "t", list(order), EndPolicy.of(client.manifest, "default")
        )


def test_submit_stores_a_queued_record(client, r):
    task_id = client.submit("echo", {"x": 1}, headers={"traceparent": "00-abc-def-01"})
    info = client.get(task_id)
    assert info.state == "queued" and info.function == "echo" and info.queue == "default"
    assert info.payload == {"x": 1} and info.attempts == 0 and info.priority == "normal"
    assert info.headers == {"traceparent": "00-abc-def-01"}
    assert r.lrange("dtqs:{default}:pending:2", 0, -1) == [task_id]


def test_priority_order_is_strict_and_fifo_within_a_level(client):
    low = [client.submit("echo", i, priority="low") for i in range(2)]
    crit = [client.submit("echo", i, priority="critical") for i in range(2)]
    normal = client.submit("echo", 0)
    got = [t.id for t in fetch(client, 10).tasks]
    assert got == crit + [normal] + low


def test_fetch_leases_only_as_many_as_asked(client):
    ids = [client.submit("echo", i) for i in range(5)]
    first = fetch(client, 2)
    assert [t.id for t in first.tasks] == ids[:2]
    assert client.get(ids[0]).state == "running" and client.get(ids[0]).attempts == 1
    assert client.get(ids[2]).state == "queued"


def wait_then_fetch(client, timeout_s, n=10):
    with client.broker.translated():
        return client.broker.scripts.wait_then_fetch(
            qk(client), timeout_s, n, 60_000, "w", [0, 1, 2, 3],
            EndPolicy.of(client.manifest, "default"),
        )  # fmt: skip


def test_an_idle_wait_ends_with_the_new_task_leased(client, r):
    r.delete(qk(client).notify)
    later = threading.Timer(0.3, lambda: submitted.append(client.submit("echo", 1)))
    submitted: list[str] = []
    later.start()
    got = wait_then_fetch(client, 20)  # ends at the submission, not after 20 s
    later.join()
    assert [t.id for t in got.tasks] == submitted
    assert client.get(submitted[0]).state == "running"
    assert r.llen(qk(client).notify) == 0  # the one wake-up token was taken by the wait


def test_an_idle_wait_that_times_out_still_fetches(client, r):
    task_id = client.submit("echo", 1)
    r.delete(qk(client).notify)  # no token: the wait runs to its timeout
    got = wait_then_fetch(client, 0.05)
    assert [t.id for t in got.tasks] == [task_id]
    assert wait_then_fetch(client, 0.05).tasks == []


def test_an_idle_wait_reloads_a_script_the_server_forgot(client, r):
    task_id = client.submit("echo", 1)
    r.script_flush()
    assert [t.id for t in wait_then_fetch(client, 0.05).tasks] == [task_id]


def test_weighted_order_serves_the_given_level_first(client):
    high = client.submit("echo", 1, priority="high")
    low = client.submit("echo", 2, priority="low")
    got = [t.id for t in fetch(client, 1, order=(3, 0, 1, 2)).tasks]
    assert got == [low]
    assert [t.id for t in fetch(client, 1).tasks] == [high]


def test_delayed_task_is_scheduled_until_due(client):
    task_id = client.submit("echo", 1, delay=0.3)
    info = client.get(task_id)
    assert info.state == "scheduled" and info.run_at is not None
    got = fetch(client)
    assert got.tasks == [] and got.next_due_ms is not None
    assert 0 < got.next_due_ms - got.now_ms <= 300
    time.sleep(0.35)
    assert [t.id for t in fetch(client).tasks] == [task_id]


def test_run_at_in_the_past_is_ready_now(client):
    task_id = client.submit("echo", 1, run_at=time.time() - 10)
    assert client.get(task_id).state == "queued"


def test_paused_queue_is_not_fetched_but_accepts_submissions(client):
    client.pause("default")
    task_id = client.submit("echo", 1)
    assert fetch(client).tasks == []
    client.pause("default", False)
    assert [t.id for t in fetch(client).tasks] == [task_id]


def test_idempotency_key_stores_one_task_even_when_racing(client, r):
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def go() -> None:
        barrier.wait()
        ids.append(client.submit("echo", {"n": 1}, idempotency_key="order-42"))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert r.llen("dtqs:{default}:pending:2") == 1
    assert client.get(ids[0]).idempotency_key == "order-42"


def test_explicit_task_id_is_stored_once(client, r):
    a = client.submit("echo", 1, task_id="default.cron-nightly-1700000000000")
    b = client.submit("echo", 2, task_id="default.cron-nightly-1700000000000")
    assert a == b and r.llen("dtqs:{default}:pending:2") == 1


def test_submit_many_is_one_round_trip_and_all_or_nothing(client, r):
    before = int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    ids = client.submit_many([{"function": "echo", "payload": i} for i in range(100)])
    after = int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    assert (
        len(set(ids)) == 100 and after - before <= 2
    )  # one script call (a NOSCRIPT retry at most)
    with pytest.raises(PayloadValidationError) as err:
        client.submit_many([{"function": "echo", "payload": 1}, {"function": "nope"}])
    assert [v.pointer for v in err.value.violations] == ["/1"]
    assert r.llen("dtqs:{default}:pending:2") == 100


def test_bad_submissions_store_nothing(client, r):
    with pytest.raises(UnknownFunctionError):
        client.submit("nope", {})
    with pytest.raises(PayloadValidationError, match="not JSON-serialisable"):
        client.submit("echo", {"x": object()})
    with pytest.raises(PayloadValidationError, match="not JSON-serialisable"):
        client.submit("echo", float("nan"))
    with pytest.raises(PayloadValidationError, match="priority"):
        client.submit("echo", 1, priority="urgent")
    with pytest.raises(PayloadValidationError, match="delay"):
        client.submit("echo", 1, delay=-1)
    assert r.dbsize() == 0


def test_schema_violations_name_each_pointer(project, redis_url, r):
    p = project()
    p.write(
        "schemas/user.json",
        '{"type": "object", "required": ["email"], '
        '"properties": {"email": {"type": "string"}, "age": {"type": "integer"}}}',
    )
    p.write("dtqs.yaml", p.config.read_text().replace(
        "functions:\n", "functions:\n  user:\n    handler: functions/tasks.py:echo\n"
        "    schema: schemas/user.json\n"))  # fmt: skip
    with Client(redis_url=redis_url, manifest=p.manifest()) as c:
        with pytest.raises(PayloadValidationError) as err:
            c.submit("user", {"age": "x"})
    pointers = sorted(v.pointer for v in err.value.violations)
    assert pointers == ["/payload", "/payload/age"]
    assert r.dbsize() == 0


def test_finish_is_fenced_by_the_lease_token(client):
    task_id = client.submit("echo", 1)
    leased = fetch(client).tasks[0]
    scripts = client.broker.scripts
    stale = Outcome(task_id, leased.token + "x", "succeeded", "1", ms=1000)
    assert scripts.finish(qk(client), [stale], 100) == [False]
    ok = Outcome(task_id, leased.token, "succeeded", '{"r": 2}', ms=60_000)
    assert scripts.finish(qk(client), [ok], 100) == [True]
    info = client.get(task_id)
    assert info.state == "succeeded" and info.result == {"r": 2} and info.finished_at
    assert scripts.finish(qk(client), [ok], 100) == [False]  # twice: refused


def test_result_ttl_zero_forgets_the_record(client, r):
    task_id = client.submit("echo", 1)
    leased = fetch(client).tasks[0]
    client.broker.scripts.finish(qk(client), [Outcome(task_id, leased.token, "succeeded", "1")], 10)
    assert client.get(task_id) is None and r.zcard("dtqs:{default}:active") == 0


def test_retry_outcome_schedules_and_keeps_each_error(client):
    task_id = client.submit("echo", 1)
    s = client.broker.scripts
    for attempt in (1, 2):
        time.sleep(0.06)
        leased = fetch(client).tasks[0]
        assert leased.attempts == attempt
        err = json.dumps({"type": "ValueError", "message": f"boom {attempt}"})
        s.finish(qk(client), [Outcome(task_id, leased.token, "retry", err, "tb", 50)], 10)
        assert client.get(task_id).state == "scheduled"
    info = client.get(task_id)
    assert [e["message"] for e in info.errors] == ["boom 1", "boom 2"]
    assert [e["attempt"] for e in info.errors] == [1, 2]


def test_expired_lease_is_reclaimed_as_an_attempt_then_dead(client, r):
    task_id = client.submit("echo", 1)
    s = client.broker.scripts
    for expected in (1, 2, 3):
        leased = fetch(client, lease_ms=1).tasks[0]
        assert leased.attempts == expected
        time.sleep(0.01)
        policy = EndPolicy.of(client.manifest, "default")
        requeued, buried, _, _ = s.reclaim(qk(client), policy, 10**9)
        assert (requeued, buried) == ((1, 0) if expected < 3 else (0, 1))
    info = client.get(task_id)
    assert info.state == "dead" and info.reason == "worker_lost"
    assert r.zscore("dtqs:{default}:dead", task_id) is not None
    assert r.zcard("dtqs:{default}:active") == 0


def test_release_puts_the_task_first_without_counting_the_attempt(client):
    a = client.submit("echo", 1)
    b = client.submit("echo", 2)
    leased = fetch(client, 1).tasks[0]
    assert leased.id == a
    assert client.broker.scripts.release(qk(client), [(a, leased.token)]) == 1
    info = client.get(a)
    assert info.state == "queued" and info.attempts == 0
    assert [t.id for t in fetch(client).tasks] == [a, b]


def test_cancel_queued_and_scheduled_but_not_running(client):
    queued = client.submit("echo", 1)
    later = client.submit("echo", 2, delay=60)
    running = client.submit("echo", 3, priority="critical")
    fetch(client, 1)
    assert client.cancel(queued) and client.get(queued).state == "cancelled"
    assert client.cancel(later) and client.get(later).state == "cancelled"
    with pytest.raises(TaskStateError, match="running"):
        client.cancel_task(running)
    assert client.cancel(queued) is False and client.cancel("default.nope") is False
    assert fetch(client).tasks == []


def _bury(client, n, function="echo"):
    ids = [client.submit(function, i) for i in range(n)]
    leased = fetch(client, n).tasks
    err = '{"type":"E","message":"x"}'
    outcomes = [Outcome(t.id, t.token, "dead", err, "tb", 0, "max_attempts") for t in leased]
    client.broker.scripts.finish(qk(client), outcomes, 3)
    return ids


def test_dead_letters_are_capped_listed_replayed_and_purged(client, r):
    ids = _bury(client, 5)
    kept = r.zrange("dtqs:{default}:dead", 0, -1)
    assert len(kept) == 3 and set(kept) <= set(ids)  # the cap of 3 dropped two, records too
    assert sum(client.get(i) is None for i in ids) == 2
    dead = client.dead_letters("default")
    assert [d.id for d in dead] == kept and dead[0].traceback == "tb"
    assert client.replay("default", [kept[0]]) == [kept[0]]
    info = client.get(kept[0])
    assert info.state == "queued" and info.attempts == 0
    assert client.purge_all("default") == 2 and r.zcard("dtqs:{default}:dead") == 0


def test_garbage_records_are_dead_lettered_not_dropped(client, r):
    r.lpush("dtqs:{default}:pending:2", "default.garbage1", "default.garbage2")
    r.set("dtqs:{default}:t:default.garbage1", "not a hash")
    r.hset("dtqs:{default}:t:default.garbage2", mapping={"state": "queued"})
    good = client.submit("echo", 1)
    assert [t.id for t in fetch(client).tasks] == [good]
    dead = {d.id: d for d in client.dead_letters("default")}
    assert set(dead) == {"default.garbage1", "default.garbage2"}
    assert {d.reason for d in dead.values()} == {"decode_error"}


def test_queue_counts(client):
    client.submit("echo", 1, priority="high")
    client.submit("echo", 1, delay=60)
    client.submit("echo", 1)
    fetch(client, 1)
    q = client.queues()["default"]
    assert q["pending"] == {"critical": 0, "high": 0, "normal": 1, "low": 0}
    assert (q["scheduled"], q["active"], q["dead"], q["paused"]) == (1, 1, 0, False)


def test_a_batch_over_two_queues_survives_a_flushed_script_cache(project, redis_url, r):
    p = project(
        "version: 1\nqueues: {default: {}, mail: {priorities: [urgent, bulk]}}\n"
        "functions:\n  echo: {handler: functions/tasks.py:echo}\n"
        "  send: {handler: functions/tasks.py:echo, queue: mail}\n"
    )

    def calls(stats: dict, command: str) -> int:
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    with Client(redis_url=redis_url, manifest=p.manifest()) as c:
        before = r.info("commandstats")
        ids = c.submit_many(
            [{"function": "echo", "payload": 1}, {"function": "send", "payload": 2}]
        )
        r.script_flush()  # as after a Redis restart: the next EVALSHA answers NOSCRIPT
        more = c.submit_many(
            [{"function": "send", "payload": 3}, {"function": "echo", "payload": 4}]
        )
        single = c.submit("echo", 5)
    stats = r.info("commandstats")
    # One EVALSHA per queue per batch, and no SCRIPT EXISTS round trip before it.
    assert calls(stats, "script|exists") == calls(before, "script|exists")
    assert calls(stats, "evalsha") - calls(before, "evalsha") >= 5
    assert r.llen("dtqs:{default}:pending:2") == 3 and r.llen("dtqs:{mail}:pending:1") == 2
    assert len({*ids, *more, single}) == 5


def test_a_cancelled_record_is_kept_for_its_result_ttl(project, redis_url, r):
    p = project(
        "version: 1\nqueues: {default: {}}\nfunctions:\n"
        "  short: {handler: functions/tasks.py:echo, result_ttl: 5s}\n"
        "  gone: {handler: functions/tasks.py:echo, result_ttl: 0}\n"
    )
    with Client(redis_url=redis_url, manifest=p.manifest()) as c:
        short = c.submit("short", 1)
        assert c.cancel_task(short).state == "cancelled"
        assert 0 < r.pttl(f"dtqs:{{default}}:t:{short}") <= 5000
        gone = c.submit("gone", 1)
        info = c.cancel_task(gone)  # one round trip fewer: the script reads the ttl itself
        assert (info.id, info.state) == (gone, "cancelled") and c.get(gone) is None


def test_submission_reaching_redis_after_its_deadline_stores_nothing(project, redis_url, r):
    # A write that sat in a socket buffer while Redis was frozen must not be stored
    # after the API answered 503 (issue 6, scenario 8).
    from dtqs.runtime.errors import BrokerUnavailableError
    from dtqs.runtime.redis.broker import Broker

    manifest = project().manifest()
    late = Client(manifest=manifest, broker=Broker(redis_url, deadline_s=1.0))
    try:
        seconds, micros = r.time()
        server_ms = seconds * 1000 + micros // 1000
        assert abs(late.broker.submit_deadline_ms() - (server_ms + 950)) < 500
        late.broker._offset_ms -= 5_000  # as if the call left 5 s before Redis ran it
        with pytest.raises(BrokerUnavailableError, match="after its deadline"):
            late.submit("echo", {"x": 1})
        assert r.keys("dtqs:*") == []
        late.broker._offset_ms += 5_000
        assert late.get(late.submit("echo", {"x": 2})).state == "queued"
    finally:
        late.close()


def test_submission_refused_for_memory_is_unavailable_and_stores_nothing(project, redis_server):
    # Inside a script Redis refuses a write without the OOM prefix; it must still be a
    # 503-style "unavailable", not an internal error (issue 6, scenario 12).
    import redis as redis_py

    from dtqs.runtime.errors import BrokerUnavailableError

    _, port = redis_server("--maxmemory-policy", "noeviction")
    raw = redis_py.Redis(port=port)
    raw.set("ballast", b"x" * 2**20)
    raw.config_set("maxmemory", int(raw.info("memory")["used_memory"]) - 2**19)  # full
    c = Client(redis_url=f"redis://127.0.0.1:{port}/0", manifest=project().manifest())
    try:
        with pytest.raises(BrokerUnavailableError, match="out of memory"):
            c.submit("echo", {"x": 1})
        assert raw.keys("dtqs:*") == []
    finally:
        c.close()
        raw.close()
