"""Admin routes (queues, dead letters, functions, schedules, workers) against a real Redis."""

from __future__ import annotations

import base64
import json
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
from falcon import testing

from dtqs.api.app import ApiState, create_app
from dtqs.runtime.client import Client
from dtqs.runtime.manifest import ScheduleSpec
from dtqs.runtime.redis.scripts import EndPolicy, Outcome
from dtqs.runtime.schedule_times import next_fire_times
from dtqs.runtime.testing import InProcessWorker

pytestmark = pytest.mark.redis

TASKS = """\
def echo(payload):
    return payload

def boom(payload):
    raise ValueError("boom")
"""

SCHEMA = '{"type": "object", "properties": {"i": {"type": "integer"}}}'

MANIFEST = """\
version: 1
queues:
  default:
    concurrency: 2
    visibility_timeout: 2s
  fair:
    priorities: [high, low]
    weights: {high: 3, low: 1}
functions:
  echo:
    handler: functions/tasks.py:echo
    schema: schemas/echo.json
    retry: {max_attempts: 4, backoff: fixed, initial_delay: 2s, jitter: false}
  boom:
    handler: functions/tasks.py:boom
    retry: {max_attempts: 1}
  fair_echo:
    handler: functions/tasks.py:echo
    queue: fair
    priority: high
schedules:
  nightly: {function: echo, cron: "0 3 * * *", timezone: Europe/Paris, payload: {i: 1}}
  often: {function: echo, every: 30s, payload: {}}
  off: {function: echo, cron: "* * * * *", enabled: false, payload: {}}
workers:
  heartbeat_interval: 200ms
  reclaim_interval: 200ms
"""

SUBMIT_TOKEN, ADMIN_TOKEN = "s" * 20, "a" * 20
TOKENS = f"""\
api:
  tokens:
    ci: {{token: "{SUBMIT_TOKEN}", scope: submit}}
    ops: {{token: "{ADMIN_TOKEN}", scope: admin}}
"""
FILES = {"functions/tasks.py": TASKS, "schemas/echo.json": SCHEMA}
PROBLEM = "application/problem+json"


@pytest.fixture
def make_client(project, redis_url, r):
    made: list[Client] = []

    def make(manifest: str = MANIFEST) -> Client:
        made.append(Client(redis_url=redis_url, manifest=project(manifest, FILES).manifest()))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(make_client) -> Client:
    return make_client()


@pytest.fixture
def api(client) -> testing.TestClient:
    return testing.TestClient(create_app(ApiState(client)))


# -- seeding helpers: lease tasks and record outcomes straight through the scripts --


def qk(client: Client, queue: str):
    return client.broker.qkeys(queue, len(client.manifest.queues[queue].priorities))


def run_as(client: Client, function: str, n: int, kind: str) -> list[str]:
    """Submit n tasks of `function`, lease them and record `kind` for each (queue otherwise
    empty); returns the ids in submission order."""
    queue = client.manifest.functions[function].queue
    ids = [client.submit(function, {"i": i}) for i in range(n)]
    keys = qk(client, queue)
    with client.broker.translated():
        leased = client.broker.scripts.fetch(
            keys, n, 60_000, "t", list(range(keys.levels)), EndPolicy.of(client.manifest, queue)
        ).tasks
    assert sorted(t.id for t in leased) == sorted(ids)
    err = '{"type":"ValueError","message":"boom"}'
    data = "1" if kind == "succeeded" else err
    ms = 60_000 if kind in ("succeeded", "retry") else 0
    outcomes = [
        Outcome(t.id, t.token, kind, data, "Traceback: boom", ms, "max_attempts") for t in leased
    ]
    client.broker.scripts.finish(keys, outcomes, 10_000)
    return ids


def bury(client: Client, function: str, n: int) -> list[str]:
    return run_as(client, function, n, "dead")


def bury_garbage(client: Client, r, task_id: str = "default.garbage1") -> str:
    """A record that is not a task hash: fetch dead-letters it with reason decode_error."""
    r.lpush("dtqs:{default}:pending:2", task_id)
    r.set(f"dtqs:{{default}}:t:{task_id}", "not a hash")
    keys = qk(client, "default")
    with client.broker.translated():
        policy = EndPolicy.of(client.manifest, "default")
        assert client.broker.scripts.fetch(keys, 10, 60_000, "t", [0, 1, 2, 3], policy).tasks == []
    return task_id


