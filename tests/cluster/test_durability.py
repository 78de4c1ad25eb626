"""``redis.wait_replicas``: a submission is acknowledged only once replicas of every
master it wrote to confirm it (Redis WAIT on the connection that wrote)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.cluster import RedisCluster

from dtqs.runtime.client import Client
from dtqs.runtime.errors import BrokerUnavailableError
from tests.cluster.servers import Cluster, admin

QUEUES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def manifest(wait: str) -> str:
    return (
        "version: 1\nqueues:\n" + "".join(f"  {q}: {{}}\n" for q in QUEUES) + "functions:\n"
        + "".join(f"  f_{q}: {{handler: functions/tasks.py:echo, queue: {q}}}\n" for q in QUEUES)
        + f"redis: {{{wait}}}\n"
    )  # fmt: skip


def wait_calls(cluster: Cluster) -> int:
    calls = 0
    for port in cluster.masters():
        stats = admin(port, **cluster.client_tls()).info("commandstats")
        calls += int(stats.get("cmdstat_wait", {}).get("calls", 0))
    return calls


def test_each_master_of_a_batch_is_waited_for(cluster: Cluster, project: Any, redis_url: str,
                                              r: RedisCluster) -> None:  # fmt: skip
    p = project(manifest("wait_replicas: 1, wait_timeout: 5s"))
    masters = {cluster.master_of(f"dtqs:{{{q}}}:notify") for q in QUEUES}
    with Client(redis_url=redis_url, manifest=p.manifest()) as c:
        c.submit_many([{"function": f"f_{q}"} for q in QUEUES])  # scripts now loaded
        before = wait_calls(cluster)
        ids = c.submit_many([{"function": f"f_{q}", "payload": q} for q in QUEUES])
        ids.append(c.submit("f_alpha", "one more"))
        assert all(c.get(t).state == "queued" for t in ids)
    # One WAIT per master the batch touched, one for the single submission.
    assert wait_calls(cluster) - before == len(masters) + 1


def test_without_a_live_replica_a_submission_is_refused(fresh_cluster: Cluster,
                                                        project: Any) -> None:  # fmt: skip
    p = project(manifest("wait_replicas: 1, wait_timeout: 300ms"))
    url = fresh_cluster.url()
    victim = fresh_cluster.master_of("dtqs:{alpha}:notify")
    replica = next(
        port for port in fresh_cluster.ports
        if admin(port).info("replication").get("master_port") == victim
    )  # fmt: skip
    other = next(q for q in QUEUES if fresh_cluster.master_of(f"dtqs:{{{q}}}:notify") != victim)
    fresh_cluster.kill(replica)
    with Client(redis_url=url, manifest=p.manifest()) as c:
        for _ in range(2):  # a retry with the same key is refused again, stores nothing new
            with pytest.raises(BrokerUnavailableError, match="confirmed by 0 of 1 replicas"):
                c.submit("f_alpha", 1, idempotency_key="k1")
        # Refused, yet on the master: one task, which is why retries must reuse the key.
        assert sum(c.queues()["alpha"]["pending"].values()) == 1
        assert c.get(c.submit(f"f_{other}", 2)).state == "queued"  # its master has a replica


def test_a_client_with_an_old_layout_recovers_after_a_manual_failover(
    fresh_cluster: Cluster, project: Any, wait_for: Any
) -> None:
    """The WAIT path talks to masters directly, past the cluster client's redirects:
    a master demoted under it must make it learn the new layout, not fail for good."""
    p = project(manifest("wait_replicas: 1, wait_timeout: 2s"))
    old = fresh_cluster.master_of("dtqs:{alpha}:notify")
    replica = next(
        port for port in fresh_cluster.ports
        if admin(port).info("replication").get("master_port") == old
    )  # fmt: skip
    with Client(redis_url=fresh_cluster.url(), manifest=p.manifest()) as c:
        c.submit("f_alpha", 0)  # the client now knows `old` as alpha's master

        def taken_over() -> bool:
            if admin(replica).info("replication")["role"] != "master":
                # NOTE: FORCE skips the offset handshake with the master, which a busy
                # machine can time out; nothing is being written now, so nothing is lost.
                admin(replica).execute_command("CLUSTER FAILOVER", "FORCE")
                time.sleep(1)
            return admin(old).info("replication")["role"] == "slave" and fresh_cluster.healthy()

        wait_for(taken_over, 30, "the replica to take over", 0.2)

        def submitted() -> str | None:
            try:
                return c.submit("f_alpha", 1)
            except BrokerUnavailableError:  # "changing its layout": once, then refreshed
                return None

        task_id = wait_for(submitted, 10, "a confirmed submission on the new master", 0.2)
        assert c.get(task_id).state == "queued"
        assert fresh_cluster.master_of("dtqs:{alpha}:notify") == replica
