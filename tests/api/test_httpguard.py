"""api/httpguard.py on a real waitress server in this process (fast checks; the hostile
scenarios against `dtqs api` are tests/faults/behaviour/test_http_guards.py)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from waitress import wasyncore

from dtqs.api.httpguard import create_server

LIMIT = 100


def echo_length(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(len(body)).encode()]


def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    raise RuntimeError("secret internal detail")


@pytest.fixture
def serve() -> Iterator[Callable[..., int]]:
    """serve(app) -> the port of a guarded waitress server running `app` in a thread."""
    running: list[tuple[Any, threading.Thread]] = []

    def start(app: Callable[..., Any]) -> int:
        server = create_server(app, max_body_bytes=LIMIT, host="127.0.0.1", port=0, threads=2)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        return int(server.effective_port)

    yield start
    for server, thread in running:
        # The loop ends once its map is empty; closing it from its own thread is safe.
        server.trigger.pull_trigger(lambda s=server: wasyncore.close_all(s._map))
        thread.join(5)
        server.task_dispatcher.shutdown()


def post(port: int, body: bytes) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/", body=body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def test_the_limit_is_max_body_bytes_inclusive(serve):
    port = serve(echo_length)
    assert post(port, b"x" * LIMIT) == (200, "text/plain", str(LIMIT).encode())
    status, content_type, body = post(port, b"x" * (LIMIT + 1))
    assert (status, content_type) == (413, "application/problem+json")
    assert json.loads(body) == {
        "type": "https://dtqs.dev/problems/413",
        "title": "Content Too Large",
        "status": 413,
        "detail": f"the body is larger than {LIMIT} bytes",
    }


def test_an_app_failing_inside_waitress_is_a_500_problem_without_detail(serve, caplog):
    port = serve(broken)
    status, content_type, body = post(port, b"{}")
    assert (status, content_type) == (500, "application/problem+json")
    assert json.loads(body) == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
    }
    assert b"secret" not in body
