"""Property-based fuzzing of the API from its own /openapi.json (schemathesis), in process
through the WSGI app, against real Redis, with every check schemathesis has (the Python
equivalent of ``st run --checks all``): no 5xx, every response as documented, valid requests
accepted, invalid ones refused; then stateful runs that follow the document's links."""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks

from dtqs.api.app import ApiState, create_app
from dtqs.runtime.client import Client
from dtqs.runtime.redis.broker import Broker

pytestmark = [pytest.mark.slow, pytest.mark.redis]

#: Examples per operation: ~25 operations, each example a request or two to Redis.
MAX_EXAMPLES = 50
#: Stateful scenarios, and steps in each (each step one request).
SCENARIOS, STEPS = 100, 8

MANIFEST = """\
version: 1
queues:
  default:
    visibility_timeout: 5s
  mail:
    priorities: [urgent, bulk]
functions:
  echo:
    handler: functions/tasks.py:echo
  signup:
    handler: functions/tasks.py:echo
    queue: mail
    schema: schemas/signup.json
schedules:
  nightly: {function: echo, cron: "0 3 * * *", payload: {n: 1}}
api:
  max_body_bytes: 65536
  # Long polls must not eat the test's time budget.
  max_wait: 200ms
"""
FILES = {
    "functions/tasks.py": "def echo(payload):\n    return payload\n",
    "schemas/signup.json": """{
      "$schema": "https://json-schema.org/draft/2020-12/schema",
      "type": "object", "required": ["email"], "additionalProperties": false,
      "properties": {"email": {"type": "string", "minLength": 3, "maxLength": 100},
                     "plan": {"enum": ["free", "pro"]},
                     "seats": {"type": "integer", "minimum": 1, "maximum": 1000},
                     "address": {"$ref": "#/$defs/address"}},
      "$defs": {"address": {"type": "object", "properties": {"city": {"type": "string"}}}}
    }""",
}
#: What a cursor looks like (the document's pattern).
CURSOR = re.compile(r"[A-Za-z0-9_-]+")


def every_check() -> list[Any]:
    """Every registered check function (`--checks all`); class-based checks run anyway."""
    load_all_checks()
    return [c for c in CHECKS.get_all() if not isinstance(c, type)]


def as_a_client_would(case: Any) -> None:
    """What the document cannot say, applied to generated requests.

    JSON Schema cannot tell a cursor this API returned from a well-formed forgery (both
    match the pattern; a forgery is a 400, tested on its own), a body's idempotency_key
    from a different Idempotency-Key header (a 422), nor 2 from 2.0 (the prototype's
    priority takes only the integer literal, as its Go decoder did). A generator that
    knew would not send these as valid requests; malformed values are left alone.
    """
    query = case.query or {}
    if isinstance(query.get("cursor"), str) and CURSOR.fullmatch(query["cursor"]):
        case.query = {k: v for k, v in query.items() if k != "cursor"}
    body, headers = case.body, case.headers or {}
    if isinstance(body, dict) and "Idempotency-Key" in headers:
        if body.get("idempotency_key") not in (None, headers["Idempotency-Key"]):
            case.headers = {k: v for k, v in headers.items() if k != "Idempotency-Key"}
    priority = body.get("priority") if isinstance(body, dict) else None
    if case.path == "/tasks" and isinstance(priority, float) and priority.is_integer():
        case.body = {**body, "priority": int(priority)}


def fresh_state(client: Client, r: Any) -> None:
    """An empty database with one dead letter, so that list, replay and purge have
    something to act on."""
    r.flushdb()
    task_id = client.submit("echo", {"x": 1}, priority="low")
    qk = client.broker.qkeys("default", 4)
    r.hset(qk.task(task_id), mapping={"state": "dead", "reason": "max_attempts"})
    r.lrem(qk.pending(3), 0, task_id)
    r.zadd(qk.dead, {task_id: 1})


@pytest.fixture
def client(project, redis_url, r):
    p = project(MANIFEST, FILES)
    broker = Broker(redis_url, socket_timeout_s=2.0, connect_timeout_s=1.0)
    client = Client(manifest=p.manifest(), broker=broker)
    fresh_state(client, r)
    yield client
    client.close()


@pytest.fixture
def app(client):
    return create_app(ApiState(client))


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # NOTE: the same examples on every run; CI must not flake
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_own_document(case):
    as_a_client_would(case)
    case.call_and_validate(checks=every_check())


def test_stateful_sequences_conform(api_schema, client, r):
    """Sequences along the document's links (inferred from its schemas): submit, then read,
    list, cancel or replay what was submitted; every check on every step."""

    # NOTE: DELETE /v1/tasks/{task_id} is deprecated for this very check: it cancels and
    # the record stays readable (use_after_free wants a 404 after a DELETE). The same
    # cancel, as POST .../cancel, runs here.
    machine = api_schema.exclude(deprecated=True).as_state_machine()

    class Workflow(machine):  # type: ignore[misc,valid-type]
        def setup(self) -> None:
            # NOTE: each scenario starts from the same state, so that Hypothesis can replay
            # (and shrink) one: responses then have the same shape every time.
            fresh_state(client, r)

        def before_call(self, case: Any) -> None:
            as_a_client_would(case)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(
                response,
                checks=every_check(),
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    Workflow.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
