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


@pytest.fixture
def dead(made, r):
    """A dead letter in queue default, so that replay and purge have something to act on."""
    _, client = made
    task_id = client.submit("echo", {"x": 1}, priority="low")
    qk = client.broker.qkeys("default", 4)
    r.hset(qk.task(task_id), mapping={"state": "dead", "reason": "max_attempts"})
    r.lrem(qk.pending(3), 0, task_id)
    r.zadd(qk.dead, {task_id: 1})
    return task_id


def snapshot(r) -> dict[str, object]:
    """Every key with its value, to show a request changed nothing."""
    dump = {}
    for key in r.keys("*"):
        kind = r.type(key)
        read = {
            "hash": r.hgetall,
            "zset": lambda k: r.zrange(k, 0, -1, withscores=True),
            "list": lambda k: r.lrange(k, 0, -1),
            "string": r.get,
            "set": r.smembers,
        }
        dump[key] = read[kind](key)  # fmt: skip
    return dump


#: Query values that are no value at all, or bytes that are not UTF-8: percent-encoded
#: lone surrogate (CESU-8), a lone 0xFF, NUL, and a value given twice.
EMPTY, TWICE = "{p}=", "{p}=a&{p}=b"
NOT_UTF8 = ("{p}=%ED%A0%80", "{p}=%FF", "{p}=%00")
#: Listing routes and the parameters each takes.
LISTINGS = [
    ("GET", "/v1/tasks", ("queue", "function", "state", "limit", "cursor")),
    ("GET", "/v1/dead-letters", ("queue", "function", "limit", "cursor")),
    ("DELETE", "/v1/dead-letters", ("queue", "function")),
    ("POST", "/v1/dead-letters/replay", ("queue", "function")),
]


def query_cases() -> list[tuple[str, str, str, tuple[int, ...]]]:
    cases = []
    for method, path, names in LISTINGS:
        for name in names:
            # NOTE: an unknown queue is a 404 (as on /v1/queues/{name}); the rest is a 400.
            odd = (404,) if name == "queue" else (400,)
            for template, statuses in [(EMPTY, (400,)), (TWICE, (400,))] + [
                (t, odd) for t in NOT_UTF8
            ]:
                cases.append((method, path, template.format(p=name), statuses))
    return cases


@pytest.mark.parametrize(("method", "path", "query", "statuses"), query_cases())
def test_listing_query_parameters_empty_repeated_or_not_utf8(
    api, r, dead, method, path, query, statuses
):
    before = snapshot(r)
    resp = api.simulate_request(method, path, query_string=query)
    body = problem(resp, resp.status_code)
    assert resp.status_code in statuses, resp.text
    if resp.status_code == 400:
        name = query.split("=", 1)[0]
        assert [e["parameter"] for e in body["errors"]] == [name]
        assert f"query parameter {name!r}" in body["detail"]
    assert snapshot(r) == before
    still_serving(api)


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/v1/tasks", "function=Echo"),
        ("/v1/tasks", "function=" + "e" * 65),
        ("/v1/tasks", "function=echo%20"),
        ("/v1/dead-letters", "function=../echo"),
        ("/v1/tasks", "limit=1_0"),
        ("/v1/tasks", "limit=%20%205"),
        ("/v1/tasks", "limit=%D9%A3"),  # ARABIC-INDIC DIGIT THREE: int() takes it
        ("/v1/tasks", "limit=5.0"),
        ("/v1/tasks", "limit=" + "9" * 5000),
        ("/v1/tasks", "cursor=AAAA"),  # base64url, but not a cursor this API made
        ("/v1/tasks", "cursor=" + "A" * 600),
        ("/v1/tasks", "cursor=W10"),  # base64url of []
        ("/v1/dead-letters", "cursor=WzUsMF0"),  # [5, 0]: past the queues of the filter
        ("/v1/tasks", "state=Queued"),
    ],
)
def test_malformed_query_values_are_400s_naming_the_parameter(api, r, dead, path, query):
    before = snapshot(r)
    body = problem(api.simulate_get(path, query_string=query), 400)
    assert [e["parameter"] for e in body["errors"]] == [query.split("=", 1)[0]]
    assert snapshot(r) == before


@pytest.mark.parametrize(
    "wait", ["", "nan", "inf", "-inf", "1_0", "0x1", "%D9%A3", "1e999", "0.3", "-0.1", "+"]
)
def test_wait_is_a_plain_number_within_max_wait(api, wait):
    task_id = api.simulate_post("/v1/tasks", json={"function": "echo"}).json["id"]
    body = problem(api.simulate_get(f"/v1/tasks/{task_id}", query_string=f"wait={wait}"), 400)
    assert body["errors"] == [{"parameter": "wait", "detail": body["errors"][0]["detail"]}]
    for good in ("0", "0.1", "1e-3", "%2B0.05", ".1"):
        resp = api.simulate_get(f"/v1/tasks/{task_id}", query_string=f"wait={good}")
        assert resp.status_code == 200, (good, resp.text)


