"""One run of the enqueue, drain, latency, memory and scaling measurements.

Per library: bulk enqueue of N into an empty server; then per worker configuration,
N tasks enqueued one by one (the per-task figure, first configuration only), the
workers spawned and timed until the task counter reaches N (drain), their RSS read,
and the latency probe sent to the same, now idle, workers.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench import procs
from bench.plan import Plan
from bench.server import RedisServer
from bench.systems import DTQS_CONCURRENCY, Context, WorkerConfig, display
from bench.tasks.common import DONE_KEY

#: Seconds between two reads of the task counter while a drain runs.
POLL_S = 0.005


class BenchError(RuntimeError):
    """One measurement failed; the report shows the message instead of a figure."""


@dataclass
class Harness:
    """Everything one invocation shares: the server, the plan, paths, environment."""

    server: RedisServer
    plan: Plan
    ctx: Context
    logs: Path
    env: Mapping[str, str]
    repo: Path
    tool: str  #: HTTP load generator: "wrk" or "python"

    def producer(self, python: str, *args: str, timeout_s: float = 600) -> dict[str, Any]:
        argv = [python, "-m", "bench.producer", *args]
        try:
            done = subprocess.run(
                argv,
                cwd=self.repo,
                env=dict(self.env),
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"producer {' '.join(args)} timed out after {timeout_s:g}s") from exc
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = " | ".join(done.stderr.strip().splitlines()[-4:])
            raise BenchError(f"producer {' '.join(args)} failed (exit {done.returncode}): {tail}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def dtqs_args(self, cfg: WorkerConfig, queues: int = 1) -> list[str]:
        if cfg.lib != "dtqs":
            return []
        return ["--config", str(self.ctx.dtqs_configs[cfg.variant]), "--queues", str(queues)]

    def enqueue(self, cfg: WorkerConfig, mode: str, n: int, queues: int = 1) -> dict[str, Any]:
        args = ["enqueue", cfg.lib, mode, str(n), *self.dtqs_args(cfg, queues)]
        return self.producer(cfg.python(self.ctx), *args)

    def drain(
        self, argvs: list[list[str]], target: int, tag: str
    ) -> tuple[dict[str, Any], list[procs.Spawned]]:
        """Spawn the workers and time them until the counter reaches `target`.

        Returns the figures and the still running workers (the caller stops them).
        """
        redis_client = self.server.client()
        redis_client.set(DONE_KEY, 0)
        cpu_before = _redis_cpu_s(redis_client)
        started = time.perf_counter()
        spawned = [
            procs.spawn(argv, self.logs / f"{tag}.{k}.log", self.env, cwd=self.repo)
            for k, argv in enumerate(argvs)
        ]
        first_at = None
        done = 0
        try:
            while True:
                done = int(redis_client.get(DONE_KEY) or 0)
                now = time.perf_counter()
                if first_at is None and done > 0:
                    first_at = now
                if done >= target:
                    break
                dead = procs.exited(spawned)
                if dead is not None:
                    raise BenchError(
                        f"worker exited with {dead.proc.returncode} after {done} of "
                        f"{target} tasks: {dead.log_tail(6)}"
                    )
                if now - started > self.plan.drain_limit_s:
                    raise BenchError(
                        f"drain incomplete: {done} of {target} tasks after "
                        f"{self.plan.drain_limit_s:g}s"
                    )
                time.sleep(POLL_S)
        except BaseException:
            procs.stop(spawned)
            raise
        wall = now - started
        redis_cpu_s = _redis_cpu_s(redis_client) - cpu_before
        figures = {
            "n": target,
            "seconds": round(wall, 3),
            "per_s": round(done / wall, 1),
            "startup_s": round((first_at or now) - started, 3),
            "redis_cpu_us_per_task": round(redis_cpu_s / max(done, 1) * 1e6, 1),
        }
        if first_at is not None and now > first_at:
            figures["steady_per_s"] = round((done - 1) / (now - first_at), 1)
        return figures, spawned

    def config_run(self, cfg: WorkerConfig, first: bool, tag: str) -> dict[str, Any]:
        """Enqueue (first configuration of a library only), drain, memory, latency."""
        lib_n = self.plan.n_for(cfg.lib)
        self.server.flushall()
        out: dict[str, Any] = {}
        if first:
            single = self.enqueue(cfg, "single", lib_n)
            out["enqueue"] = single
            target = single["enqueued"]
        else:
            target = self.enqueue(cfg, "prefill", lib_n)["enqueued"]
        argvs = cfg.commands(self.ctx)
        out["command"] = " ; ".join(dict.fromkeys(display(a, self.ctx) for a in argvs))
        if len(argvs) > 1:
            out["command"] += f" (x{len(argvs)})"
        drain, spawned = self.drain(argvs, target, tag)
        out["drain"] = drain
        try:
            out["memory"] = procs.memory(spawned).__dict__
            args = [
                "latency",
                cfg.lib,
                str(self.plan.samples_for(cfg.lib)),
                str(self.plan.think_for(cfg.lib)),
                "--warmup",
                str(self.plan.latency_warmup),
                *self.dtqs_args(cfg),
            ]
            out["latency"] = self.producer(cfg.python(self.ctx), *args)
        finally:
            procs.stop(spawned)
        return out

    def lib_run(self, lib: str, configs: list[WorkerConfig], run: int) -> dict[str, Any]:
        """One run of every configuration of one library: config name -> figures or error."""
        out: dict[str, Any] = {}
        self.server.flushall()
        try:
            bulk = self.enqueue(configs[0], "bulk", self.plan.n_for(lib))
        except BenchError as exc:
            bulk = {"error": str(exc)}
        for index, cfg in enumerate(configs):
            tag = f"run{run}.{cfg.name}"
            log(f"run {run}: {cfg.name}")
            try:
                out[cfg.name] = self.config_run(cfg, index == 0, tag)
            except (BenchError, RuntimeError, OSError) as exc:
                out[cfg.name] = {"error": str(exc)}
                log(f"  {cfg.name}: {exc}")
            out[cfg.name]["bulk"] = bulk
        return out

    def scaling_run(self, cfg: WorkerConfig, run: int) -> dict[str, Any]:
        """dtqs drains at 1, 2, 4 processes; over 1, 2, 4 queues; at concurrency 16 and 64."""
        points: list[tuple[str, str, dict[str, int]]] = []
        points += [("processes", str(p), {"processes": p}) for p in (1, 2, 4)]
        points += [("queues", str(q), {"queues": q}) for q in (1, 2, 4)]
        points += [("concurrency", str(c), {"concurrency": c}) for c in (16, DTQS_CONCURRENCY)]
        out: dict[str, Any] = {}
        for axis, value, over in points:
            log(f"run {run}: scaling {axis}={value}")
            self.server.flushall()
            try:
                target = self.enqueue(cfg, "prefill", self.plan.n, over.get("queues", 1))
                argvs = cfg.commands(self.ctx, **over)
                figures, spawned = self.drain(argvs, target["enqueued"], f"run{run}.{axis}{value}")
                figures["rss_mb"] = procs.memory(spawned).per_worker_mb
                procs.stop(spawned)
                figures["command"] = display(argvs[0], self.ctx)
            except (BenchError, RuntimeError, OSError) as exc:
                figures = {"error": str(exc)}
                log(f"  scaling {axis}={value}: {exc}")
            out.setdefault(axis, {})[value] = figures
        return out


def _redis_cpu_s(redis_client: redis.Redis) -> float:
    """CPU seconds the server has used (includes the harness's own counter reads)."""
    info = redis_client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] bench: {message}", flush=True)
