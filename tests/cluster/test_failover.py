"""Failover while real `dtqs worker` processes drain a stream of submissions.

Redis Cluster: SIGKILL the master serving one queue; its replica is promoted and
processing resumes. Sentinel: SIGKILL the master; the Sentinels promote the replica
and workers and the API follow without a restart. Replication is asynchronous, so
a write acknowledged just before the kill may be lost: each scenario measures and
prints how many acknowledged tasks were lost, never asserting zero.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dtqs.runtime.client import Client
from dtqs.runtime.errors import DtqsError
from tests.cluster.servers import Cluster, SentinelGroup
from tests.conftest import SAMPLE, Ledger, free_port

RETRY = "    retry: {max_attempts: 5, backoff: fixed, initial_delay: 100ms, jitter: false}"
QUEUES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def manifest(queues: list[str], wait_replicas: int = 0) -> str:
    lines = ["version: 1", f"redis: {{wait_replicas: {wait_replicas}, wait_timeout: 1s}}"]
    lines += ["queues:"]
    lines += [f"  {q}: {{concurrency: 4, visibility_timeout: 2s}}" for q in queues]
    lines += ["functions:"]
    for q in queues:
        lines += [f"  work_{q}:", "    handler: functions/ledger.py:work", f"    queue: {q}", RETRY]
    lines += ["workers:", "  grace: 3s", "  heartbeat_interval: 200ms", "  reclaim_interval: 300ms"]
    return "\n".join(lines) + "\n"


@dataclass
class Stream:
    """Submits tasks round-robin over queues from a thread; remembers what was acked."""

    client: Client
    queues: list[str]
    acked: dict[str, tuple[str, float]] = field(default_factory=dict)  #: id -> (queue, sent)
    refused: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, interval_s: float = 0.01) -> threading.Thread:
        def loop() -> None:
            n = 0
            while not self.stop.is_set():
                queue = self.queues[n % len(self.queues)]
                n += 1
                sent = time.time()  # NOTE: when sent, not when acked: "after the kill"
                try:  # must mean sent after it, not merely answered after it
                    task_id = self.client.submit(f"work_{queue}", {})
                    self.acked[task_id] = (queue, sent)
                except DtqsError:
                    self.refused += 1  # not acknowledged: not the engine's to keep
                time.sleep(interval_s)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread


def outcome(client: Client, stream: Stream, ledger: Ledger) -> dict[str, Any]:
    """Per acked task: finished (per the ledger), or lost (no record and never started)."""
    done = {e.task_id for e in ledger.dones()}
    started = {e.task_id for e in ledger.starts()}
    lost, pending = [], []
    for task_id in stream.acked:
        if task_id in done:
            continue
        if client.get(task_id) is not None or task_id in started:
            pending.append(task_id)
        else:
            lost.append(task_id)
    runs: dict[str, int] = {}
    for e in ledger.starts():
        runs[e.task_id] = runs.get(e.task_id, 0) + 1
    return {
        "acked": len(stream.acked),
        "refused": stream.refused,
        "done": len(done & set(stream.acked)),
        "lost": lost,
        "pending": pending,
        "ran_twice": sum(1 for n in runs.values() if n > 1),
    }


def drain(
    client: Client, stream: Stream, ledger: Ledger, wait_for: Callable[..., Any], timeout: float
) -> dict[str, Any]:
    """Wait until every acked task is done or known lost; the final figures."""

    def settled() -> dict[str, Any] | None:
        figures = outcome(client, stream, ledger)
        return None if figures["pending"] else figures

    return wait_for(settled, timeout, "every acknowledged task to finish or be known lost", 0.5)


def first_done_after(ledger: Ledger, stream: Stream, queues: set[str], after: float) -> float:
    """When the first task of `queues` submitted after `after` finished (the resume)."""
    times = [e.at for e in ledger.dones()
             if stream.acked.get(e.task_id, ("", 0.0))[0] in queues
             and stream.acked[e.task_id][1] > after]  # fmt: skip
    return min(times) if times else 0.0


def start_workers(procs: Any, root: Path, url: str, ledger: Ledger, processes: int = 2) -> Any:
    env = procs.env(url, DTQS_TEST_LEDGER=str(ledger.path), DTQS_TEST_SLEEP_S="0.005")
    return procs.spawn(["worker", "--processes", str(processes), "--concurrency", "4"], root, env)


def report(title: str, figures: dict[str, Any]) -> None:
    shown = {k: (len(v) if isinstance(v, list) else v) for k, v in figures.items()}
    print(f"\n[{title}] " + json.dumps(shown, sort_keys=True))


@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_a_killed_master_fails_over_and_processing_resumes(
    wait_replicas: int,
    fresh_cluster: Cluster,
    project: Any,
    procs: Any,
    ledger: Ledger,
    wait_for: Any,
    record_property: Any,
) -> None:
    p = project(
        manifest(QUEUES, wait_replicas),
        {"functions/ledger.py": (SAMPLE / "functions/ledger.py").read_text()},
    )
    url = fresh_cluster.url()
    masters = {q: fresh_cluster.master_of(f"dtqs:{{{q}}}:scheduled") for q in QUEUES}
    assert len(set(masters.values())) >= 2, f"queues all on one master: {masters}"
    victim = masters["alpha"]
    hit = {q for q, port in masters.items() if port == victim}

    worker = start_workers(procs, p.root, url, ledger)
    with Client(redis_url=url, config=p.config) as client:
        stream = Stream(client, QUEUES)
        thread = stream.run()
        wait_for(lambda: len(ledger.dones()) >= 150, 60, "workers draining the stream")
        killed_at = time.time()
        fresh_cluster.kill(victim)
        if wait_replicas:
            # The promoted replica has no replica of its own, so WAIT refuses its queues'
            # submissions until the old master comes back (as the new one's replica).
            wait_for(lambda: fresh_cluster.master_of("dtqs:{alpha}:notify") != victim, 30,
                     "a replica promoted")  # fmt: skip
            fresh_cluster.restart(victim)
        # Resumed: a task of a queue on the killed master, submitted after the kill,
        # has finished (its replica was promoted; clients found the new layout).
        try:
            wait_for(lambda: first_done_after(ledger, stream, hit, killed_at), 60,
                     "processing of the failed-over queues to resume")  # fmt: skip
        except BaseException:
            after = sorted(q for q, sent in stream.acked.values() if sent > killed_at)
            print(f"masters now: {fresh_cluster.masters()}; acked after the kill: {after}; "
                  f"refused: {stream.refused}; worker output:")  # fmt: skip
            print(procs.output(worker)[-4000:])
            raise
        resumed_s = first_done_after(ledger, stream, hit, killed_at) - killed_at
        time.sleep(1.0)
        stream.stop.set()
        thread.join(10)
        figures = drain(client, stream, ledger, wait_for, 60)
    figures.update(resumed_s=round(resumed_s, 2), killed_master=victim,
                   queues_on_killed_master=sorted(hit))  # fmt: skip
    figures["wait_replicas"] = wait_replicas
    report("cluster failover", figures)
    for k, v in figures.items():
        record_property(k, len(v) if isinstance(v, list) else v)
    assert worker.poll() is None, procs.output(worker)[-3000:]
    assert figures["done"] + len(figures["lost"]) == figures["acked"]
    # Asynchronous replication loses at most what was acked just before the kill.
    assert all(stream.acked[t][1] > killed_at - 5 for t in figures["lost"])
    assert fresh_cluster.master_of("dtqs:{alpha}:scheduled") != victim
    if wait_replicas:  # every acknowledged task reached the replica that took over
        assert figures["lost"] == []


def test_sentinel_failover_workers_and_api_follow_the_new_master(
    sentinel_group: SentinelGroup,
    project: Any,
    procs: Any,
    ledger: Ledger,
    wait_for: Any,
    record_property: Any,
) -> None:
    queues = QUEUES[:2]
    p = project(
        manifest(queues), {"functions/ledger.py": (SAMPLE / "functions/ledger.py").read_text()}
    )
    url = sentinel_group.url()
    old_master = sentinel_group.master_port()
    worker = start_workers(procs, p.root, url, ledger, processes=1)
    port = free_port()
    api = procs.spawn(["api", "--host", "127.0.0.1", "--port", str(port), "--insecure"],
                      p.root, procs.env(url))  # fmt: skip

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(ready, 30, "the API to be ready")
    with Client(redis_url=url, config=p.config) as client:
        stream = Stream(client, queues)
        thread = stream.run()
        wait_for(lambda: len(ledger.dones()) >= 100, 60, "workers draining the stream")
        killed_at = time.time()
        sentinel_group.kill(old_master)
        wait_for(lambda: sentinel_group.master_port() != old_master, 60, "a new master")
        wait_for(lambda: first_done_after(ledger, stream, set(queues), killed_at + 0.5), 60,
                 "processing to resume on the new master")  # fmt: skip
        resumed_s = first_done_after(ledger, stream, set(queues), killed_at + 0.5) - killed_at
        wait_for(ready, 30, "the API to be ready again on the new master")
        body = json.dumps({"function": f"work_{queues[0]}", "payload": {}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/tasks", body,
                                     {"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            via_api = json.loads(r.read())["id"]
        stream.stop.set()
        thread.join(10)
        figures = drain(client, stream, ledger, wait_for, 60)
        wait_for(lambda: ledger.dones(via_api), 30, "the task submitted through the API to run")
    figures.update(resumed_s=round(resumed_s, 2))
    report("sentinel failover", figures)
    for k, v in figures.items():
        record_property(k, len(v) if isinstance(v, list) else v)
    assert worker.poll() is None and api.poll() is None
    assert figures["done"] + len(figures["lost"]) == figures["acked"]
    assert all(stream.acked[t][1] > killed_at - 5 for t in figures["lost"])
