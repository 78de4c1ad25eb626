"""The producer side of every system, run as its own process by the harness.

``python -m bench.producer enqueue LIB single|bulk|prefill N`` and
``python -m bench.producer latency LIB SAMPLES THINK_MAX_S`` print one JSON object.
Run with the interpreter that has LIB (arq: its own venv), so this module imports only
redis-py and, inside each adapter, the one library it drives.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.tasks.common import LAT_KEY, QUEUE, REDIS_URL, client

#: Tasks per submit_many / enqueue_many call in the bulk figures.
CHUNK = 1000
#: arq has no batch API: its "bulk" figure is this many enqueue_job coroutines in flight.
ARQ_GATHER = 100


@dataclass(frozen=True)
class Adapter:
    """How one library submits: N tasks one by one, N in bulk, one latency probe."""

    single: Callable[[int], None]  #: enqueue tasks 0..n-1 with the per-task API
    bulk: Callable[[int], None] | None  #: the same with the bulk API (None: there is none)
    probe: Callable[[float], Any]  #: enqueue the latency task with this submit time
    bulk_api: str  #: what `bulk` calls, for the report


def _per_task(submit: Callable[[int], Any]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for i in range(n):
            submit(i)

    return run


def dtqs_adapter(config: str, queues: int) -> Adapter:
    from bench.dtqs_project import noop_function
    from dtqs.runtime.client import Client

    dtqs_client = Client(redis_url=REDIS_URL, config=config)
    names = [noop_function(q) for q in range(queues)]

    def bulk(n: int) -> None:
        for start in range(0, n, CHUNK):
            dtqs_client.submit_many(
                [
                    {"function": names[i % queues], "payload": i}
                    for i in range(start, min(n, start + CHUNK))
                ]
            )

    return Adapter(
        _per_task(lambda i: dtqs_client.submit("noop", i)),
        bulk,
        lambda t: dtqs_client.submit("lat", t),
        f"Client.submit_many, chunks of {CHUNK}",
    )


def celery_adapter() -> Adapter:
    from celery import group

    from bench.tasks.celery_app import lat, noop

    def bulk(n: int) -> None:
        group(noop.s(i) for i in range(n)).apply_async()

    return Adapter(
        _per_task(lambda i: noop.apply_async((i,))),
        bulk,
        lambda t: lat.apply_async((t,)),
        "group(...).apply_async()",
    )


def rq_adapter() -> Adapter:
    import redis
    from rq import Queue

    from bench.tasks import rq_jobs

    queue = Queue(QUEUE, connection=redis.Redis.from_url(REDIS_URL))

    def bulk(n: int) -> None:
        for start in range(0, n, CHUNK):
            queue.enqueue_many(
                [
                    Queue.prepare_data(rq_jobs.noop, (i,), result_ttl=0)
                    for i in range(start, min(n, start + CHUNK))
                ]
            )

    return Adapter(
        _per_task(lambda i: queue.enqueue(rq_jobs.noop, i, result_ttl=0)),
        bulk,
        lambda t: queue.enqueue(rq_jobs.lat, t, result_ttl=0),
        f"enqueue_many, chunks of {CHUNK}",
    )


def dramatiq_adapter() -> Adapter:
    from dramatiq import group

    from bench.tasks.dramatiq_actors import lat, noop

    def bulk(n: int) -> None:
        group(noop.message(i) for i in range(n)).run()

    return Adapter(_per_task(noop.send), bulk, lat.send, "group(...).run()")


def huey_adapter() -> Adapter:
    from bench.tasks.huey_app import lat, noop

    def bulk(n: int) -> None:
        noop.map(range(n))

    return Adapter(_per_task(noop), bulk, lat, "task.map()")


def arq_adapter() -> Adapter:
    from arq import create_pool
    from arq.connections import RedisSettings

    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(create_pool(RedisSettings.from_dsn(REDIS_URL)))

    async def one_by_one(n: int) -> None:
        for i in range(n):
            await pool.enqueue_job("noop", i)

    async def gathered(n: int) -> None:
        limit = asyncio.Semaphore(ARQ_GATHER)

        async def one(i: int) -> None:
            async with limit:
                await pool.enqueue_job("noop", i)

        await asyncio.gather(*(one(i) for i in range(n)))

    return Adapter(
        lambda n: loop.run_until_complete(one_by_one(n)),
        lambda n: loop.run_until_complete(gathered(n)),
        lambda t: loop.run_until_complete(pool.enqueue_job("lat", t)),
        f"no batch API: {ARQ_GATHER} concurrent enqueue_job",
    )


def adapter(lib: str, config: str | None = None, queues: int = 1) -> Adapter:
    if lib == "dtqs":
        if config is None:
            raise SystemExit("dtqs needs --config")
        return dtqs_adapter(config, queues)
    makers = {
        "celery": celery_adapter,
        "rq": rq_adapter,
        "dramatiq": dramatiq_adapter,
        "huey": huey_adapter,
        "arq": arq_adapter,
    }
    return makers[lib]()


def enqueue(a: Adapter, mode: str, n: int) -> dict[str, Any]:
    """Time N enqueues; the connection and one warm-up enqueue are not timed.

    ``prefill`` (untimed, no warm-up) leaves exactly N tasks for a drain, by the fastest path.
    """
    if mode == "prefill":
        (a.bulk or a.single)(n)
        return {"enqueued": n}
    run = a.single if mode == "single" else a.bulk
    if run is None:
        return {"enqueued": 0, "skipped": "no bulk API"}
    a.single(1)  # warm-up: imports, connection, script loading
    started = time.perf_counter()
    run(n)
    seconds = time.perf_counter() - started
    out: dict[str, Any] = {
        "enqueued": n + 1,
        "n": n,
        "seconds": round(seconds, 4),
        "per_s": round(n / seconds, 1),
    }
    if mode == "bulk":
        out["api"] = a.bulk_api
    return out


def latency(a: Adapter, samples: int, think_max_s: float, warmup: int) -> dict[str, Any]:
    """Submit -> handler start, one task in flight, random think time U[0, think_max_s].

    The think time is random so that a polling worker is not phase-locked to the producer.
    """
    rnd = random.Random(12345)
    redis_client = client()
    redis_client.delete(LAT_KEY)
    taken: list[float] = []
    lost = 0
    for k in range(warmup + samples):
        a.probe(time.time())
        got = redis_client.blpop([LAT_KEY], timeout=30)
        if k >= warmup:
            if got is None:
                lost += 1
            else:
                taken.append(float(got[1]) * 1000)
        time.sleep(rnd.uniform(0, think_max_s))
    if not taken:
        return {"samples": 0, "lost": lost}
    taken.sort()

    def pct(p: float) -> float:
        return round(taken[min(len(taken) - 1, round(p / 100 * (len(taken) - 1)))], 3)

    return {
        "samples": len(taken),
        "lost": lost,
        "p50_ms": round(statistics.median(taken), 3),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(taken[-1], 3),
        "think_time": f"U[0,{think_max_s:g}s]",
    }


def versions(dists: list[str]) -> dict[str, str]:
    found = {}
    for dist in dists:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.producer")
    sub = parser.add_subparsers(dest="what", required=True)
    enq = sub.add_parser("enqueue")
    enq.add_argument("lib")
    enq.add_argument("mode", choices=["single", "bulk", "prefill"])
    enq.add_argument("n", type=int)
    lat = sub.add_parser("latency")
    lat.add_argument("lib")
    lat.add_argument("samples", type=int)
    lat.add_argument("think_max_s", type=float)
    lat.add_argument("--warmup", type=int, default=10)
    for p in (enq, lat):
        p.add_argument("--config", help="dtqs: the manifest")
        p.add_argument("--queues", type=int, default=1, help="dtqs: spread over this many")
    ver = sub.add_parser("versions")
    ver.add_argument("dists", nargs="*")
    args = parser.parse_args(argv)
    if args.what == "versions":
        out: dict[str, Any] = versions(args.dists)
    elif args.what == "enqueue":
        out = enqueue(adapter(args.lib, args.config, args.queues), args.mode, args.n)
    else:
        a = adapter(args.lib, args.config, args.queues)
        out = latency(a, args.samples, args.think_max_s, args.warmup)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
