"""Autoscaling signals read from a real server: samples, rates, never idle mid-task."""

from __future__ import annotations

import io
import json

import pytest

from dtqs.runtime.emf import EmfEmitter
from dtqs.runtime.redis.scripts import EndPolicy
from dtqs.runtime.stats import queue_stats

pytestmark = pytest.mark.redis


def test_a_read_takes_a_rate_sample_and_rates_follow_arrivals(client, r):
    qk = client.broker.qkeys("default", 4)
    now_ms = client.broker.server_time_ms()
    r.lpush(qk.rates, f"{now_ms - 60_000}:0:0")  # a minute ago: nothing finished, none open
    for i in range(30):
        client.submit("echo", i)
    (stats,) = queue_stats(client.broker, client.manifest)
    assert stats.autoscale.backlog == 30
    assert stats.autoscale.arrival_rate == pytest.approx(0.5, rel=0.05)  # 30 in ~60 s
    assert stats.autoscale.completion_rate == 0
    samples = r.lrange(qk.rates, 0, -1)
    assert len(samples) == 2 and samples[0].endswith(":0:30")  # the new sample, newest first
    queue_stats(client.broker, client.manifest)
    assert r.llen(qk.rates) == 2  # at most one sample per 5 s


def test_leased_tasks_keep_the_queue_from_looking_idle(client):
    client.submit("echo", 1)
    with client.broker.translated():
        client.broker.scripts.fetch(
            client.broker.qkeys("default", 4), 1, 60_000, "t", [0, 1, 2, 3],
            EndPolicy.of(client.manifest, "default"),
        )  # fmt: skip
    auto = client.queues()["default"]["autoscale"]
    assert auto["backlog"] == 0 and auto["in_flight"] == 1
    assert auto["suggested_workers"] == 1 and auto["idle"] is False


def test_emitter_prints_each_queue_once_per_interval(client):
    out = io.StringIO()
    emitter = EmfEmitter(client, interval_s=3600, out=out)
    client.submit("echo", 1)
    assert emitter.maybe_emit() is True
    assert emitter.maybe_emit() is False  # not due again for an hour
    (line,) = out.getvalue().splitlines()
    doc = json.loads(line)
    assert doc["Queue"] == "default" and doc["Backlog"] == 1 and doc["SuggestedWorkers"] == 1
    assert 3590 < emitter.seconds_until_due() <= 3600
