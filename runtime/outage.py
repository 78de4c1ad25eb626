"""Whether this process's backend answers, and one log line per change of that state.

Every long-running process keeps working through an outage (fetch, heartbeats, the
API's 503s, the scheduler's ticks all retry), so an outage is not an error of any one
call: without this, each retrying loop would log its own line every second. Here the
first failure of a call logs "unreachable" once, and the first success after it logs
"answers again" once, with how long it took.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("dtqs.backend")


class Outage:
    """The up/down state of one backend connection in this process.

    ``failed`` and ``ok`` are called after every backend call (``ok`` is on the hot
    path: one attribute read while the backend is up). ``recoveries`` counts the
    outages that ended, so a component can redo what a restarted server may have lost
    (e.g. check the eviction policy again) at its own pace, in its own thread.
    """

    def __init__(self, what: str = "Redis") -> None:
        self.what = what
        self.down_since: float | None = None  #: monotonic, while down
        self.reason = ""  #: the failure that started the current outage
        self.recoveries = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, reason: str) -> None:
        """A call failed because the backend is away; logs only the first failure."""
        if self.down:
            return
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
            self.reason = reason
        log.warning("%s; retrying until %s answers", reason.rstrip("."), self.what)

    def ok(self) -> None:
        """A call succeeded; logs the end of an outage once."""
        if not self.down:  # PERF: the common case, no lock
            return
        with self._lock:
            if self.down_since is None:
                return
            took = time.monotonic() - self.down_since
            self.down_since = None
            self.recoveries += 1
        log.info("%s answers again (after %.1f s)", self.what, took)
