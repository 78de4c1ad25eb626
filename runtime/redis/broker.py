"""The connection to Redis and every plain (non-script) command the engine sends.

This package is the only code that imports redis-py. Connection failures become
``BrokerUnavailableError`` here, so callers above never see a redis-py exception.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError

from dtqs.runtime.errors import BrokerUnavailableError, DtqsError
from dtqs.runtime.outage import Outage
from dtqs.runtime.redis import keys
from dtqs.runtime.redis.connect import (
    AUTH_FAILED,
    connect,
    is_auth_failure,
    is_cluster,
    redact,
    sentinel_failure,
)
from dtqs.runtime.redis.durable import enqueue_confirmed
from dtqs.runtime.redis.keys import QueueKeys
from dtqs.runtime.redis.scripts import NewTask, Scripts

#: Seconds a command may take before the call fails as unavailable.
DEFAULT_SOCKET_TIMEOUT_S = 5.0
#: Seconds to establish a connection.
DEFAULT_CONNECT_TIMEOUT_S = 2.0
#: How often a broker with a deadline reads Redis's clock again (clocks drift slowly).
CLOCK_REFRESH_S = 10.0
#: A submission's deadline is this much earlier than the caller's own give-up time.
DEADLINE_MARGIN_MS = 50
#: Most connections a broker opens (per node on a cluster); more callers wait for one.
DEFAULT_MAX_CONNECTIONS = 64
#: How long /readyz's write probe key lives.
PROBE_TTL_MS = 60_000
#: redis-py's message when no pooled connection came free within the pool's timeout.
POOL_EXHAUSTED = "No connection available."
#: Wake-up tokens kept per queue (as wake() in lua/_lib.lua keeps): enough for every
#: idle fetcher to wake, bounded when no worker takes them.
NOTIFY_MAX = 32


def translate(exc: BaseException, url: str = "") -> DtqsError | None:
    """The dtqs error a redis-py failure means (None: `exc` is not one of redis-py's)."""
    if isinstance(exc, redis.exceptions.BusyLoadingError):
        return BrokerUnavailableError("Redis is loading its data set; try again shortly")
    if isinstance(exc, MasterNotFoundError):
        return BrokerUnavailableError(sentinel_failure(url, str(exc)))
    # NOTE: redis-py strips the code (READONLY, ...) from the text of the errors it has a
    # class for, so these are known by class. A stale connection to a demoted master
    # (after a failover) answers READONLY: that is a moment of unavailability, not a bug.
    for kind, code in _UNWRITABLE:
        if isinstance(exc, kind):
            return BrokerUnavailableError(f"Redis cannot take writes now: {code} {exc}")
    if isinstance(
        exc,
        redis.exceptions.ConnectionError
        | redis.exceptions.TimeoutError
        | redis.exceptions.ClusterError  # NOTE: every node tried failed (mid-failover)
        | redis.exceptions.RedisClusterException,  # e.g. slots not covered yet
    ):
        return _unreachable(str(exc), url)
    if isinstance(exc, redis.exceptions.ResponseError):
        return _refused(str(exc), exc, url)
    if isinstance(exc, redis.exceptions.InvalidResponse):  # e.g. the URL names a web server
        where = f" at {redact(url)}" if url else ""
        return BrokerUnavailableError(
            f"the server{where} does not answer as Redis does ({exc}); check the URL's port"
        )
    return None


#: Errors meaning "Redis cannot take writes at the moment", with the code Redis sent.
_UNWRITABLE: tuple[tuple[type[Exception], str], ...] = (
    (redis.exceptions.ReadOnlyError, "READONLY"),
    (redis.exceptions.MasterDownError, "MASTERDOWN"),
    (redis.exceptions.ClusterDownError, "CLUSTERDOWN"),
    (redis.exceptions.TryAgainError, "TRYAGAIN"),
)


def _unreachable(text: str, url: str) -> BrokerUnavailableError:
    where = f" at {redact(url)}" if url else ""
    if text == POOL_EXHAUSTED:
        # NOTE: Redis is fine; this process has every connection busy (see connect()).
        return BrokerUnavailableError(
            f"every connection to Redis{where} is in use (the pool is exhausted); too "
            "many concurrent calls for this client's max_connections",
            outage=False,
        )
    if is_auth_failure(text):
        return BrokerUnavailableError(f"Redis{where} {AUTH_FAILED}: {text}")
    return BrokerUnavailableError(f"Redis is unreachable{where}: {text}")


def _refused(text: str, exc: BaseException, url: str) -> DtqsError:
    # NOTE: a write inside a script is refused without the OOM prefix ("command not
    # allowed when used memory > 'maxmemory'. script: ..."); the script stops at its
    # first write, so nothing was stored either way.
    if text.startswith("OOM") or "used memory > 'maxmemory'" in text:
        return BrokerUnavailableError(
            "Redis is out of memory (maxmemory reached); nothing was stored"
        )
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return BrokerUnavailableError(
            f"the Redis user lacks a permission dtqs needs ({text}); grant it +@all "
            "on the key pattern ~<prefix>:* (see README, Production)"
        )
    if is_auth_failure(text):
        where = f" at {redact(url)}" if url else ""
        return BrokerUnavailableError(f"Redis{where} {AUTH_FAILED}: {text}")
    if text.startswith("STALE"):  # a submission past its deadline: Redis itself is fine
        return BrokerUnavailableError(f"Redis cannot take writes now: {text}", outage=False)
    if text.startswith(("MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "LOADING",
                        "MISCONF", "NOREPLICAS")):  # fmt: skip
        return BrokerUnavailableError(f"Redis cannot take writes now: {text}")
    return DtqsError(f"Redis refused a command: {text}")


class Translated:
    """``with broker.translated():`` turns redis-py's failures into dtqs errors a caller
    can act on, and keeps the broker's outage state (one log line per change)."""

    __slots__ = ("_broker",)

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        outage = self._broker.outage
        if exc is None:
            outage.ok()
            return
        error = exc if isinstance(exc, DtqsError) else translate(exc, self._broker.url)
        if isinstance(error, BrokerUnavailableError) and error.outage:
            outage.failed(error.message)
        if error is not None and error is not exc:
            raise error from exc


@dataclass(frozen=True)
class MemoryState:
    """What INFO memory says of a server (of the master with least room on a cluster)."""

    policy: str  #: maxmemory-policy ('unknown' when not reported)
    used_bytes: int
    max_bytes: int  #: maxmemory; 0 = no limit

    @property
    def headroom(self) -> int | None:
        """Bytes left below maxmemory (None: no limit). Under noeviction Redis refuses
        every write that arrives while it is over, however small."""
        return self.max_bytes - self.used_bytes if self.max_bytes > 0 else None


def _headroom(info: dict[str, Any]) -> float:
    limit = int(info.get("maxmemory") or 0)
    return limit - int(info.get("used_memory") or 0) if limit > 0 else float("inf")


class Broker:
    """A Redis connection pool plus the engine's scripts, for one key namespace."""

    def __init__(
        self,
        url: str,
        prefix: str = keys.DEFAULT_PREFIX,
        *,
        socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        deadline_s: float | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        """``deadline_s`` (the API's): a call is never retried after a timeout, so no
        request waits on Redis much longer than socket_timeout_s, and a submission that
        reaches Redis after deadline_s stores nothing (see submit_deadline_ms).

        ``max_connections``: callers beyond it wait for a free connection, up to
        socket_timeout_s, then fail with "the pool is exhausted" (never "unreachable")."""
        self.url = url
        self.prefix = prefix
        self.deadline_s = deadline_s
        # NOTE: one quick retry covers a connection the server closed while idle;
        # more would stretch a caller's deadline while Redis is really down. With a
        # deadline, a timeout is not retried at all: a frozen Redis would double it.
        errors: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError,)
        if deadline_s is None:
            errors += (redis.exceptions.TimeoutError, TimeoutError)
        self._options: dict[str, Any] = {
            "decode_responses": True,
            # NOTE: bytes that are not UTF-8 (a record written by hand, a bad client)
            # arrive as lone surrogates instead of failing the whole reply: one garbage
            # task must not break a fetch of 100, a listing or GET /v1/tasks/{id}. The
            # worker dead-letters such a payload as decode_error.
            "encoding_errors": "surrogateescape",
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": connect_timeout_s,
            "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), 1, supported_errors=errors),
            "health_check_interval": 30,
            "max_connections": max_connections,
            "pool_timeout_s": socket_timeout_s,
        }
        self._redis: Any = None
        self._scripts: Scripts | None = None
        self._lock = threading.Lock()
        self._offset_ms = 0.0  #: Redis's clock minus this process's monotonic clock, ms
        self._offset_at = -CLOCK_REFRESH_S
        self._qkeys: dict[tuple[str, int], QueueKeys] = {}
        self.outage = Outage()  #: whether Redis answers this process (logged per change)
        self._translated = Translated(self)

    @property
    def redis(self) -> Any:
        """The redis-py client (``redis.Redis``, or ``RedisCluster``), made on first use:
        a Cluster client reads the cluster's layout when made, and a process must be able
        to start (and answer 503) while Redis is down. Raises BrokerUnavailableError."""
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    self._redis = connect(self.url, **self._options)
        return self._redis

    @property
    def scripts(self) -> Scripts:
        if self._scripts is None:
            self._scripts = Scripts(self.redis)
        return self._scripts

    @property
    def cluster(self) -> bool:
        """True on Redis Cluster, where a pipeline spans nodes and cannot carry a keyless
        command (TIME, WAIT) or MGET across slots."""
        return is_cluster(self.redis)

    def qkeys(self, queue: str, levels: int) -> QueueKeys:
        k = self._qkeys.get((queue, levels))
        if k is None:
            k = self._qkeys[(queue, levels)] = QueueKeys(self.prefix, queue, levels)
        return k

    def enqueue(
        self, groups: Sequence[tuple[QueueKeys, Sequence[NewTask]]], replicas: int = 0,
        timeout_s: float = 1.0,
    ) -> list[Any]:  # fmt: skip
        """Store tasks (one script call per queue), refused by Redis if they arrive past
        this broker's deadline (submit_deadline_ms); with `replicas`, acknowledged only
        once that many replicas confirm them (see durable.py)."""
        not_after_ms = self.submit_deadline_ms()
        if replicas <= 0:
            return self.scripts.enqueue(groups, not_after_ms)
        return enqueue_confirmed(self.redis, self.scripts, groups, replicas,
                                 max(1, int(timeout_s * 1000)), not_after_ms)  # fmt: skip

    def translated(self) -> Translated:
        return self._translated

    def submit_deadline_ms(self) -> int:
        """Redis-clock ms after which a submission sent now must not be stored (-1: no
        deadline). Without it, a write that sat in a socket buffer while Redis was
        frozen would be stored after the API had answered 503. Redis's clock, not this
        machine's (they may disagree), estimated from TIME at most every
        CLOCK_REFRESH_S; a little early, so a refusal reaches a caller still waiting."""
        if self.deadline_s is None:
            return -1
        now = time.monotonic()
        if now - self._offset_at >= CLOCK_REFRESH_S:
            with self.translated():
                seconds, micros = self.redis.time()
            self._offset_at = time.monotonic()
            self._offset_ms = int(seconds) * 1000 + int(micros) / 1000 - self._offset_at * 1000
        return int(time.monotonic() * 1000 + self._offset_ms + self.deadline_s * 1000
                   - DEADLINE_MARGIN_MS)  # fmt: skip

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    # -- plain reads ------------------------------------------------------

    def ping(self) -> bool:
        with self.translated():
            return bool(self.redis.ping())

    def write_probe(self) -> None:
        """Write one small key (with a TTL): raises BrokerUnavailableError when Redis
        answers but refuses writes (out of memory under noeviction, a read-only replica,
        a failed disk under stop-writes-on-bgsave-error, too few replicas)."""
        with self.translated():
            self.redis.set(keys.probe_key(self.prefix), "1", px=PROBE_TTL_MS)

    def memory(self) -> MemoryState:
        """Redis's memory limit, use and eviction policy, from INFO memory (one round
        trip; every master on a cluster: the worst policy, the least headroom).

        NOTE: INFO, not CONFIG GET, which managed services refuse (ElastiCache): there
        the policy read "unknown" and an evicting server passed as safe.
        """
        with self.translated():
            if self.cluster:
                nodes = list(self.redis.info("memory", target_nodes="primaries").values())
            else:
                nodes = [self.redis.info("memory")]
        policies = {str(n.get("maxmemory_policy", "unknown")) for n in nodes}
        unsafe = sorted(policies - {"noeviction"})
        tightest = min(nodes, key=_headroom)
        return MemoryState(
            policy=unsafe[0] if unsafe else "noeviction",
            used_bytes=int(tightest.get("used_memory") or 0),
            max_bytes=int(tightest.get("maxmemory") or 0),
        )

    def eviction_policy(self) -> str:
        """The maxmemory-policy ('unknown' where the server does not report it)."""
        return self.memory().policy

    def task_record(self, qk: QueueKeys, task_id: str) -> dict[str, str] | None:
        with self.translated():
            try:
                record = self.redis.hgetall(qk.task(task_id))
            except redis.exceptions.ResponseError:  # a non-hash written by hand
                return None
        return record or None

    def task_records(self, qk: QueueKeys, ids: Sequence[str]) -> list[dict[str, str]]:
        """The records of tasks of one queue, in order, skipping missing ones."""
        return self.task_records_of([(qk, task_id) for task_id in ids])

    def dead_ids(self, qk: QueueKeys, start: int, count: int) -> list[str]:
        with self.translated():
            return [str(x) for x in self.redis.zrange(qk.dead, start, start + count - 1)]

    # -- listings (runtime/listing.py: a few round trips per page, whatever the backlog) --

    def structure_sizes(self, structures: Sequence[tuple[str, str]]) -> list[int]:
        """The length of each pending LIST or index ZSET, as (list|zset, key)."""
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for kind, key in structures:
                pipe.llen(key) if kind == "list" else pipe.zcard(key)
            # NOTE: a key of the wrong type (written by hand) reads as empty.
            return [x if isinstance(x, int) else 0 for x in pipe.execute(raise_on_error=False)]

    def structure_ranges(self, reads: Sequence[tuple[str, str, int, int]]) -> list[list[str]]:
        """Per (list|zset, key, offset, count): the ids at [offset, offset+count), newest
        first; one round trip."""
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for kind, key, offset, count in reads:
                end = offset + max(count, 1) - 1
                read = pipe.lrange if kind == "list" else pipe.zrevrange
                read(key, offset, end)
            replies = pipe.execute(raise_on_error=False) if reads else []
        return [
            [str(x) for x in r][:count] if isinstance(r, list) and count else []
            for r, (_, _, _, count) in zip(replies, reads, strict=True)
        ]

    def task_fields(
        self, tasks: Sequence[tuple[QueueKeys, str]], fields: Sequence[str]
    ) -> list[list[str | None]]:
        """Some fields of each task's record; one round trip (None: no such field)."""
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for qk, task_id in tasks:
                pipe.hmget(qk.task(task_id), *fields)
            replies = pipe.execute(raise_on_error=False) if tasks else []
        return [r if isinstance(r, list) else [None] * len(fields) for r in replies]

    def task_records_of(self, tasks: Sequence[tuple[QueueKeys, str]]) -> list[dict[str, str]]:
        """The records of tasks of any queues, in order, skipping missing ones."""
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for qk, task_id in tasks:
                pipe.hgetall(qk.task(task_id))
            replies = pipe.execute(raise_on_error=False) if tasks else []
        return [r for r in replies if isinstance(r, dict) and r]

    def wake(self, queues: Sequence[QueueKeys]) -> None:
        """One wake-up token per queue: a worker blocked in its idle wait fetches now."""
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for qk in queues:
                self.push_wake(pipe, qk)
            pipe.execute()

    @staticmethod
    def push_wake(pipe: Any, qk: QueueKeys) -> None:
        """Add one wake-up token for `qk`, and the trim that keeps its list short, to
        `pipe`: the one place Python pushes wake-up tokens (Lua's is wake() in
        lua/_lib.lua). NOTE(deadletter): without the trim, tokens nobody waits for
        would pile up for as long as no worker serves the queue."""
        pipe.lpush(qk.notify, "1")
        pipe.ltrim(qk.notify, 0, NOTIFY_MAX - 1)

    def set_paused(self, qk: QueueKeys, paused: bool) -> None:
        with self.translated():
            if paused:
                self.redis.set(qk.paused, "1")
            else:
                self.redis.delete(qk.paused)
                self.wake([qk])

    def server_time_ms(self) -> int:
        """The Redis server's clock, ms: the one clock every process agrees on."""
        with self.translated():
            seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def record_fire(self, schedule: str, fire_ms: int, task_id: str) -> None:
        with self.translated():
            self.redis.hset(
                keys.schedule_key(self.prefix, schedule),
                mapping={"last_fire_ms": fire_ms, "last_task_id": task_id},
            )

    def last_fires(self, schedules: Sequence[str]) -> dict[str, dict[str, str]]:
        """Per schedule name: its last fire record (empty when it never fired)."""
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for name in schedules:
                pipe.hgetall(keys.schedule_key(self.prefix, name))
            return dict(zip(schedules, pipe.execute(), strict=True))

    # -- worker registry (global keys, each touched alone) -----------------

    def beat(self, worker_id: str, info: dict[str, Any], ttl_s: float) -> None:
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(
                keys.worker_key(self.prefix, worker_id), json.dumps(info), px=int(ttl_s * 1000)
            )
            pipe.zadd(keys.workers_key(self.prefix), {worker_id: info.get("beat_at_ms", 0)})
            pipe.execute()

    def forget_worker(self, worker_id: str) -> None:
        with self.translated():
            self.redis.delete(keys.worker_key(self.prefix, worker_id))
            self.redis.zrem(keys.workers_key(self.prefix), worker_id)

    def workers(self) -> list[dict[str, Any]]:
        """Live workers: those whose heartbeat record has not expired."""
        with self.translated():
            ids = self.redis.zrange(keys.workers_key(self.prefix), 0, -1)
            if not ids:
                return []
            # NOTE: GETs in a pipeline, not MGET: worker keys lie in many cluster slots.
            pipe = self.redis.pipeline(transaction=False)
            for worker_id in ids:
                pipe.get(keys.worker_key(self.prefix, worker_id))
            raw = pipe.execute()
            gone = [i for i, r in zip(ids, raw, strict=True) if r is None]
            if gone:
                self.redis.zrem(keys.workers_key(self.prefix), *gone)
        return [json.loads(r) for r in raw if r is not None]

    # -- dead letters in bulk (the REST API's admin routes) -----------------

    def dead_count(self, qk: QueueKeys) -> int:
        with self.translated():
            return int(self.redis.zcard(qk.dead))

    def task_functions(self, qk: QueueKeys, ids: Sequence[str]) -> list[str | None]:
        """The function of each task, in one round trip (None: no readable record)."""
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(qk.task(task_id), "function")
            replies = pipe.execute(raise_on_error=False)
        return [r if isinstance(r, str) else None for r in replies]

    # -- metrics (read at scrape time; durations written by workers) ---------

    def queue_metrics(self, qks: Sequence[QueueKeys]) -> tuple[int, list[dict[str, Any]]]:
        """Redis's clock (epoch ms) and, per queue, what /metrics exports; two round trips.

        Per queue: ``pending`` (depth per level), ``ready_since_ms`` (when the oldest
        ready task became ready; None if none), ``scheduled``, ``active``, ``dead``,
        ``paused``, the raw ``stats`` and ``durations`` hashes, and ``rates`` (the rate
        samples, newest first).
        """
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            # NOTE: a cluster pipeline cannot carry TIME (no key to route it by).
            timed = not self.cluster
            if timed:
                pipe.time()
            for qk in qks:
                for key in qk.all_pending:
                    pipe.llen(key)
                    pipe.lindex(key, -1)  # LPUSH in, RPOP out: the tail has waited longest
                pipe.zcard(qk.scheduled)
                pipe.zcard(qk.active)
                pipe.zcard(qk.dead)
                pipe.exists(qk.paused)
                pipe.hgetall(qk.stats)
                pipe.hgetall(qk.durations)
                pipe.lrange(qk.rates, 0, -1)
            # NOTE: a key of the wrong type (written by hand) reads as empty, not as a failure.
            replies = [None if isinstance(x, Exception) else x for x in pipe.execute(False)]
            now = replies.pop(0) if timed else self.redis.time()
            out: list[dict[str, Any]] = []
            tails: list[list[str]] = []
            at = 0
            for qk in qks:
                n = qk.levels
                r = replies[at : at + 2 * n + 7]
                at += 2 * n + 7
                entry: dict[str, Any] = {"pending": [int(x or 0) for x in r[0 : 2 * n : 2]]}
                for i, name in enumerate(("scheduled", "active", "dead")):
                    entry[name] = int(r[2 * n + i] or 0)
                entry["paused"] = bool(r[2 * n + 3])
                entry["stats"] = r[2 * n + 4] or {}
                entry["durations"] = r[2 * n + 5] or {}
                entry["rates"] = [str(x) for x in r[2 * n + 6] or ()]
                entry["ready_since_ms"] = None
                out.append(entry)
                tails.append([str(t) for t in r[1 : 2 * n : 2] if t])
            if any(tails):
                pipe = self.redis.pipeline(transaction=False)
                for qk, ids in zip(qks, tails, strict=True):
                    for task_id in ids:
                        pipe.hmget(qk.task(task_id), "created_at", "run_at")
                times = iter(pipe.execute(False))
                for entry, ids in zip(out, tails, strict=True):
                    known = [t for t in (self._ready_since(next(times)) for _ in ids) if t]
                    entry["ready_since_ms"] = min(known) if known else None
        now = now if isinstance(now, list | tuple) else (0, 0)
        return int(now[0]) * 1000 + int(now[1]) // 1000, out

    def add_rate_samples(self, samples: Sequence[tuple[QueueKeys, str]], keep: int) -> None:
        """Push one rate sample per queue, keeping the newest ``keep`` (one pipeline)."""
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for qk, sample in samples:
                pipe.lpush(qk.rates, sample)
                pipe.ltrim(qk.rates, 0, keep - 1)
                pipe.pexpire(qk.rates, 86_400_000)
            pipe.execute()

    @staticmethod
    def _ready_since(reply: Any) -> int | None:
        """Epoch ms a task became ready: its run_at if it waited for one, else created_at."""
        if not isinstance(reply, list | tuple):
            return None
        try:
            times = [int(x) for x in reply if x]
        except ValueError:
            return None
        return max(times) if times else None

    def add_durations(self, deltas: dict[str, dict[str, float]]) -> None:
        """Add a worker's duration histogram deltas (queue -> field -> amount), one pipeline."""
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for queue, fields in deltas.items():
                key = QueueKeys(self.prefix, queue, 0).durations  # levels do not matter here
                for name, amount in fields.items():
                    if isinstance(amount, int):
                        pipe.hincrby(key, name, amount)
                    else:
                        pipe.hincrbyfloat(key, name, amount)
            pipe.execute()

    # -- waiting tasks by function (hot reload's report of removed functions) --

    def waiting_ids(self, qk: QueueKeys, limit: int) -> tuple[list[str], bool]:
        """Up to `limit` ids of tasks queued (every level) or scheduled, and whether that
        is all of them; two round trips, reading at most `limit` ids."""
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for key in qk.all_pending:
                pipe.llen(key)
            pipe.zcard(qk.scheduled)
            # NOTE: a key of the wrong type (written by hand) reads as empty.
            sizes = [x if isinstance(x, int) else 0 for x in pipe.execute(raise_on_error=False)]
            pipe = self.redis.pipeline(transaction=False)
            left = limit
            for key, size in zip([*qk.all_pending, qk.scheduled], sizes, strict=True):
                take = min(size, left)
                left -= take
                if take and key == qk.scheduled:
                    pipe.zrange(key, 0, take - 1)
                elif take:
                    pipe.lrange(key, 0, take - 1)
            replies = pipe.execute(raise_on_error=False) if len(pipe) else []
        ids = [str(i) for r in replies if isinstance(r, list) for i in r]
        return ids, sum(sizes) <= limit

    def wake_parked(self, qk: QueueKeys, functions: set[str], limit: int) -> int:
        """Make tasks parked for want of one of `functions` (known again) due now.

        Reads at most `limit` scheduled ids. ``ZADD XX`` moves only a task still in the
        scheduled set, so one fetched meanwhile is left alone. Returns how many woke.
        """
        with self.translated():
            ids = [str(i) for i in self.redis.zrange(qk.scheduled, 0, limit - 1)]
            if not ids:
                return 0
            pipe = self.redis.pipeline(transaction=False)
            for task_id in ids:
                pipe.hmget(qk.task(task_id), "function", "state", "error")
            rows = pipe.execute(raise_on_error=False)
            chosen = [
                task_id
                for task_id, row in zip(ids, rows, strict=True)
                if isinstance(row, list)
                and row[0] in functions
                and row[1] == "scheduled"
                and '"UnknownFunction"' in (row[2] or "")
            ]
            if not chosen:
                return 0
            seconds, micros = self.redis.time()
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(qk.scheduled, dict.fromkeys(chosen, now_ms), xx=True)
            self.push_wake(pipe, qk)
            pipe.execute()
        return len(chosen)
