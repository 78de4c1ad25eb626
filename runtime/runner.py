"""One queue inside one worker process: its handler slots and acknowledger.

One slot thread at a time is the fetcher (the role passes between idle slot threads
through the work queue). It leases only as many tasks as there are free slots (no
hidden prefetch), blocks on the queue's wake-up list when it is empty, queues what it
leased for the other slots and runs the first task itself; outcomes are recorded in
batches, fenced by each task's lease token.
"""

from __future__ import annotations

import itertools
import logging
import queue as queue_mod
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from dtqs.runtime.errors import DtqsError
from dtqs.runtime.manifest import QueueSpec
from dtqs.runtime.redis.scripts import EndPolicy, Leased, Outcome

if TYPE_CHECKING:
    from dtqs.runtime.worker import Worker

log = logging.getLogger("dtqs.worker")

#: Most tasks leased per fetch (also bounded by free slots).
FETCH_MAX = 100
#: Most outcomes recorded per finish call.
ACK_MAX = 500
#: Longest an idle fetcher blocks before it looks again (pause/resume, due retries).
IDLE_WAIT_S = 1.0
#: Longest pause between fetches that failed (Redis away).
RETRY_MAX_S = 0.5
#: The fetcher's role, passed between slot threads through the work queue.
FETCH = object()


@dataclass(eq=False)
class Running:
    """A leased task from fetch until its outcome is recorded or it is released."""

    leased: Leased
    runner: QueueRunner
    deadline: float = 0.0  #: monotonic; 0 until the handler starts
    thread: threading.Thread | None = None
    started: bool = False
    abandoned: bool = False  #: timed out: the handler's late result is dropped
    done: bool = False  #: an outcome exists (possibly not yet recorded)
    is_async: bool = False  #: runs on the event loop; asyncio enforces its timeout