#: Path ids that are no task id: percent-encoded non-UTF-8, traversal, NUL, far too long.
BAD_IDS = ("%ED%A0%80", "%FF", "default.%ED%A0%80", "..%2F..%2Fx", "default.%00", "d." + "x" * 5000)


@pytest.mark.parametrize("task_id", BAD_IDS)
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/v1/tasks/{}"),
        ("DELETE", "/v1/tasks/{}"),
        ("DELETE", "/v1/dead-letters/{}"),
        ("POST", "/v1/dead-letters/{}/replay"),
        ("GET", "/v1/queues/{}"),
        ("POST", "/v1/queues/{}/pause"),
        ("POST", "/v1/queues/{}/resume"),
        ("GET", "/v1/functions/{}"),
        ("GET", "/tasks/{}"),
    ],
)
def test_path_ids_that_name_nothing_are_404s(api, r, dead, method, template, task_id):
    before = snapshot(r)
    problem(api.simulate_request(method, template.format(task_id)), 404)
    assert snapshot(r) == before


def test_raw_non_utf8_bytes_in_the_url_are_4xx(made, r, dead):
    """What waitress hands over for raw bytes on the request line: latin-1 text, byte for
    byte. Falcon decodes the path as UTF-8 (U+FFFD for what is not); the query keeps them."""
    api, _ = made
    before = snapshot(r)
    for path, query, status in [
        ("/v1/tasks/\xed\xa0\x80", "", 404),
        ("/v1/dead-letters/\xff/replay", "", 404),
        ("/v1/tasks", "queue=\xed\xa0\x80", 404),
        ("/v1/tasks", "function=\xff", 400),
        ("/v1/dead-letters", "function=\xed\xa0\x80", 400),
        ("/v1/tasks", "cursor=\xff", 400),
    ]:
        environ = testing.create_environ("/", method="POST" if "replay" in path else "GET")
        environ.update(PATH_INFO=path, QUERY_STRING=query)
        start = testing.StartResponseMock()
        body = b"".join(api.app(environ, start))
        assert start.status.startswith(str(status)), (path, query, start.status, body)
        assert json.loads(body)["status"] == status
    assert snapshot(r) == before
    still_serving(api)


@pytest.mark.parametrize(
    ("path", "body", "status", "pointer"),
    [
        ("/v1/tasks", {"function": LONE}, 404, None),
        ("/v1/tasks", {"function": "echo", "priority": LONE}, 422, "/priority"),
        ("/v1/tasks", {"function": "echo", "run_at": LONE}, 422, "/run_at"),
        ("/v1/tasks", {"function": "echo", LONE: 1}, 422, f"/{LONE}"),
        ("/v1/tasks", {"function": "signup", "payload": {"email": LONE}}, 202, None),
        ("/v1/tasks/batch", {"tasks": [{"function": LONE}]}, 422, "/tasks/0"),
        ("/v1/tasks/batch", {LONE: []}, 422, "/tasks"),
        ("/tasks", {"type": LONE}, 404, None),
        ("/tasks", {"type": "echo", "priority": LONE}, 422, "/priority"),
        ("/tasks", {"type": "signup", "payload": {LONE: LONE}}, 422, "/payload"),
    ],
)
def test_lone_surrogates_in_every_body_field(api, r, path, body, status, pointer):
    """A lone surrogate anywhere in a body is a 4xx, or (inside a payload, JSON-escaped on
    the way to Redis) a task stored as given; never a 500."""
    resp = api.simulate_post(path, body=json.dumps(body), headers=JSON)
    assert resp.status_code == status, resp.text
    if status >= 400:
        found = problem(resp, status)
        assert pointer is None or pointer in pointers(found)
        assert r.dbsize() == 0
    still_serving(api)


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        ("k-1 x", 202),
        ("\xc3\xa9", 400),
        ("\xe9", 400),
        ("\xed\xa0\x80", 400),
        ("\x7f", 400),
        ("", 400),
    ],
)
def test_the_idempotency_key_header_is_visible_ascii(api, r, sent, status):
    """Header bytes arrive as latin-1 text and clients encode other text differently (é is
    E9 from requests, C3 A9 from a UTF-8 terminal): only visible ASCII is one key for all,
    anything else a 400 naming the header, nothing stored (other keys go in the body)."""
    headers = {"Idempotency-Key": sent}
    resp = api.simulate_post("/v1/tasks", json={"function": "echo"}, headers=headers)
    assert resp.status_code == status, resp.text
    if status == 202:
        assert resp.json["idempotency_key"] == sent
        again = api.simulate_post("/v1/tasks", json={"function": "echo", "idempotency_key": sent})
        assert again.json["id"] == resp.json["id"]
    else:
        assert problem(resp, 400)["errors"][0]["parameter"] == "Idempotency-Key"
        assert r.dbsize() == 0
