"""Hot reload without Redis: the file filter, debouncing, reporting a failure once, and
the API's in-process reload (/readyz, /metrics, /openapi.json follow it)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from falcon import testing
from watchfiles import Change

from dtqs.api.app import ApiState, create_app, manifest_reloader
from dtqs.runtime.client import Client
from dtqs.runtime.manifest import Manifest
from dtqs.runtime.redis.broker import Broker
from dtqs.runtime.reloader import ManifestReloader, PoolReloader, ProjectFilter, Watcher
from tests.unit.memcap import memory_cap

BROKEN_YAML = "version: 1\nqueues: [\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    "rel",
    ["dtqs.yaml", "functions/x.py", "functions/deep/er/y.py", "schemas/y.json", "functions"],
)
def test_filter_accepts_the_manifest_functions_and_schemas(root: Path, rel: str) -> None:
    accept = ProjectFilter(root / "dtqs.yaml")
    assert accept(Change.modified, str(root / rel))


@pytest.mark.parametrize(
    "rel",
    [
        "functions/__pycache__/x.cpython-311.pyc",
        "functions/x.pyc",
        "functions/.x.py.swp",
        "functions/.x.py.swx",
        "functions/x.py~",
        "functions/.#x.py",
        "functions/4913",
        "schemas/y.json.tmp",
        ".dtqs/appendonly.aof",
        ".dtqs/appendonlydir/appendonly.aof.1.incr.aof",
        ".dtqs/server.json",
        "other/x.py",
        "README.md",
        "other.yaml",
        ".git/index",
    ],
)
def test_filter_rejects_everything_else(root: Path, rel: str) -> None:
    accept = ProjectFilter(root / "dtqs.yaml")
    assert not accept(Change.modified, str(root / rel))


def test_filter_follows_a_manifest_of_another_name(root: Path) -> None:
    accept = ProjectFilter(root / "prod.yaml")
    assert accept(Change.added, str(root / "prod.yaml"))
    assert not accept(Change.added, str(root / "dtqs.yaml"))
    assert not accept(Change.added, "/elsewhere/prod.yaml")


class Calls:
    """Records the watcher's callbacks; wait() returns once `n` arrived (or times out)."""

    def __init__(self) -> None:
        self.batches: list[set[str]] = []
        self.event = threading.Event()

    def __call__(self, paths: set[str]) -> None:
        self.batches.append(paths)
        self.event.set()


def started(watcher: Watcher) -> Watcher:
    watcher.start()
    time.sleep(0.3)  # NOTE: the OS watch is set up by the thread; give it a moment
    return watcher


def test_rapid_writes_are_one_change(root: Path) -> None:
    (root / "functions").mkdir()
    target = root / "functions" / "x.py"
    calls = Calls()
    watcher = started(Watcher(root / "dtqs.yaml", calls))
    try:
        for version in range(3):  # an editor's save: write, rename, write again
            target.write_text(f"VERSION = {version}\n")
            (root / "functions" / ".x.py.swp").write_text("swap")
            time.sleep(0.02)
        assert calls.event.wait(3), "no callback"
        time.sleep(0.6)  # well past the quiet time: a second callback would be here
        assert len(calls.batches) == 1, calls.batches
        assert calls.batches[0] == {str(target)}
    finally:
        began = time.monotonic()
        watcher.stop()
    assert time.monotonic() - began < 2
    assert watcher._thread is not None and not watcher._thread.is_alive()


