"""Admin routes: queues (and pausing them), dead letters, functions, schedules, workers.

Every method here needs a token with the ``admin`` scope.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import falcon

from dtqs.api import media, params
from dtqs.api.errors import ProblemError
from dtqs.runtime.errors import TaskNotFoundError
from dtqs.runtime.manifest import FunctionSpec, QueueSpec, ScheduleSpec
from dtqs.runtime.schedule_times import next_fire_times
from dtqs.runtime.task import TaskInfo, queue_of

if TYPE_CHECKING:
    from dtqs.api.app import ApiState

ADMIN = {"GET": "admin", "POST": "admin", "DELETE": "admin"}
#: Dead letters per page: the default and the most a client may ask for.
DEFAULT_PAGE = 100
MAX_PAGE = 500
#: Upcoming fire times shown per schedule.
FIRE_TIMES_SHOWN = 3


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def queue_view(spec: QueueSpec, counts: dict[str, Any]) -> dict[str, Any]:
    """A queue's settings with its depths and counters (counts: Client.queue_counts())."""
    stats = counts["stats"]
    return {
        "name": spec.name,
        "priorities": list(spec.priorities),
        "concurrency": spec.concurrency,
        "visibility_timeout_s": spec.visibility_timeout_s,
        "weights": dict(spec.weights) if spec.weights else None,
        "pending": counts["pending"],
        "scheduled": counts["scheduled"],
        "in_flight": counts["active"],
        "dead": counts["dead"],  # NOTE: dead letters now; stats["dead"] counts every burial
        "paused": counts["paused"],
        "processed": stats.get("processed", 0),
        "failed": stats.get("failed", 0),
        "retried": stats.get("retried", 0),
        "autoscale": counts["autoscale"],
    }


def function_view(spec: FunctionSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "queue": spec.queue,
        "priority": spec.priority,
        "timeout_s": spec.timeout_s,
        "retry": asdict(spec.retry),
        "result_ttl_s": spec.result_ttl_s,
        "dead_letter": spec.dead_letter,
        "schema": dict(spec.schema) if spec.schema is not None else None,
    }


def schedule_view(spec: ScheduleSpec, now: datetime, fired: dict[str, str]) -> dict[str, Any]:
    """A schedule, its next fire times and its last fire (`fired`: what the scheduler wrote)."""
    last_ms = fired.get("last_fire_ms")
    return {
        "name": spec.name,
        "function": spec.function,
        "cron": spec.cron,
        "every_s": spec.every_s,
        "timezone": spec.timezone,
        "enabled": spec.enabled,
        "payload": spec.payload,
        "next_fire_times": [iso(t) for t in next_fire_times(spec, FIRE_TIMES_SHOWN, now)],
        "last_fire_time": iso(datetime.fromtimestamp(int(last_ms) / 1000, UTC))
        if last_ms
        else None,
        "last_task_id": fired.get("last_task_id"),
    }


class _Admin:
    scopes = ADMIN

    def __init__(self, state: ApiState) -> None:
        self.state = state

    def queue_answer(self, name: str) -> dict[str, Any]:
        client = self.state.client
        spec = client.queue(name)
        return queue_view(spec, client.queue_counts(name))

    def queue_names(self, req: falcon.Request) -> list[str]:
        """The `queue` filter as a list, or every queue of the manifest in its order."""
        name = params.text(req, "queue")
        if name is not None:
            self.state.client.queue(name)  # unknown: 404, as on /v1/tasks
            return [name]
        return list(self.state.manifest.queues)


def function_filter(req: falcon.Request) -> str | None:
    """The `function` filter. Not checked against the manifest: a function removed from
    it may still have dead letters, and an operator must be able to clear them."""
    return params.function_name(req)


class Queues(_Admin):
    """GET /v1/queues: every queue with its depths, counters and paused flag."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        manifest = self.state.manifest
        counts = self.state.client.queues()
        views = [queue_view(spec, counts[name]) for name, spec in manifest.queues.items()]
        resp.text = media.dumps({"queues": views})


class Queue(_Admin):
    """GET /v1/queues/{name}."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.text = media.dumps(self.queue_answer(name))


class QueuePause(_Admin):
    """POST /v1/queues/{name}/pause or /resume: stops or restarts fetching, everywhere."""

    def __init__(self, state: ApiState, paused: bool) -> None:
        super().__init__(state)
        self.paused = paused

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.state.client.pause(name, self.paused)
        resp.text = media.dumps(self.queue_answer(name))


