"""Waiting for tasks to end: notifications from the scripts, one waiter per client,
and the API's long-poll budget."""

from __future__ import annotations

import threading
import time

import pytest
from falcon import testing

from dtqs.api.app import ApiState, create_app
from dtqs.runtime.client import Client
from dtqs.runtime.errors import TaskNotFoundError, WaitTimeoutError
from dtqs.runtime.redis.scripts import EndPolicy, Outcome
from dtqs.runtime.testing import InProcessWorker
from dtqs.runtime.waiting import TaskWaiter

pytestmark = pytest.mark.redis

MANIFEST = """\
version: 1
queues:
  default:
    visibility_timeout: 1s
    concurrency: 2
functions:
  echo:
    handler: functions/tasks.py:echo
  slow:
    handler: functions/tasks.py:slow
  boom:
    handler: functions/tasks.py:boom
    retry: {max_attempts: 1}
workers:
  heartbeat_interval: 200ms
  reclaim_interval: 200ms
api:
  max_long_polls: 2
"""
FILES = {
    "functions/tasks.py": (
        "import time\n"
        "def echo(payload):\n    return payload\n"
        "def slow(payload):\n    time.sleep(payload.get('s', 0.5))\n    return 'slow'\n"
        "def boom(payload):\n    raise ValueError('boom')\n"
    )
}


@pytest.fixture
def client(project, redis_url, r):
    c = Client(redis_url=redis_url, manifest=project(MANIFEST, FILES).manifest())
    # NOTE: no safety re-read during these tests: a wait that ends proves the
    # notification woke it, not the once-a-second look.
    c._waiter = TaskWaiter(c.broker, recheck_s=3600)
    yield c
    c.close()


def announced(r, channel: str, action) -> list[str]:
    """The ids published on `channel` while `action()` runs."""
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=1)
    action()
    ids: list[str] = []
    while (message := pubsub.get_message(timeout=0.2)) is not None:
        ids += message["data"].split()
    pubsub.close()
    return ids


def test_every_way_to_a_final_state_is_announced(client, r):
    qk = client.broker.qkeys("default", 4)
    scripts = client.broker.scripts
    policy = EndPolicy.of(client.manifest, "default")
    done, dead, lost, gone = (client.submit("echo", {}) for _ in range(4))
    cancelled = client.submit("echo", {}, delay=60)
    got = scripts.fetch(qk, 4, 1, "w:1", [0, 1, 2, 3], policy).tasks
    token = {t.id: t.token for t in got}
    outcomes = [
        Outcome(done, token[done], "succeeded", "1", ms=60_000),
        Outcome(dead, token[dead], "dead", '{"type":"E"}', "tb", 0, "max_attempts"),
    ]
    assert announced(r, qk.finished, lambda: scripts.finish(qk, outcomes, 100)) == [done, dead]
    assert announced(r, qk.finished, lambda: scripts.cancel(qk, cancelled, 1000)) == [cancelled]
    r.hset(qk.task(lost), "attempts", 99)  # out of attempts: the sweep ends it
    time.sleep(0.01)  # the 1 ms leases have expired
    ended = announced(r, qk.finished, lambda: scripts.reclaim(qk, policy, 1000))
    assert sorted(ended) == sorted([lost])
    assert gone not in ended  # requeued, not ended: no announcement


def test_wait_is_woken_by_the_announcement_and_returns_the_outcome(client, redis_url):
    with InProcessWorker(client.manifest, redis_url):
        task_id = client.submit("slow", {"s": 0.3})
        info = client.wait(task_id, timeout=10)
        assert info.state == "succeeded" and info.result == "slow"
        failed = client.wait(client.submit("boom", {}), timeout=10)
        assert failed.state == "dead" and failed.error["type"] == "ValueError"
    assert client.waiter.waiting() == 0


def test_a_cancelled_task_wakes_its_waiter(client):
    task_id = client.submit("echo", {}, delay=60)
    threading.Timer(0.2, client.cancel, args=(task_id,)).start()
    assert client.wait(task_id, timeout=10).state == "cancelled"


def test_wait_times_out_and_unknown_tasks_are_not_found(client):
    task_id = client.submit("echo", {}, delay=60)
    with pytest.raises(WaitTimeoutError, match="still scheduled"):
        client.wait(task_id, timeout=0.2)
    with pytest.raises(TaskNotFoundError):
        client.wait("default.nosuchtask", timeout=0.2)
    assert client.watch(task_id, 0.05).state == "scheduled"


def test_many_waiters_share_one_listener_and_all_wake(client, redis_url):
    ids = [client.submit("slow", {"s": 0.05}) for _ in range(40)]
    states: list[str] = []
    threads = [threading.Thread(target=lambda i=i: states.append(client.wait(i, 20).state))
               for i in ids]  # fmt: skip
    for t in threads:
        t.start()
    with InProcessWorker(client.manifest, redis_url, concurrency=8):
        for t in threads:
            t.join(30)
    assert states == ["succeeded"] * 40
    listeners = [t for t in threading.enumerate() if t.name == "waiter"]
    assert len(listeners) <= 1


def test_a_missed_announcement_costs_at_most_the_recheck(client, r):
    client._waiter = TaskWaiter(client.broker, recheck_s=0.2)
    task_id = client.submit("echo", {}, delay=60)
    qk = client.broker.qkeys("default", 4)

    def finish_quietly() -> None:  # as if the message was lost: state changed, no PUBLISH
        time.sleep(0.3)
        r.zrem(qk.scheduled, task_id)
        r.hset(qk.task(task_id), mapping={"state": "succeeded", "result": "7"})

    threading.Thread(target=finish_quietly).start()
    assert client.wait(task_id, timeout=10).result == 7


def test_long_polls_past_the_budget_get_429_at_once(client):
    api = testing.TestClient(create_app(ApiState(client)))
    ids = [client.submit("echo", {}, delay=60) for _ in range(3)]
    answers: list[int] = []

    def poll(task_id: str) -> None:
        answers.append(api.simulate_get(f"/v1/tasks/{task_id}", params={"wait": "2"}).status_code)

    polls = [threading.Thread(target=poll, args=(i,)) for i in ids[:2]]
    for t in polls:
        t.start()
    deadline = time.monotonic() + 5
    while client.waiter.waiting() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    over = api.simulate_get(f"/v1/tasks/{ids[2]}", params={"wait": "2"})
    assert over.status_code == 429 and over.headers["retry-after"] == "1"
    assert "max_long_polls" in over.json["detail"]
    assert api.simulate_get(f"/v1/tasks/{ids[2]}").status_code == 200  # no wait: no slot
    client.cancel(ids[0])
    client.cancel(ids[1])
    for t in polls:
        t.join(10)
    assert sorted(answers) == [200, 200]
    again = api.simulate_get(f"/v1/tasks/{ids[0]}", params={"wait": "2"})
    assert again.status_code == 200 and again.json["state"] == "cancelled"
