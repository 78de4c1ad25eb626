"""GET /openapi.json: the OpenAPI 3.1 document of this API, generated from the manifest.

Each function's payload JSON Schema is embedded (under ``components/schemas``), so the
document is the contract for submitting to *this* project; it is rebuilt whenever the
manifest object is swapped (hot reload) and cached otherwise.
"""

from __future__ import annotations

import copy
import threading
from importlib import metadata
from typing import TYPE_CHECKING, Any

import falcon

from dtqs.api import admin, media, tasks
from dtqs.api.errors import PROBLEM, TITLES
from dtqs.runtime.client import MAX_IDEMPOTENCY_KEY
from dtqs.runtime.manifest import FunctionSpec, Manifest
from dtqs.runtime.task import STATES

if TYPE_CHECKING:
    from dtqs.api.app import ApiState

JSON = "application/json"
#: Keys of a payload schema that only make sense at the root of its own file.
_ROOT_ONLY = ("$schema", "$id")
#: Keywords whose values are data, not schemas: $refs inside them are left alone.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "example"})
#: Keywords whose values map names (which may look like keywords) to schemas.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions",
                          "dependentSchemas"})  # fmt: skip


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **more}


def _obj(props: dict[str, Any], required: list[str] | None = None, **more: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or list(props), **more}


def _rebase(node: Any, base: str) -> Any:
    """A copy of a schema whose internal ``$ref: "#/..."`` point under `base` instead."""
    if isinstance(node, list):
        return [_rebase(item, base) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            out[key] = base + value[1:]
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _rebase(sub, base) for name, sub in value.items()}
        elif key in _DATA_KEYWORDS:
            out[key] = copy.deepcopy(value)
        else:
            out[key] = _rebase(value, base)
    return out


def payload_schema(spec: FunctionSpec) -> dict[str, Any]:
    """The function's payload schema as a component: root-only keys dropped, refs rebased."""
    name = f"payload.{spec.name}"
    schema = {k: v for k, v in (spec.schema or {}).items() if k not in _ROOT_ONLY}
    rebased: dict[str, Any] = _rebase(schema, f"#/components/schemas/{name}")
    return rebased


def submit_schema(spec: FunctionSpec, levels: tuple[str, ...], has_schema: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "function": {"const": spec.name},
            "payload": _ref(f"payload.{spec.name}") if has_schema else {},
            "priority": {"enum": list(levels), "default": spec.priority},
            "delay": {"type": "number", "minimum": 0, "description": "seconds from now"},
            "run_at": {"type": "string", "format": "date-time"},
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["function"],
        "additionalProperties": False,
    }


def _task_schema() -> dict[str, Any]:
    when = _nullable("string", format="date-time")
    return _obj(
        {
            "id": {"type": "string"},
            "function": {"type": "string"},
            "queue": {"type": "string"},
            "state": {"enum": list(STATES)},
            "priority": {"type": "string"},
            "attempts": {"type": "integer", "minimum": 0},
            "payload": {},
            "result": {},
            "error": {"description": "the last attempt's error: {type, message}"},
            "errors": {"type": "array", "description": "every attempt's error, oldest first"},
            "traceback": _nullable("string"),
            "reason": _nullable("string", description="why a task is dead"),
            "progress": {},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "idempotency_key": _nullable("string"),
            "created_at": when,
            "run_at": when,
            "started_at": when,
            "finished_at": when,
        },
        ["id", "state"],
        description="A task. A submission's answer carries only some fields.",
    )


