"""Every way a task ends for good follows its function's policy (issue 12, section 6):
dead-lettered (dead ZSET, no expiry, the queue's dead set trimmed to dead_letter_max)
or, with `dead_letter: false`, ended `failed` and kept for its result_ttl (done ZSET),
with the same counters whoever decided: the worker (max_attempts, skip_retry, timeout,
a payload that is not JSON), the sweep (worker_lost) or fetch (a garbage record)."""

from __future__ import annotations

import json
import time

import pytest

from dtqs.runtime.client import Client
from dtqs.runtime.redis.scripts import EndPolicy
from dtqs.runtime.testing import InProcessWorker

pytestmark = pytest.mark.redis

TASKS = """\
import time
from dtqs.runtime.retry import SkipRetry

def fails(payload):
    raise ValueError("always")

def skips(payload):
    raise SkipRetry("hopeless")

def slow(payload):
    time.sleep(1)

def echo(payload):
    return payload
"""

#: Each function twice: `<name>_dl` dead-letters, `<name>_keep` has dead_letter: false.
FUNCTIONS = {
    "fails": "retry: {max_attempts: 1}",
    "skips": "retry: {max_attempts: 3}",
    "slow": "retry: {max_attempts: 1}, timeout: 200ms",
    "echo": "retry: {max_attempts: 1}",
}

RESULT_TTL_MS = 3_600_000
DEAD_LETTER_MAX = 2
BASE = "dtqs:{default}"
DEAD, DONE, STATS, TASK = f"{BASE}:dead", f"{BASE}:done", f"{BASE}:stats", f"{BASE}:t:"


def manifest_text() -> str:
    lines = [
        "version: 1",
        "queues:",
        f"  default: {{concurrency: 2, dead_letter_max: {DEAD_LETTER_MAX}}}",
        "functions:",
    ]
    for name, options in FUNCTIONS.items():
        for suffix, dead_letter in (("dl", "true"), ("keep", "false")):
            lines.append(
                f"  {name}_{suffix}: {{handler: functions/tasks.py:{name}, {options}, "
                f"result_ttl: 1h, dead_letter: {dead_letter}}}"
            )
    lines += ["workers: {heartbeat_interval: 200ms, reclaim_interval: 200ms}", ""]
    return "\n".join(lines)


@pytest.fixture
def client(project, redis_url, r):
    c = Client(
        redis_url=redis_url,
        manifest=project(manifest_text(), {"functions/tasks.py": TASKS}).manifest(),
    )
    yield c
    c.close()


def fn_for(name: str, dead_letter: bool) -> str:
    return f"{name}_{'dl' if dead_letter else 'keep'}"


def seed_dead_letters(r) -> list[str]:
    """The queue's dead set full (dead_letter_max), with letters young enough that no
    sweep drops them for age; oldest first."""
    seconds, micros = r.time()
    now_ms = seconds * 1000 + micros // 1000
    ids = [f"default.old{i}" for i in range(DEAD_LETTER_MAX)]
    for i, task_id in enumerate(ids):
        r.hset(TASK + task_id, mapping={"id": task_id, "function": "echo_dl", "state": "dead"})
        r.zadd(DEAD, {task_id: now_ms - 10_000 + i})
    return ids


def counters(r) -> dict[str, str]:
    return {k: v for k, v in r.hgetall(STATS).items() if k.split(":")[0] in ("failed", "dead")}


def assert_ended(r, task_id, fn, dead_letter, reason, error_type, old) -> None:
    """The task ended for good as its function's policy says, counted like finish.lua
    counts (fn None: no function, so no per-function counter)."""
    key = TASK + task_id
    record = r.hgetall(key)
    assert record["reason"] == reason and record["finished_at"], record
    assert json.loads(record["error"])["type"] == error_type
    expected = {"failed": "1"}
    if dead_letter:
        assert record["state"] == "dead"
        assert r.zscore(DONE, task_id) is None and r.pttl(key) == -1  # kept until trimmed
        # dead_letter_max: the oldest letter was dropped, its record with it.
        assert r.zrange(DEAD, 0, -1) == [old[1], task_id]
        assert not r.exists(TASK + old[0])
        expected["dead"] = "1"
    else:
        assert record["state"] == "failed"
        assert r.zscore(DONE, task_id) is not None and 0 < r.pttl(key) <= RESULT_TTL_MS
        assert r.zrange(DEAD, 0, -1) == old  # nothing buried, nothing trimmed
    if fn:
        expected.update({f"{name}:{fn}": n for name, n in expected.items()})
    assert counters(r) == expected


@pytest.mark.parametrize("dead_letter", [True, False], ids=["dead_letter", "no_dead_letter"])
@pytest.mark.parametrize(
    ("name", "reason", "error_type"),
    [
        ("fails", "max_attempts", "ValueError"),
        ("skips", "skip_retry", "SkipRetry"),
        ("slow", "timeout", "Timeout"),
        ("echo", "decode_error", "DecodeError"),  # the worker's JSON check
    ],
)
def test_the_workers_decisions_follow_the_policy(
    client, r, redis_url, name, reason, error_type, dead_letter
):
    old = seed_dead_letters(r)
    fn = fn_for(name, dead_letter)
    task_id = client.submit(fn, {"x": 1})
    if reason == "decode_error":
        r.hset(TASK + task_id, "payload", "{not json")
    with InProcessWorker(client.manifest, redis_url):
        info = client.wait(task_id, 20)
    assert info.attempts == 1
    assert_ended(r, task_id, fn, dead_letter, reason, error_type, old)


