"""/healthz, /readyz and /metrics, on real Redis, on a Redis that is down, and on one that
evicts; plus the worker-side duration histogram (recorded in memory, flushed per beat)."""

from __future__ import annotations

import math
import re
import time

import pytest
from falcon import testing

from dtqs.api.app import ApiState, create_app
from dtqs.runtime.client import Client
from dtqs.runtime.redis.broker import Broker
from dtqs.runtime.redis.keys import QueueKeys
from dtqs.runtime.stats import (
    DURATION_BUCKETS_S,
    DurationRecorder,
    duration_histograms,
    function_counters,
)
from dtqs.runtime.testing import InProcessWorker

MANIFEST = """\
version: 1
queues:
  default:
    visibility_timeout: 5s
    concurrency: 4
  mail:
    priorities: [urgent, bulk]
functions:
  echo:
    handler: functions/tasks.py:echo
  boom:
    handler: functions/tasks.py:boom
    retry: {max_attempts: 2, backoff: fixed, initial_delay: 10ms, jitter: false}
  send:
    handler: functions/tasks.py:echo
    queue: mail
workers:
  heartbeat_interval: 100ms
  reclaim_interval: 200ms
"""
FILES = {
    "functions/tasks.py": (
        "import time\n\n"
        "def echo(payload):\n    time.sleep(0.02)\n    return payload\n\n"
        "def boom(payload):\n    raise ValueError('no')\n"
    )
}
#: A closed port: connections are refused at once.
DOWN = "redis://:hunter2secret@127.0.0.1:1/0"


@pytest.fixture
def make(project, redis_url):
    made: list[Client] = []

    def build(url: str | None = None, manifest: str = MANIFEST):
        p = project(manifest, FILES)
        broker = Broker(url or redis_url, socket_timeout_s=0.2, connect_timeout_s=0.2)
        client = Client(manifest=p.manifest(), broker=broker)
        made.append(client)
        state = ApiState(client)
        return testing.TestClient(create_app(state)), client, state

    yield build
    for c in made:
        c.close()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text, or None when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        m = re.fullmatch(re.escape(name) + r"(?:\{(.*)\})?", series)
        if not m:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


# -- health ----------------------------------------------------------------------


def test_healthz_and_readyz_with_redis_up(make, r):
    api, _, _ = make()
    assert api.simulate_get("/healthz").json == {"status": "ok"}
    resp = api.simulate_get("/readyz")
    assert resp.status_code == 200
    assert resp.json["status"] == "ready"
    assert resp.json["maxmemory_policy"] in ("noeviction", "unknown")


def test_redis_down_liveness_ok_readiness_503_metrics_still_served(make):
    api, _, _ = make(DOWN)
    started = time.monotonic()
    assert api.simulate_get("/healthz").status_code == 200
    ready = api.simulate_get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    assert ready.headers["retry-after"]
    assert ready.json["detail"].startswith("Redis is unreachable")
    metrics = api.simulate_get("/metrics")
    assert metrics.status_code == 200
    assert sample(metrics.text, "dtqs_redis_up") == 0
    assert sample(metrics.text, "dtqs_api_requests_total", route="/readyz", status="503") == 1
    assert sample(metrics.text, "dtqs_queue_depth") is None
    assert time.monotonic() - started < 5  # fast failures, not hangs
    # The password never leaks, in metrics or in the readiness reason.
    assert "hunter2secret" not in metrics.text + ready.text


def test_readyz_names_an_evicting_policy(make, redis_server):
    _, port = redis_server("--maxmemory-policy", "allkeys-lru")
    api, _, _ = make(f"redis://127.0.0.1:{port}/0")
    resp = api.simulate_get("/readyz")
    assert resp.status_code == 503
    assert "allkeys-lru" in resp.json["detail"]
    assert "noeviction" in resp.json["detail"]
    assert api.simulate_get("/healthz").status_code == 200


def test_readyz_reads_the_policy_where_config_is_refused(make, redis_server):
    """ElastiCache refuses CONFIG: the policy read 'unknown' and an evicting server
    passed /readyz and the workers' check. It comes from INFO memory now."""
    _, port = redis_server("--maxmemory-policy", "allkeys-lru", "--rename-command", "CONFIG", "")
    api, client, _ = make(f"redis://127.0.0.1:{port}/0")
    assert client.broker.eviction_policy() == "allkeys-lru"
    resp = api.simulate_get("/readyz")
    assert resp.status_code == 503 and "allkeys-lru" in resp.json["detail"]


