"""Task endpoints and the prototype's API, through falcon's test client, on real Redis."""

from __future__ import annotations

import json
import time

import pytest
from falcon import testing

from dtqs.api.app import ApiState, create_app
from dtqs.api.server import check_exposure
from dtqs.runtime.client import Client
from dtqs.runtime.errors import DtqsError
from dtqs.runtime.redis.broker import Broker
from dtqs.runtime.testing import InProcessWorker

pytestmark = pytest.mark.redis

SUBMIT = "s" * 20
ADMIN = "a" * 20

MANIFEST = """\
version: 1
queues:
  default:
    visibility_timeout: 5s
    concurrency: 2
functions:
  echo:
    handler: functions/tasks.py:echo
  user:
    handler: functions/tasks.py:echo
    schema: schemas/user.json
    priority: high
workers:
  heartbeat_interval: 200ms
  reclaim_interval: 200ms
api:
  max_body_bytes: 2048
{tokens}
"""
TOKENS = f"""\
  tokens:
    ci: {{token: "{SUBMIT}", scope: submit}}
    ops: {{token: "{ADMIN}", scope: admin}}
"""
FILES = {
    "functions/tasks.py": "def echo(payload):\n    return payload\n",
    "schemas/user.json": '{"type": "object", "required": ["email"], "additionalProperties": false,'
    ' "properties": {"email": {"type": "string", "minLength": 3}, "age": {"type": "integer"}}}',
}


@pytest.fixture
def make(project, redis_url, r):
    made: list[Client] = []

    def build(tokens: bool = False, url: str | None = None):
        p = project(MANIFEST.format(tokens=TOKENS if tokens else ""), FILES)
        manifest = p.manifest()
        broker = Broker(url or redis_url, socket_timeout_s=0.5, connect_timeout_s=0.5)
        client = Client(manifest=manifest, broker=broker)
        made.append(client)
        return testing.TestClient(create_app(ApiState(client))), client

    yield build
    for c in made:
        c.close()


@pytest.fixture
def api(make):
    return make()[0]


def test_submit_answers_202_with_the_task_and_its_location(api):
    resp = api.simulate_post("/v1/tasks", json={"function": "echo", "payload": {"a": 1}})
    assert resp.status_code == 202
    task = resp.json
    assert task["state"] == "queued" and task["function"] == "echo" and task["priority"] == "normal"
    assert resp.headers["location"] == f"/v1/tasks/{task['id']}"
    got = api.simulate_get(resp.headers["location"]).json
    assert got["payload"] == {"a": 1} and got["state"] == "queued"
    assert "x-request-id" in resp.headers


def test_delayed_submission_is_scheduled(api):
    resp = api.simulate_post("/v1/tasks", json={"function": "echo", "payload": 1, "delay": 60})
    assert resp.status_code == 202 and resp.json["state"] == "scheduled"
    at = "2099-01-01T00:00:00Z"
    resp = api.simulate_post("/v1/tasks", json={"function": "echo", "payload": 1, "run_at": at})
    assert api.simulate_get(f"/v1/tasks/{resp.json['id']}").json["run_at"] == at


@pytest.mark.parametrize(
    ("body", "status", "pointer"),
    [
        ({"function": "nope", "payload": {}}, 404, None),
        ({"function": "user", "payload": {"email": "x", "age": "old"}}, 422, "/payload/age"),
        ({"function": "user", "payload": {}}, 422, "/payload"),
        ({"function": "echo", "payload": 1, "priority": "urgent"}, 422, "/priority"),
        ({"function": "echo", "payload": 1, "delay": -5}, 422, "/delay"),
        ({"function": "echo", "payload": 1, "colour": "red"}, 422, "/colour"),
        ({"payload": 1}, 422, "/function"),
        ([1, 2], 422, ""),
    ],
)
def test_submission_errors_are_problems_and_store_nothing(api, r, body, status, pointer):
    resp = api.simulate_post("/v1/tasks", json=body)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json["status"] == status and resp.json["detail"]
    if pointer is not None:
        assert pointer in [e["pointer"] for e in resp.json["errors"]]
    assert r.dbsize() == 0


