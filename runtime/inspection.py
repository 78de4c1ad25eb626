"""Inspection and administration: queue depths, task listings, dead letters, workers.

Part of the Client (a mixin, so that ``Client`` stays the one public facade); these
methods read what the engine keeps in Redis and never submit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from dtqs.runtime import listing
from dtqs.runtime.errors import PayloadValidationError, QueueNotFoundError, UnknownFunctionError
from dtqs.runtime.redis.keys import QueueKeys
from dtqs.runtime.stats import queue_stats
from dtqs.runtime.task import STATES, TaskInfo

if TYPE_CHECKING:
    from dtqs.runtime.manifest import FunctionSpec, Manifest, QueueSpec
    from dtqs.runtime.redis.broker import Broker

#: Levels assumed for a queue the manifest no longer declares (the schema's maximum).
MAX_LEVELS = 10


class Inspection:
    """Reads and administers what the engine keeps; mixed into Client."""

    broker: Broker
    manifest: Manifest

    def function(self, name: str) -> FunctionSpec:
        spec = self.manifest.functions.get(name) if isinstance(name, str) else None
        if spec is None:
            raise UnknownFunctionError(f"unknown function {name!r}")
        return spec

    def queue(self, name: str) -> QueueSpec:
        spec = self.manifest.queues.get(name)
        if spec is None:
            raise QueueNotFoundError(f"unknown queue {name!r}")
        return spec

    def _qkeys_for(self, queue: str) -> QueueKeys:
        spec = self.manifest.queues.get(queue)
        return self.broker.qkeys(queue, len(spec.priorities) if spec else MAX_LEVELS)

    def queues(self) -> dict[str, dict[str, Any]]:
        """Per queue: depth per priority level, scheduled, in flight, dead, paused, counters
        and the autoscaling signals (``autoscale``, see runtime/stats.py)."""
        return {s.name: s.as_counts() for s in queue_stats(self.broker, self.manifest)}

    def list_tasks(
        self,
        queue: str | None = None,
        function: str | None = None,
        state: str | None = None,
        limit: int = 100,
        cursor: listing.Cursor = (0, 0, 0),
    ) -> tuple[list[TaskInfo], listing.Cursor | None]:
        """A page of tasks, newest first per state, and where the next page starts.

        Bounded work per call (runtime/listing.py): with a function or state filter at
        most 1,000 tasks are examined, so a page may hold fewer than `limit` (even none)
        and still have a next cursor.
        """
        if state is not None and state not in STATES:
            raise PayloadValidationError(f"state: expected one of {', '.join(STATES)}")
        if function is not None:
            self.function(function)
        queues = [self.queue(queue)] if queue else list(self.manifest.queues.values())
        qks = [self.broker.qkeys(q.name, len(q.priorities)) for q in queues]
        return listing.page(
            self.broker, qks, function=function, state=state, limit=limit, cursor=cursor
        )

    def dead_letters(
        self, queue: str, function: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[TaskInfo]:
        """Dead tasks of one queue, oldest first, with their errors and traceback."""
        return self.dead_letter_page(queue, function, limit, offset)[0]

    def replay(self, queue: str, ids: Sequence[str]) -> list[str]:
        """Send the named dead letters back to their queue, attempts reset; returns their ids."""
        qk = self.broker.qkeys(queue, len(self.queue(queue).priorities))
        with self.broker.translated():
            return self.broker.scripts.replay(qk, "", ids, len(ids))

    def purge(self, queue: str, ids: Sequence[str]) -> int:
        """Delete the named dead letters for good; returns how many."""
        qk = self.broker.qkeys(queue, len(self.queue(queue).priorities))
        with self.broker.translated():
            return self.broker.scripts.purge(qk, "", ids, len(ids))

    def pause(self, queue: str, paused: bool = True) -> None:
        self.broker.set_paused(self.broker.qkeys(queue, len(self.queue(queue).priorities)), paused)

    def workers(self) -> list[dict[str, Any]]:
        return self.broker.workers()

    # -- dead letters by page and in bulk --

    def queue_counts(self, queue: str) -> dict[str, Any]:
        """One queue's entry of queues(); raises QueueNotFoundError for an unknown queue."""
        self.queue(queue)
        return queue_stats(self.broker, self.manifest, [queue])[0].as_counts()

    def _matching(self, qk: QueueKeys, ids: list[str], function: str | None) -> list[str]:
        if function is None:
            return ids
        functions = self.broker.task_functions(qk, ids)
        return [i for i, f in zip(ids, functions, strict=True) if f == function]

    def dead_letter_page(
        self,
        queue: str,
        function: str | None = None,
        limit: int = 100,
        offset: int = 0,
        *,
        scan_batch: int = 1000,
    ) -> tuple[list[TaskInfo], int | None]:
        """Up to `limit` dead letters of one queue, oldest first, from position `offset`
        of its dead set on; and the position the next page starts at (None: no more).

        Unlike dead_letters(), a function filter still fills the page: the dead set is
        scanned (reading function names only) until `limit` match or it ends.
        """
        qk = self.broker.qkeys(queue, len(self.queue(queue).priorities))
        # NOTE: one id more than the page needs tells whether anything follows it.
        batch = limit + 1 if function is None else max(limit + 1, scan_batch)
        chosen: list[str] = []
        next_offset: int | None = None
        while True:
            ids = self.broker.dead_ids(qk, offset, batch)
            taken = self._matching(qk, ids, function)[: limit - len(chosen)]
            chosen += taken
            if len(chosen) == limit:
                end = ids.index(taken[-1]) + 1
                next_offset = offset + end if end < len(ids) or len(ids) == batch else None
                break
            if len(ids) < batch:
                break
            offset += len(ids)
        return [TaskInfo.from_record(r) for r in self.broker.task_records(qk, chosen)], next_offset

    def replay_all(self, queue: str, function: str | None = None, *, scan_batch: int = 1000) -> int:
        """Replay every dead letter of a queue (of one function, if given); returns how many."""
        return self._each_dead(queue, function, scan_batch, purge=False)

    def purge_all(self, queue: str, function: str | None = None, *, scan_batch: int = 1000) -> int:
        """Delete every dead letter of a queue (of one function, if given); returns how many."""
        return self._each_dead(queue, function, scan_batch, purge=True)

    def _each_dead(self, queue: str, function: str | None, scan_batch: int, *, purge: bool) -> int:
        """Replay or purge the matching dead letters, by explicit ids, `scan_batch` at a time.

        NOTE: the scripts' own "oldest `limit`" mode filters after choosing, so a batch
        of other functions' (or unreplayable) dead letters would end a loop early;
        explicit ids do not. Only the letters present at the start are visited, so a
        replayed task that dies again meanwhile is not replayed twice.
        """
        qk = self.broker.qkeys(queue, len(self.queue(queue).priorities))
        left = self.broker.dead_count(qk)
        offset = total = 0
        while left > 0:
            ids = self.broker.dead_ids(qk, offset, min(scan_batch, left))
            if not ids:
                break
            chosen = self._matching(qk, ids, function)
            done = 0
            if chosen:
                with self.broker.translated():
                    if purge:
                        done = self.broker.scripts.purge(qk, function or "", chosen, len(chosen))
                    else:
                        replay = self.broker.scripts.replay
                        done = len(replay(qk, function or "", chosen, len(chosen)))
            total += done
            left -= len(ids)
            offset += len(ids) - done  # what stayed (another function, unreplayable) is passed
        return total

    # -- waiting tasks by function (removed functions: `dtqs queues`, hot reload) --

    #: Most queued or scheduled tasks read per queue when counting them by function.
    WAITING_SCAN_MAX = 10_000

    def waiting_by_function(
        self, queue: str, limit: int = WAITING_SCAN_MAX
    ) -> tuple[dict[str, int], bool]:
        """Tasks of one queue that are queued or scheduled, counted by function.

        A bounded scan: at most `limit` tasks are read. Returns the counts and whether
        they are complete (False: the queue holds more and the counts are lower bounds).
        A queue the manifest does not declare (any more) is scanned too.
        """
        qk = self._qkeys_for(queue)
        ids, complete = self.broker.waiting_ids(qk, limit)
        counts: dict[str, int] = {}
        for name in self.broker.task_functions(qk, ids):
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
        return counts, complete

    def wake_parked(self, functions: Iterable[str], limit: int = WAITING_SCAN_MAX) -> int:
        """Run now the tasks parked because a worker did not know their function, for
        `functions` that are back (hot reload); else they wait for their next look."""
        wanted = {f for f in functions if f in self.manifest.functions}
        queues = {self.manifest.functions[f].queue for f in wanted}
        return sum(self.broker.wake_parked(self._qkeys_for(q), wanted, limit) for q in queues)
