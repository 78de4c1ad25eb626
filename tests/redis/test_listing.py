"""Listings do bounded work per page, whatever the backlog and the filters."""

from __future__ import annotations

import pytest

from dtqs.runtime import listing
from dtqs.runtime.client import Client

pytestmark = pytest.mark.redis

MANIFEST = """\
version: 1
queues:
  default:
    visibility_timeout: 5s
  other:
    priorities: [high, low]
functions:
  echo:
    handler: functions/tasks.py:echo
  rare:
    handler: functions/tasks.py:echo
  elsewhere:
    handler: functions/tasks.py:echo
    queue: other
"""
FILES = {"functions/tasks.py": "def echo(payload):\n    return payload\n"}


@pytest.fixture
def client(project, redis_url, r):
    c = Client(redis_url=redis_url, manifest=project(MANIFEST, FILES).manifest())
    yield c
    c.close()


def commands(r) -> dict[str, int]:
    stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


def cost(r, call):
    """(call's result, Redis commands it sent by name, round trips it made)."""
    before = commands(r)
    result = call()
    after = commands(r)
    sent = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    sent.pop("info", None)
    return result, sent


def test_a_filter_examines_at_most_scan_max_tasks_per_page_and_resumes(client, r):
    rare = client.submit("rare", {"n": 0})  # the oldest: listed last (newest first)
    n = 3 * listing.SCAN_MAX
    client.submit_many([{"function": "echo", "payload": {"n": i}} for i in range(n)])
    cursor: listing.Cursor | None = (0, 0, 0)
    pages = 0
    found = []
    while cursor is not None:
        (items, cursor), sent = cost(
            r, lambda c=cursor: client.list_tasks(function="rare", limit=1, cursor=c)
        )
        pages += 1
        found += [i.id for i in items]
        # NOTE: before, this made one round trip per queued id (25 s for 100,000).
        assert sent.get("hmget", 0) <= listing.SCAN_MAX, sent
        assert sent.get("hgetall", 0) <= 1, sent
        assert sum(sent.values()) <= listing.SCAN_MAX + 2 * 20, sent
    assert found == [rare]
    assert pages >= 3  # the backlog took several bounded pages, each with a cursor


def test_an_unfiltered_page_reads_only_what_it_returns(client, r):
    client.submit_many([{"function": "echo", "payload": {"n": i}} for i in range(500)])
    (items, cursor), sent = cost(r, lambda: client.list_tasks(limit=50))
    assert len(items) == 50 and cursor is not None
    assert sent.get("hgetall") == 50 and "hmget" not in sent, sent
    assert sent.get("lrange", 0) + sent.get("zrevrange", 0) <= 20, sent


def test_pages_follow_each_other_without_gaps_or_repeats(client, r):
    ids = client.submit_many([{"function": "echo", "payload": {"n": i}} for i in range(25)])
    ids += client.submit_many([{"function": "elsewhere", "payload": {}} for _ in range(7)])
    client.submit("echo", {"later": True}, delay=60)
    seen: list[str] = []
    cursor: listing.Cursor | None = (0, 0, 0)
    while cursor is not None:
        items, cursor = client.list_tasks(limit=4, cursor=cursor)
        seen += [i.id for i in items]
    assert len(seen) == len(set(seen)) == 33
    assert set(ids) <= set(seen)
    queued, _ = client.list_tasks(state="queued", limit=100)
    scheduled, _ = client.list_tasks(state="scheduled", limit=100)
    assert len(queued) == 32 and [i.payload for i in scheduled] == [{"later": True}]


def test_a_function_filter_pages_through_many_structures(client, r):
    client.submit_many([{"function": "elsewhere", "payload": {"n": i}} for i in range(5)])
    client.submit_many([{"function": "echo", "payload": {"n": i}} for i in range(5)])
    seen: list[str] = []
    cursor: listing.Cursor | None = (0, 0, 0)
    while cursor is not None:
        items, cursor = client.list_tasks(function="elsewhere", limit=2, cursor=cursor)
        assert all(i.function == "elsewhere" for i in items)
        seen += [i.id for i in items]
    assert len(seen) == 5
