"""Scenarios 9 and 10 of issue 6: replies lost on the wire (the TCP fault proxy forwards
a command to Redis, which runs it, and cuts the connection before the reply).
"""

from __future__ import annotations

import time

import pytest

from .conftest import request

pytestmark = pytest.mark.timeout(90)

#: RESP bytes only an enqueue call carries (its idempotency-prefix key), not its source.
ENQUEUE = b"dtqs:{default}:idem:\r\n"
#: RESP bytes only a finish call recording a success carries.
ACK = b"$9\r\nsucceeded\r\n"


def _stored(stack) -> list[str]:
    return [k.rsplit(":", 1)[1] for k in stack.node.client().scan_iter("dtqs:{default}:t:*")]


def test_9_ambiguous_submit_answers_503_and_the_retry_gets_the_same_id(
    stack, fault_proxy, fault_report, invariants
):
    s = stack()
    proxy = fault_proxy(s.node.port)
    port = s.api(redis_url=proxy.url)
    s.worker(1)
    assert s.submit({}).status == 202  # scripts loaded, clock read: only the fault remains
    warm = set(_stored(s))

    # The enqueue and redis-py's one retry on a fresh connection both lose their reply.
    proxy.drop_replies(ENQUEUE, 2)
    key = {"Idempotency-Key": "order-4711"}
    body = {"function": "work", "payload": {"order": 4711}}
    first = request(port, "POST", "/v1/tasks", body, key)
    stored = sorted(set(_stored(s)) - warm)
    retries = [request(port, "POST", "/v1/tasks", body, key) for _ in range(2)]
    ids = {r.body["id"] for r in retries if r.status == 202}

    # One lost reply only: redis-py's retry finds the task it stored, the API says so.
    proxy.drop_replies(ENQUEUE, 1)
    healed = request(port, "POST", "/v1/tasks", {"function": "work", "payload": {}})
    healed_stored = sorted(set(_stored(s)) - warm - set(stored))
    s.wait_done([*ids, healed.body["id"]], 20)
    figs = s.figures([*ids, healed.body["id"]])
    problems = invariants(s.node.client())
    fault_report(9, "ambiguous submit (reply lost), retried with the Idempotency-Key",
                 accepted=len(ids) + 1, lost=figs.lost, dup=figs.dup, recover_s=None,
                 first_answer=first.status, first_answer_s=round(first.elapsed_s, 3),
                 retry_answers=[r.status for r in retries], stored_by_ambiguous=len(stored),
                 single_loss_answer=healed.status, replies_dropped=proxy.dropped,
                 invariant_violations=len(problems))  # fmt: skip
    assert first.status == 503 and first.headers.get("Retry-After")
    assert len(stored) == 1, stored  # stored once, though its reply never came
    assert [r.status for r in retries] == [202, 202] and ids == set(stored)
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in retries)
    assert healed.status == 202 and healed_stored == [healed.body["id"]]
    assert figs.lost == 0 and figs.dup == 0 and proxy.dropped == 3
    assert problems == []


def test_10_acknowledgements_lost_nothing_lost(stack, fault_proxy, fault_report, invariants):
    s = stack(lease="2s", concurrency=4)
    proxy = fault_proxy(s.node.port)
    s.api()
    sup = s.worker(2, redis_url=proxy.url, DTQS_TEST_SLEEP_S="0.01")
    proxy.drop_replies(ACK, 50, every=3)
    ids: list[str] = []
    for _ in range(10):
        answer = s.submit_batch(100)
        assert answer.status == 202, answer
        ids += answer.body["ids"]
    took = s.wait_done(ids, 60)
    s.wait_for(lambda: s.node.client().zcard("dtqs:{default}:active") == 0, 10, "no lease left")
    time.sleep(0.5)
    figs = s.figures(ids)
    states = [s.node.client().hget(f"dtqs:{{default}}:t:{i}", "state") for i in ids]
    processed = int(s.node.client().hget("dtqs:{default}:stats", "processed") or 0)
    problems = invariants(s.node.client())
    fault_report(10, "connection dropped during 50 of 1,000 acknowledgements",
                 accepted=len(ids), lost=figs.lost, dup=figs.dup, recover_s=None,
                 replies_dropped=proxy.dropped, recorded_once=processed,
                 drain_s=round(took, 2), invariant_violations=len(problems))  # fmt: skip
    assert proxy.dropped == 50
    assert figs.lost == 0 and figs.dup <= 50
    assert set(states) == {"succeeded"} and processed == len(ids)
    assert sup.poll() is None
    assert problems == []
