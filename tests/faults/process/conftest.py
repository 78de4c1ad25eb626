"""Harness of the process and Redis fault scenarios (issue 6, scenarios 1-12).

Each scenario gets its own redis-server (``--enable-debug-command local``, AOF as it
needs) that it can SIGKILL and restart on the same port, or freeze with SIGSTOP; the
API and worker supervisors as real subprocesses with short timings (lease 2 s,
heartbeat 0.5 s, reclaim sweep 1 s); the ledger file as the evidence of what ran;
a TCP fault proxy that forwards a command and drops the connection before its reply;
and an invariant check of Redis after the run.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

LEDGER_SOURCE = Path(__file__).resolve().parents[2] / "sample_project" / "functions" / "ledger.py"

#: The fault suite's manifest: the issue's short timings. The API gives up on Redis
#: after 1 s, so a frozen or dead Redis is a 503 well within 2 s.
FAULT_MANIFEST = """\
version: 1
queues:
  default:
    priorities: [critical, high, normal, low]
    concurrency: {concurrency}
    visibility_timeout: {lease}
functions:
  work:
    handler: functions/ledger.py:work
    timeout: 60s
    retry: {{max_attempts: {max_attempts}, backoff: fixed, initial_delay: 100ms, jitter: false}}
workers:
  grace: {grace}
  heartbeat_interval: 500ms
  reclaim_interval: 1s
api:
  redis_timeout: {redis_timeout}
