"""Serve the API with waitress: `dtqs api`, and the API inside `dtqs run`.

Secure by default: with no tokens in the manifest the API binds to loopback only;
another address without tokens is refused unless --insecure says otherwise. What
waitress answers by itself (malformed or oversized requests) is guarded in httpguard.py.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer

from dtqs.api.httpguard import INLINE_PATHS
from dtqs.runtime import errors as E
from dtqs.runtime.errors import DtqsError
from dtqs.runtime.manifest import Manifest

log = logging.getLogger("dtqs.api")

#: Default worker threads of waitress.
DEFAULT_THREADS = 8
#: Seconds an idle or trickling connection is kept before waitress closes it. NOTE:
#: above the idle timeouts of the load balancers in front (AWS ALB 60 s, ingress-nginx
#: upstream keep-alive 60 s): a server that closes an idle connection first races the
#: proxy's next request on it, which then fails as a 502.
IDLE_TIMEOUT_S = 75
#: Longest a stopping API (SIGTERM) lets requests in flight finish.
DRAIN_S = 20.0
#: The loop's poll timeout: how soon a signal's drain is looked at.
LOOP_S = 0.2
#: Most bytes of request headers waitress accepts (above: 431).
MAX_HEADER_BYTES = 64 * 1024
#: Most open connections; past it waitress stops accepting until one closes.
CONNECTION_LIMIT = 100
#: How often idle channels are looked for (waitress's default, 30 s, would let a
#: silent slowloris socket live up to twice the channel timeout).
CLEANUP_INTERVAL_S = 5


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(manifest: Manifest, host: str, insecure: bool) -> None:
    """Refuse to serve beyond loopback without tokens, unless the user insists."""
    if manifest.api.tokens or is_loopback(host) or insecure:
        return
    raise DtqsError(
        f"refusing to serve the API on {host} without tokens: anyone who reaches it could "
        "submit tasks and purge dead letters. Add api.tokens to the manifest, bind to "
        "127.0.0.1, or pass --insecure if something in front of dtqs authenticates",
        code="invalid",
    )


def listen(
    app: Any,
    manifest: Manifest,
    host: str,
    port: int,
    threads: int,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    inline_paths: frozenset[str] = INLINE_PATHS,
) -> Any:
    """A guarded waitress server listening on host:port; a DtqsError if it cannot listen.
    Requests for `inline_paths` are answered on the I/O thread (see httpguard.py)."""
    from dtqs.api.httpguard import create_server

    try:
        return create_server(
            app,
            max_body_bytes=manifest.api.max_body_bytes,
            inline_paths=inline_paths,
            host=host,
            port=port,
            threads=threads,
            max_request_header_size=MAX_HEADER_BYTES,
            channel_timeout=idle_timeout_s,
            cleanup_interval=CLEANUP_INTERVAL_S,
            connection_limit=CONNECTION_LIMIT,
            ident="dtqs",
            clear_untrusted_proxy_headers=True,
        )
    except OSError as exc:
        raise listen_error(host, port, exc) from None
    except ValueError as exc:
        # waitress turns a failed getaddrinfo() into this (the port was checked by click)
        if "host" not in str(exc):
            raise
        raise DtqsError(
            f"cannot listen on {address(host, port)}: no address of that name; "
            "choose another --host",
            code=E.INVALID,
        ) from None


#: Why a bind failed, what to do, and the error code, by errno.
_BIND_ERRORS = {
    errno.EADDRINUSE: (
        "address already in use (another process holds it); stop it or choose another --port",
        E.CONFLICT,
    ),
    errno.EACCES: (
        "permission denied (ports below 1024 need privileges); choose another --port",
        E.INVALID,
    ),
    errno.EADDRNOTAVAIL: (
        "address not available (no interface of this machine has it); choose another --host",
        E.INVALID,
    ),
}


def listen_error(host: str, port: int, exc: OSError) -> DtqsError:
    """One line saying which address could not be bound, why, and which option to change."""
    reason, code = _BIND_ERRORS.get(
        exc.errno or 0, ((exc.strerror or str(exc)).lower(), E.UNAVAILABLE)
    )
    return DtqsError(f"cannot listen on {address(host, port)}: {reason}", code=code)


def check_free(host: str, port: int) -> None:
    """Raise listen()'s one-line DtqsError now if host:port cannot be bound: `dtqs run`
    checks before it starts a server and workers only to stop them again."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise DtqsError(
            f"cannot listen on {address(host, port)}: no address of that name; "
            "choose another --host",
            code=E.INVALID,
        ) from None
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress binds
        try:
            probe.bind(where)
        except OSError as exc:
            raise listen_error(host, port, exc) from None


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@dataclass(frozen=True)
class ServeOptions:
    """`dtqs api`'s options."""

    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = DEFAULT_THREADS
    insecure: bool = False
    idle_timeout: float = IDLE_TIMEOUT_S
    drain: float = DRAIN_S
    reload: bool = False


