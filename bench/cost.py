"""Where a dtqs worker's CPU goes per task: the engine versus the benchmark's task body.

    python -m bench.cost [-n N] [--out bench/results/cost.md]

CPU time (user + sys of the worker process and of redis-server, read with psutil)
rather than wall time, so the figures hold on a busy machine better than rates do.
It measures, on one private redis-server:
1. redis-py's INCR, the body of every benchmark task, from one thread and from 64
   threads at once (what a 64-slot worker does);
2. one dtqs worker process (concurrency 64, one queue) draining N tasks whose body
   is empty, then N tasks whose body is that INCR.
The difference between the two drains is what the task body costs inside a worker.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import redis

from bench.dtqs_project import write_project
from bench.server import free_port
from dtqs.runtime.client import Client
from dtqs.runtime.manifest import load_manifest

CONCURRENCY = 64
EMPTY_BODY = "def noop(payload):\n    pass\n\n\ndef lat(payload):\n    pass\n"


def _own_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def incr_cost(url: str, n: int, threads: int) -> tuple[float, float]:
    """(ops/s, CPU µs per op) of redis-py INCR from `threads` threads of this process."""
    client = redis.Redis.from_url(url)
    client.ping()
    per = n // threads

    def run() -> None:
        for _ in range(per):
            client.incr("cost:incr")

    cpu0, t0 = _own_cpu_s(), time.perf_counter()
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    wall, cpu = time.perf_counter() - t0, _own_cpu_s() - cpu0
    client.close()
    return per * threads / wall, cpu / (per * threads) * 1e6


def drain_cost(url: str, server: psutil.Process, n: int, body: str) -> tuple[float, float, float]:
    """(tasks/s, worker CPU µs/task, Redis CPU µs/task) of one worker process."""
    with tempfile.TemporaryDirectory(prefix="dtqs-cost-") as tmp:
        config = write_project(Path(tmp), "sync", CONCURRENCY)
        if body == "empty":
            (Path(tmp) / "functions" / "dtqs_bench_handlers.py").write_text(EMPTY_BODY)
        r = redis.Redis.from_url(url)
        r.flushall()
        with Client(redis_url=url, manifest=load_manifest(config)) as client:
            for start in range(0, n, 1000):
                batch = range(start, min(start + 1000, n))
                client.submit_many([{"function": "noop", "payload": i} for i in batch])
        env = dict(os.environ, BENCH_REDIS_URL=url, DTQS_REDIS_URL=url)
        env["PYTHONPATH"] = os.pathsep.join([str(Path.cwd()), env.get("PYTHONPATH", "")])
        redis_cpu0, t0 = _cpu_s(server), time.perf_counter()
        cmd = [sys.executable, "-m", "dtqs.runtime.cli", "worker", "--processes", "1",
               "--concurrency", str(CONCURRENCY), "--queues", "q0",
               "--log-level", "warning"]  # fmt: skip
        sup = subprocess.Popen(cmd, cwd=tmp, env=env)
        children: list[psutil.Process] = []
        while int(r.hget("dtqs:{q0}:stats", "processed") or 0) < n:
            children = children or psutil.Process(sup.pid).children()
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        worker_cpu = sum(_cpu_s(c) for c in children)
        redis_cpu = _cpu_s(server) - redis_cpu0
        sup.terminate()
        sup.wait(30)
        return n / wall, worker_cpu / n * 1e6, redis_cpu / n * 1e6


def main() -> int:
    about = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=about)
    parser.add_argument("-n", type=int, default=30_000, help="tasks per drain (default 30,000)")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        time.sleep(0.3)
        rows = [
            ("redis-py INCR, 1 thread", *incr_cost(url, args.n, 1), None),
            (f"redis-py INCR, {CONCURRENCY} threads", *incr_cost(url, args.n, CONCURRENCY), None),
        ]
        proc = psutil.Process(server.pid)
        for body in ("empty", "INCR"):
            rate, worker, red = drain_cost(url, proc, args.n, body)
            what = f"dtqs worker, 1 process x {CONCURRENCY} slots, {body} body"
            rows.append((what, rate, worker, red))
    finally:
        server.terminate()
        server.wait(10)
    lines = [
        f"N = {args.n:,}; {os.cpu_count()} CPUs; CPU = user + sys of the measured process.",
        "",
        "| what | per s | CPU µs each (client / worker) | Redis CPU µs each |",
        "|---|---|---|---|",
    ]
    for what, rate, cpu, red in rows:
        redis_cell = "–" if red is None else f"{red:.0f}"
        lines.append(f"| {what} | {rate:,.0f} | {cpu:.0f} | {redis_cell} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
