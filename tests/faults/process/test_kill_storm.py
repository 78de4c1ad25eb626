"""Scenario 2 of issue 6: a SIGKILL storm. 10,000 tasks over HTTP (batches of 100 from 8
client threads), 4 worker processes; every 2 s for 30 s two random worker processes
are SIGKILLed (the supervisor respawns them).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter

import pytest

pytestmark = pytest.mark.timeout(120)

TASKS, BATCH, CLIENTS = 10_000, 100, 8
CONCURRENCY = 4  #: slots per worker process: the most tasks one kill can interrupt
MAX_ATTEMPTS = 5


def test_2_sigkill_storm_loses_nothing(stack, fault_report, invariants):
    s = stack(lease="2s", concurrency=CONCURRENCY, max_attempts=MAX_ATTEMPTS)
    s.api()
    sup = s.worker(4, DTQS_TEST_SLEEP_S="0.03")
    s.wait_for(lambda: len(s.procs.workers(sup)) == 4, 20, "4 worker processes")

    ids: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()

    def client(me: int) -> None:
        for _ in range(me, TASKS // BATCH, CLIENTS):
            answer = s.submit_batch(BATCH)
            with lock:
                if answer.status == 202:
                    ids.extend(answer.body["ids"])
                else:
                    refused.append(answer.status)

    clients = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in clients:
        t.start()
    kills, short_rounds = 0, 0
    rng = random.Random(6)
    began = time.monotonic()
    for round_ in range(15):
        at = began + 2 * (round_ + 1)
        time.sleep(max(0.0, at - time.monotonic()))
        # A killed worker is respawned after 0.5 s and needs a moment to start: wait up
        # to 1.5 s for two live processes to kill.
        live = s.procs.workers(sup)
        while len(live) < 2 and time.monotonic() < at + 1.5:
            time.sleep(0.05)
            live = s.procs.workers(sup)
        short_rounds += len(live) < 2
        for victim in rng.sample(live, min(2, len(live))):
            try:
                victim.send_signal(signal.SIGKILL)
                kills += 1
            except Exception:  # noqa: BLE001 - it exited by itself meanwhile
                pass
    storm_end = time.time()
    for t in clients:
        t.join(60)

    took = s.wait_done(ids, 80)
    figs = s.figures(ids)
    attempts = Counter(e.attempt for e in s.ledger.starts())
    r = s.node.client()
    dead = r.zcard("dtqs:{default}:dead")
    problems = invariants(r)
    bound = kills * CONCURRENCY
    fault_report(2, "SIGKILL storm: 2 of 4 worker processes every 2 s for 30 s",
                 accepted=len(ids), lost=figs.lost, dup=figs.dup, recover_s=None,
                 kills=kills, rounds_short_of_two_live=short_rounds, dup_bound=bound,
                 max_attempt=max(attempts),
                 starts_by_attempt=dict(sorted(attempts.items())), dead_letters=dead,
                 refused_batches=len(refused), last_done_after_storm_s=round(
                     max(e.at for e in s.ledger.dones()) - storm_end, 2),
                 wait_s=round(took, 1), invariant_violations=len(problems))  # fmt: skip
    assert not refused and len(ids) == TASKS
    assert figs.lost == 0, figs.lost_ids[:10]
    assert figs.dup <= bound, (figs.dup, bound)
    assert max(attempts) <= MAX_ATTEMPTS and dead == 0
    assert sup.poll() is None
    assert problems == []
