"""Guards on the HTTP layer: what waitress answers by itself, before Falcon sees a request.

Waitress parses each request and refuses some of them on its own (too large, malformed).
Out of the box those answers were unsafe or unhelpful; each guard here exists for one
of them:

- **Request smuggling.** `Transfer-Encoding` together with `Content-Length` (or any
  `Transfer-Encoding` in HTTP/1.0) is a 400 and the connection closes (RFC 9112 §6.1,
  §6.3). Waitress trusted the chunked framing and stored the task, while a proxy in
  front may have framed the same bytes by `Content-Length`: the rest would then be read
  as a second request nobody sent.
- **Bare LF.** A request whose lines end in LF alone is a 400 as soon as the LF arrives.
  Waitress only looks for CRLF CRLF, so `GET / HTTP/1.1\\nHost: x\\n\\n` got no answer and
  held its connection for the whole channel timeout. We refuse rather than accept (RFC
  9112 §2.2 allows either): waitress already refuses a bare LF inside a complete header,
  and a proxy that splits lines differently from us is how smuggling starts.
- **Expect: 100-continue over the limit** is a 413 at once. Waitress sent `100 Continue`
  first, inviting the body it was about to refuse, and read it up to the limit.
- **Error bodies.** Every answer waitress writes itself (400, 413, 431, 501, and the 500
  of an app that fails before answering) is `application/problem+json` in the shape of
  `dtqs.api.errors.problem()`, like every answer of the app, not waitress's text/plain.
- **Lingering close.** After such an answer the connection closes only once the client's
  remaining body is read and dropped (bounded), so that a client that writes its whole
  body before reading gets the 413 instead of a connection reset.
- **A request must arrive within REQUEST_TIMEOUT_S.** The idle timeout of a kept-alive
  connection is long (75 s, above the load balancers' own, or they race it into 502s),
  and waitress has one timeout for both; a client that starts a request and then
  trickles or goes silent is dropped after REQUEST_TIMEOUT_S instead (as nginx's
  client_header_timeout): slowloris sockets do not hold connections for 75 s.
- **Probes never queue.** `GET /healthz` (and the prototype's `/health`) are answered on
  the server's I/O thread as soon as they are read, not queued behind application
  requests for a worker thread: with every thread busy (long requests, a slow Redis),
  a liveness probe would otherwise time out and get a healthy API restarted. Only
  paths whose handlers never block belong here (`INLINE_PATHS`).
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from waitress import server as waitress_server
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask
from waitress.utilities import (
    BadRequest,
    InternalServerError,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
)

from dtqs.api.errors import PROBLEM, TITLES, problem
from dtqs.api.media import dumps

log = logging.getLogger("dtqs.api")

#: Most bytes of a refused request's body read and dropped before its connection closes.
LINGER_BYTES = 16 * 1024 * 1024
#: Longest time a connection lingers after a refusal, reading the rest of the body.
LINGER_S = 10.0
#: Longest time from a request's first byte until it is read whole (headers and body).
REQUEST_TIMEOUT_S = 30.0
#: Paths answered on the I/O thread (their handlers never block: no Redis, no I/O).
INLINE_PATHS = frozenset({"/healthz", "/health"})


def create_server(
    app: Any,
    *,
    max_body_bytes: int,
    inline_paths: frozenset[str] = INLINE_PATHS,
    **adjustments: Any,
) -> Any:
    """A waitress server (as `waitress.create_server`) whose connections are guarded.

    Raises what waitress raises when it cannot listen (OSError, ValueError); every
    socket it opened before that is closed again.
    """
    sockets: dict[int, Any] = {}
    try:
        server = waitress_server.create_server(
            app,
            map=sockets,
            # NOTE: waitress refuses a body of exactly max_request_body_size; ours is allowed.
            max_request_body_size=max_body_bytes + 1,
            **adjustments,
        )
    except BaseException:
        # NOTE: a host with several addresses (localhost: ::1 and 127.0.0.1) makes one
        # listener each; when a later one cannot bind, the earlier ones stay open.
        wasyncore.close_all(sockets, ignore_all=True)
        raise
    for dispatcher in sockets.values():
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = GuardedChannel
            # NOTE: per listener instance: waitress picks the listener's class itself.
            dispatcher.add_task = FastLane(dispatcher.add_task, inline_paths)  # type: ignore[method-assign,assignment]
            dispatcher.maintenance = Maintenance(dispatcher)  # type: ignore[method-assign]
    return server


class Maintenance:
    """A listener's maintenance (every cleanup_interval): waitress's idle timeout, plus
    REQUEST_TIMEOUT_S for a request begun and not read whole."""

    def __init__(self, listener: Any) -> None:
        self.listener = listener
        self.idle = listener.maintenance

    def __call__(self, now: float) -> None:
        self.idle(now)
        late = time.monotonic() - REQUEST_TIMEOUT_S
        for channel in list(self.listener.active_channels.values()):
            begun = getattr(channel, "request_begun", None)
            if begun is not None and begun < late and channel.request is not None:
                channel.will_close = True


class FastLane:
    """A listener's add_task: a probe read on the I/O thread is marked to be answered
    there (GuardedChannel.received), everything else goes to waitress's thread pool."""

    def __init__(self, queue: Any, paths: frozenset[str]) -> None:
        self.queue = queue
        self.paths = paths

    def __call__(self, channel: Any) -> None:
        if isinstance(channel, GuardedChannel) and channel.inline_now(self.paths):
            channel.inline_due = True
        else:
            self.queue(channel)