def fetch_ids(client: Client, queue: str = "default") -> list[str]:
    keys = qk(client, queue)
    with client.broker.translated():
        leased = client.broker.scripts.fetch(
            keys, 100, 60_000, "t", list(range(keys.levels)), EndPolicy.of(client.manifest, queue)
        )
    return [t.id for t in leased.tasks]


def assert_problem(result, status: int, *words: str) -> dict:
    assert result.status_code == status, result.text
    assert result.headers["content-type"] == PROBLEM
    body = result.json
    assert body["status"] == status
    for word in words:
        assert word in body["detail"], body
    return body


# -- queues -------------------------------------------------------------------


def test_queues_show_settings_depths_and_counters(api, client):
    run_as(client, "echo", 2, "succeeded")
    run_as(client, "echo", 1, "retry")
    bury(client, "boom", 2)
    client.submit("echo", {}, priority="high")
    client.submit("echo", {})
    client.submit("echo", {}, delay=60)
    client.submit("fair_echo", {}, priority="low")

    result = api.simulate_get("/v1/queues")
    assert result.status_code == 200
    queues = {q["name"]: q for q in result.json["queues"]}
    assert [q["name"] for q in result.json["queues"]] == ["default", "fair"]
    assert queues["default"] == {
        "name": "default",
        "priorities": ["critical", "high", "normal", "low"],
        "concurrency": 2,
        "visibility_timeout_s": 2.0,
        "weights": None,
        "pending": {"critical": 0, "high": 1, "normal": 1, "low": 0},
        "scheduled": 2,  # the delayed task and the retry
        "in_flight": 0,
        "dead": 2,
        "paused": False,
        "processed": 2,
        "failed": 3,  # the retried attempt and the two dead
        "retried": 1,
        "autoscale": {
            "backlog": 2,
            "oldest_age_s": queues["default"]["autoscale"]["oldest_age_s"],
            "in_flight": 0,
            "arrival_rate": 0.0,  # the first read takes the first rate sample
            "completion_rate": 0.0,
            "suggested_workers": 1,
            "idle": False,
        },
    }
    fair = queues["fair"]
    assert fair["weights"] == {"high": 3, "low": 1} and fair["pending"] == {"high": 0, "low": 1}
    assert (fair["processed"], fair["failed"], fair["retried"], fair["dead"]) == (0, 0, 0, 0)

    one = api.simulate_get("/v1/queues/default")
    assert one.status_code == 200
    body = one.json
    assert body.pop("autoscale")["backlog"] == queues["default"].pop("autoscale")["backlog"]
    assert body == queues["default"]


def test_in_flight_counts_leased_tasks(api, client):
    client.submit("echo", {})
    fetch_ids(client)
    assert api.simulate_get("/v1/queues/default").json["in_flight"] == 1


def test_unknown_queue_is_404(api):
    assert_problem(api.simulate_get("/v1/queues/nope"), 404, "nope")
    assert_problem(api.simulate_post("/v1/queues/nope/pause"), 404, "nope")
    assert_problem(api.simulate_post("/v1/queues/nope/resume"), 404, "nope")


def test_pause_stops_fetching_and_resume_restarts_it(api, client):
    paused = api.simulate_post("/v1/queues/default/pause")
    assert paused.status_code == 200
    assert paused.json["name"] == "default" and paused.json["paused"] is True
    task_id = client.submit("echo", {"i": 1})  # submissions are still accepted
    assert fetch_ids(client) == []
    assert api.simulate_get("/v1/queues/default").json["paused"] is True
    assert api.simulate_get("/v1/queues/fair").json["paused"] is False

    resumed = api.simulate_post("/v1/queues/default/resume")
    assert resumed.status_code == 200 and resumed.json["paused"] is False
    assert fetch_ids(client) == [task_id]


def test_pause_is_idempotent_and_needs_no_body(api):
    for _ in range(2):
        assert api.simulate_post("/v1/queues/fair/pause").json["paused"] is True
    sent = api.simulate_post("/v1/queues/fair/resume", json={"ignored": True})
    assert sent.status_code == 200 and sent.json["paused"] is False


