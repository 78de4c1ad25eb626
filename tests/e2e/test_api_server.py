"""`dtqs api` as a real waitress server: limits enforced before the body is read,
refusal to bind publicly without tokens, and a clean stop."""

from __future__ import annotations

import http.client
import json
import signal
import socket

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

MANIFEST = """\
version: 1
queues: {default: {}}
functions:
  work: {handler: functions/ledger.py:work}
api: {max_body_bytes: 4096}
"""
LEDGER = "def work(payload):\n    return payload\n"


@pytest.fixture
def server(procs, project, redis_url, r, wait_for, unused_port):
    p = project(MANIFEST, {"functions/ledger.py": LEDGER})
    port = unused_port
    proc = procs.spawn(["api", "--port", str(port), "--log-level", "warning"], p.root,
                       procs.env(redis_url))  # fmt: skip

    def ready() -> bool:
        try:
            return request(port, "GET", "/healthz")[0] == 200
        except OSError:
            return False

    wait_for(ready, 15, "the API to answer")
    yield port, proc


def request(port: int, method: str, path: str, body: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_submit_through_waitress(server, r):
    port, _ = server
    body = json.dumps({"function": "work", "payload": {"x": 1}}).encode()
    status, data = request(port, "POST", "/v1/tasks", body, {"Content-Type": "application/json"})
    assert status == 202 and json.loads(data)["state"] == "queued"
    assert r.llen("dtqs:{default}:pending:2") == 1


def test_body_limits(server, r):
    port, _ = server
    json_ct = {"Content-Type": "application/json"}
    exact = b'{"function": "work", "payload": "' + b"x" * (4096 - 35) + b'"}'
    assert len(exact) == 4096
    assert request(port, "POST", "/v1/tasks", exact, json_ct)[0] == 202
    over = exact[:-2] + b'x"}'
    assert request(port, "POST", "/v1/tasks", over, json_ct)[0] == 413
    # 10 MB announced: refused from the headers alone, before any of the body is sent.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest("POST", "/v1/tasks")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(10_000_000))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    # Chunked with no length: refused once past the limit, not read whole.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest("POST", "/v1/tasks")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for _ in range(3):
        conn.send(b"1000\r\n" + b"x" * 4096 + b"\r\n")
    conn.send(b"0\r\n\r\n")
    assert conn.getresponse().status == 413
    conn.close()
    assert r.llen("dtqs:{default}:pending:2") == 1


def test_huge_header_is_refused(server):
    port, _ = server
    status, _ = request(port, "GET", "/healthz", headers={"X-Big": "y" * 300 * 1024})
    assert status in (400, 431)
    assert request(port, "GET", "/healthz")[0] == 200


def test_sigterm_stops_it(server, procs):
    _, proc = server
    proc.send_signal(signal.SIGTERM)
    procs.wait_exit(proc, 5)
    assert proc.returncode == 0


def test_refuses_to_serve_publicly_without_tokens(procs, project, redis_url, unused_port):
    p = project(MANIFEST, {"functions/ledger.py": LEDGER})
    done = procs.run(["api", "--host", "0.0.0.0", "--port", str(unused_port)], p.root,
                     procs.env(redis_url))  # fmt: skip
    assert done.returncode == 2
    assert "without tokens" in done.stderr and "Traceback" not in done.stderr


def test_a_busy_port_is_one_line_and_exit_4(procs, project, redis_url):
    """Port taken by another process: one `dtqs: error:` line naming it, no traceback."""
    p = project(MANIFEST, {"functions/ledger.py": LEDGER})
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        done = procs.run(["api", "--port", str(port)], p.root, procs.env(redis_url))
    finally:
        holder.close()
    assert done.returncode == 4, done.stderr
    assert done.stderr.splitlines() == [
        f"dtqs: error: cannot listen on 127.0.0.1:{port}: address already in use (another "
        "process holds it); stop it or choose another --port"
    ]


def test_an_api_with_many_threads_never_runs_out_of_connections(
    procs, project, redis_url, r, wait_for, unused_port
):
    """Before: redis-py's pool failed at once past 100 connections, so `--threads 150`
    answered 503 "Redis is unreachable … Too many connections" under load."""
    import threading

    p = project(MANIFEST, {"functions/ledger.py": LEDGER})
    port = unused_port
    procs.spawn(["api", "--port", str(port), "--threads", "150", "--log-level", "warning"],
                p.root, procs.env(redis_url))  # fmt: skip
    wait_for(lambda: _answers(port), 15, "the API to answer")
    body = json.dumps({"function": "work", "payload": {"n": 1}}).encode()
    statuses: list[int] = []
    barrier = threading.Barrier(150)

    def submit() -> None:
        barrier.wait()
        headers = {"Content-Type": "application/json"}
        statuses.append(request(port, "POST", "/v1/tasks", body, headers)[0])

    threads = [threading.Thread(target=submit) for _ in range(150)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [202] * 150


def _answers(port: int) -> bool:
    try:
        return request(port, "GET", "/healthz")[0] == 200
    except OSError:
        return False
