"""Huey: RedisHuey with results off (fire-and-forget)."""

from __future__ import annotations

from huey import RedisHuey

from bench.tasks.common import QUEUE, REDIS_URL, count_one, record_latency

huey = RedisHuey(QUEUE, url=REDIS_URL, results=False)


@huey.task()
def noop(x: int) -> None:
    count_one()


@huey.task()
def lat(t0: float) -> None:
    record_latency(t0)
