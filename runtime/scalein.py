"""ECS task scale-in protection while this `dtqs worker` runs tasks.

An ECS service that scales in picks tasks to stop; a stopped task's running handlers
get its stop timeout and are then released to run again elsewhere (at-least-once, but
a long task starts over). With scale-in protection set, ECS picks idle tasks instead.

Each worker process tells its supervisor when it becomes busy (holds a leased task)
and idle again, one byte on a pipe (``BusySignal``), from its heartbeat thread. The
supervisor's ``Protector`` sets the protection through the ECS agent's endpoint
(``$ECS_AGENT_URI/task-protection/v1/state``, which ECS gives every task) while any
of its processes is busy, renews it before it expires, and clears it once all are
idle. Off ECS (no ``ECS_AGENT_URI``) none of this runs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

log = logging.getLogger("dtqs.pool")

#: Set by ECS in every task's containers: where the agent's task endpoints are.
AGENT_ENV = "ECS_AGENT_URI"
#: How long a protection lasts unless renewed (minutes); ECS allows 1 to 2880.
MINUTES_ENV = "DTQS_SCALE_IN_PROTECTION_MINUTES"
DEFAULT_MINUTES = 60
#: A worker process's end of its busy pipe (set by the pool when protection is on).
BUSY_FD_ENV = "DTQS_BUSY_FD"
#: Seconds an agent call may take.
AGENT_TIMEOUT_S = 5.0
#: After a failed agent call, the next try comes this much later.
RETRY_S = 5.0


class BusySignal:
    """A worker process's side: writes b"1" when it becomes busy, b"0" when idle."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.busy = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BusySignal | None:
        fd = environ.get(BUSY_FD_ENV, "")
        return cls(int(fd)) if fd.isdigit() else None

    def update(self, busy: bool) -> None:
        if busy == self.busy:
            return
        self.busy = busy
        try:
            os.write(self.fd, b"1" if busy else b"0")
        except OSError:
            pass  # the supervisor is gone: nothing to tell


class Protector:
    """The supervisor's side: keeps the task's protection in line with its workers."""

    def __init__(self, agent_uri: str, minutes: int) -> None:
        self.url = agent_uri.rstrip("/") + "/task-protection/v1/state"
        self.minutes = minutes
        self.wanted = False
        self.protected = False
        self._renew_at = 0.0
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scale-in", daemon=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Protector | None:
        """A protector when running on ECS (ECS_AGENT_URI set), else None.

        Raises:
            ValueError: DTQS_SCALE_IN_PROTECTION_MINUTES is not 1..2880.
        """
        agent = environ.get(AGENT_ENV, "").strip()
        if not agent:
            return None
        raw = environ.get(MINUTES_ENV, str(DEFAULT_MINUTES)).strip()
        if not raw.isdigit() or not 1 <= int(raw) <= 2880:
            raise ValueError(f"{MINUTES_ENV}={raw!r}: expected whole minutes from 1 to 2880")
        return cls(agent, int(raw))

    def start(self) -> None:
        self._thread.start()

    def want(self, busy: bool) -> None:
        """Called by the supervisor's loop with whether any worker process is busy."""
        if busy != self.wanted:
            self.wanted = busy
            self._changed.set()

    def stop(self) -> None:
        """Clear the protection (the supervisor is stopping) and end the thread."""
        self.want(False)
        self._stop.set()
        self._changed.set()
        self._thread.join(timeout=AGENT_TIMEOUT_S + 1)

    def _run(self) -> None:
        while True:
            self._changed.wait(self._next_wait())
            self._changed.clear()
            self._apply()
            if self._stop.is_set() and self.protected == self.wanted:
                return

    def _next_wait(self) -> float | None:
        if self.protected != self.wanted:
            return RETRY_S  # the last call failed: try again
        if self.protected:
            return max(self._renew_at - time.monotonic(), 0.0)
        return None

    def _apply(self) -> None:
        wanted = self.wanted
        due = wanted and time.monotonic() >= self._renew_at
        if wanted == self.protected and not due:
            return
        body: dict[str, object] = {"ProtectionEnabled": wanted}
        if wanted:
            body["ExpiresInMinutes"] = self.minutes
        if self._put(body):
            self.protected = wanted
            # NOTE: renewed at half its life, so a long busy spell never lapses.
            self._renew_at = time.monotonic() + self.minutes * 30.0

    def _put(self, body: dict[str, object]) -> bool:
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), method="PUT",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=AGENT_TIMEOUT_S) as answer:
                reply = json.loads(answer.read() or b"{}")
        except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
            log.warning("ECS scale-in protection: the agent did not take %s: %s", body, exc)
            return False
        refusal = reply.get("failure") or reply.get("error") if isinstance(reply, dict) else None
        if refusal:
            log.warning("ECS scale-in protection refused: %s", refusal)
            return False
        log.info("ECS scale-in protection %s", "on" if body["ProtectionEnabled"] else "off")
        return True