class DeadLetters(_Admin):
    """GET /v1/dead-letters lists them, a page at a time; DELETE purges all that match."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        queues = self.queue_names(req)
        function = function_filter(req)
        limit = params.number(req, "limit", DEFAULT_PAGE, 1, MAX_PAGE, integer=True)
        index, offset = params.decode_cursor(req, 2)
        if index >= len(queues) and (index, offset) != (0, 0):
            raise params.bad_param("cursor", "the next_cursor of a page with these filters")
        items: list[TaskInfo] = []
        after: tuple[int, int] | None = None
        while index < len(queues):
            page, next_offset = self.state.client.dead_letter_page(
                queues[index], function, limit - len(items), offset
            )
            items += page
            if next_offset is not None:
                after = (index, next_offset)
                break
            index, offset = index + 1, 0
            if len(items) >= limit:  # full exactly at a queue's end: the next queue follows
                after = (index, 0) if index < len(queues) else None
                break
        answer = {"items": [i.to_dict() for i in items], "next_cursor": params.encode_cursor(after)}
        resp.text = media.dumps(answer)

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        queues, function = self.queue_names(req), function_filter(req)
        purged = sum(self.state.client.purge_all(q, function) for q in queues)
        resp.text = media.dumps({"purged": purged})


class DeadLettersReplay(_Admin):
    """POST /v1/dead-letters/replay: every dead letter matching `queue` and `function`."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        queues, function = self.queue_names(req), function_filter(req)
        replayed = sum(self.state.client.replay_all(q, function) for q in queues)
        resp.text = media.dumps({"replayed": replayed})


def dead_letter_queue(state: ApiState, task_id: str) -> str:
    """The queue of a dead letter's id; 404 when the id names no queue of the manifest."""
    queue = queue_of(task_id)
    if queue is None or queue not in state.manifest.queues:
        raise TaskNotFoundError(f"no dead letter {task_id!r}")
    return queue


class DeadLetter(_Admin):
    """DELETE /v1/dead-letters/{task_id}: purge one."""

    def on_delete(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        if not self.state.client.purge(dead_letter_queue(self.state, task_id), [task_id]):
            raise TaskNotFoundError(f"no dead letter {task_id!r}")
        resp.text = media.dumps({"purged": 1})


class DeadLetterReplay(_Admin):
    """POST /v1/dead-letters/{task_id}/replay: send one back to its queue."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        client = self.state.client
        replayed = client.replay(dead_letter_queue(self.state, task_id), [task_id])
        if not replayed:
            info = client.get(task_id)
            if info is None or info.state != "dead":
                raise TaskNotFoundError(f"no dead letter {task_id!r}")
            # A record buried for being unreadable (decode_error) has nothing to rerun.
            raise ProblemError(
                409,
                f"dead letter {task_id} cannot be replayed (reason: {info.reason}): it has"
                " no function or payload; purge it instead",
            )
        resp.text = media.dumps({"replayed": len(replayed)})


class TaskCancel(_Admin):
    """POST /v1/tasks/{task_id}/cancel: cancel a queued or scheduled task; 409 once it runs.

    NOTE(requests): a cancelled task keeps its record (readable, listed as cancelled), so
    cancelling is a state change, not a DELETE: after a DELETE, HTTP clients and caches
    expect the resource gone. ``DELETE /v1/tasks/{task_id}`` still cancels, deprecated.
    """

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        resp.text = media.dumps(self.state.client.cancel_task(task_id).to_dict())


class Functions(_Admin):
    """GET /v1/functions: each function with its queue, policy and payload schema."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        specs = self.state.manifest.functions.values()
        resp.text = media.dumps({"functions": [function_view(s) for s in specs]})


class Function(_Admin):
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.text = media.dumps(function_view(self.state.client.function(name)))


class Schedules(_Admin):
    """GET /v1/schedules: each schedule with its next fire times."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        now = datetime.now(UTC)
        specs = self.state.manifest.schedules
        last = self.state.client.broker.last_fires(list(specs))
        views = [schedule_view(s, now, last.get(name) or {}) for name, s in specs.items()]
        resp.text = media.dumps({"schedules": views})


class Workers(_Admin):
    """GET /v1/workers: live workers, from their heartbeats."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.text = media.dumps({"workers": self.state.client.workers()})


def add_routes(app: falcon.App[Any, Any], state: ApiState) -> None:
    app.add_route("/v1/queues", Queues(state))
    app.add_route("/v1/queues/{name}", Queue(state))
    app.add_route("/v1/queues/{name}/pause", QueuePause(state, True))
    app.add_route("/v1/queues/{name}/resume", QueuePause(state, False))
    app.add_route("/v1/dead-letters", DeadLetters(state))
    app.add_route("/v1/dead-letters/replay", DeadLettersReplay(state))
    app.add_route("/v1/dead-letters/{task_id}", DeadLetter(state))
    app.add_route("/v1/dead-letters/{task_id}/replay", DeadLetterReplay(state))
    app.add_route("/v1/tasks/{task_id}/cancel", TaskCancel(state))
    app.add_route("/v1/functions", Functions(state))
    app.add_route("/v1/functions/{name}", Function(state))
    app.add_route("/v1/schedules", Schedules(state))
    app.add_route("/v1/workers", Workers(state))
