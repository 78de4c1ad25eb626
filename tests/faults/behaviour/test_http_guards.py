"""Scenarios 25-28 against a real `dtqs api` (waitress), over raw sockets: what the
server layer answers before Falcon sees a request (issue 12, hostile requests).

25 request smuggling (Transfer-Encoding with Content-Length), 26 Expect: 100-continue
over the limit, 27 every server-layer error is problem+json and a client that writes
its whole body before reading gets the answer, 28 bare-LF line endings.
"""

from __future__ import annotations

import http.client as httplib
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import psutil
import pytest

from dtqs.api.errors import TITLES
from dtqs.api.httpguard import LINGER_BYTES, LINGER_S
from tests.faults.behaviour.helpers import http

pytestmark = pytest.mark.timeout(120)

LIMIT = 65536
MANIFEST = f"""\
version: 1
queues:
  default: {{concurrency: 4}}
functions:
  work: {{handler: functions/tasks.py:work}}
api: {{max_body_bytes: {LIMIT}}}
"""
FILES = {"functions/tasks.py": "def work(payload):\n    return payload\n"}
TASK = b'{"function": "work", "payload": {"smuggled": false}}'
#: Seconds a raw exchange waits for an answer: far below waitress's 30 s channel timeout,
#: so a request the server never answers fails the test instead of passing late.
ANSWER_WAIT_S = 5


@pytest.fixture
def api(stack):
    s = stack(MANIFEST, FILES)
    _, port = s.api()
    return s, port


def stored(s) -> int:
    return sum(1 for _ in s.redis().scan_iter("dtqs:{default}:t:*"))


@dataclass
class Answer:
    """What one connection received: the first response, parsed, and what followed."""

    status: int
    headers: dict[str, str]
    body: bytes
    rest: bytes  #: bytes after the first response (a second answer would show here)
    closed: bool  #: the server closed the connection (EOF) within the wait
    seconds: float  #: from the last byte sent to the first byte of the answer

    def problem(self) -> dict:
        assert self.headers.get("content-type") == "application/problem+json", self
        doc = json.loads(self.body)
        assert set(doc) == {"type", "title", "status", "detail"}, doc
        assert doc["status"] == self.status and doc["title"] == TITLES[self.status], doc
        assert doc["type"] == f"https://dtqs.dev/problems/{self.status}", doc
        assert isinstance(doc["detail"], str) and doc["detail"], doc
        return doc


def parse(data: bytes, closed: bool, seconds: float) -> Answer:
    head, sep, after = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError(f"no complete answer: {data[:300]!r} (closed={closed})")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    status = int(lines[0].split(" ", 2)[1])
    return Answer(status, headers, after[:length], after[length:], closed, seconds)


def read_all(sock: socket.socket, sent_at: float) -> tuple[bytes, bool, float]:
    """Read until EOF or ANSWER_WAIT_S of silence; (bytes, closed, seconds to first byte)."""
    sock.settimeout(ANSWER_WAIT_S)
    data, first = b"", None
    try:
        while part := sock.recv(65536):
            first = first if first is not None else time.monotonic() - sent_at
            data += part
        closed = True
    except TimeoutError:
        closed = False
    except ConnectionResetError:
        closed = True
    return data, closed, first if first is not None else -1.0


