"""Security (issue 6): Redis over TLS with an ACL user in the URL, the password kept
out of logs, errors and /metrics; a safe YAML loader; admin routes closed to anyone
without an admin token."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import falcon.inspect
import psutil
import pytest
import redis

from dtqs.api.app import ApiState, api_client, create_app
from dtqs.runtime.manifest import load_manifest
from tests.conftest import free_port
from tests.faults.behaviour.helpers import http

pytestmark = pytest.mark.timeout(120)

PASSWORD = "s3cr3t-Pw-4f9d1c"
MANIFEST = """\
version: 1
queues:
  default: {concurrency: 4, visibility_timeout: 5s}
functions:
  work: {handler: functions/tasks.py:work}
  fail: {handler: functions/tasks.py:fail, retry: {max_attempts: 1}}
schedules:
  tick: {function: work, every: 1s}
workers: {grace: 5s, heartbeat_interval: 500ms, reclaim_interval: 1s}
"""
TASKS = """\
def work(payload):
    return payload


def fail(payload):
    raise RuntimeError("always")
"""


def make_certs(folder: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.pem", "-days", "2", "-subj", "/CN=dtqs-test-ca")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
        "server.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip


@pytest.fixture
def tls_redis(tmp_path: Path):
    """A redis-server speaking only TLS, with the default user off and user `app`."""
    if not shutil.which("redis-server") or not shutil.which("openssl"):
        pytest.skip("needs redis-server and openssl")
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    port = free_port()
    log = tmp_path / "redis-tls.log"
    with log.open("wb") as out:
        proc = _start_tls_server(tmp_path, certs, port, out)
    url = f"rediss://app:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={certs / 'ca.pem'}"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("TLS redis-server did not start: " + log.read_text()[-2000:])
            time.sleep(0.05)
    yield url, port, certs
    proc.kill()
    proc.wait()


def _start_tls_server(tmp_path: Path, certs: Path, port: int, out) -> subprocess.Popen:
    return subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file",
         str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.pem"),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--user", "default", "off",
         "--user", "app", "on", f">{PASSWORD}", "~*", "&*", "+@all"],
        stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_tls_and_acl_url_and_the_password_never_shows(
    tls_redis, project, procs, wait_for, fault_report
):
    url, port, certs = tls_redis
    p = project(MANIFEST, {"functions/tasks.py": TASKS})
    env = procs.env(url)
    sup = procs.spawn(["worker", "--processes", "1"], p.root, env)
    sched = procs.spawn(["scheduler"], p.root, env)
    api_port = free_port()
    api = procs.spawn(["api", "--port", str(api_port)], p.root, env)
    wait_for(lambda: _answers(api_port), 20, "the API")
    ids = []
    for i in range(10):
        reply = http(api_port, "POST", "/v1/tasks", {"function": "work", "payload": {"i": i}})
        assert reply.status == 202, reply
        ids.append(reply.json()["id"])
    failing = http(api_port, "POST", "/v1/tasks", {"function": "fail", "payload": {}}).json()
    wait_for(lambda: all(http(api_port, "GET", f"/v1/tasks/{t}").json()["state"] == "succeeded"
                         for t in ids), 20, "tasks over TLS to succeed")  # fmt: skip
    wait_for(lambda: http(api_port, "GET", f"/v1/tasks/{failing['id']}").json()["state"]
             == "dead", 20, "the failing task to be dead")  # fmt: skip
    with redis.Redis.from_url(url) as r:
        ticks = wait_for(lambda: list(r.scan_iter("dtqs:{default}:t:default.cron-*")), 20,
                         "the scheduler to fire over TLS")  # fmt: skip
    texts = {
        "/metrics": http(api_port, "GET", "/metrics").body.decode(),
        "/readyz": http(api_port, "GET", "/readyz").body.decode(),
        "/v1/workers": http(api_port, "GET", "/v1/workers").body.decode(),
        "dead letter": http(api_port, "GET", "/v1/dead-letters").body.decode(),
    }
    # Errors: a wrong password, and Redis gone, through the CLI and /readyz.
    wrong = url.replace(PASSWORD, PASSWORD + "-wrong")
    texts["cli wrong password"] = _cli(procs, p.root, wrong)
    bad_api_port = free_port()
    bad_api = procs.spawn(["api", "--port", str(bad_api_port)], p.root, procs.env(wrong))
    wait_for(lambda: _answers(bad_api_port), 20, "the API with a wrong password")
    texts["/readyz wrong password"] = http(bad_api_port, "GET", "/readyz").body.decode()
    down = url.replace(f":{port}/", f":{free_port()}/")
    texts["cli redis down"] = _cli(procs, p.root, down)
    for proc in (sup, sched, api, bad_api):
        proc.terminate()
    for proc in (sup, sched, api, bad_api):
        procs.wait_exit(proc, 15)
    for proc in (sup, sched, api, bad_api):
        texts[f"log of {' '.join(map(str, proc.args[3:4]))} {proc.pid}"] = procs.output(proc)
    leaks = sorted(name for name, text in texts.items() if PASSWORD in text)
    fault_report(
        "security-tls", "rediss:// + ACL user/password; the password never shows",
        accepted=len(ids) + 1, lost=0, dup=None, tls=True, acl_user="app",
        cron_ticks_over_tls=len(ticks), places_checked=len(texts), password_leaks=leaks,
    )  # fmt: skip
    assert len(ticks) >= 1
    assert "Redis" in texts["/readyz wrong password"]
    assert "Redis" in texts["cli wrong password"] and "Redis" in texts["cli redis down"]
    assert not leaks, leaks


def _answers(port: int) -> bool:
    try:
        return http(port, "GET", "/healthz", timeout=2).status == 200
    except OSError:
        return False


def _cli(procs, root: Path, url: str) -> str:
    done = procs.run(["queues", "--redis-url", url], root, procs.env(None), timeout=30)
    return done.stdout + done.stderr


def test_worker_processes_do_not_carry_the_password_in_their_command_line(
    tls_redis, project, procs, wait_for, fault_report
):
    url, _, _ = tls_redis
    p = project(MANIFEST, {"functions/tasks.py": TASKS})
    sup = procs.spawn(["run", "--processes", "1", "--port", str(free_port())], p.root,
                      procs.env(url))  # fmt: skip
    wait_for(lambda: procs.workers(sup), 20, "a worker process")
    time.sleep(1)  # the API and scheduler children start too
    family = [psutil.Process(sup.pid), *psutil.Process(sup.pid).children(recursive=True)]
    lines = [" ".join(c.cmdline()) for c in family if c.is_running()]
    leaks = [line for line in lines if PASSWORD in line]
    fault_report(
        "security-argv", "no password in any process's command line (ps)",
        processes=len(lines), leaks=len(leaks),
    )  # fmt: skip
    assert len(lines) >= 3
    assert not leaks, leaks


# -- the manifest is loaded with a safe loader ---------------------------------------

UNSAFE = """\
version: 1
queues: {default: {}}
functions:
  work: {handler: functions/tasks.py:work}
