"""GET /openapi.json: the OpenAPI 3.1 document of this API, generated from the manifest.

Each function's payload JSON Schema is embedded (under ``components/schemas``), so the
document is the contract for submitting to *this* project; it is rebuilt whenever the
manifest object is swapped (hot reload) and cached otherwise.
"""

from __future__ import annotations

import copy
import threading
from http import HTTPStatus
from importlib import metadata
from typing import TYPE_CHECKING, Any

import falcon
from jsonschema import validators
from referencing import Registry
from referencing.exceptions import Unresolvable

from dtqs.api import admin, media, params, tasks
from dtqs.api.errors import PROBLEM, TITLES
from dtqs.runtime.client import MAX_DELAY_S, MAX_IDEMPOTENCY_KEY, MAX_RUN_AT_S
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


def accepts_null(spec: FunctionSpec) -> bool:
    """Whether the function's payload may be null, as it is when a submission leaves it out.

    NOTE(requests): an empty registry, so that a $ref outside the schema's file is never
    fetched from the network here; such a schema is taken to accept null.
    """
    if spec.schema is None:
        return True
    validator = validators.validator_for(spec.schema)(spec.schema, registry=Registry())
    try:
        return bool(validator.is_valid(None))
    except Unresolvable:
        return True


def _nullable_any(*choices: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"anyOf": [*choices, {"type": "null"}], **more}


#: A submission's optional members, the same for every function. NOTE(requests): null is
#: the same as leaving a member out (clients often send every member), so each allows it.
SUBMIT_OPTIONS: dict[str, Any] = {
    "delay": _nullable_any(
        {"type": "number", "minimum": 0, "maximum": MAX_DELAY_S},
        description="seconds from now; not together with run_at",
    ),
    "run_at": _nullable_any(
        {"type": "string", "format": "date-time"},
        {"type": "number", "minimum": 0, "maximum": MAX_RUN_AT_S},
        description="when to run: an RFC 3339 time, or epoch seconds; not together with delay",
    ),
    "idempotency_key": _nullable_any(
        {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
        description="a second submission with the same key (within the function's "
        "idempotency_ttl) stores nothing and answers the first task",
    ),
    "headers": _nullable_any(
        {"type": "object", "additionalProperties": {"type": "string"}},
        description="passed to the handler as ctx.headers (e.g. a W3C traceparent)",
    ),
}
#: delay and run_at are alternatives: both given (not null) is a 422.
_NOT_BOTH = {
    "required": ["delay", "run_at"],
    "properties": {"delay": {"type": "number"}, "run_at": {"type": ["string", "number"]}},
}


def submit_schema(spec: FunctionSpec, levels: tuple[str, ...], has_schema: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "function": {"const": spec.name},
            "payload": _ref(f"payload.{spec.name}") if has_schema else {},
            "priority": {"enum": [*levels, None], "default": spec.priority},
            **SUBMIT_OPTIONS,
        },
        "required": ["function"] if accepts_null(spec) else ["function", "payload"],
        "not": _NOT_BOTH,
        "additionalProperties": False,
    }


def legacy_submit_schema(spec: FunctionSpec, has_schema: bool) -> dict[str, Any]:
    """The prototype's submission for one function (other members are ignored, as there)."""
    return {
        "type": "object",
        "properties": {
            "type": {"const": spec.name},
            "payload": _ref(f"payload.{spec.name}") if has_schema else {},
            "priority": {
                "type": "integer",
                "minimum": 0,
                "maximum": 3,
                "default": 1,
                "description": "0 low, 1 normal, 2 high, 3 critical; an integer written "
                "without a fraction (2, not 2.0)",
            },
        },
        "required": ["type"] if accepts_null(spec) else ["type", "payload"],
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
    violation = {
        "type": "object",
        "properties": {
            "pointer": {"type": "string", "description": "JSON pointer into the body"},
            "parameter": {"type": "string", "description": "a query parameter or header"},
            "detail": string,
        },
        "required": ["detail"],
        "anyOf": [{"required": ["pointer"]}, {"required": ["parameter"]}],
    }
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


#: Headers some error responses always carry.
_RETRY_AFTER = {
    "Retry-After": {
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
        "description": "seconds to wait before retrying",
    }
}
_CHALLENGE = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
#: Error responses: what each status means here, and the headers it carries.
_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("malformed JSON or a query parameter out of range; `errors` names it", {}),
    401: ("a bearer token is required", _CHALLENGE),
    403: ("the token's scope does not allow this", {}),
    404: ("no such task, queue, function or route", {}),
    405: ("the method is not allowed on this path", {}),
    409: ("the task's state does not allow this", {}),
    413: ("the body is larger than api.max_body_bytes", {}),
    415: ("the body is not application/json", {}),
    422: ("the submission does not match its schema; `errors` names each member", {}),
    429: ("too many long-polls are waiting; retry later, or read without `wait`", _RETRY_AFTER),
    503: ("Redis is unreachable, slow or full; nothing was stored; retry later", _RETRY_AFTER),
}