def test_a_paused_queue_is_not_served_by_a_worker(api, client, redis_url):
    assert api.simulate_post("/v1/queues/default/pause").status_code == 200
    with InProcessWorker(client.manifest, redis_url, queues=["default", "fair"]):
        held = client.submit("echo", {"i": 1})
        ran = client.submit("fair_echo", {"i": 2})
        # NOTE: the fair task finishing proves the worker is fetching; the paused one waits.
        assert client.wait(ran, 10).state == "succeeded"
        assert client.get(held).state == "queued"
        assert api.simulate_post("/v1/queues/default/resume").status_code == 200
        assert client.wait(held, 10).state == "succeeded"


# -- dead letters: listing ------------------------------------------------------


def test_dead_letters_of_a_failing_function_have_error_and_traceback(api, client, redis_url):
    with InProcessWorker(client.manifest, redis_url):
        task_id = client.submit("boom", {"x": 1})
        assert client.wait(task_id, 10).state == "dead"
    result = api.simulate_get("/v1/dead-letters")
    assert result.status_code == 200
    assert result.json["next_cursor"] is None
    [item] = result.json["items"]
    assert item["id"] == task_id and item["state"] == "dead" and item["function"] == "boom"
    assert item["error"] == {"type": "ValueError", "message": "boom"}
    assert [e["message"] for e in item["errors"]] == ["boom"]
    assert "ValueError: boom" in item["traceback"]
    assert item["reason"] == "max_attempts" and item["payload"] == {"x": 1}
    assert item["finished_at"].endswith("Z")


def walk(api, query: str) -> tuple[list[str], int]:
    """Every page of GET /v1/dead-letters?query: the ids in order and the page count."""
    ids: list[str] = []
    cursor, pages = None, 0
    while True:
        url = query + (f"&cursor={cursor}" if cursor else "")
        result = api.simulate_get("/v1/dead-letters", query_string=url)
        assert result.status_code == 200, result.text
        ids += [i["id"] for i in result.json["items"]]
        pages += 1
        cursor = result.json["next_cursor"]
        if cursor is None:
            return ids, pages
        assert pages < 50


def test_dead_letters_page_across_queues_in_manifest_order(api, client):
    echo = bury(client, "echo", 5)
    boom = bury(client, "boom", 3)
    fair = bury(client, "fair_echo", 4)

    ids, pages = walk(api, "limit=3")
    assert pages == 4 and len(ids) == len(set(ids)) == 12
    assert set(ids[:8]) == set(echo + boom) and set(ids[8:]) == set(fair)

    everything = api.simulate_get("/v1/dead-letters").json
    assert [i["id"] for i in everything["items"]] == ids and everything["next_cursor"] is None

    ids, pages = walk(api, "limit=4")  # pages end exactly where the queues end
    assert pages == 3 and len(set(ids)) == 12


def test_dead_letters_filtered_by_queue_and_function(api, client):
    echo = bury(client, "echo", 5)
    bury(client, "boom", 3)
    fair = bury(client, "fair_echo", 2)

    ids, pages = walk(api, "function=echo&limit=2")
    assert sorted(ids) == sorted(echo) and pages == 3
    ids, _ = walk(api, "queue=fair")
    assert sorted(ids) == sorted(fair)
    ids, _ = walk(api, "queue=fair&function=echo")
    assert ids == []
    # A function no longer in the manifest may still have dead letters: no 404 for it.
    assert api.simulate_get("/v1/dead-letters", params={"function": "gone"}).json["items"] == []


def test_function_filter_fills_a_page_past_other_functions(client):
    bury(client, "echo", 5)
    boom = bury(client, "boom", 3)
    page, after = client.dead_letter_page("default", "boom", 2, scan_batch=2)
    assert len(page) == 2 and after is not None
    rest, after = client.dead_letter_page("default", "boom", 2, after, scan_batch=2)
    assert len(rest) == 1 and after is None
    assert sorted(i.id for i in page + rest) == sorted(boom)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("limit=0", ["'limit'", "1 to 500"]),
        ("limit=501", ["'limit'", "1 to 500"]),
        ("limit=ten", ["'limit'", "integer"]),
        ("limit=1.5", ["'limit'", "integer"]),
        ("cursor=not-a-cursor!", ["'cursor'"]),
        ("cursor=" + base64.urlsafe_b64encode(b'{"a": 1}').decode(), ["'cursor'"]),
        ("cursor=" + base64.urlsafe_b64encode(b"[-1, 0]").decode(), ["'cursor'"]),
        ("cursor=" + base64.urlsafe_b64encode(b"[5, 0]").decode(), ["'cursor'"]),
        ("queue=fair&cursor=" + base64.urlsafe_b64encode(b"[1, 0]").decode(), ["'cursor'"]),
        ("function=" + "f" * 65, ["'function'", "64 at most"]),
    ],
)
def test_bad_dead_letter_queries_are_400(api, query, words):
    assert_problem(api.simulate_get("/v1/dead-letters", query_string=query), 400, *words)


