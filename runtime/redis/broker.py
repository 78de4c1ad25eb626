"""The connection to Redis and every plain (non-script) command the engine sends.

This package is the only code that imports redis-py. Connection failures become
``BrokerUnavailableError`` here, so callers above never see a redis-py exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from dtqs.runtime.errors import BrokerUnavailableError, DtqsError
from dtqs.runtime.redis import keys
from dtqs.runtime.redis.keys import QueueKeys
from dtqs.runtime.redis.scripts import Scripts

#: Seconds a command may take before the call fails as unavailable.
DEFAULT_SOCKET_TIMEOUT_S = 5.0
#: Seconds to establish a connection.
DEFAULT_CONNECT_TIMEOUT_S = 2.0


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if ':' in creds else creds}@{host}"


@contextmanager
def translated(url: str = "") -> Iterator[None]:
    """Turn redis-py's failures into dtqs errors a caller can act on."""
    try:
        yield
    except redis.exceptions.BusyLoadingError as exc:
        raise BrokerUnavailableError("Redis is loading its data set; try again shortly") from exc
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        where = f" at {redact(url)}" if url else ""
        raise BrokerUnavailableError(f"Redis is unreachable{where}: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        text = str(exc)
        if text.startswith("OOM"):
            raise BrokerUnavailableError(
                "Redis is out of memory (maxmemory reached); nothing was stored"
            ) from exc
        if text.startswith(("MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "LOADING")):
            raise BrokerUnavailableError(f"Redis cannot take writes now: {text}") from exc
        raise DtqsError(f"Redis refused a command: {text}") from exc


class Broker:
    """A Redis connection pool plus the engine's scripts, for one key namespace."""

    def __init__(
        self,
        url: str,
        prefix: str = keys.DEFAULT_PREFIX,
        *,
        socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.redis: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            # NOTE: one quick retry covers a connection the server closed while idle;
            # more would stretch a caller's deadline while Redis is really down.
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
            health_check_interval=30,
        )
        self.scripts = Scripts(self.redis)
        self._qkeys: dict[tuple[str, int], QueueKeys] = {}

    def qkeys(self, queue: str, levels: int) -> QueueKeys:
        k = self._qkeys.get((queue, levels))
        if k is None:
            k = self._qkeys[(queue, levels)] = QueueKeys(self.prefix, queue, levels)
        return k

    def translated(self) -> Any:
        return translated(self.url)

    def close(self) -> None:
        self.redis.close()

    # -- plain reads ------------------------------------------------------

    def ping(self) -> bool:
        with self.translated():
            return bool(self.redis.ping())

    def eviction_policy(self) -> str:
        """The server's maxmemory-policy ('unknown' where CONFIG is not allowed)."""
        with self.translated():
            try:
                reply = self.redis.config_get("maxmemory-policy")
            except redis.exceptions.ResponseError:
                return "unknown"
        return str(reply.get("maxmemory-policy", "unknown"))

    def task_record(self, qk: QueueKeys, task_id: str) -> dict[str, str] | None:
        with self.translated():
            try:
                record = self.redis.hgetall(qk.task(task_id))
            except redis.exceptions.ResponseError:  # a non-hash written by hand
                return None
        return record or None

    def task_records(self, qk: QueueKeys, ids: Sequence[str]) -> list[dict[str, str]]:
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for task_id in ids:
                pipe.hgetall(qk.task(task_id))
            return [r for r in pipe.execute(raise_on_error=False) if isinstance(r, dict) and r]

    def queue_counts(self, qk: QueueKeys) -> dict[str, Any]:
        """Depth per level, scheduled, in flight, dead, paused and counters, in one round trip."""
        with self.translated():
            pipe = self.redis.pipeline(transaction=False)
            for key in qk.all_pending:
                pipe.llen(key)
            pipe.zcard(qk.scheduled)
            pipe.zcard(qk.active)
            pipe.zcard(qk.dead)
            pipe.exists(qk.paused)
            pipe.hgetall(qk.stats)
            r = pipe.execute()
        n = qk.levels
        return {
            "pending": [int(x) for x in r[:n]],
            "scheduled": int(r[n]),
            "active": int(r[n + 1]),
            "dead": int(r[n + 2]),
            "paused": bool(r[n + 3]),
            "stats": {k: int(v) for k, v in r[n + 4].items()},
        }

    def dead_ids(self, qk: QueueKeys, start: int, count: int) -> list[str]:
        with self.translated():
            return [str(x) for x in self.redis.zrange(qk.dead, start, start + count - 1)]

    def wait_for_work(self, qk: QueueKeys, timeout_s: float) -> bool:
        """Block until a wake-up token arrives or the timeout passes; True if woken."""
        with self.translated():
            return self.redis.blpop([qk.notify], timeout=max(timeout_s, 0.001)) is not None

    def set_paused(self, qk: QueueKeys, paused: bool) -> None:
        with self.translated():
            if paused:
                self.redis.set(qk.paused, "1")
            else:
                self.redis.delete(qk.paused)
                self.redis.lpush(qk.notify, "1")

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
            raw = self.redis.mget([keys.worker_key(self.prefix, i) for i in ids])
            gone = [i for i, r in zip(ids, raw, strict=True) if r is None]
            if gone:
                self.redis.zrem(keys.workers_key(self.prefix), *gone)
        return [json.loads(r) for r in raw if r is not None]
