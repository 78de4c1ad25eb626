"""Helpers of the behaviour scenarios (issue 6, scenarios 13-24 and security).

``Stack`` ties one project to one private redis-server and the `dtqs` processes a
scenario starts through ``procs``: a client, the worker supervisor, the API and plain
HTTP requests to it.
"""

from __future__ import annotations

import http.client as httplib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from dtqs.runtime.client import Client
from tests.conftest import Procs, Project, free_port, wait_for


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    port: int,
    method: str,
    path: str,
    body: bytes | str | dict[str, Any] | list[Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Reply:
    """One request on a fresh loopback connection; dict/list bodies are sent as JSON."""
    hdrs = dict(headers or {})
    if isinstance(body, dict | list):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    conn = httplib.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


@dataclass
class Stack:
    """One project against one private Redis: its client and its `dtqs` processes."""

    project: Project
    procs: Procs
    url: str
    ledger: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    _clients: list[Client] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.project.root

    def env(self, **extra: str) -> dict[str, str]:
        return self.procs.env(
            self.url, DTQS_TEST_LEDGER=str(self.ledger), **{**self.env_extra, **extra}
        )

    def client(self) -> Client:
        c = Client(redis_url=self.url, config=self.project.config)
        self._clients.append(c)
        return c

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def workers(self, processes: int = 1, *extra: str, **env: str) -> Any:
        args = ["worker", "--processes", str(processes), "--log-level", "warning", *extra]
        return self.procs.spawn(args, self.root, self.env(**env))

    def api(self, *extra: str, port: int | None = None, **env: str) -> tuple[Any, int]:
        """Start `dtqs api` and wait until /healthz answers; (process, port)."""
        port = port or free_port()
        args = ["api", "--port", str(port), "--log-level", "warning", *extra]
        proc = self.procs.spawn(args, self.root, self.env(**env))

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail("the API exited:\n" + self.procs.output(proc)[-3000:])
            try:
                return http(port, "GET", "/healthz", timeout=2).status == 200
            except OSError:
                return False

        wait_for(up, 20, "the API to answer")
        return proc, port

    def close(self) -> None:
        for c in self._clients:
            c.close()


def ledger_lines(path: Path) -> list[list[str]]:
    """The ledger as split lines (handlers of these scenarios write their own fields)."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


LEDGER_HELPER = '''\
import os, time


def mark(*fields):
    """One O_APPEND line in $DTQS_TEST_LEDGER: evidence that does not live in Redis."""
    line = " ".join(str(f) for f in fields) + f" {os.getpid()} {time.time():.6f}\\n"
    fd = os.open(os.environ["DTQS_TEST_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
'''


def settle(seconds: float) -> None:
    """Let time pass on purpose (to show that something does NOT happen)."""
    time.sleep(seconds)
