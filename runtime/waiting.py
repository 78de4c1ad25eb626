"""Waiting for tasks to end: the one implementation behind the API's long-polls
(``GET /v1/tasks/{id}?wait=``), ``Client.wait`` and ``dtqs submit --wait``.

The scripts publish the ids of tasks that reached a final state on their queue's
``finished`` channel. One thread per ``TaskWaiter`` (one per client) listens while
anyone waits and sets the events of those ids: a waiter costs an Event, not a polling
loop, and is woken as soon as the message arrives. The same thread reads the state of
every waited task once a second and whenever its subscription was made anew, so a
message missed while the subscription was down (Redis restarted, a connection
dropped) delays a waiter by about a second, never for good.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dtqs.runtime.errors import DtqsError
from dtqs.runtime.redis.events import FinishedListener, ended

if TYPE_CHECKING:
    from dtqs.runtime.redis.broker import Broker
    from dtqs.runtime.redis.keys import QueueKeys

log = logging.getLogger("dtqs.waiting")

#: How often every waited task's state is read, in case a message was missed.
RECHECK_S = 1.0
#: Longest the listening thread blocks on its subscription before it looks again.
LISTEN_S = 0.2
#: The thread (and its connection) ends after this long without waiters.
LINGER_S = 10.0
#: Pause after a failed call (Redis away) before the thread tries again.
RETRY_S = 0.5


@dataclass(eq=False)
class _Wait:
    qk: QueueKeys
    task_id: str
    event: threading.Event = field(default_factory=threading.Event)


class TaskWaiter:
    """Wakes the threads that wait for tasks of one broker to reach a final state."""

    def __init__(self, broker: Broker, recheck_s: float = RECHECK_S) -> None:
        self.broker = broker
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._waits: dict[str, set[_Wait]] = {}
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    @contextmanager
    def watching(self, qk: QueueKeys, task_id: str) -> Iterator[threading.Event]:
        """An event set when `task_id` may have reached a final state (read it again).

        Register before reading the task's state, then wait on the event: a task that
        ends between the read and the wait still sets it.
        """
        wait = _Wait(qk, task_id)
        with self._lock:
            self._waits.setdefault(task_id, set()).add(wait)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="waiter", daemon=True)
                self._thread.start()
        try:
            yield wait.event
        finally:
            with self._lock:
                same = self._waits.get(task_id)
                if same is not None:
                    same.discard(wait)
                    if not same:
                        del self._waits[task_id]

    def wake_all(self) -> None:
        """Wake every waiter now (each reads its task again and decides)."""
        with self._lock:
            for waits in self._waits.values():
                for wait in waits:
                    wait.event.set()

    def waiting(self) -> int:
        """How many waits are registered now."""
        with self._lock:
            return sum(len(s) for s in self._waits.values())

    def close(self) -> None:
        self._closed.set()

    # -- the listening thread ------------------------------------------------------

    def _wake(self, ids: list[str]) -> None:
        with self._lock:
            for task_id in ids:
                for wait in self._waits.get(task_id, ()):
                    wait.event.set()

    def _snapshot(self) -> dict[QueueKeys, list[str]]:
        with self._lock:
            by_queue: dict[QueueKeys, list[str]] = {}
            for task_id, waits in self._waits.items():
                for wait in waits:
                    by_queue.setdefault(wait.qk, []).append(task_id)
                    break
            return by_queue

    def _recheck(self) -> None:
        for qk, ids in self._snapshot().items():
            self._wake(ended(self.broker, qk, ids))

    def _idle_exit(self, idle_since: float | None) -> tuple[bool, float | None]:
        """(stop now, idle since): the thread ends after LINGER_S without waiters."""
        with self._lock:
            if self._waits:
                return False, None
            now = time.monotonic()
            if idle_since is not None and now - idle_since > LINGER_S:
                self._thread = None
                return True, idle_since
            return False, idle_since or now

    def _run(self) -> None:
        listener = FinishedListener(self.broker)
        next_check = 0.0
        idle_since: float | None = None
        try:
            while not self._closed.is_set():
                stop, idle_since = self._idle_exit(idle_since)
                if stop:
                    return
                channels = {qk.finished for qk in self._snapshot()}
                try:
                    ids, fresh = listener.listen(channels, LISTEN_S)
                    self._wake(ids)
                    if fresh or time.monotonic() >= next_check:
                        next_check = time.monotonic() + self.recheck_s
                        self._recheck()
                except DtqsError as exc:
                    log.debug("waiter: %s", exc)  # an outage is logged once by the broker
                    next_check = 0.0  # read every state once the subscription is back
                    self._closed.wait(RETRY_S)
                except Exception:  # noqa: BLE001 - e.g. the client closed under the thread
                    if self._closed.is_set():
                        return
                    log.exception("waiter failed; listening again")
                    next_check = 0.0
                    self._closed.wait(RETRY_S)
        finally:
            listener.close()
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
