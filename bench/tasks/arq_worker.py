"""arq (runs in its own venv): its defaults, except results kept for 0 s and quiet logs."""

from __future__ import annotations

import time
from typing import Any

from arq.connections import RedisSettings

from bench.tasks.common import DONE_KEY, LAT_KEY, REDIS_URL


async def noop(ctx: dict[str, Any], x: int) -> None:
    # NOTE: arq's own async pool is the idiomatic client inside an arq job.
    await ctx["redis"].incr(DONE_KEY)


async def lat(ctx: dict[str, Any], t0: float) -> None:
    await ctx["redis"].rpush(LAT_KEY, time.time() - t0)


class WorkerSettings:
    functions = [noop, lat]
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    keep_result = 0  # fire-and-forget; arq's default keeps results for 3600 s
    # NOTE: max_jobs=10 and poll_delay=0.5 s are arq's defaults, left as they are: the
    # poller then caps one worker near 200 tasks/s (queue_read_limit 100 per 0.5 s).


#: Passed as `arq --custom-log-dict`, so arq does not log every job (parity with -q).
LOG_WARN = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"arq.standard": {"level": "WARNING", "class": "logging.StreamHandler"}},
    "loggers": {"arq": {"handlers": ["arq.standard"], "level": "WARNING"}},
}
