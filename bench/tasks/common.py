"""What every task body shares: the Redis URL, the counter and latency keys, one client."""

from __future__ import annotations

import os
import time

import redis

#: Set by the harness for every process it spawns.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
#: INCR'd by every no-op task: the drain is over when it reaches N.
DONE_KEY = "bench:done"
#: The latency task RPUSHes (its start time - the submit time) here; the producer BLPOPs it.
LAT_KEY = "bench:lat"
#: List the bare HTTP app (the ceiling of the HTTP figures) LPUSHes each body to.
BARE_KEY = "bench:bare"
#: Queue name the peers use (dtqs uses the queues of its generated manifest).
QUEUE = "bench"

_client: redis.Redis | None = None


def client() -> redis.Redis:
    """A plain redis-py client, made on first use (its pool reconnects after a fork)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    return _client


def count_one() -> None:
    """The no-op task's one unit of work: one INCR round trip."""
    client().incr(DONE_KEY)


def record_latency(submitted_at: float) -> None:
    """Report how long after `submitted_at` (epoch seconds) this task body started."""
    started = time.time()
    client().rpush(LAT_KEY, started - submitted_at)