"""


# --- Redis that can be killed, restarted and frozen ----------------------------------


class RedisNode:
    """One private redis-server a scenario may SIGKILL, restart on its port, or freeze."""

    def __init__(
        self, start: Callable[..., tuple[subprocess.Popen[bytes], int]], args: Iterable[str]
    ) -> None:
        self._start = start
        self.args = ["--enable-debug-command", "local", *args]
        self.proc, self.port = start(*self.args)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.frozen = False

    def client(self, timeout_s: float = 5.0) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync, no save."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> float:
        """Start a new server on the same port and folder (its AOF, if any, is loaded);
        returns when it answers PING (LOADING done), in seconds since the call."""
        began = time.monotonic()
        deadline = began + 10
        while True:  # the old socket may linger for a moment
            try:
                self.proc, _ = self._start(*self.args, port=self.port)
                return time.monotonic() - began
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.frozen = False


@pytest.fixture
def redis_node(redis_server: Callable[..., Any]) -> Iterator[Callable[..., RedisNode]]:
    """make(*redis_args) -> RedisNode; a frozen node is thawed before it is killed."""
    made: list[RedisNode] = []

    def make(*args: str) -> RedisNode:
        node = RedisNode(redis_server, args)
        made.append(node)
        return node

    yield make
    for node in made:
        if node.frozen:
            node.thaw()


# --- HTTP ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int  #: 0 = no HTTP answer (connection error or client timeout)
    headers: dict[str, str]
    body: Any
    elapsed_s: float
    error: str = ""


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> Answer:
    """One request on a fresh connection; never raises (status 0 on a transport error)."""
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Answer(resp.status, dict(resp.getheaders()), parsed, time.monotonic() - began)
    except (OSError, http.client.HTTPException) as exc:
        return Answer(0, {}, None, time.monotonic() - began, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


# --- the stack: project, API, workers, ledger ----------------------------------------


@dataclass
class Figures:
    accepted: int
    lost: int
    dup: int
    lost_ids: list[str] = field(default_factory=list)
    done_counts: Counter[str] = field(default_factory=Counter)


class Stack:
    """A scenario's project with its Redis, API and worker supervisors."""

    def __init__(
        self,
        project: Any,
        node: RedisNode,
        procs: Any,
        ledger: Any,
        wait_for: Callable[..., Any],
        redis_url: str | None = None,
    ) -> None:
        self.project = project
        self.node = node
        self.procs = procs
        self.ledger = ledger
        self.wait_for = wait_for
        self.redis_url = redis_url or node.url
        self.api_port = 0
        self.api_proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return Path(self.project.root)

    def env(self, **extra: str) -> dict[str, str]:
        return self.procs.env(self.redis_url, DTQS_TEST_LEDGER=str(self.ledger.path), **extra)

    def api(self, redis_url: str | None = None, threads: int = 8) -> int:
        """Start `dtqs api` and wait until it answers /healthz; returns its port."""
        port = _free_port()
        env = self.procs.env(redis_url or self.redis_url)
        args = ["api", "--port", str(port), "--threads", str(threads), "--log-level", "warning"]
        self.api_proc = self.procs.spawn(args, self.root, env)
        self.wait_for(
            lambda: request(port, "GET", "/healthz", timeout_s=2).status == 200,
            20,
            "the API to answer /healthz",
        )
        self.api_port = port
        return port

    def worker(
        self, processes: int = 1, *extra: str, redis_url: str | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        """Start a `dtqs worker` supervisor with `processes` worker processes."""
        args = ["worker", "--processes", str(processes), "--log-level", "warning", *extra]
        e = self.procs.env(
            redis_url or self.redis_url, DTQS_TEST_LEDGER=str(self.ledger.path), **env
        )
        return self.procs.spawn(args, self.root, e)

    def submit(self, payload: Any = None, **fields: Any) -> Answer:
        body = {"function": "work", "payload": payload or {}, **fields}
        return request(self.api_port, "POST", "/v1/tasks", body)

    def submit_batch(self, n: int, payload: Any = None) -> Answer:
        body = {"tasks": [{"function": "work", "payload": payload or {}} for _ in range(n)]}
        return request(self.api_port, "POST", "/v1/tasks/batch", body)

    def figures(self, accepted: Iterable[str]) -> Figures:
        """lost: accepted ids without a `done`; dup: `done`s beyond the first per id."""
        ids = set(accepted)
        counts = Counter(e.task_id for e in self.ledger.dones())
        lost = sorted(i for i in ids if counts[i] == 0)
        dup = sum(c - 1 for i, c in counts.items() if c > 1)
        return Figures(len(ids), len(lost), dup, lost, counts)

    def wait_done(self, ids: Iterable[str], timeout_s: float) -> float:
        """Wait until every id has a `done` in the ledger; returns the seconds it took."""
        want = set(ids)
        began = time.monotonic()

        def all_done() -> bool:
            return want <= {e.task_id for e in self.ledger.dones()}

        try:
            self.wait_for(all_done, timeout_s, f"{len(want)} task(s) done", interval=0.2)
        except BaseException:
            self.dump_logs()
            raise
        return time.monotonic() - began

    def dump_logs(self, tail: int = 3000) -> None:
        for proc, _ in self.procs.started:
            print(f"--- output of pid {proc.pid} ---\n{self.procs.output(proc)[-tail:]}")


@pytest.fixture
def stack(
    project: Callable[..., Any],
    redis_node: Callable[..., RedisNode],
    procs: Any,
    ledger: Any,
    wait_for: Callable[..., Any],
) -> Callable[..., Stack]:
    """make(redis_args=(), lease="2s", grace="5s", concurrency=4, max_attempts=3,
    redis_timeout="1s") -> Stack (its Redis started; API and workers on request)."""

    def make(
        redis_args: Iterable[str] = (),
        *,
        lease: str = "2s",
        grace: str = "5s",
        concurrency: int = 4,
        max_attempts: int = 3,
        redis_timeout: str = "1s",
    ) -> Stack:
        text = FAULT_MANIFEST.format(
            lease=lease,
            grace=grace,
            concurrency=concurrency,
            max_attempts=max_attempts,
            redis_timeout=redis_timeout,
        )
        p = project(text, {"functions/ledger.py": LEDGER_SOURCE.read_text()})
        return Stack(p, redis_node(*redis_args), procs, ledger, wait_for)

    return make


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the TCP fault proxy --------------------------------------------------------------


@dataclass(eq=False)
class _Link:
    client: socket.socket
    upstream: socket.socket
    muted: threading.Event = field(default_factory=threading.Event)  #: replies are dropped


class FaultProxy:
    """A loopback TCP proxy in front of Redis that can lose replies.

    ``drop_replies(marker, n)``: the next ``n`` client chunks containing ``marker`` are
    forwarded to Redis (which runs the command), and the client's connection is cut
    before the reply is relayed: the client cannot know whether its write happened.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.lock = threading.Lock()
        self.marker = b""
        self.to_drop = 0
        self.every = 1
        self.seen = 0
        self.dropped = 0
        self.closed = False
        self.links: set[_Link] = set()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_replies(self, marker: bytes, n: int, every: int = 1) -> None:
        """Lose the reply of every `every`-th command containing `marker`, `n` times."""
        with self.lock:
            self.marker, self.to_drop, self.every, self.seen = marker, n, every, 0

    def _should_drop(self, chunk: bytes) -> bool:
        with self.lock:
            if self.to_drop <= 0 or self.marker not in chunk:
                return False
            self.seen += 1
            if self.seen % self.every:
                return False
            self.to_drop -= 1
            self.dropped += 1
            return True

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                if self.closed:
                    return
                continue
            link = _Link(client, upstream)
            with self.lock:
                self.links.add(link)
            threading.Thread(target=self._requests, args=(link,), daemon=True).start()
            threading.Thread(target=self._replies, args=(link,), daemon=True).start()

    def _requests(self, link: _Link) -> None:
        try:
            while chunk := link.client.recv(65536):
                if self._should_drop(chunk):
                    link.muted.set()  # before Redis can answer: its reply goes nowhere
                    link.upstream.sendall(chunk)
                    # NOTE: only the client's side now. Cutting Redis's side before it
                    # read the command could discard it (a reset drops unread data);
                    # _replies cuts it once the reply shows the command ran.
                    self._shut(link.client)
                    return
                link.upstream.sendall(chunk)
        except OSError:
            pass
        self._cut(link)

    def _replies(self, link: _Link) -> None:
        try:
            while chunk := link.upstream.recv(65536):
                if link.muted.is_set():
                    break
                link.client.sendall(chunk)
        except OSError:
            pass
        self._cut(link)

    @staticmethod
    def _shut(s: socket.socket) -> None:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def _cut(self, link: _Link) -> None:
        self._shut(link.client)
        self._shut(link.upstream)
        with self.lock:
            self.links.discard(link)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        with self.lock:
            links = list(self.links)
        for link in links:
            self._cut(link)


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[int], FaultProxy]]:
    made: list[FaultProxy] = []

    def make(target_port: int) -> FaultProxy:
        proxy = FaultProxy(target_port)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


# --- the invariant check of Redis after a run -------------------------------------
# Every task id is in exactly one state structure (a pending list, scheduled, active,
# dead or done), that structure matches the state its record says, a running task
# holds a lease (and only a running one), and every key under the prefix is one the
# engine builds (runtime/redis/keys.py): no orphan records, ids or keys.

#: state -> the structure a task in that state must be in
STRUCTURE_OF = {
    "queued": "pending",
    "scheduled": "scheduled",
    "running": "active",
    "dead": "dead",
    "succeeded": "done",
    "failed": "done",
    "cancelled": "done",
}
_QUEUE_KEY = re.compile(r"^(?P<prefix>[^{]+):\{(?P<queue>[^}]+)\}:(?P<rest>.+)$")
_QUEUE_SINGLETONS = {
    "scheduled",
    "active",
    "dead",
    "done",
    "notify",
    "paused",
    "stats",
    "durations",
    "rates",
}
_GLOBAL = re.compile(r"^(workers|worker:.+|schedule:.+|probe)$")


def violations(r: Any, prefix: str = "dtqs") -> list[str]:
    """Every broken invariant, as one line each (empty when Redis is consistent)."""
    problems: list[str] = []
    queues: dict[str, dict[str, list[str]]] = {}
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        m = _QUEUE_KEY.match(key)
        if m is None:
            if not _GLOBAL.match(key[len(prefix) + 1 :]):
                problems.append(f"orphan key {key}")
            continue
        kinds = queues.setdefault(m["queue"], {"records": [], "idem": []})
        rest = m["rest"]
        if rest.startswith("t:"):
            kinds["records"].append(rest[2:])
        elif rest.startswith("idem:"):
            kinds["idem"].append(key)
        elif not (rest in _QUEUE_SINGLETONS or re.fullmatch(r"pending:\d+", rest)):
            problems.append(f"orphan key {key}")
    for queue, kinds in queues.items():
        problems += _queue_violations(r, f"{prefix}:{{{queue}}}", kinds)
    return problems


def _queue_violations(r: Any, base: str, kinds: dict[str, list[str]]) -> list[str]:
    problems: list[str] = []
    where: dict[str, list[str]] = {}
    levels = sorted(int(k.rsplit(":", 1)[1]) for k in r.scan_iter(match=f"{base}:pending:*"))
    for level in levels:
        for task_id, n in Counter(r.lrange(f"{base}:pending:{level}", 0, -1)).items():
            where.setdefault(task_id, []).extend(["pending"] * n)
    for name in ("scheduled", "active", "dead", "done"):
        for task_id in r.zrange(f"{base}:{name}", 0, -1):
            where.setdefault(task_id, []).append(name)
    for task_id, places in where.items():
        if len(places) != 1:
            problems.append(f"task {task_id} is in {len(places)} structures: {places}")
    records = set(kinds["records"])
    for task_id in sorted(records):
        problems += _record_violations(r, base, task_id, where.get(task_id, []))
    for task_id, places in where.items():
        if task_id not in records and places != ["done"]:
            problems.append(f"task {task_id} is in {places} but has no record")
    for key in kinds["idem"]:
        target = r.get(key)
        if target is not None and target not in records:
            problems.append(f"idempotency key {key} names task {target}, which has no record")
    return problems


def _record_violations(r: Any, base: str, task_id: str, places: list[str]) -> list[str]:
    key = f"{base}:t:{task_id}"
    if r.type(key) != "hash":
        return [f"task record {key} is a {r.type(key)}, not a hash"]
    state, lease = r.hmget(key, "state", "lease")
    out = []
    want = STRUCTURE_OF.get(state or "")
    if want is None:
        out.append(f"task {task_id} has an unknown state {state!r}")
    elif not places:
        out.append(f"task {task_id} ({state}) is in no structure (orphan record)")
    elif places[0] != want:
        out.append(f"task {task_id} is {state} but sits in {places[0]}")
    if state == "running" and not lease:
        out.append(f"task {task_id} is running without a lease")
    if state != "running" and lease:
        out.append(f"task {task_id} is {state} but still holds lease {lease}")
    return out


@pytest.fixture
def invariants() -> Callable[..., list[str]]:
    """invariants(redis_client, prefix="dtqs") -> every broken invariant, one line each."""
    return violations
