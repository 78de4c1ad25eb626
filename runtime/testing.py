"""Helpers for handler authors and for dtqs's own tests.

``run_inline`` calls a function's handler the way a worker would (payload checked
against its schema, a context as second argument) without Redis. ``InProcessWorker``
runs a real worker engine on threads of the calling process, against real Redis.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from dtqs.runtime import handlers
from dtqs.runtime.context import TaskContext
from dtqs.runtime.heartbeat import Heartbeat, Sweep
from dtqs.runtime.manifest import Manifest
from dtqs.runtime.payload import Validators, encode_json
from dtqs.runtime.redis.broker import Broker
from dtqs.runtime.worker import Worker


def run_inline(manifest: Manifest, function: str, payload: Any = None, attempt: int = 1) -> Any:
    """Run one function's handler now, in this thread; returns its (JSON) result."""
    spec = manifest.functions[function]
    Validators().check(spec, payload)
    fn = handlers.load_handler(spec)
    args: tuple[Any, ...] = (json.loads(encode_json(payload, "payload")),)
    if handlers.accepts_context(fn):
        args += (
            TaskContext(
                task_id="inline",
                attempt=attempt,
                function=spec.name,
                queue=spec.queue,
                priority=spec.priority,
                deadline=datetime.now(UTC) + timedelta(seconds=spec.timeout_s),
            ),
        )
    result = fn(*args)
    return json.loads(encode_json(result, "result"))


class InProcessWorker:
    """A worker engine with its heartbeat and sweep, on threads of this process."""

    def __init__(
        self,
        manifest: Manifest,
        redis_url: str,
        queues: list[str] | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.broker = Broker(redis_url, manifest.prefix)
        self.worker = Worker(manifest, self.broker, queues, concurrency)
        self.heartbeat = Heartbeat(self.worker)
        self.sweep = Sweep(self.worker)

    def start(self, wait_s: float = 5.0) -> InProcessWorker:
        """Start, and wait up to `wait_s` for the first heartbeat to reach Redis (the
        worker is then listed by ``Client.workers()``)."""
        self.worker.start()
        self.heartbeat.start()
        self.sweep.start()
        self.heartbeat.beaten.wait(wait_s)
        return self

    def stop(self, grace_s: float = 5.0) -> int:
        released = self.worker.stop(grace_s)
        self.sweep.stop()
        self.heartbeat.stop()
        self.broker.close()
        return released

    def __enter__(self) -> InProcessWorker:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
