"""The Go prototype's API, kept so that clients written for it work unchanged.

``POST /tasks {"type", "payload", "priority": 0-3}`` -> 201 ``{"id", "status", "priority"}``;
``GET /tasks/{id}`` -> ``{"id", "type", "payload", "status", "priority", "created_at",
"updated_at"}``; ``GET /health`` -> ``{"status": "ok"}``.

Integer priorities 0-3 mean low, normal, high, critical: a level of that name in the
function's queue when there is one, else counted from the queue's last (lowest) level.
Statuses are the prototype's words: pending, running, completed, failed, cancelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon

from dtqs.api import media, params
from dtqs.runtime.errors import PayloadValidationError, TaskNotFoundError, Violation
from dtqs.runtime.manifest import QueueSpec
from dtqs.runtime.task import TaskInfo

if TYPE_CHECKING:
    from dtqs.api.app import ApiState

NAMES = ("low", "normal", "high", "critical")
STATUS = {
    "queued": "pending",
    "scheduled": "pending",
    "running": "running",
    "succeeded": "completed",
    "failed": "failed",
    "dead": "failed",
    "cancelled": "cancelled",
}


def legacy_priority(value: Any) -> int:
    """The prototype's priority: an int 0-3, else a 422 naming /priority.

    NOTE(requests): `value in (0, 1, 2, 3)` lets 2.0 and True through (they compare equal
    to ints), and a float then indexed NAMES: a 500. Only a real int is a priority.
    """
    if type(value) is int and 0 <= value <= 3:
        return value
    raise PayloadValidationError(
        f"priority: expected an integer from 0 (low) to 3 (critical), got {value!r}",
        [Violation("/priority", "expected an integer from 0 to 3")],
    )


def level_of(queue: QueueSpec, priority: int) -> str:
    if NAMES[priority] in queue.priorities:
        return NAMES[priority]
    levels = queue.priorities
    return levels[max(len(levels) - 1 - priority, 0)]


def number_of(queue_levels: tuple[str, ...], level: str) -> int:
    if level in NAMES:
        return NAMES.index(level)
    position = len(queue_levels) - 1 - queue_levels.index(level) if level in queue_levels else 1
    return min(position, 3)


class LegacyTasks:
    scopes = {"POST": "submit"}

    def __init__(self, state: ApiState) -> None:
        self.state = state

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        client = self.state.client
        body = params.json_body(req, self.state.manifest.api.max_body_bytes)
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            raise PayloadValidationError(
                'expected {"type": <function>, "payload": ..., "priority": 0-3}',
                [Violation("/type", "required: the function to run")],
            )
        priority = legacy_priority(body.get("priority", 1))
        spec = client.function(body["type"])
        level = level_of(client.queue(spec.queue), priority)
        task_id = client.submit(spec.name, body.get("payload"), priority=level)
        resp.status = falcon.HTTP_201
        resp.location = f"/tasks/{task_id}"
        resp.text = media.dumps({"id": task_id, "status": "pending", "priority": priority})


def legacy_view(info: TaskInfo, levels: tuple[str, ...]) -> dict[str, Any]:
    d = info.to_dict()
    updated = d["finished_at"] or d["started_at"] or d["created_at"]
    return {
        "id": info.id,
        "type": info.function,
        "payload": info.payload,
        "status": STATUS.get(info.state, info.state),
        "priority": number_of(levels, info.priority),
        "created_at": d["created_at"],
        "updated_at": updated,
        "result": info.result,
        "error": info.error,
    }


class LegacyTask:
    scopes = {"GET": "submit"}

    def __init__(self, state: ApiState) -> None:
        self.state = state

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        info = self.state.client.get(task_id)
        if info is None:
            raise TaskNotFoundError(f"no task {task_id!r}")
        queue = self.state.manifest.queues.get(info.queue)
        resp.text = media.dumps(legacy_view(info, queue.priorities if queue else NAMES[::-1]))


class LegacyHealth:
    scopes = {"GET": None}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.text = media.dumps({"status": "ok"})


def add_routes(app: falcon.App[Any, Any], state: ApiState) -> None:
    app.add_route("/tasks", LegacyTasks(state))
    app.add_route("/tasks/{task_id}", LegacyTask(state))
    app.add_route("/health", LegacyHealth())