def _fixed_schemas() -> dict[str, Any]:
    """Components that do not depend on the manifest."""
    integer, number, string = {"type": "integer"}, {"type": "number"}, {"type": "string"}
    counts = {"type": "integer", "minimum": 0}
    queue = _obj({
        "name": string,
        "priorities": {"type": "array", "items": string},
        "concurrency": integer,
        "visibility_timeout_s": number,
        "weights": {"type": ["object", "null"], "additionalProperties": integer},
        "pending": {"type": "object", "additionalProperties": counts},
        "scheduled": counts, "in_flight": counts, "dead": counts, "paused": {"type": "boolean"},
        "processed": counts, "failed": counts, "retried": counts,
        "autoscale": _obj({
            "backlog": counts, "oldest_age_s": number, "in_flight": counts,
            "arrival_rate": number, "completion_rate": number, "suggested_workers": counts,
            "idle": {"type": "boolean"},
        }),
    })  # fmt: skip
    retry = _obj({
        "max_attempts": integer, "backoff": {"enum": ["exponential", "fixed", "none"]},
        "initial_delay_s": number, "max_delay_s": number, "jitter": {"type": "boolean"},
    })  # fmt: skip
    function = _obj({
        "name": string, "queue": string, "priority": string, "timeout_s": number,
        "retry": retry, "result_ttl_s": number, "dead_letter": {"type": "boolean"},
        "schema": {"type": ["object", "null"], "description": "the payload's JSON Schema"},
    })  # fmt: skip
    schedule = _obj({
        "name": string, "function": string, "cron": _nullable("string"),
        "every_s": _nullable("number"), "timezone": string, "enabled": {"type": "boolean"},
        "payload": {},
        "next_fire_times": {"type": "array", "items": {"type": "string", "format": "date-time"}},
        "last_fire_time": _nullable("string", format="date-time"),
        "last_task_id": _nullable("string"),
    })  # fmt: skip
    worker = _obj(
        {"id": string, "host": string, "pid": integer, "queues": {"type": "array"},
         "in_flight": integer, "processed": integer, "started_at": string},
        ["id"],
    )  # fmt: skip
    violation = _obj({"pointer": string, "detail": string})
    problem = _obj(
        {"type": string, "title": string, "status": integer, "detail": string,
         "errors": {"type": "array", "items": _ref("Violation")}},
        ["type", "title", "status"],
        description="RFC 9457 problem details; `errors` lists every violation by JSON path.",
    )  # fmt: skip
    return {
        "Problem": problem,
        "Violation": violation,
        "Task": _task_schema(),
        "TaskPage": _obj(
            {"items": {"type": "array", "items": _ref("Task")}, "next_cursor": _nullable("string")}
        ),  # fmt: skip
        "Accepted": _obj({"ids": {"type": "array", "items": string}}),
        "Queue": queue,
        "QueueList": _obj({"queues": {"type": "array", "items": _ref("Queue")}}),
        "Function": function,
        "FunctionList": _obj({"functions": {"type": "array", "items": _ref("Function")}}),
        "ScheduleList": _obj({"schedules": {"type": "array", "items": schedule}}),
        "WorkerList": _obj({"workers": {"type": "array", "items": worker}}),
        "Purged": _obj({"purged": counts}),
        "Replayed": _obj({"replayed": counts}),
        "Status": _obj({"status": string}),
        "LegacySubmit": _obj(
            {
                "type": string,
                "payload": {},
                "priority": {"type": "integer", "minimum": 0, "maximum": 3, "default": 1},
            },
            ["type"],
        ),  # fmt: skip
        "LegacySubmitted": _obj(
            {"id": string, "status": {"const": "pending"}, "priority": integer}
        ),  # fmt: skip
        "LegacyTask": _obj(
            {
                "id": string,
                "type": string,
                "payload": {},
                "status": {"enum": ["pending", "running", "completed", "failed", "cancelled"]},
                "priority": {"type": "integer", "minimum": 0, "maximum": 3},
                "created_at": _nullable("string", format="date-time"),
                "updated_at": _nullable("string", format="date-time"),
                "result": {},
                "error": {},
            },
            ["id", "type", "status", "priority"],
        ),  # fmt: skip
    }


def _responses() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in (400, 401, 403, 404, 405, 409, 413, 415, 422, 503):
        response: dict[str, Any] = {
            "description": TITLES[status],
            "content": {PROBLEM: {"schema": _ref("Problem")}},
        }
        if status == 503:
            response["description"] += ": Redis is unreachable or failing; retry later"
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        out[str(status)] = response
    return out


def _operation_id(method: str, path: str) -> str:
    """``get /v1/tasks/{task_id}`` -> ``get_v1_tasks_task_id``."""
    words = [w.strip("{}").replace("-", "_").replace(".", "_") for w in path.split("/") if w]
    return "_".join([method, *words])


def _param(name: str, where: str, schema: dict[str, Any], text: str = "") -> dict[str, Any]:
    param = {"name": name, "in": where, "schema": schema, "required": where == "path"}
    return {**param, "description": text} if text else param


