"""HTTP submit: dtqs's REST API beside a bare Falcon + waitress app doing one LPUSH.

Both run waitress with the same thread count; no worker runs, so each measurement is
the submit path alone. After each load the tasks stored are counted in Redis.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench import procs
from bench.loadgen import run_load
from bench.measure import BenchError, Harness, log
from bench.server import free_port
from bench.systems import display
from bench.tasks.common import BARE_KEY

#: waitress threads of both servers (dtqs api's default).
API_THREADS = 8


@dataclass(frozen=True)
class Target:
    """One figure: a server, a route and the body every request sends."""

    name: str
    server: str  #: "dtqs" or "bare"
    path: str
    body: bytes
    tasks_per_request: int


def targets(batch: int) -> list[Target]:
    one = json.dumps({"function": "noop", "payload": 1}).encode()
    many = json.dumps({"tasks": [{"function": "noop", "payload": i} for i in range(batch)]})
    return [
        Target("bare_lpush", "bare", "/tasks", one, 1),
        Target("dtqs_submit", "dtqs", "/v1/tasks", one, 1),
        Target("dtqs_batch", "dtqs", "/v1/tasks/batch", many.encode(), batch),
    ]


def server_argv(h: Harness, server: str, port: int) -> list[str]:
    if server == "dtqs":
        return [
            h.ctx.tool("dtqs"),
            "api",
            "--config",
            str(h.ctx.dtqs_configs["sync"]),
            "--redis-url",
            h.ctx.redis_url,
            "--port",
            str(port),
            "--threads",
            str(API_THREADS),
            "--log-level",
            "warning",
        ]
    return [
        sys.executable,
        "-m",
        "waitress",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--threads={API_THREADS}",
        "bench.tasks.bare_api:app",
    ]


def _post(port: int, target: Target) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", target.path, target.body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _wait_ready(port: int, target: Target, server: procs.Spawned) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{target.server} server exited: {server.log_tail(6)}")
        try:
            status = _post(port, target)
        except OSError:
            time.sleep(0.1)
            continue
        if 200 <= status < 300:
            return
        raise BenchError(f"{target.server} server answered {status} to {target.path}")
    raise BenchError(f"{target.server} server did not answer within 30 s")


def _stored(h: Harness, target: Target) -> int:
    if target.server == "bare":
        return int(h.server.client().llen(BARE_KEY))
    from dtqs.runtime.redis.keys import QueueKeys

    return int(h.server.client().llen(QueueKeys("dtqs", "q0", 1).pending(0)))


def measure(h: Harness, target: Target, port: int) -> dict[str, Any]:
    for _ in range(20):  # warm-up: connections, imports, script loading
        _post(port, target)
    h.server.flushall()
    load = run_load(
        h.tool,
        port,
        target.path,
        target.body,
        h.plan.http_duration_s,
        h.plan.http_connections,
        h.logs,
    )
    return {
        "requests_per_s": round(load.per_s, 1),
        "tasks_per_s": round(load.per_s * target.tasks_per_request, 1),
        "p50_ms": round(load.p50_ms, 2),
        "p99_ms": round(load.p99_ms, 2),
        "errors": load.errors,
        "requests": load.requests,
        "tasks_stored": _stored(h, target),
        "tasks_per_request": target.tasks_per_request,
        "loadgen": load.tool,
    }


def http_run(h: Harness, run: int) -> dict[str, Any]:
    """One run of every HTTP figure: target name -> figures or error."""
    out: dict[str, Any] = {}
    by_server: dict[str, list[Target]] = {}
    for target in targets(h.plan.http_batch):
        by_server.setdefault(target.server, []).append(target)
    for server, server_targets in by_server.items():
        port = free_port()
        argv = server_argv(h, server, port)
        spawned = procs.spawn(argv, h.logs / f"run{run}.api-{server}.log", h.env, cwd=h.repo)
        try:
            _wait_ready(port, server_targets[0], spawned)
            for target in server_targets:
                log(f"run {run}: http {target.name}")
                try:
                    out[target.name] = measure(h, target, port)
                except (BenchError, RuntimeError, OSError) as exc:
                    out[target.name] = {"error": str(exc)}
                out[target.name]["command"] = display(argv, h.ctx, **{str(port): "$PORT"})
        except BenchError as exc:
            for target in server_targets:
                out[target.name] = {
                    "error": str(exc),
                    "command": display(argv, h.ctx, **{str(port): "$PORT"}),
                }
            log(f"  http {server}: {exc}")
        finally:
            procs.stop([spawned])
    return out