def test_readyz_is_not_ready_while_redis_refuses_writes(make, redis_server):
    """Before: /readyz said ready whenever Redis answered PING, even when every
    submission was refused (a read-only replica; out of memory under noeviction)."""
    _, primary = redis_server()
    _, replica = redis_server("--replicaof", "127.0.0.1", str(primary))
    api, _, _ = make(f"redis://127.0.0.1:{replica}/0")
    resp = api.simulate_get("/readyz")
    assert resp.status_code == 503 and "READONLY" in resp.json["detail"]
    assert resp.headers["retry-after"]

    _, port = redis_server("--maxmemory-policy", "noeviction")
    api, client, _ = make(f"redis://127.0.0.1:{port}/0")
    assert api.simulate_get("/readyz").status_code == 200
    used = int(client.broker.redis.info("memory")["used_memory"])
    client.broker.redis.config_set("maxmemory", used + 100_000)  # < 2 x max_body_bytes
    resp = api.simulate_get("/readyz")
    assert resp.status_code == 503 and "out of memory" in resp.json["detail"]


def test_readyz_reports_a_failed_reload(make, r):
    api, _, state = make()
    state.reload_error = "dtqs.yaml:3: queues: expected a mapping"
    resp = api.simulate_get("/readyz")
    assert resp.status_code == 503
    assert resp.json["detail"] == "last reload failed: dtqs.yaml:3: queues: expected a mapping"
    state.reload_error = None
    assert api.simulate_get("/readyz").status_code == 200


def test_probes_and_metrics_stay_open_with_tokens(make, r):
    tokens = 'api:\n  tokens:\n    ops: {token: "' + "t" * 24 + '", scope: admin}\n'
    api, _, _ = make(manifest=MANIFEST + tokens)
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert api.simulate_get(path).status_code == 200, path
    assert api.simulate_get("/v1/queues").status_code == 401


# -- metrics ---------------------------------------------------------------------------


def test_request_metrics_use_route_templates_not_raw_paths(make, r):
    api, client, _ = make()
    task_id = client.submit("echo", {"n": 1})
    api.simulate_get(f"/v1/tasks/{task_id}")
    api.simulate_get("/no/such/thing-12345")
    api.simulate_put("/healthz")
    text = api.simulate_get("/metrics").text
    assert sample(text, "dtqs_api_requests_total", route="/v1/tasks/{task_id}", method="GET",
                  status="200") == 1  # fmt: skip
    assert sample(text, "dtqs_api_requests_total", route="unmatched", status="404") == 1
    assert sample(text, "dtqs_api_requests_total", route="/healthz", status="405") == 1
    assert sample(text, "dtqs_api_request_duration_seconds_count", route="/v1/tasks/{task_id}")
    assert task_id not in text and "thing-12345" not in text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names and all(n.startswith("dtqs_") for n in names)


def test_each_app_has_its_own_registry(make, r):
    first, _, _ = make()
    second, _, _ = make()
    first.simulate_get("/healthz")
    first.simulate_get("/healthz")
    second.simulate_get("/healthz")
    one = sample(first.simulate_get("/metrics").text, "dtqs_api_requests_total", route="/healthz")
    two = sample(second.simulate_get("/metrics").text, "dtqs_api_requests_total", route="/healthz")
    assert (one, two) == (2, 1)


def test_queue_gauges_from_redis(make, r):
    api, client, _ = make()
    client.submit("echo", 1, priority="high")
    client.submit("echo", 2, priority="high")
    oldest = client.submit("echo", 3, priority="low")
    client.submit("echo", 4, delay=60)
    client.submit("send", 5, priority="bulk")
    client.pause("mail")
    # Back-date the oldest ready task: its age is what an autoscaler watches.
    qk = QueueKeys("dtqs", "default", 4)
    r.hset(qk.task(oldest), "created_at", int(time.time() * 1000) - 90_000)
    text = api.simulate_get("/metrics").text
    assert sample(text, "dtqs_redis_up") == 1
    assert sample(text, "dtqs_queue_depth", queue="default", priority="high") == 2
    assert sample(text, "dtqs_queue_depth", queue="default", priority="low") == 1
    assert sample(text, "dtqs_queue_depth", queue="default", priority="critical") == 0
    assert sample(text, "dtqs_queue_depth", queue="mail", priority="bulk") == 1
    assert sample(text, "dtqs_queue_scheduled", queue="default") == 1
    assert sample(text, "dtqs_queue_in_flight", queue="default") == 0
    assert sample(text, "dtqs_queue_dead", queue="default") == 0
    assert sample(text, "dtqs_queue_paused", queue="mail") == 1
    assert sample(text, "dtqs_queue_paused", queue="default") == 0
    assert 89 <= sample(text, "dtqs_queue_oldest_age_seconds", queue="default") < 120
    assert 0 <= sample(text, "dtqs_queue_oldest_age_seconds", queue="mail") < 30
    assert sample(text, "dtqs_workers") == 0
    # Autoscaling signals: backlog sums the levels; nothing timed yet, so one slot per task.
    assert sample(text, "dtqs_queue_backlog", queue="default") == 3
    assert sample(text, "dtqs_queue_suggested_workers", queue="default") == 1  # 3 tasks, 4 slots
    assert sample(text, "dtqs_queue_arrival_rate", queue="default") == 0  # first sample
    assert sample(text, "dtqs_queue_completion_rate", queue="default") == 0