def _responses() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, (meaning, headers) in _ERRORS.items():
        title = TITLES.get(status) or HTTPStatus(status).phrase
        response: dict[str, Any] = {
            "description": f"{title}: {meaning}",
            "content": {PROBLEM: {"schema": _ref("Problem")}},
        }
        if headers:
            response["headers"] = headers
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
     "Task", "submit", (404, 429, 503), ["task_id", "wait"], None),
    ("post", "/v1/tasks/{task_id}/cancel", "Cancel a queued or scheduled task; its record "
     "stays, in state cancelled", 200, "Task", "admin", (404, 409, 503), ["task_id"], None),
    ("delete", "/v1/tasks/{task_id}", "Cancel a queued or scheduled task (deprecated: the "
     "record stays, so use POST /v1/tasks/{task_id}/cancel)", 200, "Task", "admin",
     (404, 409, 503), ["task_id"], None),
    ("get", "/v1/queues", "Every queue's depths and counters", 200, "QueueList", "admin",
     (503,), [], None),
    ("get", "/v1/queues/{name}", "One queue", 200, "Queue", "admin", (404, 503), ["name"], None),
    ("post", "/v1/queues/{name}/pause", "Stop fetching from a queue, on every worker", 200,
     "Queue", "admin", (404, 503), ["name"], None),
    ("post", "/v1/queues/{name}/resume", "Fetch from a paused queue again", 200, "Queue",
     "admin", (404, 503), ["name"], None),
    ("get", "/v1/dead-letters", "List dead letters", 200, "TaskPage", "admin", (404, 503),
     ["queue", "dead_function", "dead_limit", "cursor"], None),
    ("delete", "/v1/dead-letters", "Purge every matching dead letter", 200, "Purged", "admin",
     (404, 503), ["queue", "dead_function"], None),
    ("post", "/v1/dead-letters/replay", "Replay every matching dead letter", 200, "Replayed",
     "admin", (404, 503), ["queue", "dead_function"], None),
    ("delete", "/v1/dead-letters/{task_id}", "Purge one dead letter", 200, "Purged", "admin",
     (404, 503), ["task_id"], None),
    ("post", "/v1/dead-letters/{task_id}/replay", "Replay one dead letter", 200, "Replayed",
     "admin", (404, 409, 503), ["task_id"], None),
    ("get", "/v1/functions", "Every function", 200, "FunctionList", "admin", (), [], None),
    ("get", "/v1/functions/{name}", "One function", 200, "Function", "admin", (404,),
     ["function_name"], None),
    ("get", "/v1/schedules", "Every schedule and its next fire times", 200, "ScheduleList",
     "admin", (503,), [], None),
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
#: Operations kept for existing clients; each has a better-named replacement.
DEPRECATED = frozenset({("delete", "/v1/tasks/{task_id}")})
#: Success bodies that are not JSON components.
_OTHER_CONTENT = {
    "text": {
        "text/plain": {"schema": {"type": "string"}},
        "application/openmetrics-text": {"schema": {"type": "string"}},
    },
    "document": {JSON: {"schema": {"type": "object"}}},
}


