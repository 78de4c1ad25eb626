"""Task endpoints: submit one or a batch, read (with long-poll), cancel, list.

The submit path costs one Redis round trip (a batch too); payloads are checked
against pre-compiled validators before anything is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon

from dtqs.api import media, params
from dtqs.api.errors import RETRY_AFTER_S, ProblemError
from dtqs.runtime.errors import PayloadValidationError, TaskNotFoundError, Violation
from dtqs.runtime.redis.scripts import NewTask
from dtqs.runtime.task import STATES, TaskInfo

if TYPE_CHECKING:
    from dtqs.api.app import ApiState

#: Most tasks one batch request may carry.
MAX_BATCH = 1000
#: Most tasks one page of GET /v1/tasks may hold.
MAX_PAGE = 500


def submitted(task: NewTask, queue: str, state: str) -> dict[str, Any]:
    """The answer to a submission, from what was stored (no second round trip); the
    state (queued or scheduled) is the script's, decided on Redis's clock."""
    return {
        "id": task.id,
        "function": task.function,
        "queue": queue,
        "priority": task.priority,
        "state": state,
        "attempts": 0,
        "idempotency_key": task.idempotency_key or None,
    }


def with_idempotency_header(req: falcon.Request, body: dict[str, Any]) -> dict[str, Any]:
    """The Idempotency-Key header stands for the body's idempotency_key."""
    header = params.header_text(req, "Idempotency-Key")
    if header is None:
        return body
    if body.get("idempotency_key") not in (None, header):
        raise PayloadValidationError(
            "the Idempotency-Key header and the body's idempotency_key differ",
            [Violation("/idempotency_key", "differs from the Idempotency-Key header")],
        )
    return {**body, "idempotency_key": header}


class Tasks:
    """POST /v1/tasks (submit) and GET /v1/tasks (list)."""

    scopes = {"POST": "submit", "GET": "submit"}

    def __init__(self, state: ApiState) -> None:
        self.state = state

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        client = self.state.client
        body = params.json_body(req, self.state.manifest.api.max_body_bytes)
        if not isinstance(body, dict):
            raise PayloadValidationError(
                "expected a JSON object", [Violation("", "expected an object")]
            )
        body = with_idempotency_header(req, body)
        if isinstance(body.get("function"), str):
            client.function(body["function"])  # unknown function: 404, not 422
        queue, task = client.prepare_item(body)
        task_id, state = client.store([(queue, task)])[0]
        if state is not None:
            answer = submitted(task, queue.name, state)
        else:
            resp.set_header("Idempotent-Replayed", "true")
            info = client.get(task_id)
            answer = info.to_dict() if info else {**submitted(task, queue.name, "queued"),
                                                  "id": task_id}  # fmt: skip
        resp.status = falcon.HTTP_202
        resp.location = f"/v1/tasks/{task_id}"
        resp.text = media.dumps(answer)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = params.number(req, "limit", 100, 1, MAX_PAGE, integer=True)
        items, after = self.state.client.list_tasks(
            queue=params.text(req, "queue"),
            function=params.function_name(req),
            state=params.choice(req, "state", STATES),
            limit=limit,
            cursor=params.decode_cursor(req, 3),  # type: ignore[arg-type]
        )
        resp.text = media.dumps(
            {"items": [i.to_dict() for i in items], "next_cursor": params.encode_cursor(after)}
        )


class Batch:
    """POST /v1/tasks/batch: up to MAX_BATCH tasks, validated all-or-nothing, one round trip."""

    scopes = {"POST": "submit"}

    def __init__(self, state: ApiState) -> None:
        self.state = state

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = params.json_body(req, self.state.manifest.api.max_body_bytes)
        items = body.get("tasks") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise PayloadValidationError(
                f'expected {{"tasks": [...]}} with 1 to {MAX_BATCH} tasks',
                [Violation("/tasks", f"expected an array of 1 to {MAX_BATCH} tasks")],
            )
        try:
            results = self.state.client.submit_batch(items)
        except PayloadValidationError as exc:
            violations = [Violation("/tasks" + v.pointer, v.message) for v in exc.violations]
            raise PayloadValidationError(exc.message, violations) from None
        resp.status = falcon.HTTP_202
        resp.text = media.dumps({"ids": [stored.id for stored in results]})


class Task:
    """GET /v1/tasks/{task_id} (?wait=S long-polls for a final state), DELETE cancels."""

    scopes = {"GET": "submit", "DELETE": "admin"}

    def __init__(self, state: ApiState) -> None:
        self.state = state

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        client = self.state.client
        wait_s = params.number(req, "wait", 0, 0, self.state.manifest.api.max_wait_s, integer=False)
        info = client.get(task_id)
        if info is not None and wait_s > 0 and not info.finished:
            info = self.long_poll(task_id, wait_s)
        if info is None:
            raise TaskNotFoundError(f"no task {task_id!r} (unknown, or its record expired)")
        resp.text = media.dumps(info.to_dict())

    def long_poll(self, task_id: str, wait_s: float) -> TaskInfo | None:
        """Wait for the task's end on a long-poll slot (each holds a server thread: the
        server runs api.max_long_polls threads beside the others, so waiting never
        starves submissions or probes); none free: 429 at once, never a queue."""
        slots = self.state.long_polls
        if not slots.acquire(blocking=False):
            limit = self.state.manifest.api.max_long_polls
            raise ProblemError(
                429,
                f"{limit} long-polls are waiting already (api.max_long_polls); retry after "
                f"{RETRY_AFTER_S} s, or read the task without ?wait",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        try:
            # NOTE: a draining server (SIGTERM) answers its long-polls at once.
            return self.state.client.watch(task_id, wait_s, stop=self.state.draining)
        finally:
            slots.release()

    def on_delete(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        resp.text = media.dumps(self.state.client.cancel_task(task_id).to_dict())


def add_routes(app: falcon.App[Any, Any], state: ApiState) -> None:
    app.add_route("/v1/tasks", Tasks(state))
    app.add_route("/v1/tasks/batch", Batch(state))
    app.add_route("/v1/tasks/{task_id}", Task(state))
