"""Scenarios 18, 18b and 19: hot reload of broken files under load.

18: the manifest is broken three ways (YAML syntax error, schema-invalid, truncated
mid-write) while the API takes submissions and a schedule fires; the old
configuration keeps processing and firing, `/readyz` says why, and
`dtqs_reload_failures_total` counts it; the fix applies within a second.
18b: hostile manifests (a billion-laughs file, a 500,000-deep one) are saved while
`dtqs api --reload` takes submissions: the API neither dies nor balloons, keeps
answering 202 on the last good configuration, `/readyz` names the problem, the
failure counter rises, and the fix is served.
19: a handler file with a syntax error is dropped in, then an existing handler is
broken: the other functions keep serving, no worker process exits, fixed files are
picked up.
"""

from __future__ import annotations

import re
import threading
import time

import psutil
import pytest

from tests.faults.behaviour.helpers import LEDGER_HELPER, http, ledger_lines

pytestmark = pytest.mark.timeout(120)

MANIFEST = """\
version: 1
queues:
  default: {concurrency: 4, visibility_timeout: 5s}
functions:
  work: {handler: functions/tasks.py:work}
schedules:
  tick: {function: work, every: 1s, payload: {tick: true}}
workers: {grace: 5s, heartbeat_interval: 500ms, reclaim_interval: 1s}
"""
FIXED = MANIFEST.replace("schedules:", "  added: {handler: functions/tasks.py:work}\nschedules:")
BROKEN = {
    "yaml_syntax": FIXED.replace("functions:\n", "functions:\n  work: [unclosed\n"),
    "schema_invalid": FIXED.replace("concurrency: 4", "concurrency: -4"),
    "truncated": FIXED[: len(FIXED) * 2 // 3],
}

TASKS = (
    LEDGER_HELPER
    + """

def work(payload, ctx):
    mark(ctx.task_id, "tick" if payload.get("tick") else "load", "done")
    return payload
"""
)


class Load:
    """Submits over HTTP from a thread, ~20/s; counts answers by status."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ids: list[str] = []
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            reply = http(self.port, "POST", "/v1/tasks", {"function": "work", "payload": {}})
            self.statuses[reply.status] = self.statuses.get(reply.status, 0) + 1
            if reply.status == 202:
                self.ids.append(reply.json()["id"])
            self._stop.wait(0.05)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def failures_metric(port: int) -> float:
    text = http(port, "GET", "/metrics").body.decode()
    found = re.search(r"^dtqs_reload_failures_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else -1.0


def schemas(port: int) -> dict:
    return http(port, "GET", "/openapi.json").json()["components"]["schemas"]


def ticks_done(s) -> int:
    return sum(1 for x in ledger_lines(s.ledger) if x[1] == "tick")


def test_broken_manifest_during_hot_reload_under_load(stack, procs, wait_for, fault_report):
    s = stack(MANIFEST, {"functions/tasks.py": TASKS})
    client = s.client()
    sup = s.workers(2, "--reload")
    sched = s.procs.spawn(["scheduler", "--reload", "--log-level", "warning"], s.root, s.env())
    api, port = s.api("--reload")
    wait_for(lambda: procs.workers(sup), 15, "worker processes")
    pids = {w.pid for w in procs.workers(sup)}
    wait_for(lambda: ticks_done(s) >= 2, 20, "the schedule to fire")
    figures: dict[str, dict[str, float | str]] = {}
    with Load(port) as load:
        for kind, text in BROKEN.items():
            before_fail = failures_metric(port)
            before_ticks, before_ids = ticks_done(s), len(load.ids)
            s.project.config.write_text(text)
            detail = wait_for(
                lambda: (r := http(port, "GET", "/readyz")).status == 503 and r.json()["detail"],
                10, f"/readyz to report the {kind} manifest",
            )  # fmt: skip
            wait_for(lambda b=before_fail: failures_metric(port) > b, 5, "the failure metric")
            time.sleep(3)  # broken for 3 s: the old configuration keeps going
            fired = ticks_done(s) - before_ticks
            accepted = len(load.ids) - before_ids
            # The fix (with a new function in it) applies within a second.
            fixed_at = time.monotonic()
            s.project.config.write_text(FIXED)  # the first fix also adds a function
            wait_for(lambda: http(port, "GET", "/readyz").status == 200, 10, "readiness again")
            applied_s = time.monotonic() - fixed_at
            figures[kind] = {
                "detail": detail[:120], "ticks_while_broken": fired,
                "accepted_while_broken": accepted, "fix_applied_s": round(applied_s, 3),
            }  # fmt: skip
            reply = http(port, "POST", "/v1/tasks", {"function": "added", "payload": {}})
            assert reply.status == 202, reply
            load.ids.append(reply.json()["id"])
            time.sleep(1.5)  # let the worker pool's own reload (if any) settle
    wait_for(lambda: all(client.get(t).state == "succeeded" for t in load.ids), 30,
             "every accepted task to succeed")  # fmt: skip
    done = [x[0] for x in ledger_lines(s.ledger) if x[1] == "load"]
    fault_report(
        18, "broken manifest during hot reload under load",
        accepted=len(load.ids), lost=len(set(load.ids) - set(done)),
        dup=len(done) - len(set(done)), statuses=load.statuses,
        failures_total=failures_metric(port), **figures,
    )  # fmt: skip
    assert set(load.statuses) == {202}, load.statuses  # never refused, never a 5xx
    for kind, f in figures.items():
        assert f["ticks_while_broken"] >= 2, (kind, f)  # still firing (every 1 s, 3 s)
        assert f["accepted_while_broken"] > 0, (kind, f)
        assert f["fix_applied_s"] <= 1.0, (kind, f)
    assert "reload failed" in figures["yaml_syntax"]["detail"]
    assert "concurrency" in figures["schema_invalid"]["detail"]
    assert failures_metric(port) >= 3
    assert {w.pid for w in procs.workers(sup)} and api.poll() is None and sched.poll() is None
    assert pids  # the pool ran throughout (pids may change only on the good reloads)


#: 18b: nine anchors of ten aliases each (10**9 values once expanded) in a schedule's
#: payload; and a payload nested 500,000 deep. Both about the size of a real manifest
#: (the second 1 MB), and both used to kill an API under --reload.
LAUGHS = MANIFEST.replace(
    "workers:",
    "  bomb:\n    function: work\n    every: 1h\n    payload:\n"
    '      a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(f"      a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]\n" for n in range(1, 10))
    + "workers:",
)
DEEP = MANIFEST.replace(
    "workers:", "  deep: {function: work, every: 1h, payload: " + "[" * 500_000 + "]}\nworkers:"
)
HOSTILE = {  # NOTE: the deep one first: against the old code it fails fast, unlike the bomb
    "deeply_nested": (DEEP, "nested deeper than 64 levels"),
    "billion_laughs": (LAUGHS, "more than 100,000 values once aliases (*name) are expanded"),
}


def test_hostile_manifest_saved_during_hot_reload(stack, procs, wait_for, fault_report):
    s = stack(MANIFEST, {"functions/tasks.py": TASKS})
    client = s.client()
    sup = s.workers(1, "--reload")
    api, port = s.api("--reload")
    wait_for(lambda: procs.workers(sup), 15, "a worker process")
    rss_mb = [psutil.Process(api.pid).memory_info().rss / 2**20]
    figures: dict[str, dict[str, float | str]] = {}
    with Load(port) as load:
        for kind, (text, _) in HOSTILE.items():
            before_fail, before_ids = failures_metric(port), len(load.ids)
            saved_at = time.monotonic()
            s.project.config.write_text(text)
            detail = wait_for(
                lambda: (r := http(port, "GET", "/readyz")).status == 503 and r.json()["detail"],
                15, f"/readyz to report the {kind} manifest",
            )  # fmt: skip
            reported_s = time.monotonic() - saved_at
            wait_for(lambda b=before_fail: failures_metric(port) > b, 5, "the failure metric")
            time.sleep(2)  # hostile for 2 s: the last good configuration keeps serving
            rss_mb.append(psutil.Process(api.pid).memory_info().rss / 2**20)
            accepted = len(load.ids) - before_ids
            fixed_at = time.monotonic()
            s.project.config.write_text(FIXED)  # the fix also adds a function
            wait_for(lambda: http(port, "GET", "/readyz").status == 200, 15, "readiness again")
            figures[kind] = {
                "detail": detail[:160], "reported_s": round(reported_s, 3),
                "accepted_while_hostile": accepted,
                "failures_added": failures_metric(port) - before_fail,
                "fix_applied_s": round(time.monotonic() - fixed_at, 3),
            }  # fmt: skip
            reply = http(port, "POST", "/v1/tasks", {"function": "added", "payload": {}})
            assert reply.status == 202, reply
            # The fixed configuration serves end to end: the new function runs.
            assert client.wait(reply.json()["id"], timeout=20).state == "succeeded"
            s.project.config.write_text(MANIFEST)  # back to the start for the next kind
            wait_for(lambda: "submit.added" not in schemas(port), 15, "the function gone again")
            time.sleep(1.5)  # let the worker pool's own reload settle
    wait_for(lambda: all(client.get(t).state == "succeeded" for t in load.ids), 30,
             "every accepted task to succeed")  # fmt: skip
    done = [x[0] for x in ledger_lines(s.ledger) if x[1] == "load"]
    fault_report(
        "18b", "hostile manifest saved during hot reload",
        accepted=len(load.ids), lost=len(set(load.ids) - set(done)),
        dup=len(done) - len(set(done)), statuses=load.statuses,
        failures_total=failures_metric(port), api_rss_mb_max=round(max(rss_mb), 1),
        api_rss_mb_start=round(rss_mb[0], 1), **figures,
    )  # fmt: skip
    assert api.poll() is None and sup.poll() is None, procs.output(api)[-3000:]
    assert set(load.statuses) == {202}, load.statuses  # never refused, never a 5xx
    for kind, (_, expected) in HOSTILE.items():
        f = figures[kind]
        assert "last reload failed" in f["detail"] and expected in f["detail"], (kind, f)
        assert f["accepted_while_hostile"] > 0 and f["failures_added"] >= 1, (kind, f)
    assert max(rss_mb) < rss_mb[0] + 200, rss_mb  # the old code grew to gigabytes
    assert "Traceback" not in procs.output(api), procs.output(api)[-3000:]


HANDLERS_MANIFEST = """\
version: 1
queues:
  default: {concurrency: 4, visibility_timeout: 5s}
functions:
  a: {handler: functions/a.py:a}
  b: {handler: functions/b.py:b}
workers: {grace: 5s, heartbeat_interval: 500ms, reclaim_interval: 1s}
"""


def handler(name: str, version: int) -> str:
    return f"def {name}(payload):\n    return {{'fn': '{name}', 'version': {version}}}\n"


def test_broken_handler_files_keep_the_other_functions_serving(
    stack, procs, wait_for, fault_report
):
    s = stack(
        HANDLERS_MANIFEST, {"functions/a.py": handler("a", 1), "functions/b.py": handler("b", 1)}
    )
    client = s.client()
    sup = s.workers(2, "--reload")
    wait_for(lambda: len(procs.workers(sup)) == 2, 15, "two worker processes")
    pids = {w.pid for w in procs.workers(sup)}

    def run(fn: str) -> dict:
        info = client.wait(client.submit(fn, {}), timeout=20)
        assert info.state == "succeeded", info
        return info.result

    accepted = 2
    assert run("a") == {"fn": "a", "version": 1} and run("b") == {"fn": "b", "version": 1}
    # 1. A new handler file with a syntax error is dropped in (no function uses it).
    s.project.write("functions/dropped.py", "def broken(:\n")
    time.sleep(2)
    assert run("a")["version"] == 1 and run("b")["version"] == 1
    after_drop = {w.pid for w in procs.workers(sup)}
    # 2. An existing handler is broken: the last good processes keep serving a and b.
    s.project.write("functions/b.py", "def b(payload:\n    return 1\n")
    time.sleep(2)
    served = [run("a")["version"], run("b")["version"], run("a")["version"]]
    accepted += 5
    after_break = {w.pid for w in procs.workers(sup)}
    exited = sup.poll() is not None
    # 3. The fixes are picked up: new code runs.
    s.project.write("functions/dropped.py", "def fine(payload):\n    return 1\n")
    fixed_at = time.monotonic()
    s.project.write("functions/b.py", handler("b", 2))
    wait_for(lambda: run("b")["version"] == 2, 20, "the fixed handler to run")
    picked_up_s = time.monotonic() - fixed_at
    accepted += 1
    crashes = procs.output(sup).count("exited with")
    fault_report(
        19, "broken handler files during hot reload",
        accepted=accepted, lost=0, dup=None, worker_pids_kept=after_drop == after_break,
        crash_lines=crashes,
        versions_while_broken=served, fix_picked_up_s=round(picked_up_s, 3),
    )  # fmt: skip
    assert served == [1, 1, 1]
    # The dropped-in file broke nothing in use, so that reload went through (new
    # processes); the broken handler did not: the same processes kept serving.
    assert pids and after_drop == after_break, "no worker process may exit over a bad file"
    assert crashes == 0, procs.output(sup)[-2000:]
    assert not exited
    assert run("a")["version"] == 1