def test_ignored_files_call_nothing(root: Path) -> None:
    (root / "functions").mkdir()  # NOTE: a folder appearing is a change (it may be moved in)
    calls = Calls()
    watcher = started(Watcher(root / "dtqs.yaml", calls))
    try:
        for rel in ("functions/__pycache__/x.cpython-311.pyc", ".dtqs/appendonly.aof", "notes.txt"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("x")
        assert not calls.event.wait(1.0), calls.batches
        (root / "dtqs.yaml").write_text("version: 1\n")
        assert calls.event.wait(3)
        assert calls.batches == [{str(root / "dtqs.yaml")}]
    finally:
        watcher.stop()


def test_separate_changes_are_separate_callbacks(root: Path) -> None:
    calls = Calls()
    watcher = started(Watcher(root / "dtqs.yaml", calls))
    try:
        (root / "dtqs.yaml").write_text("a")
        assert calls.event.wait(3)
        calls.event.clear()
        (root / "schemas").mkdir()
        (root / "schemas" / "p.json").write_text("{}")
        assert calls.event.wait(3)
        assert len(calls.batches) == 2
    finally:
        watcher.stop()


def test_manifest_reloader_applies_good_and_reports_a_bad_one_once(
    project, caplog: pytest.LogCaptureFixture
) -> None:
    p = project()
    good = p.config.read_text()
    applied: list[Manifest] = []
    failures: list[str] = []
    reloader = ManifestReloader(p.config, applied.append, name="api", on_failure=failures.append)
    caplog.set_level(logging.INFO, "dtqs.reload")

    assert reloader.reload()
    assert [m.path for m in applied] == [p.config]

    p.write("dtqs.yaml", BROKEN_YAML)
    assert not reloader.reload()
    assert not reloader.reload()  # the same files again: counted, not logged again
    assert len(failures) == 2 and "dtqs.yaml:" in failures[0]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "dtqs.yaml:" in errors[0].getMessage()
    assert len(applied) == 1

    p.write("dtqs.yaml", "version: 1\nqueues: {default: {priorities: 5}}\nfunctions: {}\n")
    assert not reloader.reload()  # another problem: reported too
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2

    p.write("dtqs.yaml", good)
    assert reloader.reload()
    assert len(applied) == 2
    assert "the files are fixed" in caplog.text


def drive(reloader: PoolReloader, timeout: float = 20) -> None:
    """Step the reloader as the supervisor's loop does until it is idle."""
    deadline = time.monotonic() + timeout
    reloader.step()
    while reloader.busy:
        assert time.monotonic() < deadline, "validation did not finish"
        time.sleep(0.02)
        reloader.step()


def test_pool_reloader_validates_in_a_child_and_reports_once(
    project, caplog: pytest.LogCaptureFixture
) -> None:
    p = project()
    applied: list[int] = []
    reloader = PoolReloader(p.config, lambda: applied.append(1))
    caplog.set_level(logging.INFO, "dtqs.reload")
    try:
        reloader._changed({str(p.root / "functions" / "tasks.py")})
        drive(reloader)
        assert applied == [1]

        p.write("functions/tasks.py", "def echo(payload):\n    return (\n")
        for _ in range(2):  # two saves of the same broken file: one report
            reloader._changed({str(p.root / "functions" / "tasks.py")})
            drive(reloader)
        assert applied == [1]
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, errors
        assert "functions/tasks.py:2" in errors[0] and "SyntaxError" in errors[0]

        p.write("functions/tasks.py", "def echo(payload):\n    return payload\n")
        reloader._changed({str(p.root / "functions" / "tasks.py")})
        drive(reloader)
        assert applied == [1, 1]
        assert "the files are fixed" in caplog.text
    finally:
        reloader.stop()


def test_pool_reloader_revalidates_when_files_change_during_validation(project) -> None:
    p = project()
    applied: list[int] = []
    reloader = PoolReloader(p.config, lambda: applied.append(1))
    try:
        reloader._changed({str(p.config)})
        reloader.step()
        assert reloader.validation is not None
        reloader._changed({str(p.config)})  # a second save while the first is validated
        drive(reloader)
        assert applied == [1]  # the stale result was dropped, the newer state applied once
    finally:
        reloader.stop()


def test_api_reload_swaps_the_manifest_and_reports_failures(project, unused_port) -> None:
    p = project()
    good = p.config.read_text()
    nowhere = Broker(f"redis://127.0.0.1:{unused_port}/0", connect_timeout_s=0.2)
    state = ApiState(Client(manifest=p.manifest(), broker=nowhere))
    api = testing.TestClient(create_app(state))
    reloader = manifest_reloader(state)

    p.write("dtqs.yaml", BROKEN_YAML)
    assert not reloader.reload()
    assert state.reload_error and "dtqs.yaml:" in state.reload_error
    ready = api.simulate_get("/readyz")
    assert ready.status_code == 503 and "dtqs.yaml:" in ready.json["detail"]
    metrics = api.simulate_get("/metrics").text
    assert "dtqs_reload_failures_total 1.0" in metrics
    assert "submit.echo" in api.simulate_get("/openapi.json").json["components"]["schemas"]

    p.write("dtqs.yaml", good.replace("  echo:\n", "  shout:\n"))
    assert reloader.reload()
    assert state.reload_error is None
    schemas = api.simulate_get("/openapi.json").json["components"]["schemas"]
    assert "submit.shout" in schemas and "submit.echo" not in schemas
    assert api.simulate_post("/v1/tasks", json={"function": "echo"}).status_code == 404
    assert "dtqs_reload_failures_total 1.0" in api.simulate_get("/metrics").text
    nowhere.close()


def test_a_failing_watch_is_started_again(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dtqs.runtime.reloader as reloader

    real = reloader.watch
    failures = []

    def flaky(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise OSError("inotify: no such file or directory")
        return real(*args, **kwargs)

    monkeypatch.setattr(reloader, "watch", flaky)
    calls = Calls()
    watcher = started(Watcher(root / "dtqs.yaml", calls))
    try:
        # Changes made while it was down are not known: it asks for one look at once.
        assert calls.event.wait(3) and calls.batches[0] == {str(root / "dtqs.yaml")}
        calls.event.clear()
        time.sleep(0.3)
        (root / "dtqs.yaml").write_text("version: 1\n")
        assert calls.event.wait(3), "the watch was not started again"
    finally:
        watcher.stop()


def test_manifest_reloader_catches_counts_and_logs_any_failure_once(
    project, caplog: pytest.LogCaptureFixture
) -> None:
    # Not only DtqsErrors: whatever loading or applying raises, the reload fails,
    # the last good configuration stays, and every failure is counted.
    p = project()
    failures: list[str] = []

    def apply(manifest: Manifest) -> None:
        raise ValueError("applying broke")

    reloader = ManifestReloader(p.config, apply, name="api", on_failure=failures.append)
    caplog.set_level(logging.INFO, "dtqs.reload")
    assert not reloader.reload()
    assert not reloader.reload()
    assert (
        failures == ["unexpected error while loading dtqs.yaml: ValueError('applying broke')"] * 2
    )
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.exc_info is not None and "applying broke" in logged.getMessage()


#: A billion laughs (anchors of ten aliases, nine deep) and nesting far past the bound.
LAUGHS = "".join(
    [
        "version: 1\nqueues: {default: {}}\nfunctions: {}\nschedules:\n  s:\n    payload:\n",
        '      a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n',
        *(f"      a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]\n" for n in range(1, 10)),
    ]
)
DEEP = "version: 1\nqueues: {default: {}}\nfunctions: {}\nx: " + "[" * 200_000 + "\n"


def test_api_reload_of_hostile_manifests_keeps_the_last_good_one(project, unused_port) -> None:
    p = project()
    good = p.config.read_text()
    nowhere = Broker(f"redis://127.0.0.1:{unused_port}/0", connect_timeout_s=0.2)
    state = ApiState(Client(manifest=p.manifest(), broker=nowhere))
    api = testing.TestClient(create_app(state))
    reloader = manifest_reloader(state)
    expected = {
        "laughs": "more than 100,000 values once aliases (*name) are expanded",
        "deep": "dtqs.yaml:4: nested deeper than 64 levels",
    }
    for count, (name, text) in enumerate((("laughs", LAUGHS), ("deep", DEEP)), 1):
        p.write("dtqs.yaml", text)
        with memory_cap():
            assert not reloader.reload()
        detail = api.simulate_get("/readyz").json["detail"]
        assert expected[name] in detail, detail
        assert f"dtqs_reload_failures_total {count}.0" in api.simulate_get("/metrics").text
        assert "echo" in state.manifest.functions  # the last good one still serves
    p.write("dtqs.yaml", good.replace("  echo:\n", "  shout:\n"))
    assert reloader.reload()
    assert "shout" in state.manifest.functions and state.reload_error is None
    nowhere.close()


def test_pool_reloader_survives_any_failure_to_apply(
    project, caplog: pytest.LogCaptureFixture
) -> None:
    p = project()
    calls: list[int] = []

    def apply() -> None:
        calls.append(1)
        raise OSError("fork failed")

    reloader = PoolReloader(p.config, apply)
    caplog.set_level(logging.INFO, "dtqs.reload")
    try:
        for _ in range(2):
            reloader._changed({str(p.config)})
            drive(reloader)  # the supervisor's loop goes on
        assert calls == [1, 1]
        [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "OSError('fork failed')" in logged.getMessage() and logged.exc_info
    finally:
        reloader.stop()
