"""`dtqs run` end to end on a copy of the example project, with its embedded server."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parent.parent.parent
RUN = ["run", "--processes", "1", "--log-level", "warning"]


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """dtqs.yaml, functions/ and schemas/ of the repo's example app, copied."""
    root = tmp_path / "example"
    root.mkdir()
    shutil.copy(REPO / "dtqs.yaml", root)
    for folder in ("functions", "schemas"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def start_run(procs, root, env, wait_for, port):
    server_file = root / ".dtqs" / "server.json"
    sup = procs.spawn([*RUN, "--port", str(port)], root, env)
    try:
        wait_for(lambda: server_file.exists() or sup.poll() is not None, 15, "server.json")
        assert sup.poll() is None, procs.output(sup)
        info = wait_for(lambda: _read_json(server_file), 5, "a complete server.json")
        wait_for(lambda: procs.workers(sup), 10, "a worker process")
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/health"), 10, "the API")
    except BaseException:
        print(procs.output(sup)[-3000:])
        raise
    return sup, info


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def _post(url: str, body: dict):
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, json.loads(resp.read())


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stop_run(procs, sup, root, server_pid):
    """Ctrl-C: exits 0 within 10 s, leaving no server, worker or API process behind."""
    family = psutil.Process(sup.pid).children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) for p in family)
    assert server_pid in [p.pid for p in family] and "valkey" in names, names
    assert "dtqs.runtime.process" in names and " api " in names, names
    began = time.monotonic()
    sup.send_signal(signal.SIGINT)
    procs.wait_exit(sup, 10)
    assert time.monotonic() - began < 10
    assert sup.returncode == 0, procs.output(sup)
    _, alive = psutil.wait_procs(family, timeout=1)
    assert alive == []
    procs.assert_no_orphans(root, timeout=1)
    assert not (root / ".dtqs" / "server.json").exists()


def test_run_embedded_end_to_end(procs, example, wait_for, unused_port):
    env = procs.env(None)  # no REDIS_URL / DTQS_REDIS_URL: the embedded server is used
    port = unused_port
    sup, server = start_run(procs, example, env, wait_for, port)
    assert server["url"].startswith("redis://127.0.0.1:")

    # The API that `dtqs run` serves takes a task that the workers run.
    status, task = _post(f"http://127.0.0.1:{port}/v1/tasks",
                         {"function": "hello", "payload": {"name": "Bob"}})  # fmt: skip
    assert status == 202 and task["state"] == "queued"
    done = wait_for(
        lambda: (t := _get(f"http://127.0.0.1:{port}/v1/tasks/{task['id']}?wait=5"))
        and t["state"] == "succeeded" and t, 10, "the HTTP task to succeed")  # fmt: skip
    assert done["result"] == {"greeting": "Hello, Bob!"}

    ok = procs.run(["submit", "hello", '{"name": "Ada"}', "--wait", "--timeout", "20"],
                   example, env)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"greeting": "Hello, Ada!"}

    bad = procs.run(["submit", "hello", '{"name": 1}'], example, env)
    assert bad.returncode == 2, bad
    assert "/payload/name" in bad.stderr
    assert "Traceback" not in bad.stderr + bad.stdout

    unknown = procs.run(["submit", "nope", "{}"], example, env)
    assert unknown.returncode == 3, unknown
    assert "nope" in unknown.stderr and "Traceback" not in unknown.stderr

    later = procs.run(["submit", "hello", '{"name": "Later"}', "--delay", "3600"], example, env)
    assert later.returncode == 0, later.stderr
    task_id = later.stdout.strip()

    stop_run(procs, sup, example, server["pid"])

    # Started again, the server replays its append-only file: the task is still there.
    sup, server = start_run(procs, example, env, wait_for, port)
    shown = procs.run(["status", task_id], example, env)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert (info["id"], info["state"], info["function"]) == (task_id, "scheduled", "hello")
    assert info["payload"] == {"name": "Later"}
    stop_run(procs, sup, example, server["pid"])


def test_run_on_a_busy_port_says_so_in_one_line_and_starts_nothing(procs, example):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = procs.run([*RUN, "--port", str(port)], example, procs.env(None), timeout=30)
    # NOTE: before, a 25-line traceback from the API child, and `dtqs run` exited 0.
    assert done.returncode == 4, done
    assert done.stderr.splitlines() == [
        f"dtqs: error: cannot listen on 127.0.0.1:{port}: address already in use (another "
        "process holds it); stop it or choose another --port"
    ]
    assert not (example / ".dtqs" / "server.json").exists()


def test_run_stops_non_zero_when_a_child_dies(procs, example, wait_for, unused_port):
    env = procs.env(None)
    sup, server = start_run(procs, example, env, wait_for, unused_port)
    api = next(p for p in psutil.Process(sup.pid).children() if " api " in " ".join(p.cmdline()))
    api.kill()
    procs.wait_exit(sup, 20)
    assert sup.returncode == 1, procs.output(sup)  # killed by a signal: 1
    assert "api exited with status -9; stopping" in procs.output(sup)
    procs.assert_no_orphans(example, timeout=5)


def test_a_second_run_in_the_same_folder_says_so(procs, example, wait_for, unused_port):
    env = procs.env(None)
    sup, server = start_run(procs, example, env, wait_for, unused_port)
    again = procs.run([*RUN, "--port", str(unused_port)], example, env, timeout=30)
    # NOTE: the same port too: the folder's own run is named, not "address in use".
    assert again.returncode == 4, again
    assert "another `dtqs run` is already serving this folder" in again.stderr
    assert len(again.stderr.splitlines()) == 1
    stop_run(procs, sup, example, server["pid"])