def test_dead_letters_of_an_unknown_queue_are_404(api):
    assert_problem(api.simulate_get("/v1/dead-letters", params={"queue": "nope"}), 404, "nope")
    assert_problem(api.simulate_delete("/v1/dead-letters", params={"queue": "nope"}), 404)
    assert_problem(api.simulate_post("/v1/dead-letters/replay", params={"queue": "nope"}), 404)


# -- dead letters: one --------------------------------------------------------------


def test_replay_one_dead_letter(api, client):
    task_id, other = bury(client, "echo", 2)
    result = api.simulate_post(f"/v1/dead-letters/{task_id}/replay")
    assert result.status_code == 200 and result.json == {"replayed": 1}
    info = client.get(task_id)
    assert info.state == "queued" and info.attempts == 0
    assert fetch_ids(client) == [task_id]  # back on its queue
    assert [d.id for d in client.dead_letters("default")] == [other]
    assert_problem(api.simulate_post(f"/v1/dead-letters/{task_id}/replay"), 404, task_id)


def test_purge_one_dead_letter(api, client):
    task_id, other = bury(client, "echo", 2)
    result = api.simulate_delete(f"/v1/dead-letters/{task_id}")
    assert result.status_code == 200 and result.json == {"purged": 1}
    assert client.get(task_id) is None
    assert [d.id for d in client.dead_letters("default")] == [other]
    assert_problem(api.simulate_delete(f"/v1/dead-letters/{task_id}"), 404, task_id)


@pytest.mark.parametrize(
    "task_id", ["nope.0123abcd", "no-dot", "default.0000000000000000000000000000", "Default.x"]
)
def test_ids_that_are_not_dead_letters_are_404(api, client, task_id):
    assert_problem(api.simulate_post(f"/v1/dead-letters/{task_id}/replay"), 404)
    assert_problem(api.simulate_delete(f"/v1/dead-letters/{task_id}"), 404)


def test_a_queued_task_is_not_a_dead_letter(api, client):
    task_id = client.submit("echo", {})
    assert_problem(api.simulate_post(f"/v1/dead-letters/{task_id}/replay"), 404)
    assert_problem(api.simulate_delete(f"/v1/dead-letters/{task_id}"), 404)
    assert client.get(task_id).state == "queued"


def test_an_unreadable_dead_letter_cannot_be_replayed_but_can_be_purged(api, client, r):
    task_id = bury_garbage(client, r)
    assert_problem(api.simulate_post(f"/v1/dead-letters/{task_id}/replay"), 409, "decode_error")
    assert api.simulate_delete(f"/v1/dead-letters/{task_id}").json == {"purged": 1}


# -- dead letters: in bulk ----------------------------------------------------------


def test_replay_all_matching(api, client):
    echo = bury(client, "echo", 4)
    boom = bury(client, "boom", 3)
    fair = bury(client, "fair_echo", 2)

    result = api.simulate_post("/v1/dead-letters/replay", params={"function": "boom"})
    assert result.status_code == 200 and result.json == {"replayed": 3}
    assert {client.get(i).state for i in boom} == {"queued"}
    assert sorted(d.id for d in client.dead_letters("default")) == sorted(echo)

    result = api.simulate_post("/v1/dead-letters/replay", params={"queue": "fair"})
    assert result.json == {"replayed": 2} and {client.get(i).state for i in fair} == {"queued"}
    assert api.simulate_post("/v1/dead-letters/replay").json == {"replayed": 4}
    assert api.simulate_post("/v1/dead-letters/replay").json == {"replayed": 0}
    assert client.queues()["default"]["dead"] == 0