def run_api(manifest: Manifest, redis_url: str | None, options: ServeOptions) -> None:
    """`dtqs api`: the app, its readiness check and hot reload, served until SIGTERM."""
    from dtqs.api.app import ApiState, api_client, create_app, manifest_reloader
    from dtqs.api.health import ReadinessCheck

    check_exposure(manifest, options.host, options.insecure)
    state = ApiState(api_client(manifest, redis_url, options.threads))
    state.readiness = ReadinessCheck(state).start()
    reloader = manifest_reloader(state) if options.reload else None
    if reloader is not None:
        reloader.start()

    def draining() -> None:
        state.draining.set()
        state.client.waiter.wake_all()  # long-polls answer with the task as it is now

    # NOTE: long-polls wait on threads of their own, so that --threads stay free for
    # submissions and probes however many clients wait (api.max_long_polls).
    threads = options.threads + manifest.api.max_long_polls
    try:
        # NOTE: /readyz answers from the background check, so it may skip the queue too.
        serve(create_app(state), manifest, options.host, options.port, threads,
              idle_timeout_s=options.idle_timeout, drain_s=options.drain,
              on_drain=draining, inline_paths=INLINE_PATHS | {"/readyz"})  # fmt: skip
    finally:
        state.readiness.stop()
        if reloader is not None:
            reloader.stop()


def serve(
    app: Any,
    manifest: Manifest,
    host: str,
    port: int,
    threads: int,
    *,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    drain_s: float = DRAIN_S,
    on_drain: Callable[[], None] | None = None,
    inline_paths: frozenset[str] = INLINE_PATHS,
) -> None:
    """Run waitress until SIGTERM/SIGINT, then drain: stop accepting connections, let
    requests in flight finish (`on_drain` makes long-polls answer at once), and return
    once none is left or after `drain_s`. A second signal returns at once."""
    server = listen(app, manifest, host, port, threads, idle_timeout_s, inline_paths)
    drain = Drain(server, drain_s, on_drain)
    signal.signal(signal.SIGTERM, drain.signalled)
    signal.signal(signal.SIGINT, drain.signalled)
    # NOTE: waitress warns "Task queue depth is N" for every request that waits for a
    # thread: under load that is a log line per request, and costs what it reports.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    log.info("API on http://%s:%d (%d threads)", host, port, threads)
    try:
        drain.run()
    finally:
        server.close()
        log.info("API stopped")


class Drain:
    """Runs a waitress server's loop, and its graceful stop.

    NOTE: waitress's own run() stops at the first SIGTERM, cutting every request in
    flight (a load balancer answers its clients 502). Here the listening sockets close
    first, so new connections go to other instances (refused here, never accepted
    and dropped), while the requests already read are answered.
    """

    def __init__(self, server: Any, drain_s: float, on_drain: Callable[[], None] | None) -> None:
        self.server = server
        self.drain_s = drain_s
        self.on_drain = on_drain
        self.map: dict[int, Any] = getattr(server, "map", None) or server._map
        self.since: float | None = None  #: monotonic time of the first signal
        self.begun = False  #: the listeners are closed and the waiters told

    def signalled(self, signum: int, _frame: object) -> None:
        """Only note the time: the drain itself begins in run(), between two turns of
        the loop, not inside a signal handler that may interrupt one."""
        if self.since is not None:
            raise SystemExit(0)  # a second signal: stop now
        self.since = time.monotonic()

    def run(self) -> None:
        try:
            while not self.done():
                wasyncore.loop(timeout=LOOP_S, map=self.map, use_poll=True, count=1)
        except SystemExit:
            pass

    def begin(self) -> None:
        log.info("draining: no new connections; requests in flight get %g s", self.drain_s)
        for dispatcher in list(self.map.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.close()  # NOTE: new connections are refused from now on
        if self.on_drain is not None:
            self.on_drain()
        self.begun = True

    def done(self) -> bool:
        if self.since is None:
            return False
        if not self.begun:
            self.begin()
        if time.monotonic() - self.since > self.drain_s:
            log.warning("drain: requests still in flight after %g s; stopping", self.drain_s)
            return True
        return self.idle()

    def idle(self) -> bool:
        """No request is being read, queued, run or answered on any connection."""
        dispatcher = self.server.task_dispatcher
        if dispatcher.queue or dispatcher.active_count:
            return False
        channels = [c for c in self.map.values() if isinstance(c, HTTPChannel)]
        return not any(c.requests or c.request is not None or c.total_outbufs_len
                       for c in channels)  # fmt: skip
