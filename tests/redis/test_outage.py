"""Start order and outages inside one process: a worker engine and a scheduler started
before Redis serve once it answers; an outage is logged once per change of state; a
client shared by many threads never fails for want of a pooled connection."""

from __future__ import annotations

import logging
import signal
import threading
import time

import pytest
import redis

from dtqs.runtime.client import Client
from dtqs.runtime.errors import BrokerUnavailableError
from dtqs.runtime.redis.broker import Broker
from dtqs.runtime.scheduler import Scheduler
from dtqs.runtime.testing import InProcessWorker

pytestmark = pytest.mark.redis

MANIFEST = """\
version: 1
queues:
  default:
    concurrency: 2
    visibility_timeout: 2s
functions:
  echo:
    handler: functions/tasks.py:echo
schedules:
  often:
    function: echo
    every: 1s
workers:
  heartbeat_interval: 5s
  reclaim_interval: 200ms
"""


def backend_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dtqs.backend"]


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    redis_server, unused_port, caplog
):
    caplog.set_level(logging.INFO, logger="dtqs.backend")
    broker = Broker(f"redis://127.0.0.1:{unused_port}/0", connect_timeout_s=0.2)
    for _ in range(5):
        with pytest.raises(BrokerUnavailableError, match="unreachable"):
            broker.ping()
    assert broker.outage.down
    lines = backend_lines(caplog)
    assert len(lines) == 1 and "unreachable" in lines[0] and "retrying" in lines[0]

    redis_server(port=unused_port)
    assert broker.ping() and broker.ping()
    lines = backend_lines(caplog)
    assert len(lines) == 2 and lines[1].startswith("Redis answers again (after ")
    assert not broker.outage.down and broker.outage.recoveries == 1
    broker.close()


def test_a_worker_started_before_redis_serves_once_it_answers(
    project, redis_server, unused_port, wait_for
):
    p = project(MANIFEST)
    url = f"redis://127.0.0.1:{unused_port}/0"
    worker = InProcessWorker(p.manifest(), url)
    worker.broker._options["socket_connect_timeout"] = 0.2
    worker.start(wait_s=0)  # NOTE: raised on the eviction-policy check before the fix
    try:
        redis_server(port=unused_port)
        with Client(redis_url=url, manifest=p.manifest()) as client:
            task_id = client.submit("echo", {"n": 1})
            assert client.wait(task_id, 10).result == {"n": 1}
            # The registry is back at once, not after a whole 5 s heartbeat interval.
            live = wait_for(client.workers, 3, "the worker in the registry")
            assert live[0]["id"] == worker.worker.worker_id
    finally:
        worker.stop(1.0)


def test_stopping_a_heartbeat_that_never_started_is_harmless(project, unused_port):
    p = project(MANIFEST)
    worker = InProcessWorker(p.manifest(), f"redis://127.0.0.1:{unused_port}/0")
    worker.heartbeat.stop()  # NOTE: "cannot join thread before it is started" before
    worker.sweep.stop()


def test_a_scheduler_started_before_redis_fires_once_it_answers(
    project, redis_server, unused_port, wait_for, caplog
):
    caplog.set_level(logging.INFO)
    p = project(MANIFEST)
    url = f"redis://127.0.0.1:{unused_port}/0"
    client = Client(redis_url=url, manifest=p.manifest())
    client.broker._options["socket_connect_timeout"] = 0.2
    runner = Scheduler(client)
    thread = threading.Thread(target=runner.run, args=(p.manifest(),), daemon=True)
    thread.start()
    try:
        wait_for(lambda: client.broker.outage.down, 5, "the scheduler to meet the outage")
        runner.stopping.wait(1.5)  # a few looks while Redis is away
        redis_server(port=unused_port)
        fired = wait_for(lambda: client.broker.last_fires(["often"])["often"], 5, "a tick")
        assert fired["last_task_id"].startswith("default.cron-often-")
    finally:
        runner.stop()
        thread.join(5)
        client.close()
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name in ("dtqs.scheduler", "dtqs.backend")
    ]
    assert len(warnings) == 1 and "unreachable" in warnings[0], warnings


def test_a_scheduler_reload_during_an_outage_is_applied_when_redis_is_back(
    project, redis_server, unused_port
):
    p = project(MANIFEST.replace("every: 1s", "every: 1h"))
    proc, port = redis_server(port=unused_port)
    client = Client(redis_url=f"redis://127.0.0.1:{port}/0", manifest=p.manifest())
    client.broker._options["socket_connect_timeout"] = 0.2
    runner = Scheduler(client)
    runner.start(p.manifest())
    proc.kill()
    proc.wait()
    p.write("dtqs.yaml", MANIFEST.replace("often:", "other:"))
    runner.reload(p.manifest())  # NOTE: raised "Redis is unreachable" before the fix
    assert set(runner.entries) == {"often"}
    redis_server(port=port)
    runner.tick()
    runner._apply_pending()  # what the next look of run() does first
    assert set(runner.entries) == {"other"}
    client.close()


def test_a_client_shared_by_200_threads_never_runs_out_of_connections(redis_url, project):
    p = project(MANIFEST)
    client = Client(redis_url=redis_url, manifest=p.manifest())
    failures: list[BaseException] = []
    barrier = threading.Barrier(200)

    def call() -> None:
        barrier.wait()
        try:
            client.submit("echo", {})
            client.queues()
        except BaseException as exc:  # noqa: BLE001 - collected for the assert
            failures.append(exc)

    threads = [threading.Thread(target=call) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    client.close()
    assert failures == []


def test_an_exhausted_pool_says_so_and_is_not_an_outage(redis_url):
    broker = Broker(redis_url, socket_timeout_s=0.3, max_connections=2)
    pool = broker.redis.connection_pool
    held = [pool.get_connection(), pool.get_connection()]
    try:
        with pytest.raises(BrokerUnavailableError, match="pool is exhausted") as caught:
            broker.ping()
        assert "unreachable" not in caught.value.message
        assert not broker.outage.down
    finally:
        for conn in held:
            pool.release(conn)
    assert broker.ping()
    broker.close()


def test_a_submit_to_a_frozen_redis_fails_within_the_deadline_and_stores_nothing(
    project, redis_server
):
    """Before: Client.submit blocked 10 s on a frozen Redis, raised 'unavailable', and
    the task was stored when Redis woke up. Now 'unavailable' means 'not stored'."""
    p = project(MANIFEST)
    proc, port = redis_server()
    client = Client(redis_url=f"redis://127.0.0.1:{port}/0", manifest=p.manifest())
    client.submit("echo", {"warm": True})  # reads Redis's clock for the deadline
    proc.send_signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        with pytest.raises(BrokerUnavailableError):
            client.submit("echo", {"frozen": True})
        took = time.monotonic() - began
    finally:
        proc.send_signal(signal.SIGCONT)
    r = redis.Redis(port=port, decode_responses=True)
    time.sleep(0.3)  # anything still buffered lands by now
    stored = [r.hget(k, "payload") for k in r.scan_iter("dtqs:{default}:t:*")]
    client.close()
    assert stored == ['{"warm":true}'], stored
    assert took < 3.0, took  # the 1 s default deadline, far from the 10 s it took before