def test_purge_all_matching(api, client):
    echo = bury(client, "echo", 4)
    bury(client, "boom", 3)
    bury(client, "fair_echo", 2)

    result = api.simulate_delete(
        "/v1/dead-letters", params={"queue": "default", "function": "boom"}
    )
    assert result.status_code == 200 and result.json == {"purged": 3}
    assert sorted(d.id for d in client.dead_letters("default")) == sorted(echo)
    assert api.simulate_delete("/v1/dead-letters").json == {"purged": 6}
    assert api.simulate_delete("/v1/dead-letters").json == {"purged": 0}
    assert {q["dead"] for q in client.queues().values()} == {0}


def test_bulk_operations_reach_past_batches_of_other_letters(client, r):
    bury_garbage(client, r)  # the oldest, and never replayable
    bury(client, "echo", 5)
    assert client.purge_all("default", "boom", scan_batch=1) == 0
    bury(client, "boom", 3)
    assert client.purge_all("default", "boom", scan_batch=2) == 3
    boom = bury(client, "boom", 3)
    assert client.replay_all("default", "boom", scan_batch=2) == 3
    assert {client.get(i).state for i in boom} == {"queued"}
    assert client.replay_all("default", scan_batch=2) == 5
    assert [d.reason for d in client.dead_letters("default")] == ["decode_error"]
    assert client.replay_all("default", scan_batch=2) == 0
    assert client.purge_all("default", scan_batch=1) == 1


# -- functions, schedules, workers ----------------------------------------------------


def test_functions_show_queue_policy_and_schema(api):
    result = api.simulate_get("/v1/functions")
    assert result.status_code == 200
    functions = {f["name"]: f for f in result.json["functions"]}
    assert list(functions) == ["echo", "boom", "fair_echo"]
    assert functions["echo"] == {
        "name": "echo",
        "queue": "default",
        "priority": "normal",
        "timeout_s": 300.0,
        "retry": {
            "max_attempts": 4,
            "backoff": "fixed",
            "initial_delay_s": 2.0,
            "max_delay_s": 300.0,
            "jitter": False,
        },
        "result_ttl_s": 86400.0,
        "dead_letter": True,
        "schema": json.loads(SCHEMA),
    }
    assert functions["boom"]["schema"] is None and functions["boom"]["retry"]["max_attempts"] == 1
    assert (
        functions["fair_echo"]["queue"] == "fair" and functions["fair_echo"]["priority"] == "high"
    )

    one = api.simulate_get("/v1/functions/echo")
    assert one.status_code == 200 and one.json == functions["echo"]
    assert_problem(api.simulate_get("/v1/functions/nope"), 404, "nope")


def parse(stamp: str) -> datetime:
    assert stamp.endswith("Z")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_schedules_show_their_next_fire_times(api):
    before = datetime.now(UTC)
    result = api.simulate_get("/v1/schedules")
    assert result.status_code == 200
    schedules = {s["name"]: s for s in result.json["schedules"]}
    assert list(schedules) == ["nightly", "often", "off"]
    nightly = schedules["nightly"]
    assert {k: v for k, v in nightly.items() if k != "next_fire_times"} == {
        "name": "nightly",
        "function": "echo",
        "cron": "0 3 * * *",
        "every_s": None,
        "timezone": "Europe/Paris",
        "enabled": True,
        "payload": {"i": 1},
        "last_fire_time": None,
        "last_task_id": None,
    }
    times = [parse(t) for t in nightly["next_fire_times"]]
    assert len(times) == 3 and before <= times[0] <= before + timedelta(days=1)
    assert all(
        b - a in (timedelta(hours=23), timedelta(hours=24), timedelta(hours=25))
        for a, b in zip(times, times[1:], strict=False)
    )

    often = [parse(t) for t in schedules["often"]["next_fire_times"]]
    assert schedules["often"]["every_s"] == 30.0 and schedules["often"]["cron"] is None
    assert [b - a for a, b in zip(often, often[1:], strict=False)] == [timedelta(seconds=30)] * 2
    assert schedules["off"]["enabled"] is False and schedules["off"]["next_fire_times"] == []


