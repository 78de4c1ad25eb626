"""One queue inside one worker process: its fetcher, handler slots and acknowledger.

The fetcher leases only as many tasks as there are free slots (no hidden prefetch),
blocks on the queue's wake-up list when it is empty, and hands tasks to the Worker;
outcomes are recorded in batches, fenced by each task's lease token.
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
from typing import TYPE_CHECKING

from dtqs.runtime.errors import DtqsError
from dtqs.runtime.manifest import QueueSpec
from dtqs.runtime.redis.scripts import Leased, Outcome

if TYPE_CHECKING:
    from dtqs.runtime.worker import Worker

log = logging.getLogger("dtqs.worker")

#: Most tasks leased per fetch (also bounded by free slots).
FETCH_MAX = 100
#: Most outcomes recorded per finish call.
ACK_MAX = 500
#: Longest an idle fetcher blocks before it looks again (pause/resume, due retries).
IDLE_WAIT_S = 1.0


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
        self.free = concurrency
        self.cond = threading.Condition()
        self.work: queue_mod.SimpleQueue[Running | None] = queue_mod.SimpleQueue()
        self.outcomes: queue_mod.SimpleQueue[tuple[Running, Outcome] | None] = (
            queue_mod.SimpleQueue()
        )
        self.threads: list[threading.Thread] = []
        self._calls = itertools.count(1)
        self._acker: threading.Thread | None = None
        self._fetcher: threading.Thread | None = None

    # -- threads ---------------------------------------------------------------

    def start(self) -> None:
        for _ in range(self.concurrency):
            self.add_slot_thread()
        name = self.spec.name
        self._acker = threading.Thread(target=self.ack_loop, name=f"ack-{name}", daemon=True)
        self._fetcher = threading.Thread(target=self.fetch_loop, name=f"fetch-{name}", daemon=True)
        self._acker.start()
        self._fetcher.start()

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

    def fetch_loop(self) -> None:
        w = self.worker
        pause = 0.1
        idle_wait: float | None = None  #: block this long for a wake-up before fetching
        while not w.stopping.is_set():
            with self.cond:
                while self.free <= 0 and not w.stopping.is_set():
                    self.cond.wait(0.5)
                want = min(self.free, FETCH_MAX)
            if w.stopping.is_set() or w.draining.is_set():
                break
            token_base = f"{w.worker_id}:{self.spec.name}:{next(self._calls)}"
            try:
                with w.broker.translated():
                    if idle_wait is None:
                        got = w.broker.scripts.fetch(
                            self.qk, want, self.lease_ms, token_base, self.level_order()
                        )
                    else:
                        got = w.broker.scripts.wait_then_fetch(
                            self.qk, idle_wait, want, self.lease_ms, token_base,
                            self.level_order(),
                        )  # fmt: skip
                pause = 0.1
            except DtqsError as exc:
                w.redis_trouble(exc)
                w.stopping.wait(pause)
                pause = min(pause * 2, 2.0)
                idle_wait = None
                continue
            if got.tasks:
                entries = [Running(t, self) for t in got.tasks]
                w.hold(entries)
                # NOTE: a wait may end after a signal or a recycle began (held first, so
                # that stop() releases them if it runs now): run no more, give them back.
                if w.stopping.is_set() or w.draining.is_set():
                    self.give_back(entries)
                    break
                with self.cond:
                    self.free -= len(entries)
                w.dispatch(entries)
                time.sleep(0)  # PERF: let a woken slot thread take the GIL before this fetches
            idle_wait = None
            if len(got.tasks) < want:
                idle_wait = IDLE_WAIT_S
                if got.next_due_ms is not None:
                    idle_wait = min(idle_wait, max((got.next_due_ms - got.now_ms) / 1000, 0.001))

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

    def slot_loop(self) -> None:
        me = threading.current_thread()
        while True:
            entry = self.work.get()
            if entry is None:
                return
            entry.thread = me
            self.worker.run_sync(entry)
            if entry.abandoned:
                return  # a replacement thread took this slot over when it timed out

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