def _parameters(manifest: Manifest) -> dict[str, dict[str, Any]]:
    queues, functions = sorted(manifest.queues), sorted(manifest.functions)
    queue = {"enum": queues} if queues else {"type": "string"}
    function = {"enum": functions} if functions else {"type": "string"}
    wait = {"type": "number", "minimum": 0, "maximum": manifest.api.max_wait_s}
    key = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY,
        "pattern": params.HEADER_TEXT,
    }
    cursor = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "maxLength": params.MAX_CURSOR}
    name = {"type": "string", **params.function_name_schema()}
    name.pop("title", None)
    return {
        "task_id": _param("task_id", "path", {"type": "string"}),
        "name": _param("name", "path", queue),
        "function_name": _param("name", "path", function),
        "queue": _param("queue", "query", queue, "only this queue; leave it out for all"),
        "function": _param("function", "query", name, "only this function (404 if unknown)"),
        "dead_function": _param(
            "function", "query", name, "only this function, declared or not (a removed "
            "function may still have dead letters)",
        ),
        "state": _param("state", "query", {"enum": list(STATES)}, "only tasks in this state"),
        "limit": _param("limit", "query", _page(tasks.MAX_PAGE), "most items in the page"),
        "dead_limit": _param("limit", "query", _page(admin.MAX_PAGE), "most items in the page"),
        "cursor": _param(
            "cursor", "query", cursor, "the next_cursor of the previous page with the same "
            "filters; any other value is a 400",
        ),
        "wait": _param("wait", "query", wait, "seconds to wait for a final state"),
        "Idempotency-Key": _param(
            "Idempotency-Key", "header", key, "stands for the body's idempotency_key (both "
            "given and different: 422); visible ASCII: put other keys in the body",
        ),
    }  # fmt: skip


def _page(most: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": most}


def submission_schemas(m: Manifest) -> dict[str, Any]:
    """Each function's payload and submissions (REST and the prototype's), and their unions."""
    schemas: dict[str, Any] = {}
    variants, legacy = [], []
    for spec in m.functions.values():
        has_schema = spec.schema is not None
        if has_schema:
            schemas[f"payload.{spec.name}"] = payload_schema(spec)
        levels = m.queues[spec.queue].priorities
        schemas[f"submit.{spec.name}"] = submit_schema(spec, levels, has_schema)
        schemas[f"legacy.{spec.name}"] = legacy_submit_schema(spec, has_schema)
        variants.append(_ref(f"submit.{spec.name}"))
        legacy.append(_ref(f"legacy.{spec.name}"))
    # NOTE: oneOf may not be empty; with no functions every submission is a 404.
    schemas["Submit"] = (
        {"oneOf": variants} if variants else _obj({"function": {"type": "string"}}, ["function"])
    )
    schemas["LegacySubmit"] = (
        {"oneOf": legacy} if legacy else _obj({"type": {"type": "string"}}, ["type"])
    )
    schemas["Batch"] = _obj(
        {"tasks": {"type": "array", "items": _ref("Submit"), "minItems": 1,
                   "maxItems": tasks.MAX_BATCH}}
    )  # fmt: skip
    return schemas


class _Builder:
    """The document of one manifest; operations are `secured` when it has tokens."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.secured = bool(manifest.api.tokens)

    def operation(self, row: tuple[Any, ...], parameters: dict[str, Any]) -> dict[str, Any]:
        method, path, summary, status, schema, scope, errors, names, body = row
        success: dict[str, Any] = {"description": summary}
        success["content"] = _OTHER_CONTENT.get(schema) or {JSON: {"schema": _ref(schema)}}
        if status in (201, 202) and schema != "Accepted":  # one task stored: its URL
            success["headers"] = {"Location": {"required": True, "schema": {"type": "string"}}}
        codes = set(errors) | ({401, 403} if self.secured and scope else set())
        if any(parameters[n]["in"] in ("query", "header") for n in names):
            codes.add(400)  # a query parameter or header out of range
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
        if (method, path) in DEPRECATED:
            out["deprecated"] = True
        if names:
            out["parameters"] = [parameters[n] for n in names]
        if body is not None:
            out["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
        if self.secured:
            out["security"] = [{"bearer": [scope]}] if scope else []
        return out

    def build(self) -> dict[str, Any]:
        parameters = _parameters(self.manifest)
        paths: dict[str, dict[str, Any]] = {}
        for row in OPERATIONS:
            paths.setdefault(row[1], {})[row[0]] = self.operation(row, parameters)
        return self.document(paths)

    def document(self, paths: dict[str, Any]) -> dict[str, Any]:
        m = self.manifest
        schemas = _fixed_schemas()
        schemas.update(submission_schemas(m))
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