def test_task_counters_and_duration_histogram_from_workers(make, r, redis_url):
    api, client, _ = make()
    ok = [client.submit("echo", i) for i in range(5)]
    bad = client.submit("boom", None)
    with InProcessWorker(client.manifest, redis_url, queues=["default"]):
        for task_id in [*ok, bad]:
            client.wait(task_id, timeout=20)
        text = api.simulate_get("/metrics").text
        assert sample(text, "dtqs_workers") == 1
        deadline = time.monotonic() + 10
        while sample(text, "dtqs_task_duration_seconds_count", function="boom") != 2:
            assert time.monotonic() < deadline, "the heartbeat did not flush durations"
            time.sleep(0.05)
            text = api.simulate_get("/metrics").text
        while sample(text, "dtqs_task_duration_seconds_count", function="echo") != 5:
            assert time.monotonic() < deadline, "the heartbeat did not flush durations"
            time.sleep(0.05)
            text = api.simulate_get("/metrics").text
    labels = {"queue": "default", "function": "echo"}
    assert sample(text, "dtqs_tasks_processed_total", **labels) == 5
    assert sample(text, "dtqs_tasks_failed_total", queue="default", function="boom") == 2
    assert sample(text, "dtqs_tasks_retried_total", queue="default", function="boom") == 1
    assert sample(text, "dtqs_tasks_dead_total", queue="default", function="boom") == 1
    assert sample(text, "dtqs_queue_dead", queue="default") == 1
    # Each echo sleeps 20 ms: none is under 10 ms, all are under 10 s.
    assert sample(text, "dtqs_task_duration_seconds_bucket", le="0.01", **labels) == 0
    assert sample(text, "dtqs_task_duration_seconds_bucket", le="10.0", **labels) == 5
    assert sample(text, "dtqs_task_duration_seconds_bucket", le="+Inf", **labels) == 5
    assert 0.1 <= sample(text, "dtqs_task_duration_seconds_sum", **labels) < 5
    # Flushed per beat, not per task: one hash per queue holds the totals.
    raw = r.hgetall(QueueKeys("dtqs", "default", 4).durations)
    assert raw["echo:count"] == "5" and raw["boom:count"] == "2"


# -- the duration histogram, without Redis ---------------------------------------


class _FailingBroker:
    def add_durations(self, deltas):
        from dtqs.runtime.errors import BrokerUnavailableError

        raise BrokerUnavailableError("down")


def test_recorder_buckets_take_and_restore():
    rec = DurationRecorder()
    for seconds in (0.0005, 0.003, 0.003, 2.0, 7200.0):
        rec.observe("q", "f", seconds)
    with pytest.raises(Exception, match="down"):
        rec.flush(_FailingBroker())  # type: ignore[arg-type]
    deltas = rec.take()  # kept across the failed flush
    fields = deltas["q"]
    assert fields["f:0.001"] == 1 and fields["f:0.005"] == 2
    assert fields["f:2.5"] == 1 and fields["f:+Inf"] == 1
    assert fields["f:count"] == 5
    assert math.isclose(fields["f:sum"], 7202.0065)
    assert rec.take() == {}
    hist = duration_histograms({k: str(v) for k, v in fields.items()})["f"]
    assert hist.count == 5
    assert [n for _, n in hist.buckets][-1] == 5
    assert len(hist.buckets) == len(DURATION_BUCKETS_S)
    cumulative = dict(hist.buckets)
    assert cumulative[0.001] == 1 and cumulative[0.005] == 3 and cumulative[3600.0] == 4


def test_stats_hash_parsing_skips_junk():
    counters = function_counters(
        {"processed": "9", "processed:a": "4", "failed:a": "x", "other:a": "1", "dead:b": "2"}
    )
    assert counters == {"processed": {"a": 4}, "failed": {}, "retried": {}, "dead": {"b": 2}}
    assert duration_histograms({"a:count": "1", "a:zzz": "1", "a:1": "1"})["a"].count == 1


def test_metrics_export_redis_memory_for_the_near_maxmemory_alert(make, redis_server):
    _, port = redis_server("--maxmemory", "50mb", "--maxmemory-policy", "noeviction")
    api, client, _ = make(f"redis://127.0.0.1:{port}/0")
    text = api.simulate_get("/metrics").text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("dtqs_redis_memory_used_bytes ", "dtqs_redis_maxmemory_bytes "))
    }
    assert values["dtqs_redis_maxmemory_bytes"] == 50 * 2**20
    assert 0 < values["dtqs_redis_memory_used_bytes"] < values["dtqs_redis_maxmemory_bytes"]
