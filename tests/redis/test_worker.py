"""The worker engine, on threads of the test process, against a real server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dtqs.runtime.client import Client
from dtqs.runtime.testing import InProcessWorker

pytestmark = pytest.mark.redis

TASKS = """\
import asyncio, json, os, time
from dtqs.runtime.retry import SkipRetry

def note(payload, ctx):
    with open(payload["ledger"], "a") as fh:
        fh.write(json.dumps({"id": ctx.task_id, "attempt": ctx.attempt, "t": time.time(),
                             "tag": payload.get("tag")}) + "\\n")
    if payload.get("fail_until", 0) >= ctx.attempt:
        raise ValueError(f"failing attempt {ctx.attempt}")
    if payload.get("sleep"):
        time.sleep(payload["sleep"])
    return {"tag": payload.get("tag"), "attempt": ctx.attempt}

def always_fails(payload):
    raise ValueError("always")

def skip(payload):
    raise SkipRetry("hopeless")

def not_json(payload):
    return {1, 2}

def with_ctx(payload, ctx):
    ctx.progress(0.5, "half")
    return {"headers": dict(ctx.headers), "queue": ctx.queue, "function": ctx.function}

async def async_echo(payload):
    await asyncio.sleep(0.01)
    return payload

async def async_slow(payload):
    await asyncio.sleep(5)
"""

MANIFEST = """\
version: 1
queues:
  default:
    concurrency: {concurrency}
    visibility_timeout: 2s
  fair:
    priorities: [high, low]
    weights: {{high: 1, low: 1}}
    concurrency: 1
functions:
  note:
    handler: functions/tasks.py:note
    timeout: {timeout}
    retry: {{max_attempts: 3, backoff: fixed, initial_delay: 300ms, jitter: false}}
  fair_note:
    handler: functions/tasks.py:note
    queue: fair
    priority: high
  always_fails:
    handler: functions/tasks.py:always_fails
    retry: {{max_attempts: 2, backoff: none}}
  soft_fails:
    handler: functions/tasks.py:always_fails
    retry: {{max_attempts: 1}}
    dead_letter: false
  skip:
    handler: functions/tasks.py:skip
  not_json:
    handler: functions/tasks.py:not_json
    retry: {{max_attempts: 1}}
  with_ctx:
    handler: functions/tasks.py:with_ctx
  async_echo:
    handler: functions/tasks.py:async_echo
  async_slow:
    handler: functions/tasks.py:async_slow
    timeout: 300ms
    retry: {{max_attempts: 1}}
workers:
  heartbeat_interval: 200ms
  reclaim_interval: 200ms
