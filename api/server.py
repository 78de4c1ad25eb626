"""Serve the API with waitress: `dtqs api`, and the API inside `dtqs run`.

Secure by default: with no tokens in the manifest the API binds to loopback only;
another address without tokens is refused unless --insecure says otherwise.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
from typing import Any

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


def serve(app: Any, manifest: Manifest, host: str, port: int, threads: int) -> None:
    """Run waitress until SIGTERM/SIGINT."""
    from waitress import create_server

    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        # NOTE: waitress refuses a body of exactly max_request_body_size; ours is allowed.
        max_request_body_size=manifest.api.max_body_bytes + 1,
        max_request_header_size=MAX_HEADER_BYTES,
        channel_timeout=CHANNEL_TIMEOUT_S,
        cleanup_interval=CLEANUP_INTERVAL_S,
        connection_limit=CONNECTION_LIMIT,
        ident="dtqs",
        clear_untrusted_proxy_headers=True,
    )

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
