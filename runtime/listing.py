"""Task listings (``GET /v1/tasks``, ``Client.list_tasks``) with bounded work per page.

Tasks are indexed per queue in structures by state (pending lists per level, the
scheduled, active, dead and done sets). A page reads them in order, newest first in
each, in at most four round trips whatever the filters and the backlog:

1. the size of every structure from the cursor on (at most ``MAX_STRUCTURES``);
2. the ids of the slice to examine: ``limit`` ids without a per-record filter, else at
   most ``SCAN_MAX``;
3. with a filter (a function, or a final state, which share the done set), each
   examined id's function and state;
4. the records of the tasks on the page.

A filter that matches few of the ids examined gives a short page, even an empty one,
with a ``next_cursor`` to continue from: a page never scans a whole backlog (before
this, ``?function=x&limit=1`` on 100,000 queued tasks made 100,000 round trips).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dtqs.runtime.task import FINAL_STATES, TaskInfo

if TYPE_CHECKING:
    from dtqs.runtime.redis.broker import Broker
    from dtqs.runtime.redis.keys import QueueKeys

#: Most task ids one page examines when a filter is applied per record.
SCAN_MAX = 1000
#: Most index structures (queues x states) one page looks at.
MAX_STRUCTURES = 256
#: What a filter reads of each examined task.
FIELDS = ("function", "state")

Cursor = tuple[int, int, int]  #: (queue index, structure index, offset in it)


def structures(qk: QueueKeys, state: str | None) -> list[tuple[str, str]]:
    """Where tasks of a state are indexed, as (list|zset, key), in listing order."""
    by_state = {
        "running": [("zset", qk.active)],
        "queued": [("list", k) for k in qk.all_pending],
        "scheduled": [("zset", qk.scheduled)],
        "dead": [("zset", qk.dead)],
    }
    finished = [("zset", qk.done)]
    if state is None:
        return [s for group in by_state.values() for s in group] + finished
    return finished if state in FINAL_STATES - {"dead"} else by_state[state]


@dataclass(frozen=True)
class _Place:
    """One structure from the cursor on, with the slice of it this page reads."""

    qi: int
    si: int
    qk: QueueKeys
    kind: str
    key: str
    offset: int = 0
    size: int = 0
    take: int = 0


def page(
    broker: Broker,
    qks: Sequence[QueueKeys],
    *,
    function: str | None,
    state: str | None,
    limit: int,
    cursor: Cursor,
) -> tuple[list[TaskInfo], Cursor | None]:
    """One page of tasks of the queues `qks` and where the next one starts (None: the
    end). See the module's docstring for what it costs."""
    places = _from_cursor(qks, state, cursor)
    sizes = broker.structure_sizes([(p.kind, p.key) for p in places])
    filtered = function is not None or state is not None
    places = _plan(places, sizes, SCAN_MAX if filtered else limit)
    read = broker.structure_ranges([(p.kind, p.key, p.offset, p.take) for p in places])
    found = [(p, i, task_id) for p, ids in zip(places, read, strict=True)
             for i, task_id in enumerate(ids)]  # fmt: skip
    if filtered:
        rows = broker.task_fields([(p.qk, task_id) for p, _, task_id in found], FIELDS)
        found = [
            entry
            for entry, (fn, st) in zip(found, rows, strict=True)
            if (function is None or fn == function) and (state is None or st == state)
        ]
    picked = found[:limit]
    records = broker.task_records_of([(p.qk, task_id) for p, _, task_id in picked])
    infos = [TaskInfo.from_record(r) for r in records]
    if len(picked) == limit:
        last, index, _ = picked[-1]
        return infos, (last.qi, last.si, last.offset + index + 1)
    return infos, _after(places, qks, state)


def _from_cursor(qks: Sequence[QueueKeys], state: str | None, cursor: Cursor) -> list[_Place]:
    qi0, si0, offset0 = cursor
    out: list[_Place] = []
    for qi in range(qi0, len(qks)):
        for si, (kind, key) in enumerate(structures(qks[qi], state)):
            if (qi, si) < (qi0, si0):
                continue
            offset = offset0 if (qi, si) == (qi0, si0) else 0
            out.append(_Place(qi, si, qks[qi], kind, key, offset))
            if len(out) == MAX_STRUCTURES:
                return out
    return out


def _plan(places: list[_Place], sizes: list[int], budget: int) -> list[_Place]:
    """The places to read, each with how many ids (in order, until `budget` is spent);
    a place that ends the plan may be read only in part."""
    planned: list[_Place] = []
    for place, size in zip(places, sizes, strict=True):
        take = min(max(size - place.offset, 0), budget)
        planned.append(dataclasses.replace(place, size=size, take=take))
        budget -= take
        if budget <= 0:
            break
    return planned


def _after(planned: list[_Place], qks: Sequence[QueueKeys], state: str | None) -> Cursor | None:
    """Where the next page starts once everything planned was read (None: the end)."""
    if not planned:
        return None
    last = planned[-1]
    if last.offset + last.take < last.size:
        return (last.qi, last.si, last.offset + last.take)
    if last.si + 1 < len(structures(qks[last.qi], state)):
        return (last.qi, last.si + 1, 0)
    if last.qi + 1 < len(qks):
        return (last.qi + 1, 0, 0)
    return None