def test_workers_are_listed_from_their_heartbeats(api, client, redis_url):
    assert api.simulate_get("/v1/workers").json == {"workers": []}
    with InProcessWorker(client.manifest, redis_url) as worker:
        deadline = time.monotonic() + 10
        while not (workers := api.simulate_get("/v1/workers").json["workers"]):
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.02)
        [seen] = workers
        assert seen["id"] == worker.worker.worker_id and seen["queues"] == ["default", "fair"]


# -- auth, methods and outages ----------------------------------------------------------

ROUTES = [
    ("GET", "/v1/queues", 200),
    ("GET", "/v1/queues/default", 200),
    ("POST", "/v1/queues/default/pause", 200),
    ("POST", "/v1/queues/default/resume", 200),
    ("GET", "/v1/dead-letters", 200),
    ("POST", "/v1/dead-letters/replay", 200),
    ("DELETE", "/v1/dead-letters", 200),
    ("POST", "/v1/dead-letters/{dead}/replay", 200),
    ("DELETE", "/v1/dead-letters/{dead}", 200),
    ("GET", "/v1/functions", 200),
    ("GET", "/v1/functions/echo", 200),
    ("GET", "/v1/schedules", 200),
    ("GET", "/v1/workers", 200),
    ("POST", "/v1/tasks/{dead}/cancel", 409),  # reached: a dead letter is not cancellable
]


@pytest.mark.parametrize(("method", "path", "ok"), ROUTES)
def test_admin_routes_need_an_admin_token(make_client, method, path, ok):
    client = make_client(MANIFEST + TOKENS)
    api = testing.TestClient(create_app(ApiState(client)))
    [dead] = bury(client, "echo", 1)
    path = path.format(dead=dead)

    def call(token: str | None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return api.simulate_request(method, path, headers=headers)

    missing = assert_problem(call(None), 401)
    assert missing.get("detail") and call(None).headers["www-authenticate"].startswith("Bearer")
    assert_problem(call("x" * 20), 401)
    assert_problem(call(SUBMIT_TOKEN), 403, "admin")
    assert client.get(dead).state == "dead"  # nothing happened before the refusal
    assert call(ADMIN_TOKEN).status_code == ok


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/queues"),
        ("DELETE", "/v1/queues/default"),
        ("GET", "/v1/queues/default/pause"),
        ("POST", "/v1/functions"),
        ("GET", "/v1/dead-letters/replay"),
        ("POST", "/v1/workers"),
    ],
)
def test_wrong_methods_are_405(api, method, path):
    assert_problem(api.simulate_request(method, path), 405)


def test_redis_down_is_503_with_retry_after(project):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(
        redis_url=f"redis://127.0.0.1:{port}/0", manifest=project(MANIFEST, FILES).manifest()
    )
    api = testing.TestClient(create_app(ApiState(client)))
    calls = [
        ("GET", "/v1/queues"),
        ("GET", "/v1/dead-letters"),
        ("POST", "/v1/queues/default/pause"),
        ("DELETE", "/v1/dead-letters"),
    ]
    for method, path in calls:
        result = api.simulate_request(method, path)
        assert_problem(result, 503)
        assert result.headers["retry-after"] == "1"
    assert api.simulate_get("/v1/functions").status_code == 200  # needs no Redis
    client.close()


# -- next_fire_times --------------------------------------------------------------------


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_next_fire_times_of_a_cron_in_utc():
    spec = ScheduleSpec("s", "f", cron="*/15 9 * * 1-5")  # Fri 2025-03-07 09:50 -> Monday
    times = next_fire_times(spec, 4, now=utc(2025, 3, 7, 9, 50))
    assert times == [
        utc(2025, 3, 10, 9, 0),
        utc(2025, 3, 10, 9, 15),
        utc(2025, 3, 10, 9, 30),
        utc(2025, 3, 10, 9, 45),
    ]
    assert all(t.tzinfo == UTC for t in times)
    # At a fire time exactly, that time is the next one.
    assert next_fire_times(spec, 1, now=utc(2025, 3, 10, 9, 15)) == [utc(2025, 3, 10, 9, 15)]