class GuardedParser(HTTPRequestParser):
    """Waitress's request parser, refusing ambiguous framing and bare LF line endings."""

    #: Bytes after a refused request's headers, dropped in the read that refused it.
    swallowed = 0

    def received(self, data: bytes) -> int:
        if self.completed:
            return 0
        in_header = self.body_rcv is None
        consumed: int = super().received(data)
        if in_header and not (self.headers_finished or self.completed):
            if has_bare_lf(self.header_plus, len(data)):
                self.refuse(BadRequest("a line ends in LF without CR; HTTP needs CRLF"))
        if self.error is None:
            return consumed
        # NOTE: the connection closes after the error answer, so what follows is never
        # parsed: a body read as requests would only make more errors.
        self.expect_continue = False  # no 100 Continue for a body we refuse
        self.swallowed = len(data) - consumed
        return len(data)

    def refuse(self, error: Any) -> None:
        # The error answer needs a request line; the same dummy as waitress's own 431.
        self.parse_header(b"GET / HTTP/1.0\r\n")
        self.error = error
        self.completed = True

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        # Waitress drops TRANSFER_ENCODING from an HTTP/1.1 request once it has used it:
        # if it is still there, the request is HTTP/1.0 (where TE has no meaning).
        if "TRANSFER_ENCODING" in self.headers:
            why = f"Transfer-Encoding in an HTTP/{self.version} request"
        elif self.chunked and "CONTENT_LENGTH" in self.headers:
            why = "Transfer-Encoding together with Content-Length"
        else:
            return
        raise ParsingError(f"{why}: the body's length is ambiguous (RFC 9112 section 6.1)")

    def body_to_come(self) -> int:
        """Bytes of a refused request still to drop before closing (at most LINGER_BYTES)."""
        if isinstance(self.error, RequestEntityTooLarge) and not self.chunked:
            return max(min(self.content_length - self.swallowed, LINGER_BYTES), 0)
        return LINGER_BYTES  # unknown: until the client stops, or the bounds


def has_bare_lf(head: bytes, new: int) -> bool:
    """Whether the last `new` bytes of an unfinished header hold an LF without its CR."""
    # PERF(http): only the new bytes (and the one before them) are counted, so a header
    # trickled a byte at a time costs no more than waitress's own search for CRLF CRLF.
    part = head[-new - 1 :]
    if part.count(b"\n") == part.count(b"\r\n"):
        return False
    # Waitress ignores blank lines before a request; a bare LF among them is harmless.
    head = head.lstrip()
    return head.count(b"\n") != head.count(b"\r\n")


