"""The worker process's background loops, each with start()/stop().

Heartbeat: renews the leases of every task the process holds (from a thread of its
own, so a busy handler cannot let its lease lapse), fails handlers past their
timeout, registers the process as a live worker and asks for a recycle when the
process is too big or has stuck threads. Sweep: the reclaim janitor.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable

from dtqs.runtime.errors import DtqsError
from dtqs.runtime.scalein import BusySignal
from dtqs.runtime.worker import Worker, rss_mb

log = logging.getLogger("dtqs.worker")

#: How often handler deadlines are checked.
TIMEOUT_TICK_S = 0.1
#: A thread stuck this long past its task's timeout makes the process recycle itself.
STUCK_GRACE_S = 5.0
#: After a beat that failed (Redis away), the next try comes this soon.
RETRY_S = 0.5


class Loop:
    """A daemon thread that calls ``tick`` every ``interval_s`` until stopped."""

    def __init__(self, name: str, interval_s: float, tick: Callable[[], None]) -> None:
        self.interval_s = interval_s
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # never started: nothing to join
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:  # NOTE: the first tick at once (the heartbeat's first beat)
            try:
                self._tick()
            except DtqsError as exc:
                log.debug("%s: %s", self._thread.name, exc)
            except Exception:  # a bug here must not stop lease renewal for good
                log.exception("%s failed; continuing", self._thread.name)
            if self._stop.wait(self.interval_s):
                return


class Heartbeat:
    """Lease renewal, timeouts, worker registry and recycling for one Worker."""

    def __init__(
        self, worker: Worker, interval_s: float | None = None, busy: BusySignal | None = None
    ) -> None:
        self.worker = worker
        self.busy = busy  #: tells the supervisor when leases are held (scale-in protection)
        shortest = min(r.spec.visibility_timeout_s for r in worker.runners)
        self.interval_s = (
            interval_s
            or worker.manifest.workers.heartbeat_interval_s
            or max(min(shortest / 3, 5.0), 0.2)
        )
        self._next_beat = 0.0
        self._stuck_since: float | None = None
        self._policy_checked = -1  #: the broker's outage.recoveries when last checked
        self.beaten = threading.Event()  #: set once a beat reached Redis
        self._loop = Loop("heartbeat", TIMEOUT_TICK_S, self.tick)

    def start(self) -> None:
        """Start the loop; its first tick beats. NOTE: no Redis call here, so a worker
        started before Redis (or in an outage) starts, and beats once Redis answers."""
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        try:
            self.worker.durations.flush(self.worker.broker)  # NOTE(metrics): the last deltas
            self.worker.broker.forget_worker(self.worker.worker_id)
        except DtqsError:
            pass

    def tick(self) -> None:
        w = self.worker
        w.expire_overdue()
        if self.busy is not None:
            self.busy.update(w.in_flight() > 0)
        now = time.monotonic()
        if now < self._next_beat:
            return
        # NOTE: after a failed beat the next try comes soon, not a whole interval later:
        # leases, the registry and the policy check are back within a second of Redis.
        self._next_beat = now + min(self.interval_s, RETRY_S)
        self.check_recycle(now)  # before any Redis call: it must work in an outage too
        self.renew()
        self.beat()
        self.beaten.set()
        self._next_beat = now + self.interval_s
        recoveries = w.broker.outage.recoveries
        if self._policy_checked != recoveries:
            w.check_eviction_policy()
            self._policy_checked = recoveries
        # NOTE(metrics): one pipeline of duration deltas per beat, not a write per task.
        w.durations.flush(w.broker)

    def renew(self) -> None:
        w = self.worker
        with w.lock:
            held = list(w.held.values())
        for runner in w.runners:
            mine = [(e.leased.id, e.leased.token) for e in held if e.runner is runner]
            if mine:
                with w.broker.translated():
                    lost = w.broker.scripts.extend(runner.qk, runner.lease_ms, mine)
                if lost:
                    self.report_lost(runner, set(lost))

    def report_lost(self, runner: object, lost: set[str]) -> None:
        # NOTE: a task acknowledged between the snapshot and the renewal is not lost;
        # only tasks this process still holds are.
        with self.worker.lock:
            still = [e.leased.id for e in self.worker.held.values()
                     if e.runner is runner and e.leased.id in lost and not e.done]  # fmt: skip
        for task_id in still:
            log.warning("lease of task %s was lost; its outcome will be refused", task_id)

    def beat(self) -> None:
        w = self.worker
        info = {
            "id": w.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": [r.spec.name for r in w.runners],
            "concurrency": {r.spec.name: r.concurrency for r in w.runners},
            "in_flight": w.in_flight(),
            "processed": w.tasks_done,
            "started_at": w.started_at.isoformat(),
            "beat_at_ms": int(time.time() * 1000),
            "rss_mb": round(rss_mb(), 1),
        }
        w.broker.beat(w.worker_id, info, ttl_s=max(self.interval_s * 3, 3.0))

    def check_recycle(self, now: float) -> None:
        w = self.worker
        limit = w.manifest.workers.max_memory_mb
        if limit and rss_mb() > limit and not w.draining.is_set():
            log.warning("recycling: RSS %.0f MiB is over max_memory (%.0f MiB)", rss_mb(), limit)
            w.draining.set()
        if w.stuck_threads():
            self._stuck_since = self._stuck_since or now
            if now - self._stuck_since > STUCK_GRACE_S and not w.draining.is_set():
                log.warning("recycling: a handler thread is stuck past its timeout")
                w.draining.set()
        else:
            self._stuck_since = None


class Sweep:
    """Runs the reclaim script for each queue of a worker, with jitter."""

    def __init__(self, worker: Worker, interval_s: float | None = None) -> None:
        self.worker = worker
        base = interval_s or worker.manifest.workers.reclaim_interval_s
        self._loop = Loop("sweep", base * random.uniform(0.8, 1.2), self.tick)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def tick(self) -> None:
        w = self.worker
        for runner in w.runners:
            with w.broker.translated():
                requeued, buried, _, _ = w.broker.scripts.reclaim(
                    runner.qk, runner.end_policy, int(runner.spec.dead_letter_ttl_s * 1000)
                )
            if requeued or buried:
                log.warning(
                    "queue %s: %d task(s) whose lease expired were requeued, %d ended for good "
                    "(worker_lost)",
                    runner.spec.name, requeued, buried,
                )  # fmt: skip
