"""The task record as callers see it, decoded from its Redis hash; and task ids."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

#: States a task can be in. The last four are final.
STATES = ("queued", "scheduled", "running", "succeeded", "failed", "dead", "cancelled")
FINAL_STATES = frozenset({"succeeded", "failed", "dead", "cancelled"})

QUEUE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_ID = re.compile(r"^([a-z][a-z0-9_-]{0,63})\.([A-Za-z0-9_:.-]{1,200})$")


def new_task_id(queue: str) -> str:
    """``<queue>.<12 hex ms time><16 hex random>``: sortable by creation, and the
    queue part finds the record without a lookup in another cluster slot."""
    return f"{queue}.{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def queue_of(task_id: str) -> str | None:
    """The queue a task id belongs to, or None when it is not a dtqs task id."""
    m = _ID.match(task_id)
    return m.group(1) if m else None


def _ms_to_dt(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def _json(value: str | None) -> Any:
    if value is None or value == "":
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class TaskInfo:
    """One task as stored: what it runs, where it is, and how it went."""

    id: str
    function: str
    queue: str
    state: str
    priority: str
    attempts: int
    payload: Any = None
    result: Any = None
    error: Any = None  #: the last attempt's error: {"type", "message"}
    errors: list[Any] = field(default_factory=list)  #: every attempt's error, oldest first
    traceback: str | None = None
    reason: str | None = None  #: why a task is dead: max_attempts, timeout, worker_lost, ...
    progress: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    created_at: datetime | None = None
    run_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_record(cls, record: dict[str, str]) -> TaskInfo:
        return cls(
            id=record.get("id", ""),
            function=record.get("function", ""),
            queue=record.get("queue", ""),
            state=record.get("state", ""),
            priority=record.get("priority", ""),
            attempts=int(record.get("attempts") or 0),
            payload=_json(record.get("payload")),
            result=_json(record.get("result")),
            error=_json(record.get("error")),
            errors=_json(record.get("errors")) or [],
            traceback=record.get("traceback") or None,
            reason=record.get("reason") or None,
            progress=_json(record.get("progress")),
            headers=_json(record.get("headers")) or {},
            idempotency_key=record.get("idempotency_key"),
            created_at=_ms_to_dt(record.get("created_at")),
            run_at=_ms_to_dt(record.get("run_at")) if record.get("state") == "scheduled" else None,
            started_at=_ms_to_dt(record.get("started_at")),
            finished_at=_ms_to_dt(record.get("finished_at")),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 strings in UTC."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat().replace("+00:00", "Z")
        return out
