"""ECS task scale-in protection: a real `dtqs worker` against a stand-in for the ECS
agent's endpoint (on loopback), as ECS gives every task through ECS_AGENT_URI."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

TASKS = """\
import time

def slow(payload):
    time.sleep(payload["s"])
    return "done"
"""
MANIFEST = """\
version: 1
queues:
  default:
    concurrency: 2
functions:
  slow:
    handler: functions/tasks.py:slow
workers:
  heartbeat_interval: 200ms
  reclaim_interval: 200ms
"""


class Agent:
    """Records the task-protection calls a worker makes (the ECS agent's API shape)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                agent.calls.append((self.command, self.path, body))
                reply = json.dumps({"protection": {"ProtectionEnabled": body["ProtectionEnabled"]}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(reply.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/v3/abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def states(self) -> list[bool]:
        return [body["ProtectionEnabled"] for _, _, body in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def agent():
    made = Agent()
    yield made
    made.close()


def test_a_busy_worker_is_protected_from_scale_in_and_released_when_idle(
    procs, project, redis_url, r, client_for, wait_for, agent
):
    p = project(MANIFEST, {"functions/tasks.py": TASKS})
    env = procs.env(redis_url, ECS_AGENT_URI=agent.uri, DTQS_SCALE_IN_PROTECTION_MINUTES="15")
    sup = procs.spawn(["worker", "--processes", "1", "--log-level", "info"], p.root, env)
    client = client_for(p)
    time.sleep(1.0)
    assert agent.calls == []  # idle from the start: nothing to protect
    task = client.submit("slow", {"s": 2.0})
    wait_for(lambda: agent.states() == [True], 10, "protection while the task runs")
    method, path, body = agent.calls[0]
    assert (method, path) == ("PUT", "/v3/abc/task-protection/v1/state")
    assert body == {"ProtectionEnabled": True, "ExpiresInMinutes": 15}
    assert client.wait(task, 20).state == "succeeded"
    wait_for(lambda: agent.states() == [True, False], 10, "protection cleared when idle")
    assert sup.poll() is None


def test_a_bad_protection_length_is_refused_at_start(procs, project, redis_url):
    p = project(MANIFEST, {"functions/tasks.py": TASKS})
    env = procs.env(redis_url, ECS_AGENT_URI="http://127.0.0.1:9/v3",
                    DTQS_SCALE_IN_PROTECTION_MINUTES="0")  # fmt: skip
    done = procs.run(["worker", "--processes", "1"], p.root, env)
    assert done.returncode == 2
    assert "DTQS_SCALE_IN_PROTECTION_MINUTES='0': expected whole minutes" in done.stderr
