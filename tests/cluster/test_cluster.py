"""What only a Redis Cluster can show: queues spread over masters by their hash tag,
batches and listings that span masters, the worker registry (keys in many slots),
script caches flushed on every master, the CLI, and credentials.

The engine's own suites also run here unchanged (the ``test_on_cluster_*`` files).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.cluster import RedisCluster

from dtqs.runtime.client import Client
from dtqs.runtime.errors import BrokerUnavailableError
from dtqs.runtime.redis.broker import Broker
from tests.cluster.servers import PASSWORD, PASSWORD_URL, USER, Cluster

QUEUES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
MANIFEST = (
    "version: 1\nqueues:\n"
    + "".join(f"  {q}: {{}}\n" for q in QUEUES)
    + (
        "functions:\n"
        + "".join(
            f"  f_{q}: {{handler: functions/tasks.py:echo, queue: {q}}}\n" for q in QUEUES
        )  # fmt: skip
    )
)


@pytest.fixture
def client(project: Any, redis_url: str, r: RedisCluster) -> Any:
    c = Client(redis_url=redis_url, manifest=project(MANIFEST).manifest())
    yield c
    c.close()


def masters_of(cluster: Cluster, queues: list[str]) -> dict[str, int]:
    return {q: cluster.master_of(f"dtqs:{{{q}}}:pending:0") for q in queues}


def evalsha_calls(r: RedisCluster) -> int:
    stats = r.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
    return sum(int(s.get("cmdstat_evalsha", {}).get("calls", 0)) for s in stats.values())


def test_queues_spread_over_the_masters_and_a_batch_spans_them(client, cluster, r):
    masters = masters_of(cluster, QUEUES)
    assert len(set(masters.values())) == 3, masters  # each of the 3 masters serves a queue
    ids = client.submit_many([{"function": f"f_{q}", "payload": i} for i, q in enumerate(QUEUES)])
    for task_id, q in zip(ids, QUEUES, strict=True):
        assert client.get(task_id).queue == q
        # Every key of one queue lives on the master of its hash tag.
        assert cluster.master_of(f"dtqs:{{{q}}}:t:{task_id}") == masters[q]
        qk = client.broker.qkeys(q, len(client.manifest.queues[q].priorities))
        assert [i for k in qk.all_pending for i in r.lrange(k, 0, -1)] == [task_id]
    counts = client.queues()
    assert all(sum(counts[q]["pending"].values()) == 1 for q in QUEUES)
    tasks, _ = client.list_tasks(limit=100)
    assert sorted(t.id for t in tasks) == sorted(ids)


def test_a_batch_across_masters_survives_flushed_script_caches(client, r):
    first = client.submit_many([{"function": f"f_{q}", "payload": 1} for q in QUEUES])
    # As after a failover to a replica that never loaded the scripts: NOSCRIPT everywhere.
    r.script_flush()  # a cluster client sends it to every master
    before = evalsha_calls(r)
    second = client.submit_many([{"function": f"f_{q}", "payload": 2} for q in QUEUES])
    single = client.submit("f_alpha", 3)
    assert len(set(first + second + [single])) == 13
    assert all(client.get(t).state == "queued" for t in first + second + [single])
    # One EVALSHA per queue per batch, plus the retries of those that met NOSCRIPT.
    assert evalsha_calls(r) - before >= len(QUEUES) + 1


def test_the_worker_registry_spans_slots(cluster, redis_url, r):
    broker = Broker(redis_url)
    try:
        ids = [f"host-{i}:{100 + i}" for i in range(8)]
        for i, worker_id in enumerate(ids):
            broker.beat(worker_id, {"id": worker_id, "beat_at_ms": i}, ttl_s=30)
        slots = {r.keyslot(f"dtqs:worker:{w}") for w in ids}
        assert len(slots) > 1  # so MGET would have been CROSSSLOT
        assert sorted(w["id"] for w in broker.workers()) == ids
        broker.forget_worker(ids[0])
        assert sorted(w["id"] for w in broker.workers()) == ids[1:]
        assert broker.eviction_policy() == "noeviction"
        assert broker.ping()
    finally:
        broker.close()


def test_the_cli_and_a_real_worker_on_the_cluster(project, procs, redis_url, r, wait_for):
    p = project(MANIFEST)
    env = procs.env(redis_url)
    worker = procs.spawn(["worker", "--processes", "1", "--concurrency", "2"], p.root, env)
    ids = []
    for q in QUEUES:
        out = procs.run(["submit", f"f_{q}", json.dumps({"q": q})], p.root, env)
        assert out.returncode == 0, out.stderr
        ids.append(out.stdout.strip().strip('"'))
    with Client(redis_url=redis_url, config=p.config) as c:
        wait_for(lambda: all((c.get(t) or c).state == "succeeded" for t in ids), 30,
                 "the worker to run one task of each queue")  # fmt: skip
    listed = json.loads(procs.run(["workers"], p.root, env).stdout)
    assert listed and all("id" in w for w in listed)
    queues = json.loads(procs.run(["queues", "--json"], p.root, env).stdout)
    assert set(queues) == set(QUEUES)
    assert all(queues[q]["stats"].get("processed", 0) >= 1 for q in QUEUES), queues
    # The URL (and its password) went to the worker processes by environment, not argv.
    for child in procs.workers(worker):
        assert PASSWORD_URL not in " ".join(child.cmdline())


@pytest.mark.parametrize(
    ("creds", "expected"),
    [("", "refused the credentials"), (f"{USER}:wrong-pw@", "refused the credentials")],
)
def test_missing_or_wrong_credentials_are_a_clear_error(cluster, creds, expected):
    url = cluster.url(credentials=False).replace("://", f"://{creds}")
    with pytest.raises(BrokerUnavailableError, match=expected) as err:
        Broker(url).ping()
    assert PASSWORD not in str(err.value) and "wrong-pw" not in str(err.value)