evil: !!python/object/apply:os.system ["touch {marker}"]
"""


def test_manifest_is_loaded_safely(project, procs, tmp_path, fault_report):
    marker = tmp_path / "pwned"
    p = project(UNSAFE.replace("{marker}", str(marker)), {"functions/tasks.py": TASKS})
    done = procs.run(["validate"], p.root, procs.env(None))
    fault_report("security-yaml", "safe YAML loader", exit_status=done.returncode,
                 executed=marker.exists())  # fmt: skip
    assert done.returncode == 2
    assert not marker.exists()
    assert "dtqs.yaml:5" in done.stderr + done.stdout


# -- admin routes need an admin token ------------------------------------------------

TOKENS = (
    MANIFEST
    + """\
api:
  tokens:
    ci: {token: "submit-token-123456", scope: submit}
    ops: {token: "admin-token-987654", scope: admin}
"""
)
OPEN = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/health"}
#: What issue 6 and the README call admin: every queue, dead-letter, function,
#: schedule and worker route, and cancelling a task.
ADMIN_PREFIXES = ("/v1/queues", "/v1/dead-letters", "/v1/functions", "/v1/schedules",
                  "/v1/workers")  # fmt: skip
CANCEL = {("POST", "/v1/tasks/{task_id}/cancel"), ("DELETE", "/v1/tasks/{task_id}")}


def every_route(config: Path, url: str) -> list[tuple[str, str]]:
    """(method, path template) of every route the app really serves (falcon.inspect)."""
    app = create_app(ApiState(api_client(load_manifest(config), url)))
    out = []
    for route in falcon.inspect.inspect_app(app).routes:
        for method in route.methods:
            if not method.internal and method.method not in ("OPTIONS",):
                out.append((method.method, route.path))
    return out


def test_admin_routes_refuse_without_an_admin_token(stack, fault_report):
    s = stack(TOKENS, {"functions/tasks.py": TASKS})
    s.workers(1)
    _, port = s.api()
    submit = {"Authorization": "Bearer submit-token-123456"}
    admin = {"Authorization": "Bearer admin-token-987654"}
    dead = http(port, "POST", "/v1/tasks", {"function": "fail", "payload": {}}, submit).json()
    client = s.client()
    deadline = time.monotonic() + 20
    while client.get(dead["id"]).state != "dead" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get(dead["id"]).state == "dead"
    values = {"name": "default", "task_id": dead["id"], "id": dead["id"]}
    routes = every_route(s.project.config, s.url)
    refused: dict[str, list[str]] = {"none": [], "submit": []}
    answered: list[str] = []
    for method, template in routes:
        path = re.sub(r"{(\w+)}", lambda m: values.get(m.group(1), "x"), template)
        body = {} if method in ("POST", "PUT", "PATCH") else None
        is_admin = template.startswith(ADMIN_PREFIXES) or (method, template) in CANCEL
        label = f"{method} {template}"
        if template in OPEN:
            continue
        status = http(port, method, path, body).status
        (refused["none"] if status == 401 else answered).append(f"{label} -> {status}")
        if is_admin:
            status = http(port, method, path, body, submit).status
            (refused["submit"] if status == 403 else answered).append(
                f"{label} (submit) -> {status}"
            )  # noqa: E501
    # The submit token cannot replay or purge dead letters, and nothing changed.
    still_dead = client.get(dead["id"]).state == "dead"
    in_set = s.redis().zscore("dtqs:{default}:dead", dead["id"]) is not None
    # The admin token can (proof the routes work at all).
    replay = http(port, "POST", f"/v1/dead-letters/{dead['id']}/replay", {}, admin).status
    fault_report(
        "security-admin", "admin routes need an admin token",
        routes=len(routes), refused_without_token=len(refused["none"]),
        refused_with_submit_token=len(refused["submit"]), answered=answered,
        admin_replay=replay,
    )  # fmt: skip
    assert not answered, answered
    assert len(refused["submit"]) >= 13  # every admin route, cancelling a task included
    assert still_dead and in_set
    assert replay in (200, 202)
