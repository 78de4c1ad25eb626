"""`dtqs worker` as real processes: a crashed process, graceful stop, forced stop.

Evidence of what ran comes from the ledger file the handler appends to, not from
Redis, so a bug that loses or doubles a task in Redis cannot hide itself.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

WORKER = ["worker", "--processes", "1", "--log-level", "warning"]


def all_in(client, ids, wanted):
    """True when every task of `ids` is in one of the states `wanted`."""
    infos = [client.get(i) for i in ids]
    return all(i is not None and i.state in wanted for i in infos)


def wait_succeeded(client, ids, timeout, wait_for, procs, sup):
    try:
        wait_for(lambda: all_in(client, ids, {"succeeded", "failed", "dead", "cancelled"}),
                 timeout, f"{len(ids)} task(s) to finish")  # fmt: skip
    except BaseException:
        print(procs.output(sup)[-3000:])
        raise
    infos = {i: client.get(i) for i in ids}
    assert all(info.state == "succeeded" for info in infos.values()), infos
    return infos


def test_sigkilled_worker_process_its_task_runs_again(
    procs, ledger, ledger_project, client_for, redis_url, r, wait_for
):
    p = ledger_project(visibility="1s", grace="5s", concurrency=2)
    client = client_for(p)
    sup = procs.spawn(WORKER, p.root, procs.env(redis_url, DTQS_TEST_LEDGER=str(ledger.path)))
    task = client.submit("work", {"sleep": 2})

    (first,) = wait_for(lambda: ledger.starts(task), 10, "the task to start")
    (child,) = procs.workers(sup)
    assert child.pid == first.pid
    child.send_signal(signal.SIGKILL)

    info = wait_succeeded(client, [task], 15, wait_for, procs, sup)[task]
    assert info.attempts == 2
    starts, dones = ledger.starts(task), ledger.dones(task)
    assert [e.attempt for e in starts] == [1, 2]
    assert starts[1].pid != first.pid  # a new worker process ran it
    assert [e.attempt for e in dones] == [2]
    assert sup.poll() is None, "the supervisor must outlive a worker process's crash"

    sup.send_signal(signal.SIGTERM)
    procs.wait_exit(sup, 10)
    procs.assert_no_orphans(p.root)


def test_sigterm_releases_unfinished_tasks_at_once(
    procs, ledger, ledger_project, client_for, redis_url, r, wait_for
):
    # A 60 s lease: only the release on stop can bring the tasks back this soon.
    p = ledger_project(visibility="60s", grace="500ms", concurrency=2)
    client = client_for(p)
    env = procs.env(redis_url, DTQS_TEST_LEDGER=str(ledger.path), DTQS_TEST_SLEEP_S="30")
    sup = procs.spawn(WORKER, p.root, env)
    ids = [client.submit("work", {}) for _ in range(5)]
    running = wait_for(lambda: len(ledger.starts()) == 2 and ledger.starts(), 10, "2 starts")
    assert all_in(client, [e.task_id for e in running], {"running"})

    began = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    procs.wait_exit(sup, 0.5 + 3)
    elapsed = time.monotonic() - began
    assert elapsed < 0.5 + 3, elapsed
    procs.assert_no_orphans(p.root, timeout=0.5)

    infos = {i: client.get(i) for i in ids}
    assert {i: info.state for i, info in infos.items()} == {i: "queued" for i in ids}
    assert {i: info.attempts for i, info in infos.items()} == {i: 0 for i in ids}
    assert client.queues()["default"]["active"] == 0
    assert ledger.dones() == []

    env["DTQS_TEST_SLEEP_S"] = "0"
    sup2 = procs.spawn(WORKER, p.root, env)
    infos = wait_succeeded(client, ids, 15, wait_for, procs, sup2)
    assert {i: info.attempts for i, info in infos.items()} == {i: 1 for i in ids}
    assert Counter(e.task_id for e in ledger.dones()) == Counter(ids)
    assert Counter(e.task_id for e in ledger.starts()) == Counter(
        ids + [e.task_id for e in running]
    )
    sup2.send_signal(signal.SIGTERM)
    procs.wait_exit(sup2, 10)
    procs.assert_no_orphans(p.root)


def test_sigterm_lets_short_tasks_finish_and_starts_no_more(
    procs, ledger, ledger_project, client_for, redis_url, r, wait_for
):
    p = ledger_project(visibility="5s", grace="5s", concurrency=2)
    client = client_for(p)
    env = procs.env(redis_url, DTQS_TEST_LEDGER=str(ledger.path), DTQS_TEST_SLEEP_S="1")
    sup = procs.spawn(WORKER, p.root, env)
    ids = [client.submit("work", {}) for _ in range(8)]
    running = wait_for(lambda: len(ledger.starts()) == 2 and ledger.starts(), 10, "2 starts")

    signalled_at = time.time()
    began = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    procs.wait_exit(sup, 2.5)
    assert time.monotonic() - began < 2.5
    procs.assert_no_orphans(p.root, timeout=0.5)

    ran = sorted(e.task_id for e in running)
    assert sorted(e.task_id for e in ledger.dones()) == ran
    late = [e for e in ledger.starts() if e.at > signalled_at]
    assert late == [], "no task may start after the signal"
    assert len(ledger.starts()) == 2
    for i in ran:
        info = client.get(i)
        assert (info.state, info.attempts) == ("succeeded", 1), info
    rest = [i for i in ids if i not in ran]
    infos = {i: client.get(i) for i in rest}
    assert {i: (x.state, x.attempts) for i, x in infos.items()} == {i: ("queued", 0) for i in rest}
    assert sum(client.queues()["default"]["pending"].values()) == 6


def test_second_sigterm_exits_now_and_leases_recover_the_task(
    procs, ledger, ledger_project, client_for, redis_url, r, wait_for
):
    p = ledger_project(visibility="1s", grace="30s", concurrency=1)
    client = client_for(p)
    env = procs.env(redis_url, DTQS_TEST_LEDGER=str(ledger.path), DTQS_TEST_SLEEP_S="10")
    sup = procs.spawn(WORKER, p.root, env)
    ids = [client.submit("work", {}) for _ in range(3)]
    (first,) = wait_for(lambda: ledger.starts(), 10, "a start")

    sup.send_signal(signal.SIGTERM)
    # Graceful: the 10 s task holds both processes up (grace is 30 s).
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        assert sup.poll() is None and procs.workers(sup), "stopped before its task finished"
        time.sleep(0.05)

    began = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    procs.wait_exit(sup, 1.5)
    assert time.monotonic() - began < 1.5
    procs.assert_no_orphans(p.root, timeout=0.5)
    assert ledger.dones() == []
    assert client.get(first.task_id).state == "running"  # until its lease expires

    env["DTQS_TEST_SLEEP_S"] = "0"
    sup2 = procs.spawn(WORKER, p.root, env)
    infos = wait_succeeded(client, ids, 15, wait_for, procs, sup2)
    assert infos[first.task_id].attempts == 2
    assert Counter(e.task_id for e in ledger.dones()) == Counter(ids)  # lost == 0, no doubles
    sup2.send_signal(signal.SIGTERM)
    procs.wait_exit(sup2, 10)
    procs.assert_no_orphans(p.root)


def test_two_signals_in_quick_succession_still_force(
    procs, ledger, ledger_project, client_for, redis_url, r, wait_for
):
    # Ctrl-C twice fast: two signals may land within one tick of the supervisor's loop;
    # the second must still mean "exit now", not be merged into the first. (Two kill()s
    # with no gap at all can be merged by the kernel itself while the first is pending;
    # no program can count those, so the test leaves the scheduler a moment.)
    p = ledger_project(visibility="1s", grace="30s", concurrency=1)
    client = client_for(p)
    env = procs.env(redis_url, DTQS_TEST_LEDGER=str(ledger.path), DTQS_TEST_SLEEP_S="10")
    sup = procs.spawn(WORKER, p.root, env)
    client.submit("work", {})
    wait_for(lambda: ledger.starts(), 10, "a start")

    began = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    time.sleep(0.02)
    sup.send_signal(signal.SIGTERM)
    procs.wait_exit(sup, 5)
    assert time.monotonic() - began < 1.5
    assert ledger.dones() == []
    procs.assert_no_orphans(p.root, timeout=0.5)
