"""RQ: plain functions; the producer enqueues them with result_ttl=0."""

from __future__ import annotations

from bench.tasks.common import count_one, record_latency


def noop(x: int) -> None:
    count_one()


def lat(t0: float) -> None:
    record_latency(t0)