class ProblemErrorTask(ErrorTask):
    """Waitress's error answer, written as application/problem+json."""

    def execute(self) -> None:
        request: Any = self.request  # NOTE: types-waitress does not declare its error
        error = request.error
        status = int(error.code)
        body = dumps(problem(status, self.detail(error))).encode()
        self.status = f"{status} {TITLES.get(status, error.reason)}"
        self.response_headers = [*self.response_headers, ("Content-Type", PROBLEM)]
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)

    def detail(self, error: Any) -> str | None:
        adj = self.channel.adj
        if isinstance(error, RequestEntityTooLarge):
            return f"the body is larger than {adj.max_request_body_size - 1} bytes"
        if isinstance(error, RequestHeaderFieldsTooLarge):
            limit = adj.max_request_header_size
            return f"the request line and headers are larger than {limit} bytes"
        if isinstance(error, InternalServerError):
            return None  # as the app's own 500: nothing about the bug leaves the server
        return str(error.body)


class GuardedChannel(HTTPChannel):
    """One connection: waitress's, plus a lingering close after an error answer."""

    parser_class = GuardedParser
    error_task_class = ProblemErrorTask

    #: An error answer is being written; once flushed, linger instead of closing.
    linger_armed = False
    #: Bytes still to drop before closing.
    linger_left = 0
    #: time.monotonic() past which the connection closes even if the client still sends.
    linger_until = 0.0
    #: Inside received(), on the I/O thread (where FastLane may mark a probe).
    receiving = False
    #: A probe to answer on the I/O thread once received() has parsed it.
    inline_due = False
    #: time.monotonic() of the first byte of the request being read (None: none is).
    request_begun: float | None = None

    def inline_now(self, paths: frozenset[str]) -> bool:
        """Whether the request just read is a probe to answer here, on the I/O thread:
        read inside received(), alone (nothing queued before it on this connection)."""
        if not self.receiving or len(self.requests) != 1:
            return False
        request: Any = self.requests[0]  # NOTE: types-waitress has command as bytes; a str
        return (
            request.error is None and request.command in ("GET", "HEAD") and request.path in paths
        )

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_begun = time.monotonic()
        self.receiving = True
        try:
            more = bool(super().received(data))
        finally:
            self.receiving = False
        if self.request is None:  # read whole (or none begun): no request timeout runs
            self.request_begun = None
        if self.inline_due:
            # NOTE: after received(), which holds requests_lock (service() takes it too).
            # The answer is a few hundred bytes: write_soon never waits for a flush here.
            self.inline_due = False
            self.service()
        return more

    def service(self) -> None:
        request = self.requests[0]
        assert isinstance(request, GuardedParser)  # parser_class
        if request.error is not None:
            self.linger_left = request.body_to_come()
            self.linger_armed = True  # before close_when_flushed: handle_write reads both
            log.debug("refused a request from %s: %s", self.addr, request.error.code)
        super().service()

    def handle_write(self) -> None:
        if not (self.linger_armed and self.close_when_flushed):
            super().handle_write()
            return
        # NOTE: waitress closes as soon as the answer is flushed. Closing a socket with
        # unread input sends a reset, and a client still writing its body (urllib,
        # http.client, curl without Expect) then loses the answer it has not read yet.
        # So, as nginx's lingering_close: send the answer, shut the write side, and read
        # and drop the rest of the body, at most LINGER_BYTES or LINGER_S (a client
        # cannot hold the connection longer than that by trickling).
        self.close_when_flushed = False
        super().handle_write()  # flushes; closes by itself only on a socket error
        if self.will_close or not self.connected:
            return
        if self.total_outbufs_len:
            self.close_when_flushed = True  # more to flush on the next write event
            return
        self.linger()

    def linger(self) -> None:
        self.linger_armed = False
        if self.linger_left <= 0:
            self.handle_close()
            return
        try:
            assert self.socket is not None  # connected
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            self.handle_close()
            return
        self.linger_until = time.monotonic() + LINGER_S
        # PERF(http): a class of its own, so that the readable() and received() of every
        # other connection stay waitress's (readable() runs per connection per loop turn).
        self.__class__ = LingeringChannel


class LingeringChannel(GuardedChannel):
    """A refused connection after its answer: it reads only to drop, then closes."""

    def readable(self) -> bool:
        if time.monotonic() > self.linger_until:
            self.will_close = True  # writable() now, and handle_write closes
            return False
        return True

    def received(self, data: bytes) -> bool:
        self.linger_left -= len(data)
        if self.linger_left <= 0 or time.monotonic() > self.linger_until:
            self.handle_close()
        return True
