"""Scenarios 22-24 against a real `dtqs api` (waitress): body limits, hostile input,
slowloris."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.faults.behaviour.helpers import Reply, http

pytestmark = pytest.mark.timeout(120)

LIMIT = 65536  # big enough for the 10,000-deep bodies of scenario 23
MANIFEST = f"""\
version: 1
queues:
  default: {{concurrency: 4}}
functions:
  work: {{handler: functions/tasks.py:work}}
  strict: {{handler: functions/tasks.py:work, schema: schemas/strict.json}}
api: {{max_body_bytes: {LIMIT}}}
"""
FILES = {
    "functions/tasks.py": "def work(payload):\n    return payload\n",
    "schemas/strict.json": json.dumps({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 10},
            "count": {"type": "integer", "minimum": 0, "maximum": 100},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "mode": {"enum": ["fast", "slow"]},
        },
        "required": ["name", "count"],
        "additionalProperties": False,
    }),
}  # fmt: skip
JSON_CT = {"Content-Type": "application/json"}


def stored(s) -> int:
    """Task records in Redis (every submission that was stored)."""
    return sum(1 for _ in s.redis().scan_iter("dtqs:{default}:t:*"))


@pytest.fixture
def api(stack):
    s = stack(MANIFEST, FILES)
    _, port = s.api()
    return s, port


def raw_exchange(port: int, head: bytes, chunks=(), timeout: float = 10) -> tuple[int, int]:
    """Send `head`, then `chunks` until the server answers; (status, body bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sent = 0
    try:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except OSError:
                break  # the server answered and closed: it stopped reading
            sock.settimeout(0.01)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except (TimeoutError, BlockingIOError):
                pass
            finally:
                sock.settimeout(timeout)
        data = b""
        while b"\r\n" not in data:
            part = sock.recv(4096)
            if not part:
                break
            data += part
        return int(data.split(b" ", 2)[1]), sent
    finally:
        sock.close()


def test_body_limits(api, fault_report):
    s, port = api
    exact = b'{"function": "work", "payload": "' + b"x" * (LIMIT - 35) + b'"}'
    assert len(exact) == LIMIT
    over = exact[:-2] + b'x"}'
    results: dict[str, int] = {}
    results["exact"] = http(port, "POST", "/v1/tasks", exact, JSON_CT).status
    results["limit+1"] = http(port, "POST", "/v1/tasks", over, JSON_CT).status
    # 10 MB announced, none of it sent: answered from the headers alone.
    head = (b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n")  # fmt: skip
    results["10MB_announced"], _ = raw_exchange(port, head)
    # 10 MB really sent in 64 KiB pieces: refused long before the end.
    piece = b"x" * 65536
    results["10MB_sent"], sent_10mb = raw_exchange(port, head, [piece] * 153)
    # Chunked, no length, over the limit: refused once past it, not read whole.
    chunked = (b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    chunk = b"1000\r\n" + b"x" * 4096 + b"\r\n"
    results["chunked_over"], sent_chunked = raw_exchange(port, chunked, [chunk] * 2000)
    # A 300 KiB header.
    big = {"X-Big": "a" * (300 * 1024), **JSON_CT}
    try:
        results["300KiB_header"] = http(port, "POST", "/v1/tasks", exact, big).status
    except (ConnectionError, OSError):
        results["300KiB_header"] = -1  # reset without an answer
    count = stored(s)
    fault_report(
        22, "body limits on waitress", accepted=1, lost=None, dup=None,
        statuses=results, bytes_sent_of_10MB=sent_10mb, bytes_sent_chunked=sent_chunked,
        tasks_stored=count,
    )  # fmt: skip
    assert results["exact"] == 202
    assert results["limit+1"] == 413
    assert results["10MB_announced"] == 413
    assert results["10MB_sent"] == 413 and sent_10mb < 10_000_000
    assert results["chunked_over"] == 413 and sent_chunked < 2000 * len(chunk)
    assert results["300KiB_header"] in (431, 400)
    assert count == 1  # only the body at the limit was stored
    assert http(port, "GET", "/healthz").status == 200


# -- scenario 23 -------------------------------------------------------------------


def schema_violations() -> list[dict]:
    """Payloads that break the `strict` schema one rule at a time, from the schema."""
    schema = json.loads(FILES["schemas/strict.json"])
    good = {"name": "ok", "count": 1}
    out = [{k: v for k, v in good.items() if k != req} for req in schema["required"]]
    wrong = {"string": 5, "integer": "5", "array": "x"}
    for name, prop in schema["properties"].items():
        if "type" in prop:
            out.append({**good, name: wrong[prop["type"]]})
        if "maxLength" in prop:
            out.append({**good, name: "x" * (prop["maxLength"] + 1)})
        if "minLength" in prop:
            out.append({**good, name: ""})
        if "minimum" in prop:
            out.append({**good, name: prop["minimum"] - 1})
            out.append({**good, name: 1.5})
        if "maximum" in prop:
            out.append({**good, name: prop["maximum"] + 1})
        if "maxItems" in prop:
            out.append({**good, name: ["a"] * (prop["maxItems"] + 1)})
        if "enum" in prop:
            out.append({**good, name: "other"})
    out += [{**good, "extra": 1}, [], "string", None, 7]
    return out


def hostile_bodies() -> list[tuple[str, bytes, dict[str, str]]]:
    def body(function: object, payload: object = None) -> bytes:
        return json.dumps({"function": function, "payload": payload or {}}).encode()

    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("truncated", b'{"function": "work", "payload": ', JSON_CT),
        ("garbage", b"\x00\x01\x02not json", JSON_CT),
        ("empty", b"", JSON_CT),
        ("array", b"[]", JSON_CT),
        ("null", b"null", JSON_CT),
        ("trailing", b'{"function": "work"} x', JSON_CT),
        ("non-utf8", b'{"function": "work", "payload": "\xff\xfe"}', JSON_CT),
        ("utf16", '{"function": "work"}'.encode("utf-16"), JSON_CT),
        ("text/plain", body("work"), {"Content-Type": "text/plain"}),
        ("no content type", body("work"), {}),
        ("xml", b"<task/>", {"Content-Type": "application/xml"}),
        ("form", b"function=work", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("NaN", b'{"function": "work", "payload": {"x": NaN}}', JSON_CT),
        ("Infinity", b'{"function": "work", "payload": {"x": Infinity}}', JSON_CT),
        ("-Infinity", b'{"function": "work", "payload": [-Infinity]}', JSON_CT),
        ("1e999", b'{"function": "work", "payload": {"x": 1e999}}', JSON_CT),
        ("dup keys", b'{"function": "work", "function": "strict", "payload": {}}', JSON_CT),
        ("dup nested", b'{"function": "work", "payload": {"a": 1, "a": 2}}', JSON_CT),
        (
            "depth 10000",
            b'{"function": "work", "payload": ' + b"[" * 10000 + b"]" * 10000 + b"}",
            JSON_CT,
        ),  # fmt: skip
        (
            "depth 10000 obj",
            b'{"function": "work", "payload": ' + b'{"a":' * 10000 + b"1" + b"}" * 10000 + b"}",
            JSON_CT,
        ),  # fmt: skip
        ("huge int", b'{"function": "work", "payload": {"x": ' + b"9" * 5000 + b"}}", JSON_CT),
        (
            "priority bad",
            json.dumps({"function": "work", "priority": "urgent"}).encode(),
            JSON_CT,
        ),  # fmt: skip
        ("delay negative", json.dumps({"function": "work", "delay": -5}).encode(), JSON_CT),
        ("delay huge", json.dumps({"function": "work", "delay": 1e300}).encode(), JSON_CT),
        (
            "run_at bad",
            json.dumps({"function": "work", "run_at": "tomorrow"}).encode(),
            JSON_CT,
        ),  # fmt: skip
        ("unknown field", json.dumps({"function": "work", "evil": 1}).encode(), JSON_CT),
        ("function int", body(5), JSON_CT),
        ("function null", json.dumps({"function": None}).encode(), JSON_CT),
    ]
    for name in ["../../etc/passwd", "os.system", "work\x00", "\x00", "\u202ework",
                 "ｗｏｒｋ", "w" * 10_240, "", " work", "work\n", "__import__"]:  # fmt: skip
        cases.append((f"name {name[:12]!r}", body(name), JSON_CT))
    for i, payload in enumerate(schema_violations()):
        raw = json.dumps({"function": "strict", "payload": payload}).encode()
        cases.append((f"schema {i}", raw, JSON_CT))
    return cases


def test_hostile_input(api, fault_report):
    s, port = api
    answers: dict[str, int] = {}
    for name, body, headers in hostile_bodies():
        reply: Reply = http(port, "POST", "/v1/tasks", body, headers)
        answers[name] = reply.status
        if reply.status >= 400:
            assert reply.headers.get("content-type") == "application/problem+json", (name, reply)
            problem = reply.json()
            assert problem["status"] == reply.status and problem["title"], (name, problem)
    # Batches with one bad item store nothing.
    batch = {"tasks": [{"function": "work", "payload": {}}] * 5 + [{"function": "strict"}]}
    answers["batch with a bad item"] = http(port, "POST", "/v1/tasks/batch", batch).status
    # Hostile paths and ids.
    for path in ["/v1/tasks/..%2F..%2Fetc%2Fpasswd", "/v1/tasks/%00", "/v1/tasks/" + "x" * 5000,
                 "/v1/tasks/default.%E2%80%AE", "/v1/queues/%ff", "/v1/tasks?limit=-1",
                 "/v1/tasks?limit=999999999999999999999", "/v1/tasks?cursor=%00%ff"]:  # fmt: skip
        answers[f"GET {path[:30]}"] = http(port, "GET", path).status
    after_hostile = stored(s)

    # Valid UTF-8 round-trips byte-exact, emoji, RTL, fullwidth, escapes; lone
    # surrogates (legal JSON escapes) round-trip too.
    texts = ["emoji 😀👩‍👩‍👧 and 🇫🇷", "RTL \u202eabc\u202c עברית العربية", "ｆｕｌｌｗｉｄｔｈ",
             "nul \x00 and \u2028\u2029", "combining e\u0301", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]  # fmt: skip
    round_trip = []
    for text in texts:
        raw = json.dumps({"function": "work", "payload": {"s": text}}, ensure_ascii=False)
        reply = http(port, "POST", "/v1/tasks", raw.encode("utf-8"), JSON_CT)
        assert reply.status == 202, (text, reply)
        got = http(port, "GET", f"/v1/tasks/{reply.json()['id']}").json()["payload"]["s"]
        round_trip.append(got.encode("utf-8") == text.encode("utf-8"))
    lone = b'{"function": "work", "payload": {"s": "a\\ud800b\\udcffc"}}'
    reply = http(port, "POST", "/v1/tasks", lone, JSON_CT)
    lone_status = reply.status
    lone_back = None
    if reply.status == 202:
        lone_back = http(port, "GET", f"/v1/tasks/{reply.json()['id']}").json()["payload"]["s"]
    fives = {k: v for k, v in answers.items() if v >= 500}
    two_xx = {k: v for k, v in answers.items() if 200 <= v < 300}
    fault_report(
        23, "hostile input fuzz", accepted=len(texts) + (lone_status == 202), lost=None,
        dup=None, cases=len(answers), five_xx=len(fives), two_xx_on_hostile=len(two_xx),
        stored_by_hostile=after_hostile, statuses=dict(sorted(
            {str(v): sum(1 for x in answers.values() if x == v) for v in answers.values()}.items()
        )), utf8_round_trips=f"{sum(round_trip)}/{len(round_trip)}", lone_surrogates=lone_status,
    )  # fmt: skip
    assert not fives, fives
    assert not two_xx, two_xx
    assert after_hostile == 0, "a 4xx must store nothing"
    assert all(round_trip)
    assert lone_status in (202, 400)
    if lone_status == 202:
        assert lone_back == "a\ud800b\udcffc"
    assert http(port, "GET", "/healthz").status == 200


# -- scenario 24 -------------------------------------------------------------------


class Slowloris:
    """`n` sockets that each send a request line, then one header byte per second."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.n = n
        self.socks: list[socket.socket] = []
        self.trickle = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        for _ in range(self.n):
            sock = socket.socket()
            sock.setblocking(False)
            try:
                sock.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.socks.append(sock)
        time.sleep(0.5)
        self.trickle.set()
        self._thread.start()

    def _run(self) -> None:
        first = True
        while self.trickle.is_set():
            for sock in self.socks:
                data = b"POST /v1/tasks HTTP/1.1\r\nX-a: " if first else b"a"
                try:
                    sock.send(data)
                except OSError:
                    pass
            first = False
            time.sleep(1)

    def silence(self) -> None:
        """Stop sending but keep every socket open (the worst case for the server)."""
        self.trickle.clear()
        self._thread.join(5)

    def close(self) -> None:
        self.silence()
        for sock in self.socks:
            sock.close()


def fresh_ok(port: int, timeout: float = 3) -> bool:
    try:
        health = http(port, "GET", "/healthz", timeout=timeout).status
        submit = http(port, "POST", "/v1/tasks", {"function": "work", "payload": {}},
                      timeout=timeout).status  # fmt: skip
        return health == 200 and submit == 202
    except OSError:
        return False


def test_slowloris(api, wait_for, fault_report):
    s, port = api
    below = Slowloris(port, 90)
    below.start()
    time.sleep(3)
    ok_below = [fresh_ok(port) for _ in range(5)]
    below.close()
    time.sleep(1)

    above = Slowloris(port, 150)
    above.start()
    time.sleep(3)
    ok_above = fresh_ok(port, timeout=2)
    above.silence()  # attackers stop, their sockets stay open until the server drops them
    stopped = time.monotonic()
    wait_for(lambda: fresh_ok(port, timeout=2), 45, "the API to answer again")
    recover_s = time.monotonic() - stopped
    above.close()
    fault_report(
        24, "slowloris: 90 and 150 trickling sockets", accepted=None, lost=None, dup=None,
        recover_s=recover_s, fresh_ok_with_90=f"{sum(ok_below)}/5",
        fresh_ok_with_150=ok_above, connection_limit=100, request_timeout_s=30,
        idle_timeout_s=75,
    )  # fmt: skip
    assert all(ok_below)
    # NOTE: a request begun and not finished is dropped after httpguard's 30 s request
    # timeout, not the 75 s idle timeout of kept-alive connections.
    assert recover_s <= 30 + 5 + 2  # request timeout + cleanup interval + a busy CPU
