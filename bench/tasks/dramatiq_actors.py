"""Dramatiq: RedisBroker with its default middleware (no results backend, the default)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.tasks.common import QUEUE, REDIS_URL, count_one, record_latency

# NOTE: dramatiq's worker CLI imports this module and uses the broker it sets.
dramatiq.set_broker(RedisBroker(url=REDIS_URL))


@dramatiq.actor(queue_name=QUEUE)
def noop(x: int) -> None:
    count_one()


@dramatiq.actor(queue_name=QUEUE)
def lat(t0: float) -> None:
    record_latency(t0)
