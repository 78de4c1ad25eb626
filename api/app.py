"""The Falcon app: create_app(state) for tests and embedding, get_app() for WSGI servers.

``get_app()`` reads the manifest from $DTQS_CONFIG (or ./dtqs.yaml) and Redis as the
CLI does, so any WSGI server can host dtqs: ``waitress-serve --call dtqs.api.app:get_app``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import falcon

from dtqs.api import admin, compat, errors, health, media, metrics, openapi, tasks
from dtqs.api.auth import Auth
from dtqs.api.health import ReadinessCheck
from dtqs.runtime.client import Client, make_broker
from dtqs.runtime.manifest import Manifest, load_manifest, resolve_config_path
from dtqs.runtime.reloader import ManifestReloader

log = logging.getLogger("dtqs.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass
class ApiState:
    """What every resource reads: the current manifest's client. Reload swaps it."""

    client: Client
    #: free long-poll slots (api.max_long_polls at start; a reload does not resize it)
    long_polls: threading.BoundedSemaphore = field(init=False)
    started_at: float = field(default_factory=time.time)
    reload_error: str | None = None  #: the last failed reload, shown by /readyz
    reload_failures: int = 0  #: failed reloads since start (dtqs_reload_failures_total)
    #: /readyz's background check (`dtqs api`); None: worked out per request
    readiness: ReadinessCheck | None = None
    #: set when the server drains (SIGTERM): long-polls answer at once
    draining: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.long_polls = threading.BoundedSemaphore(self.manifest.api.max_long_polls)

    @property
    def manifest(self) -> Manifest:
        return self.client.manifest


class RequestId:
    """Gives every request an id (the client's X-Request-ID if sane) and echoes it."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        given = req.get_header("X-Request-ID") or ""
        req.context.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, ok: bool
    ) -> None:
        resp.set_header("X-Request-ID", str(req.context.get("request_id", "-")))


def create_app(state: ApiState) -> falcon.App[falcon.Request, falcon.Response]:
    middleware: list[Any] = [RequestId(), metrics.RequestMetrics(), Auth(state)]
    app = falcon.App(
        middleware=middleware,
        cors_enable=False,
    )
    app.req_options.media_handlers = media.handlers()
    app.resp_options.media_handlers = media.handlers()
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    tasks.add_routes(app, state)
    admin.add_routes(app, state)
    health.add_routes(app, state)
    openapi.add_routes(app, state)
    compat.add_routes(app, state)
    return app


def api_client(manifest: Manifest, redis_url: str | None = None, threads: int = 8) -> Client:
    """A client whose Redis calls give up within the API's deadline (then a 503), with
    a connection for each of the server's `threads`, the long-polls' and the waiter's."""
    connections = threads + manifest.api.max_long_polls + 8
    broker = make_broker(manifest, redis_url, manifest.api.redis_timeout_s, connections)
    return Client(manifest=manifest, broker=broker)


def manifest_reloader(state: ApiState) -> ManifestReloader:
    """Hot reload for `dtqs api --reload`: each good manifest is served at once (new
    functions accepted and in /openapi.json, removed ones 404); a bad one keeps the
    last good one serving and shows in /readyz until the files are fixed."""

    def apply(manifest: Manifest) -> None:
        state.client.use_manifest(manifest)
        state.reload_error = None

    def failed(message: str) -> None:
        state.reload_error = message
        state.reload_failures += 1

    return ManifestReloader(state.manifest.path, apply, name="api", on_failure=failed)


def get_app() -> falcon.App[falcon.Request, falcon.Response]:
    """The WSGI callable, configured from the environment like the CLI."""
    manifest = load_manifest(resolve_config_path(None))
    return create_app(ApiState(api_client(manifest)))