_BODY = (400, 413, 415, 422, 503)
#: Every operation: method, path, summary, success status and schema, the scope it
#: needs (None = open), its error statuses, its parameters and its request body.
OPERATIONS: tuple[tuple[Any, ...], ...] = (
    ("post", "/v1/tasks", "Submit a task", 202, "Task", "submit", (*_BODY, 404),
     ["Idempotency-Key"], "Submit"),
    ("get", "/v1/tasks", "List tasks", 200, "TaskPage", "submit", (404, 503),
     ["queue", "function", "state", "limit", "cursor"], None),
    ("post", "/v1/tasks/batch", "Submit many tasks, all or none", 202, "Accepted", "submit",
     _BODY, [], "Batch"),
    ("get", "/v1/tasks/{task_id}", "Read a task; `wait` long-polls for a final state", 200,
     "Task", "submit", (404, 503), ["task_id", "wait"], None),
    ("delete", "/v1/tasks/{task_id}", "Cancel a queued or scheduled task", 200, "Task",
     "admin", (404, 409, 503), ["task_id"], None),
    ("get", "/v1/queues", "Every queue's depths and counters", 200, "QueueList", "admin",
     (503,), [], None),
    ("get", "/v1/queues/{name}", "One queue", 200, "Queue", "admin", (404, 503), ["name"], None),
    ("post", "/v1/queues/{name}/pause", "Stop fetching from a queue, on every worker", 200,
     "Queue", "admin", (404, 503), ["name"], None),
    ("post", "/v1/queues/{name}/resume", "Fetch from a paused queue again", 200, "Queue",
     "admin", (404, 503), ["name"], None),
    ("get", "/v1/dead-letters", "List dead letters", 200, "TaskPage", "admin", (404, 503),
     ["queue", "function", "limit", "cursor"], None),
    ("delete", "/v1/dead-letters", "Purge every matching dead letter", 200, "Purged", "admin",
     (404, 503), ["queue", "function"], None),
    ("post", "/v1/dead-letters/replay", "Replay every matching dead letter", 200, "Replayed",
     "admin", (404, 503), ["queue", "function"], None),
    ("delete", "/v1/dead-letters/{task_id}", "Purge one dead letter", 200, "Purged", "admin",
     (404, 503), ["task_id"], None),
    ("post", "/v1/dead-letters/{task_id}/replay", "Replay one dead letter", 200, "Replayed",
     "admin", (404, 409, 503), ["task_id"], None),
    ("get", "/v1/functions", "Every function", 200, "FunctionList", "admin", (), [], None),
    ("get", "/v1/functions/{name}", "One function", 200, "Function", "admin", (404,),
     ["function_name"], None),
    ("get", "/v1/schedules", "Every schedule and its next fire times", 200, "ScheduleList",
     "admin", (), [], None),
    ("get", "/v1/workers", "Live workers, from their heartbeats", 200, "WorkerList", "admin",
     (503,), [], None),
    ("get", "/healthz", "Liveness: 200 while the process serves", 200, "Status", None, (),
     [], None),
    ("get", "/readyz", "Readiness: Redis answers and keeps tasks, the manifest is loaded", 200,
     "Status", None, (503,), [], None),
    ("get", "/metrics", "Prometheus metrics", 200, "text", None, (), [], None),
    ("get", "/openapi.json", "This document", 200, "document", None, (), [], None),
    ("post", "/tasks", "Submit a task (the prototype's API)", 201, "LegacySubmitted", "submit",
     (*_BODY, 404), [], "LegacySubmit"),
    ("get", "/tasks/{task_id}", "Read a task (the prototype's API)", 200, "LegacyTask",
     "submit", (404, 503), ["task_id"], None),
    ("get", "/health", "Liveness (the prototype's API)", 200, "Status", None, (), [], None),
)  # fmt: skip
#: Success bodies that are not JSON components.
_OTHER_CONTENT = {
    "text": {
        "text/plain": {"schema": {"type": "string"}},
        "application/openmetrics-text": {"schema": {"type": "string"}},
    },
    "document": {JSON: {"schema": {"type": "object"}}},
}


def _parameters(manifest: Manifest) -> dict[str, dict[str, Any]]:
    queues = sorted(manifest.queues)
    queue = {"enum": queues} if queues else {"type": "string"}
    page = {"type": "integer", "minimum": 1, "maximum": max(tasks.MAX_PAGE, admin.MAX_PAGE)}
    wait = {"type": "number", "minimum": 0, "maximum": manifest.api.max_wait_s}
    key = {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY}
    return {
        "task_id": _param("task_id", "path", {"type": "string"}),
        "name": _param("name", "path", queue),
        "function_name": _param("name", "path", {"type": "string"}),
        "queue": _param("queue", "query", queue, "only this queue"),
        "function": _param("function", "query", {"type": "string"}, "only this function"),
        "state": _param("state", "query", {"enum": list(STATES)}, "only tasks in this state"),
        "limit": _param("limit", "query", page, "most items in the page"),
        "cursor": _param("cursor", "query", {"type": "string"}, "next_cursor of the last page"),
        "wait": _param("wait", "query", wait, "seconds to wait for a final state"),
        "Idempotency-Key": _param("Idempotency-Key", "header", key, "as idempotency_key"),
    }


