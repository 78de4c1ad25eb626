"""The app as a whole: recovery after a Redis outage, no leaks on a bug, get_app()."""

from __future__ import annotations

import logging
import time

import pytest
from falcon import testing

from dtqs.api.app import ApiState, api_client, create_app, get_app

pytestmark = pytest.mark.redis

MANIFEST = """\
version: 1
redis: {{url: "{url}"}}
queues: {{default: {{}}}}
functions:
  echo: {{handler: functions/tasks.py:echo}}
api: {{redis_timeout: 500ms}}
"""
FILES = {"functions/tasks.py": "def echo(payload):\n    return payload\n"}
SUBMIT = {"function": "echo", "payload": 1}


def test_recovers_by_itself_when_redis_comes_back(project, redis_server):
    proc, port = redis_server()
    url = f"redis://127.0.0.1:{port}/0"
    client = api_client(project(MANIFEST.format(url=url), FILES).manifest())
    api = testing.TestClient(create_app(ApiState(client)))
    try:
        assert api.simulate_post("/v1/tasks", json=SUBMIT).status_code == 202
        proc.kill()
        proc.wait()
        started = time.monotonic()
        down = api.simulate_post("/v1/tasks", json=SUBMIT)
        assert down.status_code == 503 and time.monotonic() - started < 2
        assert api.simulate_get("/readyz").status_code == 503
        assert api.simulate_get("/healthz").status_code == 200
        proc, _ = redis_server(port=port)
        deadline = time.monotonic() + 10
        while api.simulate_get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the API did not see Redis come back"
            time.sleep(0.05)
        assert api.simulate_post("/v1/tasks", json=SUBMIT).status_code == 202
    finally:
        client.close()


class Broken:
    scopes = {"GET": None}

    def on_get(self, req, resp):
        raise RuntimeError("secret internal detail")


def test_a_bug_is_a_500_without_detail_logged_with_the_request_id(project, redis_url, caplog):
    client = api_client(project(MANIFEST.format(url=redis_url), FILES).manifest())
    app = create_app(ApiState(client))
    app.add_route("/broken", Broken())
    api = testing.TestClient(app)
    with caplog.at_level(logging.ERROR, logger="dtqs.api"):
        resp = api.simulate_get("/broken", headers={"X-Request-ID": "req-42"})
    client.close()
    assert resp.status_code == 500 and resp.headers["x-request-id"] == "req-42"
    assert resp.headers["content-type"] == "application/problem+json"
    assert "secret" not in resp.text and "Traceback" not in resp.text
    assert any("req-42" in r.getMessage() for r in caplog.records)
    assert any("secret internal detail" in (r.exc_text or "") for r in caplog.records)


def test_get_app_reads_the_environment_like_the_cli(project, redis_url, monkeypatch, r):
    p = project(MANIFEST.format(url=redis_url), FILES)
    monkeypatch.setenv("DTQS_CONFIG", str(p.config))
    app = get_app()
    resp = testing.TestClient(app).simulate_post("/v1/tasks", json=SUBMIT)
    assert resp.status_code == 202
