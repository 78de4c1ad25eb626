"""dtqs handlers, plain functions; the generated project's functions/ file re-exports them."""

from __future__ import annotations

from bench.tasks.common import count_one, record_latency


def noop(payload: int) -> None:
    count_one()


def lat(payload: float) -> None:
    record_latency(payload)