@pytest.mark.parametrize(
    ("body", "ctype", "status"),
    [
        (b"{bad json", "application/json", 400),
        (b'{"function": "echo", "payload": NaN}', "application/json", 400),
        (b'{"function": "echo", "payload": Infinity}', "application/json", 400),
        (b'{"function": "echo", "function": "user"}', "application/json", 400),
        (b"\xff\xfe{}", "application/json", 400),
        (b"[" * 10_000 + b"]" * 10_000, "application/json", 413),
        (b"[" * 1000 + b"]" * 1000, "application/json", 400),
        (b"", "application/json", 400),
        (b'{"function": "echo"}', "text/plain", 415),
        (b'{"function": "echo"}', None, 415),
        (b'{"function": "echo", "payload": "' + b"x" * 3000 + b'"}', "application/json", 413),
    ],
)
def test_malformed_bodies_are_4xx_never_5xx(api, r, body, ctype, status):
    headers = {"Content-Type": ctype} if ctype else {}
    resp = api.simulate_post("/v1/tasks", body=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert r.dbsize() == 0


def test_wrong_method_and_unknown_route_are_problems(api):
    resp = api.simulate_put("/v1/tasks")
    assert resp.status_code == 405 and "PUT" in resp.json["detail"]
    assert set(resp.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    resp = api.simulate_get("/v1/nothing")
    assert resp.status_code == 404 and resp.headers["content-type"] == "application/problem+json"


def test_payload_strings_round_trip_exactly(api):
    text = "emoji 😀, RTL \u202e, fullwidth Ａ, NUL \u0000, lone surrogate \ud800"
    body = json.dumps(
        {"function": "echo", "payload": {"s": text}}
    )  # \ud800 escaped, as JSON allows
    resp = api.simulate_post("/v1/tasks", body=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 202
    assert api.simulate_get(f"/v1/tasks/{resp.json['id']}").json["payload"] == {"s": text}


def test_idempotency_key_in_body_or_header_gives_one_task(api, r):
    body = {"function": "echo", "payload": 1, "idempotency_key": "k-1"}
    first = api.simulate_post("/v1/tasks", json=body)
    again = api.simulate_post("/v1/tasks", json=body)
    by_header = api.simulate_post("/v1/tasks", json={"function": "echo", "payload": 1},
                                  headers={"Idempotency-Key": "k-1"})  # fmt: skip
    assert first.status_code == again.status_code == by_header.status_code == 202
    assert first.json["id"] == again.json["id"] == by_header.json["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert r.llen("dtqs:{default}:pending:2") == 1
    clash = api.simulate_post("/v1/tasks", json=body, headers={"Idempotency-Key": "other"})
    assert clash.status_code == 422


def test_batch_is_all_or_nothing(api, r):
    good = [{"function": "echo", "payload": i} for i in range(3)]
    resp = api.simulate_post("/v1/tasks/batch", json={"tasks": good})
    assert resp.status_code == 202 and len(set(resp.json["ids"])) == 3
    bad = [*good, {"function": "user", "payload": {}}, {"function": "nope"}]
    resp = api.simulate_post("/v1/tasks/batch", json={"tasks": bad})
    assert resp.status_code == 422
    pointers = [e["pointer"] for e in resp.json["errors"]]
    assert "/tasks/3/payload" in pointers and "/tasks/4" in pointers
    assert r.llen("dtqs:{default}:pending:2") == 3
    for body in ({"tasks": []}, {"tasks": "x"}, {}, {"tasks": [{"function": "echo"}] * 1001}):
        assert api.simulate_post("/v1/tasks/batch", json=body).status_code in (413, 422)


def test_long_poll_returns_when_the_task_finishes(make, project, redis_url):
    api, client = make()
    task_id = api.simulate_post("/v1/tasks", json={"function": "echo", "payload": 7}).json["id"]
    with InProcessWorker(client.manifest, redis_url):
        started = time.monotonic()
        resp = api.simulate_get(f"/v1/tasks/{task_id}", params={"wait": "10"})
        assert time.monotonic() - started < 5
    assert resp.json["state"] == "succeeded" and resp.json["result"] == 7
    for bad in ("-1", "abc", "31"):
        assert api.simulate_get(f"/v1/tasks/{task_id}", params={"wait": bad}).status_code == 400


def test_long_poll_times_out_with_the_current_state(api):
    task_id = api.simulate_post("/v1/tasks", json={"function": "echo", "payload": 1}).json["id"]
    started = time.monotonic()
    resp = api.simulate_get(f"/v1/tasks/{task_id}", params={"wait": "0.3"})
    assert resp.status_code == 200 and resp.json["state"] == "queued"
    assert 0.3 <= time.monotonic() - started < 2


def test_cancel(api, make):
    _, client = make()
    task_id = api.simulate_post("/v1/tasks", json={"function": "echo", "payload": 1}).json["id"]
    resp = api.simulate_delete(f"/v1/tasks/{task_id}")
    assert resp.status_code == 200 and resp.json["state"] == "cancelled"
    assert api.simulate_delete(f"/v1/tasks/{task_id}").status_code == 409
    assert api.simulate_delete("/v1/tasks/default.nothing").status_code == 404
    assert api.simulate_get("/v1/tasks/default.nothing").status_code == 404
    assert api.simulate_get("/v1/tasks/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_list_pages_through_every_task_with_filters(api):
    ids = {api.simulate_post("/v1/tasks", json={"function": "echo", "payload": i}).json["id"]
           for i in range(7)}  # fmt: skip
    user = api.simulate_post("/v1/tasks", json={"function": "user", "payload": {"email": "a@b"}})
    api.simulate_delete(f"/v1/tasks/{user.json['id']}")
    seen, cursor = [], None
    while True:
        params = {"limit": "3", "function": "echo"} | ({"cursor": cursor} if cursor else {})
        page = api.simulate_get("/v1/tasks", params=params).json
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    cancelled = api.simulate_get("/v1/tasks", params={"state": "cancelled"}).json["items"]
    assert [t["id"] for t in cancelled] == [user.json["id"]]
    for bad in ({"state": "nope"}, {"limit": "0"}, {"limit": "x"}, {"cursor": "!!"}):
        assert api.simulate_get("/v1/tasks", params=bad).status_code == 400
    assert api.simulate_get("/v1/tasks", params={"queue": "nope"}).status_code == 404


def test_prototype_clients_work_unchanged(api):
    assert api.simulate_get("/health").json == {"status": "ok"}
    resp = api.simulate_post("/tasks", json={"type": "echo", "payload": {"n": 1}, "priority": 3})
    assert resp.status_code == 201
    assert set(resp.json) == {"id", "status", "priority"}
    assert resp.json["status"] == "pending" and resp.json["priority"] == 3
    task = api.simulate_get(f"/tasks/{resp.json['id']}").json
    assert {"id", "type", "payload", "status", "priority", "created_at", "updated_at"} <= set(task)
    assert (task["type"], task["payload"], task["priority"]) == ("echo", {"n": 1}, 3)
    full = api.simulate_get(f"/v1/tasks/{resp.json['id']}").json
    assert full["priority"] == "critical"
    low = api.simulate_post("/tasks", json={"type": "echo", "payload": 1, "priority": 0}).json
    assert api.simulate_get(f"/v1/tasks/{low['id']}").json["priority"] == "low"
    assert api.simulate_post("/tasks", json={"type": "echo", "priority": 9}).status_code == 422
    assert api.simulate_post("/tasks", json={"type": "nope"}).status_code == 404


def test_tokens_and_scopes(make):
    api, _ = make(tokens=True)
    body = {"function": "echo", "payload": 1}
    assert api.simulate_post("/v1/tasks", json=body).status_code == 401
    wrong = {"Authorization": "Bearer " + "x" * 20}
    assert api.simulate_post("/v1/tasks", json=body, headers=wrong).status_code == 401
    basic = {"Authorization": "Basic " + SUBMIT}
    assert api.simulate_post("/v1/tasks", json=body, headers=basic).status_code == 401
    submit = {"Authorization": f"Bearer {SUBMIT}"}
    resp = api.simulate_post("/v1/tasks", json=body, headers=submit)
    assert resp.status_code == 202
    location = resp.headers["location"]
    assert api.simulate_get(location, headers=submit).status_code == 200
    assert api.simulate_delete(location, headers=submit).status_code == 403
    assert (
        api.simulate_delete(location, headers={"Authorization": f"Bearer {ADMIN}"}).status_code
        == 200
    )
    unauthorized = api.simulate_get(location)
    assert (
        unauthorized.status_code == 401
        and "bearer" in unauthorized.headers["www-authenticate"].lower()
    )
    assert api.simulate_get("/health").status_code == 200  # open, like /healthz


def test_redis_down_is_a_fast_503_and_never_a_2xx(make):
    with socket_closed_port() as port:
        api, _ = make(url=f"redis://127.0.0.1:{port}/0")
        started = time.monotonic()
        resp = api.simulate_post("/v1/tasks", json={"function": "echo", "payload": 1})
        assert time.monotonic() - started < 2
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert resp.json["status"] == 503 and "Traceback" not in resp.text


def test_exposure_without_tokens_is_refused_beyond_loopback(project):
    manifest = project(MANIFEST.format(tokens=""), FILES).manifest()
    check_exposure(manifest, "127.0.0.1", insecure=False)
    check_exposure(manifest, "::1", insecure=False)
    check_exposure(manifest, "0.0.0.0", insecure=True)
    with pytest.raises(DtqsError, match="without tokens"):
        check_exposure(manifest, "0.0.0.0", insecure=False)
    with_tokens = project(MANIFEST.format(tokens=TOKENS), FILES).manifest()
    check_exposure(with_tokens, "0.0.0.0", insecure=False)


class socket_closed_port:
    """A loopback port nothing listens on, for the duration of a with block."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc: object) -> None:
        pass