class _Builder:
    """The document of one manifest; operations are `secured` when it has tokens."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.secured = bool(manifest.api.tokens)

    def operation(self, row: tuple[Any, ...], params: dict[str, Any]) -> dict[str, Any]:
        method, path, summary, status, schema, scope, errors, names, body = row
        success: dict[str, Any] = {"description": summary}
        success["content"] = _OTHER_CONTENT.get(schema) or {JSON: {"schema": _ref(schema)}}
        if status in (201, 202) and schema != "Accepted":  # one task stored: its URL
            success["headers"] = {"Location": {"schema": {"type": "string"}}}
        codes = set(errors) | ({401, 403} if self.secured and scope else set())
        if any(params[n]["in"] == "query" for n in names):
            codes.add(400)  # a query parameter out of range
        responses = {str(status): success}
        for code in sorted(codes):
            responses[str(code)] = {"$ref": f"#/components/responses/{code}"}
        tag = path.split("/")[2] if path.startswith("/v1/") else "service"
        out: dict[str, Any] = {
            "operationId": _operation_id(method, path),
            "summary": summary,
            "tags": [tag],
            "responses": responses,
        }
        if names:
            out["parameters"] = [params[n] for n in names]
        if body is not None:
            out["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
        if self.secured:
            out["security"] = [{"bearer": [scope]}] if scope else []
        return out

    def build(self) -> dict[str, Any]:
        params = _parameters(self.manifest)
        paths: dict[str, dict[str, Any]] = {}
        for row in OPERATIONS:
            paths.setdefault(row[1], {})[row[0]] = self.operation(row, params)
        return self.document(paths)

    def document(self, paths: dict[str, Any]) -> dict[str, Any]:
        m = self.manifest
        schemas = _fixed_schemas()
        variants = []
        for spec in m.functions.values():
            has_schema = spec.schema is not None
            if has_schema:
                schemas[f"payload.{spec.name}"] = payload_schema(spec)
            levels = m.queues[spec.queue].priorities
            schemas[f"submit.{spec.name}"] = submit_schema(spec, levels, has_schema)
            variants.append(_ref(f"submit.{spec.name}"))
        # NOTE: oneOf may not be empty; with no functions every submission is a 404.
        schemas["Submit"] = (
            {"oneOf": variants}
            if variants
            else _obj({"function": {"type": "string"}}, ["function"])
        )
        schemas["Batch"] = _obj(
            {"tasks": {"type": "array", "items": _ref("Submit"), "minItems": 1,
                       "maxItems": tasks.MAX_BATCH}}
        )  # fmt: skip
        components: dict[str, Any] = {"schemas": schemas, "responses": _responses()}
        doc: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {
                "title": "dtqs",
                "version": _version(),
                "description": "Submit and inspect tasks of this dtqs project. Errors are "
                "application/problem+json; every response carries X-Request-ID.",
            },
            "paths": paths,
            "components": components,
        }
        if self.secured:
            components["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from the manifest's api.tokens; scope `submit` "
                    "submits and reads tasks, `admin` may do everything.",
                }
            }
        return doc


def _version() -> str:
    try:
        return metadata.version("dtqs")
    except metadata.PackageNotFoundError:
        return "0"


def build_document(manifest: Manifest) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a manifest."""
    return _Builder(manifest).build()


class OpenApi:
    """GET /openapi.json, built once per manifest object (a reload swaps the object)."""

    scopes = {"GET": None}

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._cached: tuple[Manifest, str] | None = None

    def text(self) -> str:
        manifest = self.state.manifest
        with self._lock:
            # Identity, not equality: the cache holds the manifest so its id is not reused.
            if self._cached is None or self._cached[0] is not manifest:
                self._cached = (manifest, media.dumps(build_document(manifest)))
            return self._cached[1]

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = JSON
        resp.text = self.text()


def add_routes(app: falcon.App[Any, Any], state: ApiState) -> None:
    app.add_route("/openapi.json", OpenApi(state))