def exchange(port: int, *parts: bytes, pause_s: float = 0) -> Answer:
    """Send `parts` (pausing between them) on a fresh connection; the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WAIT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for part in parts:
            sock.sendall(part)
            time.sleep(pause_s)
        return parse(*read_all(sock, time.monotonic()))
    finally:
        sock.close()


def post(headers: str, body: bytes = b"", version: str = "1.1") -> bytes:
    head = f"POST /v1/tasks HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
    return (head + headers + "\r\n").encode() + body


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


# -- scenario 25 -------------------------------------------------------------------


def smuggling_cases() -> dict[str, bytes]:
    body = chunked(TASK)
    # CL.TE: a proxy framing by Content-Length passes all of it as one request; a server
    # framing by chunks would end the body at "0" and run the rest as a second request.
    second = post(f"Content-Length: {len(TASK)}\r\n", TASK)
    smuggle = b"0\r\n\r\n" + second
    return {
        "TE then CL": post(f"Transfer-Encoding: chunked\r\nContent-Length: {len(body)}\r\n", body),
        "CL then TE": post(f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n", body),
        "TE and CL 0": post("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", body),
        "CL.TE smuggle": post(
            f"Content-Length: {len(smuggle)}\r\nTransfer-Encoding: chunked\r\n", smuggle
        ),
        "TE.CL smuggle": post(
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", chunked(second)
        ),
        "HTTP/1.0 TE": post("Transfer-Encoding: chunked\r\n", body, version="1.0"),
        "HTTP/1.0 TE and CL": post(
            f"Transfer-Encoding: chunked\r\nContent-Length: {len(body)}\r\n", body, "1.0"
        ),
    }


def test_smuggling_is_refused(api, fault_report):
    s, port = api
    answers = {name: exchange(port, raw) for name, raw in smuggling_cases().items()}
    refused_stored = stored(s)
    control = exchange(port, post("Transfer-Encoding: chunked\r\nConnection: close\r\n",
                                  chunked(TASK)))  # fmt: skip
    fault_report(
        25, "request smuggling: Transfer-Encoding with Content-Length", accepted=1,
        lost=None, dup=None, statuses={k: a.status for k, a in answers.items()},
        closed={k: a.closed for k, a in answers.items()},
        extra_answers=sum(b"HTTP/" in a.rest for a in answers.values()),
        stored_by_refused=refused_stored, chunked_alone=control.status,
    )  # fmt: skip
    for name, answer in answers.items():
        assert answer.status == 400, (name, answer)
        assert "ambiguous" in answer.problem()["detail"], name
        assert answer.headers.get("connection") == "close", name
        assert answer.closed and answer.rest == b"", (name, answer.rest[:200])
    assert refused_stored == 0, "a refused request stored a task"
    assert control.status == 202 and stored(s) == 1  # chunked alone is still fine
    assert http(port, "GET", "/healthz").status == 200


# -- scenario 26 -------------------------------------------------------------------


def test_expect_continue_over_the_limit_is_413_at_once(api, fault_report):
    s, port = api
    over = exchange(port, post("Content-Length: 10000000\r\nExpect: 100-continue\r\n"))
    # Within the limit, 100 Continue still comes, and then the body is taken.
    sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WAIT_S)
    try:
        sock.sendall(post(f"Content-Length: {len(TASK)}\r\nExpect: 100-continue\r\n"))
        interim = sock.recv(4096)
        sock.sendall(TASK)
        within = parse(*read_all(sock, time.monotonic()))
    finally:
        sock.close()
    fault_report(
        26, "Expect: 100-continue with a body over the limit", accepted=1, lost=None,
        dup=None, over_status=over.status, over_answer_s=round(over.seconds, 3),
        over_got_100=b"100 Continue" in over.body + over.rest,
        within_interim=interim.decode("latin-1").strip(), within_status=within.status,
    )  # fmt: skip
    assert over.status == 413, over  # not 100 Continue
    assert over.problem()["detail"] == f"the body is larger than {LIMIT} bytes"
    assert b"100 Continue" not in over.rest
    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert within.status == 202 and stored(s) == 1


# -- scenario 27 -------------------------------------------------------------------


def server_layer_errors() -> dict[str, tuple[int, bytes]]:
    """Requests waitress refuses before the app, with the status each must get."""
    big = "X-Big: " + "a" * (100 * 1024) + "\r\n"
    return {
        "413 length": (413, post("Content-Length: 10000000\r\n")),
        "413 chunked": (413, post("Transfer-Encoding: chunked\r\n", chunked(b"x" * (LIMIT + 1)))),
        "431 header": (431, post(big + "Content-Length: 2\r\n", b"{}")),
        "400 length": (400, post("Content-Length: abc\r\n", b"{}")),
        "400 two lengths": (400, post("Content-Length: 2\r\nContent-Length: 3\r\n", b"{}")),
        "400 header": (400, post("No colon here\r\nContent-Length: 2\r\n", b"{}")),
        "400 method": (400, b"post /v1/tasks HTTP/1.1\r\nHost: x\r\n\r\n"),
        "400 chunk size": (400, post("Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n")),
        "501 coding": (501, post("Transfer-Encoding: gzip\r\n", b"{}")),
    }


def whole_body_first(port: int, size: int) -> int:
    """POST `size` bytes with http.client, which sends all of them before reading."""
    conn = httplib.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/tasks", body=b"x" * size,
                     headers={"Content-Type": "application/json"})  # fmt: skip
        resp = conn.getresponse()
        assert resp.getheader("Content-Type") == "application/problem+json"
        assert json.loads(resp.read())["status"] == resp.status
        return resp.status
    finally:
        conn.close()


def urllib_status(port: int, size: int) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/tasks", data=b"x" * size,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as exc:
        with exc:
            assert json.loads(exc.read())["status"] == exc.code
            return exc.code
    return 0


def bytes_taken_of(port: int, size: int) -> int:
    """Write `size` bytes of body without reading; how many the server took before closing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent = 0
    piece = b"x" * (1 << 20)
    try:
        sock.sendall(post(f"Content-Length: {size}\r\n"))
        while sent < size:
            sock.sendall(piece)
            sent += len(piece)
    except OSError:
        pass  # the server stopped reading and closed
    finally:
        sock.close()
    return sent


