"""dtqs handlers as `async def`: one redis.asyncio client per event loop, made on first use."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio

from bench.tasks.common import DONE_KEY, LAT_KEY, REDIS_URL

# NOTE: an asyncio client is bound to the loop it first ran on; dtqs runs one loop per
# worker process, but keying by loop keeps this right if that ever changes.
_clients: dict[asyncio.AbstractEventLoop, redis.asyncio.Redis] = {}


def _client() -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    found = _clients.get(loop)
    if found is None:
        found = _clients[loop] = redis.asyncio.Redis.from_url(REDIS_URL, max_connections=256)
    return found


async def noop(payload: int) -> None:
    await _client().incr(DONE_KEY)


async def lat(payload: float) -> None:
    started = time.time()
    await _client().rpush(LAT_KEY, started - payload)
