"""Liveness, readiness and the metrics endpoint; all open (no token), for probes and scrapers.

``/healthz`` never touches Redis: a liveness probe must not restart an API that only
waits for Redis to come back. ``/readyz`` says whether this process can do its job
now, and why not.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn

import falcon

from dtqs.api.errors import RETRY_AFTER_S, ProblemError
from dtqs.api.metrics import MetricsResource
from dtqs.runtime.errors import DtqsError

if TYPE_CHECKING:
    from dtqs.api.app import ApiState

log = logging.getLogger("dtqs.api")

#: maxmemory-policy values under which Redis never drops a task's keys.
SAFE_POLICIES = frozenset({"noeviction", "unknown"})
#: How often `dtqs api` works out its readiness in the background.
READY_INTERVAL_S = 1.0
#: A background answer older than this many intervals is stale: not ready.
STALE_AFTER = 5


class Healthz:
    """GET /healthz: 200 while the process serves requests."""

    scopes = {"GET": None}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


def readiness(state: ApiState) -> dict[str, Any]:
    """The body of a ready answer; raises ProblemError(503) saying why it is not ready."""
    manifest = state.manifest
    if manifest is None:
        not_ready("no manifest is loaded")
    if state.reload_error:
        not_ready(f"last reload failed: {state.reload_error}")
    broker = state.client.broker
    try:
        broker.ping()
        memory = broker.memory()
        # NOTE: a Redis that answers may still refuse every write (out of memory
        # under noeviction, a read-only replica): submissions would all fail.
        broker.write_probe()
    except DtqsError as exc:
        # The broker's message names the cause and redacts the URL's password.
        message = exc.message
        not_ready(message if message.startswith("Redis") else f"Redis: {message}")
    policy, headroom = memory.policy, memory.headroom
    if policy not in SAFE_POLICIES:
        not_ready(f"maxmemory-policy is {policy}; tasks could be evicted, set noeviction")
    # NOTE: under noeviction, room for one submission of the largest body taken (it
    # is held in the request buffer, then stored): less, and submissions are refused.
    needed = 2 * manifest.api.max_body_bytes
    if headroom is not None and headroom < needed:
        not_ready(
            f"Redis is out of memory: {max(headroom, 0)} bytes left below maxmemory, "
            f"less than one submission of api.max_body_bytes may need ({needed})"
        )
    return {
        "status": "ready",
        "redis": "ok",
        "maxmemory_policy": policy,
        "queues": len(manifest.queues),
        "functions": len(manifest.functions),
    }


def not_ready(reason: str) -> NoReturn:
    raise ProblemError(503, reason, headers={"Retry-After": str(RETRY_AFTER_S)})


class ReadinessCheck:
    """Works out /readyz every `interval_s` on a thread of its own (`dtqs api`).

    NOTE: a probe must never wait behind application requests or on Redis: with the
    check in the background, /readyz answers from memory at once, and a Redis that
    hangs makes the answer stale (then 503), not slow.
    """

    def __init__(self, state: ApiState, interval_s: float = READY_INTERVAL_S) -> None:
        self.state = state
        self.interval_s = interval_s
        self._answer: tuple[float, dict[str, Any] | ProblemError] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)

    def start(self) -> ReadinessCheck:
        """Work out the first answer now (before the server takes requests: at most
        api.redis_timeout when Redis is away), then keep it fresh in the background."""
        self._check()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._check()

    def _check(self) -> None:
        try:
            answer: dict[str, Any] | ProblemError = readiness(self.state)
        except ProblemError as exc:
            answer = exc
        except Exception as exc:  # noqa: BLE001 - a bug must not freeze readiness
            log.exception("readiness check failed")
            answer = ProblemError(503, f"the readiness check failed: {type(exc).__name__}")
        self._answer = (time.monotonic(), answer)

    def answer(self) -> dict[str, Any]:
        """The latest answer; a 503 when there is none yet or it is stale."""
        found = self._answer
        if found is None:
            not_ready("the readiness check has not finished yet")
        at, answer = found
        if time.monotonic() - at > STALE_AFTER * self.interval_s:
            not_ready(f"the readiness check has not finished for {time.monotonic() - at:.0f} s")
        if isinstance(answer, ProblemError):
            raise answer
        return answer


class Readyz:
    """GET /readyz: 200 when the manifest is loaded and Redis answers, takes writes and
    keeps tasks; from the background check when one runs, else worked out now."""

    scopes = {"GET": None}

    def __init__(self, state: ApiState) -> None:
        self.state = state

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        check = self.state.readiness
        if check is None:
            resp.media = readiness(self.state)
            return
        if self.state.reload_error:  # NOTE: in memory: never a second late
            not_ready(f"last reload failed: {self.state.reload_error}")
        resp.media = check.answer()


def add_routes(app: falcon.App[Any, Any], state: ApiState) -> None:
    app.add_route("/healthz", Healthz())
    app.add_route("/readyz", Readyz(state))
    app.add_route("/metrics", MetricsResource(state))
