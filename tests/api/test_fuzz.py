"""Property-based fuzzing of the API from its own /openapi.json (schemathesis), in process
through the WSGI app, against real Redis: no 5xx, and every response matches the document."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from dtqs.api.app import ApiState, create_app
from dtqs.runtime.client import Client
from dtqs.runtime.redis.broker import Broker

pytestmark = [pytest.mark.slow, pytest.mark.redis]

#: Examples per operation: ~25 operations, each example a request or two to Redis.
MAX_EXAMPLES = 50

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


@pytest.fixture
def api_schema(project, redis_url, r):
    p = project(MANIFEST, FILES)
    broker = Broker(redis_url, socket_timeout_s=2.0, connect_timeout_s=1.0)
    client = Client(manifest=p.manifest(), broker=broker)
    app = create_app(ApiState(client))
    # A dead letter, so that list, replay and purge have something to act on.
    task_id = client.submit("echo", {"x": 1}, priority="low")
    qk = broker.qkeys("default", 4)
    r.hset(qk.task(task_id), mapping={"state": "dead", "reason": "max_attempts"})
    r.lrem(qk.pending(3), 0, task_id)
    r.zadd(qk.dead, {task_id: 1})
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    client.close()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # NOTE: the same examples on every run; CI must not flake
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_own_document(case):
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])