class QueueRunner:
    """The slots, fetcher and acknowledger of one queue inside one worker process."""

    def __init__(self, worker: Worker, spec: QueueSpec, concurrency: int) -> None:
        self.worker = worker
        self.spec = spec
        self.concurrency = concurrency
        self.qk = worker.broker.qkeys(spec.name, len(spec.priorities))
        self.lease_ms = int(spec.visibility_timeout_s * 1000)
        #: How a task ends for good inside fetch and reclaim (built once: sent every fetch).
        self.end_policy = EndPolicy.of(worker.manifest, spec.name)
        self.free = concurrency
        self.cond = threading.Condition()
        #: Leased tasks for the slot threads, and FETCH: the thread taking it fetches next.
        self.work: queue_mod.SimpleQueue[Running | object | None] = queue_mod.SimpleQueue()
        self.fetching = threading.Lock()  #: held while a fetch call is in flight
        self.idle_wait: float | None = None  #: block this long for a wake-up before fetching
        self.outcomes: queue_mod.SimpleQueue[tuple[Running, Outcome] | None] = (
            queue_mod.SimpleQueue()
        )
        self.threads: list[threading.Thread] = []
        self._calls = itertools.count(1)
        self._acker: threading.Thread | None = None

    # -- threads ---------------------------------------------------------------

    def start(self) -> None:
        for _ in range(self.concurrency):
            self.add_slot_thread()
        name = self.spec.name
        self._acker = threading.Thread(target=self.ack_loop, name=f"ack-{name}", daemon=True)
        self._acker.start()
        self.work.put(FETCH)

    def add_slot_thread(self) -> None:
        t = threading.Thread(target=self.slot_loop, name=f"slot-{self.spec.name}", daemon=True)
        self.threads.append(t)
        t.start()

    def level_order(self) -> list[int]:
        """Strict: levels in order. Weighted: a weighted-random order without replacement."""
        n = len(self.spec.priorities)
        if not self.spec.weights:
            return list(range(n))
        weights = [self.spec.weights.get(p, 1) for p in self.spec.priorities]
        levels = list(range(n))
        order = []
        while levels:
            pick = random.choices(levels, [weights[i] for i in levels])[0]
            order.append(pick)
            levels.remove(pick)
        return order

    def slot_loop(self) -> None:
        me = threading.current_thread()
        while True:
            item = self.work.get()
            if item is None:
                return
            entry = self.fetch_turn() if item is FETCH else cast(Running, item)
            if entry is None:
                continue
            entry.thread = me
            self.worker.run_sync(entry)
            if entry.abandoned:
                return  # a replacement thread took this slot over when it timed out

    def fetch_turn(self) -> Running | None:
        """This thread holds the fetcher's role: fetch until tasks come, queue them, pass
        the role on (FETCH back in the work queue, behind them) and return the first plain
        task to run here. PERF: that task reaches its handler without waking another
        thread. None: the worker winds down; the role is not passed on, fetching ends."""
        w = self.worker
        pause = 0.1
        while True:
            with self.cond:
                while self.free <= 0 and not w.stopping.is_set():
                    self.cond.wait(0.5)
                want = min(self.free, FETCH_MAX)
            try:
                entries = self.lease(want)
                pause = 0.1
            except DtqsError as exc:
                w.redis_trouble(exc)
                w.stopping.wait(pause)
                # NOTE: at most RETRY_MAX_S between tries: fetching resumes within about
                # that long of Redis coming back (each try while it is away is cheap).
                pause = min(pause * 2, RETRY_MAX_S)
                self.idle_wait = None
                continue
            if entries is None:
                return None
            if not entries:
                continue
            with self.cond:
                self.free -= len(entries)
            plain = w.dispatch(entries)
            if not plain:  # only `async def` tasks: keep the role, no other thread to wake
                time.sleep(0)  # PERF: let the event loop take the GIL before the next call
                continue
            for entry in plain[1:]:
                self.work.put(entry)
            self.work.put(FETCH)
            return plain[0]

    def lease(self, want: int) -> list[Running] | None:
        """One fetch (after the idle wait when the queue looked empty); None once the
        worker stops or recycles. Under `fetching`, so that stop() can wait for a call in
        flight: tasks a wait leased after the signal go back before the process exits."""
        w = self.worker
        with self.fetching:
            if w.stopping.is_set() or w.draining.is_set():
                return None
            token_base = f"{w.worker_id}:{self.spec.name}:{next(self._calls)}"
            with w.broker.translated():
                if self.idle_wait is None:
                    got = w.broker.scripts.fetch(
                        self.qk, want, self.lease_ms, token_base, self.level_order(),
                        self.end_policy,
                    )  # fmt: skip
                else:
                    got = w.broker.scripts.wait_then_fetch(
                        self.qk, self.idle_wait, want, self.lease_ms, token_base,
                        self.level_order(), self.end_policy,
                    )  # fmt: skip
            self.idle_wait = None
            if len(got.tasks) < want:
                self.idle_wait = IDLE_WAIT_S
                if got.next_due_ms is not None:
                    due_s = (got.next_due_ms - got.now_ms) / 1000
                    self.idle_wait = min(self.idle_wait, max(due_s, 0.001))
            entries = [Running(t, self) for t in got.tasks]
            if entries:
                w.hold(entries)
                # NOTE: a wait may end after a signal or a recycle began: run none of
                # what it leased, give it back now (held first, so stop() sees it too).
                if w.stopping.is_set() or w.draining.is_set():
                    self.give_back(entries)
                    return None
            return entries

    def wait_fetch_idle(self, timeout_s: float) -> None:
        """Wait (at most timeout_s) for a fetch in flight to end; called while stopping."""
        if self.fetching.acquire(timeout=max(timeout_s, 0.0)):
            self.fetching.release()

    def give_back(self, entries: Sequence[Running]) -> None:
        """Release leased tasks that will not run here (fenced: a second release is a no-op)."""
        try:
            with self.worker.broker.translated():
                self.worker.broker.scripts.release(
                    self.qk, [(e.leased.id, e.leased.token) for e in entries]
                )
        except DtqsError as exc:
            log.warning("could not release %d task(s) (leases will expire): %s", len(entries), exc)
        self.worker.unhold(entries, finished=False)

    def slot_done(self) -> None:
        with self.cond:
            self.free += 1
            self.cond.notify()

    def ack_loop(self) -> None:
        stop = False
        while not stop:
            first = self.outcomes.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < ACK_MAX:
                try:
                    item = self.outcomes.get_nowait()
                except queue_mod.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self.record(batch)

    def record(self, batch: Sequence[tuple[Running, Outcome]]) -> None:
        """Write outcomes, retrying while Redis is away; the leases keep being renewed."""
        w = self.worker
        pause = 0.05
        while True:
            try:
                with w.broker.translated():
                    flags = w.broker.scripts.finish(
                        self.qk, [o for _, o in batch], self.spec.dead_letter_max
                    )
                break
            except DtqsError as exc:
                if w.hard_stop.is_set():
                    return  # leases will expire and the tasks run again
                w.redis_trouble(exc)
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
        for (_, outcome), ok in zip(batch, flags, strict=True):
            if not ok:
                log.warning(
                    "outcome of task %s refused: its lease moved on (it ran too long or "
                    "Redis lost the lease); the task is someone else's now",
                    outcome.id,
                )
        w.unhold([entry for entry, _ in batch])