"""


@pytest.fixture
def setup(project, redis_url, r, tmp_path):
    def make(concurrency: int = 4, timeout: str = "30s"):
        p = project(MANIFEST.format(concurrency=concurrency, timeout=timeout),
                    {"functions/tasks.py": TASKS})  # fmt: skip
        manifest = p.manifest()
        client = Client(redis_url=redis_url, manifest=manifest)
        worker = InProcessWorker(manifest, redis_url)
        made.append((client, worker))
        return client, worker

    made: list = []
    yield make
    for client, worker in made:
        if not worker.worker.stopping.is_set():
            worker.stop(0.5)
        client.close()


def ledger(tmp_path: Path) -> list[dict]:
    path = tmp_path / "ledger"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_tasks_run_in_priority_order(setup, tmp_path):
    client, worker = setup(concurrency=1)
    client.pause("default")
    pl = {"ledger": str(tmp_path / "ledger")}
    order = [("l", "low"), ("n", "normal"), ("c", "critical"), ("h", "high")]
    ids = [client.submit("note", {**pl, "tag": tag}, priority=prio) for tag, prio in order]
    client.pause("default", False)
    with worker:
        for task_id in ids:
            assert client.wait(task_id, 10).state == "succeeded"
    assert [e["tag"] for e in ledger(tmp_path)] == ["c", "h", "n", "l"]


def test_weighted_mode_does_not_starve_low_levels(setup, tmp_path):
    client, worker = setup()
    client.pause("fair")
    pl = {"ledger": str(tmp_path / "ledger")}
    ids = [client.submit("fair_note", {**pl, "tag": "h"}, priority="high") for _ in range(20)]
    ids += [client.submit("fair_note", {**pl, "tag": "l"}, priority="low") for _ in range(20)]
    client.pause("fair", False)
    with worker:
        for task_id in ids:
            client.wait(task_id, 10)
    tags = [e["tag"] for e in ledger(tmp_path)]
    assert "l" in tags[:20], tags  # strict order would run all 20 "h" first


def test_delayed_task_waits_for_its_time(setup, tmp_path):
    client, worker = setup()
    with worker:
        task_id = client.submit("note", {"ledger": str(tmp_path / "ledger")}, delay=0.5)
        info = client.wait(task_id, 10)
    assert info.state == "succeeded"
    assert (info.started_at - info.created_at).total_seconds() >= 0.49


def test_retries_follow_the_backoff_and_keep_each_error(setup, tmp_path):
    client, worker = setup()
    with worker:
        task_id = client.submit("note", {"ledger": str(tmp_path / "ledger"), "fail_until": 2})
        info = client.wait(task_id, 10)
    assert info.state == "succeeded" and info.attempts == 3 and info.result["attempt"] == 3
    runs = ledger(tmp_path)
    assert [e["attempt"] for e in runs] == [1, 2, 3]
    gaps = [b["t"] - a["t"] for a, b in zip(runs, runs[1:], strict=False)]
    assert all(0.29 <= g < 1.5 for g in gaps), gaps
    assert [e["message"] for e in info.errors] == ["failing attempt 1", "failing attempt 2"]


def test_out_of_attempts_goes_to_dead_letters_and_replays(setup):
    client, worker = setup()
    with worker:
        task_id = client.submit("always_fails", {})
        info = client.wait(task_id, 10)
        assert info.state == "dead" and info.attempts == 2 and info.reason == "max_attempts"
        assert info.error == {"type": "ValueError", "message": "always"}
        assert "ValueError: always" in info.traceback
        assert [d.id for d in client.dead_letters("default")] == [task_id]
        assert client.replay("default", [task_id]) == [task_id]
        info = client.wait(task_id, 10)
    assert info.state == "dead" and info.attempts == 2 and len(info.errors) == 4


def test_without_dead_letters_a_task_ends_failed(setup):
    client, worker = setup()
    with worker:
        info = client.wait(client.submit("soft_fails", {}), 10)
    assert info.state == "failed" and client.dead_letters("default") == []


def test_skip_retry_dead_letters_at_once(setup):
    client, worker = setup()
    with worker:
        info = client.wait(client.submit("skip", {}), 10)
    assert info.state == "dead" and info.attempts == 1 and info.reason == "skip_retry"


def test_result_that_is_not_json_fails_the_attempt(setup):
    client, worker = setup()
    with worker:
        info = client.wait(client.submit("not_json", {}), 10)
    assert info.state == "dead" and "not JSON-serialisable" in info.error["message"]


def test_timeout_fails_the_attempt_and_the_slot_keeps_serving(setup, tmp_path):
    client, worker = setup(concurrency=1, timeout="300ms")
    pl = {"ledger": str(tmp_path / "ledger")}
    with worker:
        slow = client.submit("note", {**pl, "sleep": 3, "tag": "slow"}, priority="critical")
        time.sleep(0.05)
        fast = client.submit("note", {**pl, "tag": "fast"})
        assert client.wait(fast, 3).state == "succeeded"  # the only slot did not hang
        info = client.get(slow)
        assert info.errors and info.errors[0]["type"] == "Timeout"
        assert "timeout" in info.errors[0]["message"]


def test_context_headers_and_progress(setup):
    client, worker = setup()
    with worker:
        task_id = client.submit("with_ctx", {}, headers={"traceparent": "00-4bf92f-00f067-01"})
        info = client.wait(task_id, 10)
    assert info.result == {"headers": {"traceparent": "00-4bf92f-00f067-01"},
                           "queue": "default", "function": "with_ctx"}  # fmt: skip
    assert info.progress == {"fraction": 0.5, "message": "half"}


def test_async_handlers_and_their_timeout(setup):
    client, worker = setup()
    with worker:
        assert client.wait(client.submit("async_echo", {"a": 1}), 10).result == {"a": 1}
        info = client.wait(client.submit("async_slow", {}), 10)
    assert info.state == "dead" and info.reason == "timeout"
    assert info.error["type"] == "Timeout"


def test_stop_releases_unfinished_tasks_at_once(setup, tmp_path):
    client, worker = setup(concurrency=1)
    worker.start()
    task_id = client.submit("note", {"ledger": str(tmp_path / "ledger"), "sleep": 5})
    deadline = time.monotonic() + 5
    while not ledger(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = client.submit("note", {"ledger": str(tmp_path / "ledger")}, priority="low")
    started = time.monotonic()
    assert worker.stop(grace_s=0.2) == 1
    assert time.monotonic() - started < 1.5
    info = client.get(task_id)
    assert info.state == "queued" and info.attempts == 0
    assert client.get(queued).state == "queued"
    assert client.queues()["default"]["active"] == 0


@pytest.mark.parametrize("flag", ["stopping", "draining"])
def test_a_task_leased_as_the_worker_winds_down_is_given_back(setup, tmp_path, flag):
    # The fetcher's idle wait and its fetch are one round trip: when the wait ends after
    # a signal (stopping) or a recycle (draining) began, the leased task must go back to
    # its queue at once, not run here nor wait for its lease to expire.
    client, worker = setup()
    worker.start()
    time.sleep(0.3)  # both fetchers are in their idle wait
    getattr(worker.worker, flag).set()
    task_id = client.submit("note", {"ledger": str(tmp_path / "ledger")})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        info = client.get(task_id)
        if client.queues()["default"]["active"] == 0 and info.state == "queued":
            break
        time.sleep(0.01)
    assert info.state == "queued" and info.attempts == 0
    assert client.queues()["default"]["active"] == 0
    assert ledger(tmp_path) == []  # it did not run
    assert worker.worker.in_flight() == 0
    # NOTE: the fixture stops only workers not already stopping; this one must not keep
    # its heartbeat registered for the tests after it.
    worker.stop(0.5)
    assert client.workers() == []


def test_worker_registers_a_heartbeat(setup, wait_for):
    client, worker = setup()
    with worker:
        live = wait_for(client.workers, 5, "the worker's first beat")
        assert len(live) == 1 and live[0]["queues"] == ["default", "fair"]
    assert client.workers() == []


def test_a_handler_file_being_rewritten_costs_no_attempt(setup, tmp_path):
    """Hot reload under load (a CI run): a new worker process read functions/ while the
    file was half written; 771 attempts failed before the process was replaced. A failed
    import is now read again after a short pause before a task's attempt fails."""
    import threading

    client, worker = setup()
    path = Path(client.manifest.functions["note"].handler_file)
    source = path.read_text()
    path.write_text("")  # truncated, as in the middle of a rewrite
    threading.Timer(0.05, path.write_text, args=(source,)).start()
    task_id = client.submit("note", {"ledger": str(tmp_path / "ledger")})
    with worker:
        info = client.wait(task_id, 10)
    assert (info.state, info.attempts, info.errors) == ("succeeded", 1, [])