@pytest.mark.parametrize(
    ("weekdays", "days"),
    [
        ("0", [9, 16]),
        ("7", [9, 16]),
        ("sun", [9, 16]),
        ("1", [10, 17]),
        ("6,0", [8, 9]),
        ("5-7", [7, 8, 9]),
        ("fri-sun", [7, 8, 9]),
        ("*/2", [8, 9, 11]),
        ("MON-WED", [10, 11, 12]),
    ],
)
def test_cron_weekdays_are_numbered_as_in_crontab(weekdays, days):
    # NOTE: APScheduler 3 alone reads 0 as Monday; crontab(5) reads it as Sunday.
    spec = ScheduleSpec("s", "f", cron=f"0 12 * * {weekdays}")
    times = next_fire_times(spec, len(days), now=utc(2025, 3, 7))  # a Friday
    assert [t.day for t in times] == days


def test_cron_with_day_of_month_and_weekday_fires_on_either():
    spec = ScheduleSpec("s", "f", cron="0 0 1 * 1")  # the 1st, and every Monday
    times = next_fire_times(spec, 4, now=utc(2025, 3, 25))
    assert times == [utc(2025, 3, 31), utc(2025, 4, 1), utc(2025, 4, 7), utc(2025, 4, 14)]
    starred = ScheduleSpec("s", "f", cron="0 0 */10 * 1")  # a starred field: both must match
    assert next_fire_times(starred, 1, now=utc(2025, 3, 1)) == [utc(2025, 3, 31)]


def test_next_fire_times_follow_the_zone_across_a_dst_change():
    spec = ScheduleSpec("s", "f", cron="0 9 * * *", timezone="Europe/Paris")
    # Clocks in Paris go from UTC+1 to UTC+2 on Sunday 2025-03-30.
    times = next_fire_times(spec, 3, now=utc(2025, 3, 28, 12))
    assert times == [utc(2025, 3, 29, 8), utc(2025, 3, 30, 7), utc(2025, 3, 31, 7)]
    # 02:30 does not exist on 2025-03-30 in Paris: still one fire that day, in order.
    skipped = next_fire_times(
        ScheduleSpec("s", "f", cron="30 2 * * *", timezone="Europe/Paris"),
        3,
        now=utc(2025, 3, 29, 0),
    )
    assert [t.date().day for t in skipped] == [29, 30, 31] and skipped == sorted(skipped)


def test_next_fire_times_of_an_interval_are_aligned_and_evenly_spaced():
    spec = ScheduleSpec("s", "f", every_s=30.0)
    times = next_fire_times(spec, now=utc(2025, 1, 1, 0, 0, 10))
    assert times == [utc(2025, 1, 1, 0, 0, 30), utc(2025, 1, 1, 0, 1), utc(2025, 1, 1, 0, 1, 30)]
    # NOTE: the same answer from any process at any moment of that interval.
    assert next_fire_times(spec, now=utc(2025, 1, 1, 0, 0, 29)) == times


def test_next_fire_times_edge_cases():
    assert next_fire_times(ScheduleSpec("s", "f", cron="* * * * *", enabled=False)) == []
    assert next_fire_times(ScheduleSpec("s", "f", every_s=60.0), count=0) == []
    assert next_fire_times(ScheduleSpec("s", "f", cron="0 0 30 2 *")) == []  # never
    naive = next_fire_times(ScheduleSpec("s", "f", cron="0 * * * *"), 1, datetime(2025, 1, 1))
    assert naive == [utc(2025, 1, 1)]
    soon = next_fire_times(ScheduleSpec("s", "f", every_s=3600.0))
    assert len(soon) == 3 and datetime.now(UTC) <= soon[0] <= datetime.now(UTC) + timedelta(hours=1)


def test_cancel_is_a_post_and_the_cancelled_record_stays(api, client):
    task_id = client.submit("fair_echo", {})
    resp = api.simulate_post(f"/v1/tasks/{task_id}/cancel")
    assert resp.status_code == 200 and resp.json["state"] == "cancelled"
    assert api.simulate_get(f"/v1/tasks/{task_id}").json["state"] == "cancelled"
    assert_problem(api.simulate_post(f"/v1/tasks/{task_id}/cancel"), 409, "cancelled")
    assert_problem(api.simulate_post("/v1/tasks/default.nothing/cancel"), 404)
    # The deprecated DELETE still does the same, for clients written against it.
    other = client.submit("fair_echo", {})
    assert api.simulate_delete(f"/v1/tasks/{other}").json["state"] == "cancelled"
    assert client.get(other).state == "cancelled"
