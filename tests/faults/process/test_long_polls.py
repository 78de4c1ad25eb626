"""Scenario 32 (issue 12): 200 concurrent long-polls on a real `dtqs api`.

Before, 12 long-polls (`GET /v1/tasks/{id}?wait=20`) on the default 8 waitress threads
held every thread: /healthz answered after 19 s. Now long-polls wait on threads of
their own (api.max_long_polls, 32 by default, beside --threads 8), a poll past that
budget gets 429 with Retry-After at once, and submissions and probes are answered
while 200 polls are open; a final state wakes its waiters through the engine's
notification (runtime/waiting.py), not a polling loop per waiter.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter

import pytest

from dtqs.runtime.client import Client

from .conftest import Answer, request

pytestmark = pytest.mark.timeout(120)

POLLS = 200
#: The issue's bound for probes and submissions while the polls are open.
PROBE_WITHIN_S = 0.1


def test_32_two_hundred_long_polls_starve_nothing(stack, fault_report, invariants):
    s = stack()
    port = s.api(threads=8)
    client = Client(redis_url=s.node.url, config=s.project.config)
    ids = client.submit_many([{"function": "work", "payload": {}, "delay": 60}] * POLLS)
    answers: dict[str, tuple[Answer, float]] = {}
    lock = threading.Lock()

    def poll(task_id: str) -> None:
        answer = request(port, "GET", f"/v1/tasks/{task_id}?wait=20", timeout_s=30)
        with lock:
            answers[task_id] = (answer, time.time())

    threads = [threading.Thread(target=poll, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    s.wait_for(lambda: len(answers) >= POLLS - 32, 20, "the polls past the budget to be answered")
    time.sleep(0.5)  # the budget's polls are settled in their waits

    probes: dict[str, list[float]] = {}
    for _ in range(5):
        for method, path in (("POST", "/v1/tasks"), ("GET", "/healthz"), ("GET", "/readyz"),
                             ("GET", "/metrics")):  # fmt: skip
            answer = s.submit({}) if method == "POST" else request(port, method, path)
            assert answer.status in (200, 202), (path, answer)
            probes.setdefault(path, []).append(answer.elapsed_s)
    waiting = [i for i in ids if i not in answers]

    cancelled_at = time.time()
    for task_id in waiting:
        client.cancel(task_id)
    for t in threads:
        t.join(30)
    client.close()
    statuses = Counter(a.status for a, _ in answers.values())
    woke = [answers[i][1] - cancelled_at for i in waiting]
    final = {answers[i][0].body["state"] for i in waiting}
    over = [a for a, _ in answers.values() if a.status == 429]
    problems = invariants(s.node.client())
    worst_probe = max(max(v) for v in probes.values())
    fault_report(32, "200 concurrent long-polls on dtqs api (8 threads, 32 long-poll slots)",
                 accepted=None, lost=None, dup=None, recover_s=None,
                 statuses=dict(statuses), waited=len(waiting),
                 probe_max_ms={k: round(max(v) * 1000, 1) for k, v in probes.items()},
                 over_budget_max_ms=round(max(a.elapsed_s for a in over) * 1000, 1),
                 wake_p50_ms=round(statistics.median(woke) * 1000, 1),
                 wake_max_ms=round(max(woke) * 1000, 1),
                 invariant_violations=len(problems))  # fmt: skip
    assert statuses == {200: 32, 429: POLLS - 32}, statuses
    assert all(a.headers.get("Retry-After") == "1" for a in over)
    assert final == {"cancelled"}
    # NOTE: bounds with headroom for a loaded 2-core machine; REPORT.md has the figures
    # (the targets: probes within 100 ms, a waiter woken within 50 ms).
    assert worst_probe < 10 * PROBE_WITHIN_S, probes
    assert max(woke) < 1.0, woke
    assert problems == []