def lease_then_lose(client, r, fn: str) -> str:
    """A task leased once (its last attempt) whose worker vanished: its lease expired."""
    task_id = client.submit(fn, {"x": 1})
    qk = client.broker.qkeys("default", 4)
    policy = EndPolicy.of(client.manifest, "default")
    leased = client.broker.scripts.fetch(qk, 1, 1, "t", [0, 1, 2, 3], policy).tasks
    assert [t.id for t in leased] == [task_id]
    while r.zrangebyscore(f"{BASE}:active", "-inf", "+inf", withscores=True)[0][1] >= server_ms(r):
        time.sleep(0.002)  # the 1 ms lease runs out (Redis's clock)
    return task_id


def server_ms(r) -> int:
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


@pytest.mark.parametrize("dead_letter", [True, False], ids=["dead_letter", "no_dead_letter"])
def test_worker_lost_follows_the_policy(client, r, dead_letter):
    old = seed_dead_letters(r)
    fn = fn_for("echo", dead_letter)
    task_id = lease_then_lose(client, r, fn)
    policy = EndPolicy.of(client.manifest, "default")
    requeued, ended, _, _ = client.broker.scripts.reclaim(
        client.broker.qkeys("default", 4), policy, 10**9
    )
    assert (requeued, ended) == (0, 1)
    assert_ended(r, task_id, fn, dead_letter, "worker_lost", "WorkerLost", old)
    assert r.zcard(f"{BASE}:active") == 0


def test_worker_lost_of_a_function_the_manifest_dropped_is_dead_lettered(client, r):
    old = seed_dead_letters(r)
    task_id = lease_then_lose(client, r, "echo_keep")
    # As if the manifest no longer had its function: the default max attempts apply.
    r.hset(TASK + task_id, mapping={"function": "gone", "attempts": 3})
    policy = EndPolicy.of(client.manifest, "default")
    client.broker.scripts.reclaim(client.broker.qkeys("default", 4), policy, 10**9)
    assert_ended(r, task_id, "gone", True, "worker_lost", "WorkerLost", old)


def fetch(client):
    qk = client.broker.qkeys("default", 4)
    policy = EndPolicy.of(client.manifest, "default")
    return client.broker.scripts.fetch(qk, 10, 60_000, "t", [0, 1, 2, 3], policy)


@pytest.mark.parametrize("dead_letter", [True, False], ids=["dead_letter", "no_dead_letter"])
def test_a_queued_record_without_payload_follows_its_functions_policy(client, r, dead_letter):
    old = seed_dead_letters(r)
    fn = fn_for("echo", dead_letter)
    task_id = client.submit(fn, {"x": 1})
    r.hdel(TASK + task_id, "payload")
    good = client.submit("echo_dl", {"x": 2})
    assert [t.id for t in fetch(client).tasks] == [good]
    assert_ended(r, task_id, fn, dead_letter, "decode_error", "DecodeError", old)
    assert r.hget(TASK + task_id, "function") == fn  # the record is kept, not rewritten


@pytest.mark.parametrize("where", ["pending", "scheduled"])
def test_a_record_that_is_not_a_hash_is_dead_lettered_and_the_set_trimmed(client, r, where):
    # No function, so no policy: a dead letter, and the dead set still kept to its cap.
    old = seed_dead_letters(r)
    task_id = "default.garbage"
    if where == "pending":
        r.lpush(f"{BASE}:pending:2", task_id)
    else:
        r.zadd(f"{BASE}:scheduled", {task_id: 1})
    r.set(TASK + task_id, "not a hash")
    assert fetch(client).tasks == []
    assert_ended(r, task_id, None, True, "decode_error", "DecodeError", old)
    assert r.hget(TASK + task_id, "id") == task_id


def test_a_paused_queue_still_buries_due_garbage_with_its_counters(client, r):
    old = seed_dead_letters(r)
    client.pause("default")
    r.zadd(f"{BASE}:scheduled", {"default.garbage": 1})
    r.set(TASK + "default.garbage", "not a hash")
    assert fetch(client).tasks == []
    assert_ended(r, "default.garbage", None, True, "decode_error", "DecodeError", old)


def test_the_policy_names_every_function_of_the_manifest(client):
    policy = EndPolicy.of(client.manifest, "default")
    table = json.loads(policy.json)
    assert table["fails_dl"] == [1, True, RESULT_TTL_MS]
    assert table["skips_keep"] == [3, False, RESULT_TTL_MS]
    assert set(table) == set(client.manifest.functions)
    assert policy.dead_letter_max == DEAD_LETTER_MAX
    # fetch gets only the exceptions: a function not named there dead-letters.
    assert json.loads(policy.failed_json) == {n: v for n, v in table.items() if n.endswith("_keep")}


def test_a_queued_record_of_an_unknown_function_without_payload_is_dead_lettered(client, r):
    old = seed_dead_letters(r)
    task_id = client.submit("echo_keep", {"x": 1})
    r.hset(TASK + task_id, "function", "gone")
    r.hdel(TASK + task_id, "payload")
    assert fetch(client).tasks == []
    assert_ended(r, task_id, "gone", True, "decode_error", "DecodeError", old)
