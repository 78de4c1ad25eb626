"""The Python client: submit and inspect tasks. The API and the CLI use it too.

Everything it raises is a ``DtqsError``; redis-py's errors never cross this line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from os import PathLike
from typing import Any

from dtqs.runtime import settings
from dtqs.runtime.errors import (
    DtqsError,
    PayloadValidationError,
    TaskNotFoundError,
    TaskStateError,
    Violation,
    WaitTimeoutError,
)
from dtqs.runtime.inspection import Inspection
from dtqs.runtime.manifest import (
    FunctionSpec,
    Manifest,
    QueueSpec,
    load_manifest,
    resolve_config_path,
)
from dtqs.runtime.payload import Validators, encode_json, encode_submitted, pointer
from dtqs.runtime.redis.broker import DEFAULT_MAX_CONNECTIONS, Broker
from dtqs.runtime.redis.scripts import NewTask, Stored
from dtqs.runtime.task import TaskInfo, new_task_id, queue_of
from dtqs.runtime.waiting import TaskWaiter

#: Keys a submission may carry (a dict item of submit_many, or the REST body).
SUBMIT_FIELDS = frozenset(
    {"function", "payload", "priority", "delay", "run_at", "idempotency_key", "headers"}
)
MAX_IDEMPOTENCY_KEY = 256
#: How long a cancelled record is kept when it does not carry its own result_ttl_ms.
DEFAULT_RESULT_TTL_MS = 86_400_000
#: Furthest in the future a task may be delayed or scheduled (ten years).
MAX_DELAY_S = 10 * 365 * 86400
#: Latest run_at accepted, epoch seconds (year 9999, as far as datetime goes).
MAX_RUN_AT_S = 253402300799


def _to_epoch_ms(run_at: Any) -> int:
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:  # NOTE: naive times are taken as UTC, as in Celery's eta
            run_at = run_at.replace(tzinfo=UTC)
        return int(run_at.timestamp() * 1000)
    if (
        isinstance(run_at, int | float)
        and not isinstance(run_at, bool)
        and 0 <= run_at <= MAX_RUN_AT_S
    ):
        return int(run_at * 1000)
    if isinstance(run_at, str):
        try:
            return _to_epoch_ms(datetime.fromisoformat(run_at.replace("Z", "+00:00")))
        except (ValueError, OverflowError):
            pass
    raise PayloadValidationError(
        f"run_at: expected an ISO 8601 time, epoch seconds or a datetime, got {run_at!r}",
        [Violation("/run_at", "expected an ISO 8601 time or epoch seconds")],
    )


def make_broker(
    manifest: Manifest,
    redis_url: str | None = None,
    timeout_s: float | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> Broker:
    """A broker whose calls give up within `timeout_s` (default: the manifest's
    ``api.redis_timeout``), and whose submissions that reach Redis later store nothing.

    NOTE: a timed-out call is not retried (a frozen Redis would double the wait), and
    a submission carries a deadline on Redis's clock (see Broker.submit_deadline_ms):
    so "unavailable" means "not stored", except when the reply was lost after Redis
    stored the task (README, Delivery guarantee: retry with the same idempotency key).
    """
    timeout = manifest.api.redis_timeout_s if timeout_s is None else timeout_s
    return Broker(
        settings.redis_url(manifest, redis_url),
        manifest.prefix,
        socket_timeout_s=timeout,
        connect_timeout_s=min(timeout, 1.0),
        deadline_s=timeout,
        max_connections=max_connections,
    )


def _delay_ms(delay: Any) -> int:
    """Milliseconds from seconds; -1 for no delay."""
    if delay is None:
        return -1
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not 0 <= delay <= MAX_DELAY_S
    ):
        raise PayloadValidationError(
            f"delay: expected seconds from 0 to {MAX_DELAY_S}, got {delay!r}",
            [Violation("/delay", f"expected a number of seconds from 0 to {MAX_DELAY_S}")],
        )
    return int(delay * 1000)


def _headers_json(headers: Any) -> str:
    """The headers as JSON text ("" for none): an object of strings."""
    if headers is None:
        return ""
    if not isinstance(headers, Mapping):
        raise PayloadValidationError(
            "headers: expected an object of strings", [Violation("/headers", "expected an object")]
        )
    for key, value in headers.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            where = pointer("headers", (key,)) if isinstance(key, str) else "/headers"
            raise PayloadValidationError(
                f"headers: expected an object of strings, got {key!r}: {value!r}",
                [Violation(where, "expected a string key and a string value")],
            )
    return encode_json(dict(headers), "headers") if headers else ""


def _idempotency_key(key: Any) -> str:
    """The key as stored ("" for none): 1 to MAX_IDEMPOTENCY_KEY characters of valid Unicode.

    NOTE(requests): a lone surrogate ("\\ud800", which JSON text may carry) cannot be
    encoded as UTF-8, so it would fail inside the Redis driver: a 500 from the API and a
    bare UnicodeEncodeError from the client. It is refused here, before anything is sent.
    """
    if key is None:
        return ""
    if isinstance(key, str) and 0 < len(key) <= MAX_IDEMPOTENCY_KEY and is_unicode(key):
        return key
    expected = f"expected a string of 1..{MAX_IDEMPOTENCY_KEY} characters of valid Unicode"
    raise PayloadValidationError(
        f"idempotency_key: {expected}, got {key!r}", [Violation("/idempotency_key", expected)]
    )


def is_unicode(text: str) -> bool:
    """True when `text` encodes as UTF-8 (it holds no lone surrogate)."""
    if text.isascii():  # PERF(requests): the usual key, checked at C speed without a copy
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Client(Inspection):
    """Submit tasks to the functions of one manifest and inspect them.

    Args:
        redis_url: overrides ``$DTQS_REDIS_URL`` and the manifest's ``redis.url``.
        config: the manifest; default ``$DTQS_CONFIG``, else ``./dtqs.yaml``.
        timeout_s: longest a call waits on Redis before it raises ``unavailable``
            (default: the manifest's ``api.redis_timeout``, 1 s); a submission that
            reaches Redis after it is refused there, so it is not stored later.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        config: str | PathLike[str] | None = None,
        *,
        manifest: Manifest | None = None,
        broker: Broker | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.manifest = manifest or load_manifest(resolve_config_path(config))
        self.broker = broker or make_broker(self.manifest, redis_url, timeout_s)
        self._validators = Validators()
        self._waiter: TaskWaiter | None = None
        self._waiter_lock = threading.Lock()

    def use_manifest(self, manifest: Manifest) -> None:
        """Serve a new manifest from now on (hot reload)."""
        self.manifest = manifest
        self._validators = Validators()

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.close()
        self.broker.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- submission ---------------------------------------------------------

    def submit(
        self,
        function: str,
        payload: Any = None,
        priority: str | None = None,
        delay: float | None = None,
        run_at: datetime | float | str | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        task_id: str | None = None,
    ) -> str:
        """Store one task; returns its id (the first task's id for a repeated idempotency key)."""
        queue, task = self.prepare(
            function, payload, priority, delay, run_at, idempotency_key, headers, task_id=task_id
        )
        return self.store([(queue, task)])[0][0]

    def submit_many(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Store many tasks in one Redis round trip; all are validated before any is stored."""
        return [stored.id for stored in self.submit_batch(items)]

    def submit_batch(self, items: Iterable[Mapping[str, Any]]) -> list[Stored]:
        """As submit_many, with what became of each (stored now, and in which state, or
        an earlier task's id for a repeated idempotency key)."""
        prepared, violations = [], []
        for index, item in enumerate(items):
            try:
                prepared.append(self.prepare_item(item))
            except PayloadValidationError as exc:
                violations += [Violation(f"/{index}{v.pointer}", v.message) for v in exc.violations]
                if not exc.violations:
                    violations.append(Violation(f"/{index}", exc.message))
            except DtqsError as exc:
                violations.append(Violation(f"/{index}", exc.message))
        if violations:
            raise PayloadValidationError(
                f"{len(violations)} problem(s) in the batch, nothing was stored: "
                + "; ".join(f"{v.pointer}: {v.message}" for v in violations),
                violations,
            )
        return self.store(prepared) if prepared else []

    def prepare_item(self, item: Mapping[str, Any]) -> tuple[QueueSpec, NewTask]:
        if not isinstance(item, Mapping):
            raise PayloadValidationError("each task must be an object")
        if not SUBMIT_FIELDS.issuperset(item):
            unknown = sorted(set(item) - SUBMIT_FIELDS)
            raise PayloadValidationError(
                f"unknown field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(SUBMIT_FIELDS))}",
                [Violation(f"/{k}", "unknown field") for k in unknown],
            )
        if not isinstance(item.get("function"), str):
            raise PayloadValidationError(
                "function: a function name is required", [Violation("/function", "required")]
            )
        return self.prepare(
            item["function"], item.get("payload"), item.get("priority"), item.get("delay"),
            item.get("run_at"), item.get("idempotency_key"), item.get("headers"),
        )  # fmt: skip

    def validate_payload(self, spec: FunctionSpec, payload: Any) -> None:
        """Check a payload against its function's JSON Schema."""
        self._validators.check(spec, payload)

    def prepare(
        self,
        function: str,
        payload: Any = None,
        priority: str | None = None,
        delay: float | None = None,
        run_at: Any = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        task_id: str | None = None,
    ) -> tuple[QueueSpec, NewTask]:
        """Validate a submission and encode it; nothing is stored."""
        spec = self.function(function)
        queue = self.queue(spec.queue)
        level_name = spec.priority if priority is None else priority
        if level_name not in queue.priorities:
            raise PayloadValidationError(
                f"priority: {level_name!r} is not a level of queue {queue.name!r} "
                f"(expected one of {', '.join(queue.priorities)})",
                [Violation("/priority", f"expected one of {', '.join(queue.priorities)}")],
            )
        payload_json = encode_submitted(payload, "payload")
        self.validate_payload(spec, payload)
        if delay is not None and run_at is not None:
            raise PayloadValidationError(
                "give delay or run_at, not both",
                [Violation("/run_at", "not allowed together with delay")],
            )
        return queue, NewTask(
            id=task_id or new_task_id(queue.name),
            function=spec.name,
            priority=level_name,
            level=queue.level(level_name),
            payload_json=payload_json,
            headers_json=_headers_json(headers),
            delay_ms=_delay_ms(delay),
            run_at_ms=_to_epoch_ms(run_at) if run_at is not None else -1,
            idempotency_key=_idempotency_key(idempotency_key),
            idempotency_ttl_ms=int(spec.idempotency_ttl_s * 1000),
            result_ttl_ms=int(spec.result_ttl_s * 1000),
        )

    def store(self, prepared: Sequence[tuple[QueueSpec, NewTask]]) -> list[Stored]:
        """Enqueue prepared tasks: one script call per queue, all in one round trip."""
        by_queue: dict[str, list[int]] = {}
        for index, (queue, _) in enumerate(prepared):
            by_queue.setdefault(queue.name, []).append(index)
        groups = []
        for indexes in by_queue.values():
            queue = prepared[indexes[0]][0]
            qk = self.broker.qkeys(queue.name, len(queue.priorities))
            groups.append((qk, [prepared[i][1] for i in indexes]))
        with self.broker.translated():
            m = self.manifest
            replies = self.broker.enqueue(groups, m.wait_replicas, m.wait_timeout_s)
        out: list[Stored] = [Stored("", None)] * len(prepared)
        for indexes, reply in zip(by_queue.values(), replies, strict=True):
            for i, result in zip(indexes, self.broker.scripts.decode_enqueue(reply), strict=True):
                out[i] = result
        return out

    # -- inspection -----------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo | None:
        """The task's record, or None when there is no such task (or it expired)."""
        queue = queue_of(task_id) if isinstance(task_id, str) else None
        if queue is None:
            return None
        record = self.broker.task_record(self._qkeys_for(queue), task_id)
        return TaskInfo.from_record(record) if record else None

    def cancel(self, task_id: str) -> bool:
        """Cancel a queued or scheduled task; False when it is running, finished or unknown."""
        try:
            self.cancel_task(task_id)
        except (TaskNotFoundError, TaskStateError):
            return False
        return True

    def cancel_task(self, task_id: str) -> TaskInfo:
        """Cancel a task that has not started; raises TaskNotFoundError or TaskStateError."""
        queue = queue_of(task_id) if isinstance(task_id, str) else None
        if queue is None:
            raise TaskNotFoundError(f"no task {task_id!r}")
        qk = self._qkeys_for(queue)
        with self.broker.translated():
            # NOTE: the script keeps the record for its own result_ttl_ms; this is a fallback.
            code, state = self.broker.scripts.cancel(qk, task_id, DEFAULT_RESULT_TTL_MS)
        if code < 0:
            raise TaskNotFoundError(f"no task {task_id!r}")
        if code == 0:
            raise TaskStateError(
                f"task {task_id} is {state}; only queued or scheduled tasks can be cancelled"
            )
        info = self.get(task_id)  # None when result_ttl is 0: the record is gone already
        return info or TaskInfo.from_record({"id": task_id, "queue": queue, "state": "cancelled"})

    def wait(self, task_id: str, timeout: float = 30.0) -> TaskInfo:
        """Block until the task reaches a final state and return it.

        Raises:
            TaskNotFoundError: no such task (or its record expired).
            WaitTimeoutError: it had not ended within `timeout` seconds.
        """
        info = self.watch(task_id, timeout)
        if info is None:
            raise TaskNotFoundError(
                f"no task {task_id!r} (or it finished and its record expired: result_ttl)"
            )
        if not info.finished:
            raise WaitTimeoutError(f"task {task_id} is still {info.state} after {timeout:g}s")
        return info

    def watch(
        self, task_id: str, timeout_s: float, stop: threading.Event | None = None
    ) -> TaskInfo | None:
        """The task once it reaches a final state, or as it is after `timeout_s` (or
        once `stop` is set and the waiters woken: a draining server); None when there
        is no such task. Woken by the engine's notification, not by polling
        (runtime/waiting.py: the one implementation of waiting)."""
        queue = queue_of(task_id) if isinstance(task_id, str) else None
        if queue is None:
            return None
        deadline = time.monotonic() + timeout_s
        with self.waiter.watching(self._qkeys_for(queue), task_id) as event:
            while True:
                info = self.get(task_id)
                left = deadline - time.monotonic()
                if info is None or info.finished or left <= 0 or (stop and stop.is_set()):
                    return info
                event.wait(left)
                event.clear()

    @property
    def waiter(self) -> TaskWaiter:
        """The waiter of this client's broker (made on first use: a thread and a pub/sub
        connection while anyone waits)."""
        if self._waiter is None:
            with self._waiter_lock:
                if self._waiter is None:
                    self._waiter = TaskWaiter(self.broker)
        return self._waiter
