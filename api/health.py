"""Liveness, readiness and the metrics endpoint; all open (no token), for probes and scrapers.

``/healthz`` never touches Redis: a liveness probe must not restart an API that only
waits for Redis to come back. ``/readyz`` says whether this process can do its job
now, and why not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import falcon

from dtqs.api.errors import RETRY_AFTER_S, ProblemError
from dtqs.api.metrics import MetricsResource
from dtqs.runtime.errors import DtqsError

if TYPE_CHECKING:
    from dtqs.api.app import ApiState

#: maxmemory-policy values under which Redis never drops a task's keys.
SAFE_POLICIES = frozenset({"noeviction", "unknown"})


class Healthz:
    """GET /healthz: 200 while the process serves requests."""

    scopes = {"GET": None}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Readyz:
    """GET /readyz: 200 when the manifest is loaded and Redis answers and keeps tasks."""

    scopes = {"GET": None}

    def __init__(self, state: ApiState) -> None:
        self.state = state

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        manifest = self.state.manifest
        if manifest is None:
            self.not_ready("no manifest is loaded")
        if self.state.reload_error:
            self.not_ready(f"last reload failed: {self.state.reload_error}")
        broker = self.state.client.broker
        try:
            broker.ping()
            memory = broker.memory()
            # NOTE: a Redis that answers may still refuse every write (out of memory
            # under noeviction, a read-only replica): submissions would all fail.
            broker.write_probe()
        except DtqsError as exc:
            # The broker's message names the cause and redacts the URL's password.
            message = exc.message
            self.not_ready(message if message.startswith("Redis") else f"Redis: {message}")
        policy, headroom = memory.policy, memory.headroom
        if policy not in SAFE_POLICIES:
            self.not_ready(f"maxmemory-policy is {policy}; tasks could be evicted, set noeviction")
        # NOTE: under noeviction, room for one submission of the largest body taken (it
        # is held in the request buffer, then stored): less, and submissions are refused.
        needed = 2 * manifest.api.max_body_bytes
        if headroom is not None and headroom < needed:
            self.not_ready(
                f"Redis is out of memory: {max(headroom, 0)} bytes left below maxmemory, "
                f"less than one submission of api.max_body_bytes may need ({needed})"
            )
        resp.media = {
            "status": "ready",
            "redis": "ok",
            "maxmemory_policy": policy,
            "queues": len(manifest.queues),
            "functions": len(manifest.functions),
        }

    @staticmethod
    def not_ready(reason: str) -> NoReturn:
        raise ProblemError(503, reason, headers={"Retry-After": str(RETRY_AFTER_S)})


def add_routes(app: falcon.App[Any, Any], state: ApiState) -> None:
    app.add_route("/healthz", Healthz())
    app.add_route("/readyz", Readyz(state))
    app.add_route("/metrics", MetricsResource(state))
