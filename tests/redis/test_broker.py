"""Broker's plain (non-script) commands against a real server."""

from __future__ import annotations

import pytest

from dtqs.runtime.client import Client
from dtqs.runtime.redis.broker import NOTIFY_MAX
from dtqs.runtime.redis.scripts import EndPolicy, Outcome

pytestmark = pytest.mark.redis


def park(client: Client) -> str:
    """A task parked as a worker parks one whose function it does not know."""
    task_id = client.submit("echo", 1)
    qk = client.broker.qkeys("default", 4)
    policy = EndPolicy.of(client.manifest, "default")
    leased = client.broker.scripts.fetch(qk, 1, 60_000, "t", [0, 1, 2, 3], policy).tasks[0]
    error = '{"type":"UnknownFunction","message":"not in this worker\'s manifest"}'
    parked = Outcome(task_id, leased.token, "park", error, "", 60_000)
    assert client.broker.scripts.finish(qk, [parked], 100) == [True]
    return task_id


def test_wake_parked_keeps_the_wake_up_list_bounded(client, r):
    task_id = park(client)
    qk = client.broker.qkeys("default", 4)
    r.delete(qk.notify)
    r.lpush(qk.notify, *["1"] * NOTIFY_MAX)  # tokens no idle worker took
    assert client.broker.wake_parked(qk, {"echo"}, 100) == 1
    assert r.llen(qk.notify) == NOTIFY_MAX
    seconds, micros = r.time()
    assert r.zscore(qk.scheduled, task_id) <= seconds * 1000 + micros // 1000  # due now


def test_wake_parked_pushes_a_token_for_an_idle_worker(client, r):
    park(client)
    qk = client.broker.qkeys("default", 4)
    r.delete(qk.notify)
    assert client.broker.wake_parked(qk, {"echo"}, 100) == 1
    assert r.llen(qk.notify) == 1


def test_wake_keeps_the_wake_up_list_bounded(client, r):
    qk = client.broker.qkeys("default", 4)
    r.delete(qk.notify)
    for _ in range(NOTIFY_MAX + 5):
        client.broker.wake([qk])
    assert r.llen(qk.notify) == NOTIFY_MAX
