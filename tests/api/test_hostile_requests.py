"""Hostile requests: each one that used to answer 500 (or was taken though the document
refuses it) gets a 4xx problem naming what was wrong, stores nothing, and leaves the app
serving. Through falcon's test client, on real Redis."""

from __future__ import annotations

import json

import pytest
from falcon import testing

from dtqs.api.app import ApiState, create_app
from dtqs.runtime.client import Client
from dtqs.runtime.redis.broker import Broker

pytestmark = pytest.mark.redis

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
api:
  max_body_bytes: 4096
  max_wait: 200ms
"""
FILES = {
    "functions/tasks.py": "def echo(payload):\n    return payload\n",
    "schemas/signup.json": '{"type": "object", "required": ["email"],'
    ' "properties": {"email": {"type": "string"}}}',
}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def made(project, redis_url, r):
    p = project(MANIFEST, FILES)
    broker = Broker(redis_url, socket_timeout_s=0.5, connect_timeout_s=0.5)
    client = Client(manifest=p.manifest(), broker=broker)
    yield testing.TestClient(create_app(ApiState(client))), client
    client.close()


@pytest.fixture
def api(made):
    return made[0]


def problem(resp, status: int) -> dict:
    """The response's problem document, after checking it is one with this status."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json["status"] == status and resp.json["detail"]
    return resp.json


def pointers(body: dict) -> list[str]:
    return [e.get("pointer") for e in body.get("errors", [])]


def still_serving(api) -> None:
    resp = api.simulate_post("/v1/tasks", json={"function": "echo", "payload": 1})
    assert resp.status_code == 202


@pytest.mark.parametrize("priority", [2.0, 3.0, 0.0, True, False, 1.5, -1, 4, "2", None, [2]])
def test_prototype_priority_is_an_int_from_0_to_3_never_a_500(api, r, priority):
    resp = api.simulate_post("/tasks", json={"type": "echo", "payload": 1, "priority": priority})
    body = problem(resp, 422)
    assert pointers(body) == ["/priority"]
    assert r.dbsize() == 0
    still_serving(api)


#: json.dumps escapes a lone surrogate ("\\ud800"): valid JSON text, not encodable as UTF-8.
LONE = "\ud800"


@pytest.mark.parametrize(
    ("path", "body", "pointer"),
    [
        ("/v1/tasks", {"function": "echo", "idempotency_key": LONE}, "/idempotency_key"),
        ("/v1/tasks", {"function": "echo", "idempotency_key": "a\udfffb"}, "/idempotency_key"),
        (
            "/v1/tasks/batch",
            {"tasks": [{"function": "echo"}, {"function": "echo", "idempotency_key": LONE}]},
            "/tasks/1/idempotency_key",
        ),
    ],
)
def test_an_idempotency_key_with_a_lone_surrogate_is_a_422(api, r, path, body, pointer):
    resp = api.simulate_post(path, body=json.dumps(body), headers=JSON)
    assert pointers(problem(resp, 422)) == [pointer]
    assert r.dbsize() == 0
    still_serving(api)


def test_lone_surrogates_elsewhere_in_a_submission_are_stored_escaped(api):
    body = {"function": "echo", "payload": {LONE: LONE}, "headers": {LONE: LONE}}
    resp = api.simulate_post("/v1/tasks", body=json.dumps(body), headers=JSON)
    assert resp.status_code == 202, resp.text
    task = api.simulate_get(f"/v1/tasks/{resp.json['id']}").json
    assert task["payload"] == {LONE: LONE} and task["headers"] == {LONE: LONE}
