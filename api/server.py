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
from typing import Any

from dtqs.runtime import errors as E
from dtqs.runtime.errors import DtqsError
from dtqs.runtime.manifest import Manifest

log = logging.getLogger("dtqs.api")

#: Default worker threads of waitress.
DEFAULT_THREADS = 8
#: Seconds an idle or trickling connection is kept before waitress closes it.
CHANNEL_TIMEOUT_S = 30
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


def listen(app: Any, manifest: Manifest, host: str, port: int, threads: int) -> Any:
    """A guarded waitress server listening on host:port; a DtqsError if it cannot listen."""
    from dtqs.api.httpguard import create_server

    try:
        return create_server(
            app,
            max_body_bytes=manifest.api.max_body_bytes,
            host=host,
            port=port,
            threads=threads,
            max_request_header_size=MAX_HEADER_BYTES,
            channel_timeout=CHANNEL_TIMEOUT_S,
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


def serve(app: Any, manifest: Manifest, host: str, port: int, threads: int) -> None:
    """Run waitress until SIGTERM/SIGINT."""
    server = listen(app, manifest, host, port, threads)

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # NOTE: waitress warns "Task queue depth is N" for every request that waits for a
    # thread: under load that is a log line per request, and costs what it reports.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    log.info("API on http://%s:%d (%d threads)", host, port, threads)
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        server.close()
        log.info("API stopped")