def refused_and_answered(port: int) -> socket.socket:
    """A connection whose 413 was read; the server has shut its side, ours stays open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WAIT_S)
    sock.sendall(post("Content-Length: 10000000\r\n"))
    while sock.recv(65536):
        pass  # the answer, then EOF
    return sock


def linger_ends(api_pid: int, port: int) -> tuple[float, float]:
    """Seconds until the server closes a refused connection whose client, once answered,
    stays silent, and one whose client trickles a byte every 0.25 s."""
    silent, trickling = refused_and_answered(port), refused_and_answered(port)
    silent_port = silent.getsockname()[1]
    server = psutil.Process(api_pid)
    began = time.monotonic()
    ends: dict[str, float] = {}
    try:
        while len(ends) < 2 and time.monotonic() - began < LINGER_S + 20:
            if "trickling" not in ends:
                try:
                    trickling.send(b"x")  # fails once the server has closed (reset)
                except OSError:
                    ends["trickling"] = time.monotonic() - began
            if "silent" not in ends and not any(
                c.raddr and c.raddr.port == silent_port for c in server.net_connections("tcp")
            ):
                ends["silent"] = time.monotonic() - began
            time.sleep(0.25)
    finally:
        silent.close()
        trickling.close()
    return ends.get("silent", float("inf")), ends.get("trickling", float("inf"))


def test_server_layer_errors_are_problems_and_reach_the_client(stack, fault_report):
    s = stack(MANIFEST, FILES)
    proc, port = s.api()
    answers = {name: exchange(port, raw) for name, (_, raw) in server_layer_errors().items()}
    ten_mib = [whole_body_first(port, 10 << 20) for _ in range(3)]
    via_urllib = urllib_status(port, 10 << 20)
    taken = bytes_taken_of(port, 64 << 20)
    silent_s, trickling_s = linger_ends(proc.pid, port)
    fault_report(
        27, "server-layer errors: problem+json, answer reaches a client still writing",
        accepted=None, lost=None, dup=None,
        statuses={k: a.status for k, a in answers.items()},
        http_client_10MiB=ten_mib, urllib_10MiB=via_urllib, bytes_taken_of_64MiB=taken,
        linger_bytes=LINGER_BYTES, linger_s=LINGER_S,
        closed_silent_after_s=round(silent_s, 2), closed_trickling_after_s=round(trickling_s, 2),
        stored=stored(s),
    )  # fmt: skip
    for name, (status, _) in server_layer_errors().items():
        assert answers[name].status == status, (name, answers[name])
        answers[name].problem()
        assert answers[name].headers.get("connection") == "close", name
    assert ten_mib == [413, 413, 413]  # not a connection reset
    assert via_urllib == 413
    # The server drops at most LINGER_BYTES of a refused body, then closes (plus what
    # the two socket buffers hold).
    assert taken < 64 << 20
    # A refused client cannot hold its connection past the linger time, silent or not
    # (the server looks at least once a second; 5 s of headroom for a busy machine).
    assert silent_s <= LINGER_S + 5 and trickling_s <= LINGER_S + 5
    assert stored(s) == 0
    assert http(port, "GET", "/healthz").status == 200


# -- scenario 28 -------------------------------------------------------------------


def trickled(port: int, raw: bytes) -> Answer:
    """Send `raw` a byte at a time; stop as soon as the server answers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WAIT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(len(raw)):
            sock.sendall(raw[i : i + 1])
            sock.settimeout(0.005)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
        return parse(*read_all(sock, time.monotonic()))
    finally:
        sock.close()


def test_bare_lf_is_400_at_once(api, fault_report):
    s, port = api
    refused = {
        "all LF": exchange(port, b"GET /healthz HTTP/1.1\nHost: x\n\n"),
        "request line LF": exchange(port, b"GET /healthz HTTP/1.1\nHost: x\r\n\r\n"),
        "last line LF": exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\n\r\n"),
        "POST LF": exchange(port, b"POST /v1/tasks HTTP/1.1\nContent-Length: %d\n"
                            b"Content-Type: application/json\n\n%s" % (len(TASK), TASK)),
        "LF trickled": trickled(port, b"GET /healthz HTTP/1.1\nHost: x\n\n"),
    }  # fmt: skip
    accepted = {
        "CRLF trickled": trickled(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: "
                                  b"close\r\n\r\n"),
        "blank lines first": exchange(port, b"\r\n\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n"
                                      b"Connection: close\r\n\r\n"),
        "LF in a body": exchange(port, post(f"Content-Length: {len(TASK) + 2}\r\n"
                                            "Connection: close\r\n", b"\n" + TASK + b"\n")),
    }  # fmt: skip
    fault_report(
        28, "bare-LF line endings", accepted=1, lost=None, dup=None,
        statuses={k: a.status for k, a in {**refused, **accepted}.items()},
        answer_s=round(max(a.seconds for a in refused.values()), 3),
    )  # fmt: skip
    for name, answer in refused.items():
        assert answer.status == 400, (name, answer)
        assert "LF" in answer.problem()["detail"], name
        assert answer.closed, name
    # The "LF trickled" request stopped being sent once answered: at the first LF.
    assert {k: a.status for k, a in accepted.items()} == dict.fromkeys(accepted, 200) | {
        "LF in a body": 202
    }
    assert stored(s) == 1
