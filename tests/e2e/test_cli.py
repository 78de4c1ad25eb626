"""The `dtqs` command as a user runs it: `validate`, and a round trip against Redis."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parent.parent.parent
#: "file:line: path: message" (path is optional for problems of the whole file).
PROBLEM = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+): (?:(?P<path>[\w.\[\]-]+): )?(?P<msg>.+)$")

BASE = """\
version: 1
queues:
  default:
    concurrency: 2
functions:
  x:
    handler: functions/tasks.py:echo
"""
TASKS = "def echo(payload):\n    return payload\n"


def problems(stderr: str) -> list[re.Match[str]]:
    lines = [line for line in stderr.splitlines() if not line.startswith("dtqs: error:")]
    found = [PROBLEM.match(line) for line in lines]
    assert all(found), f"not file:line: path: message lines:\n{stderr}"
    return found  # type: ignore[return-value]


def validate(procs, root: Path):
    done = procs.run(["validate"], root, procs.env(None))
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


# -- validate --------------------------------------------------------------------


def test_validate_example_is_ok(procs, tmp_path):
    root = tmp_path / "example"
    root.mkdir()
    shutil.copy(REPO / "dtqs.yaml", root)
    for folder in ("functions", "schemas"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    done = validate(procs, root)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout


def test_validate_bad_yaml_syntax(procs, project):
    text = BASE + "  y:\n    handler: [functions/tasks.py:echo\n    queue: default\n"
    p = project(text, {"functions/tasks.py": TASKS})
    with pytest.raises(yaml.YAMLError) as parsed:
        yaml.safe_load(text)
    expected = parsed.value.problem_mark.line + 1  # type: ignore[attr-defined]
    done = validate(procs, p.root)
    assert done.returncode == 2
    (found,) = problems(done.stderr)
    assert (found["file"], int(found["line"])) == ("dtqs.yaml", expected)
    assert "YAML" in found["msg"]


def test_validate_schema_violation(procs, project):
    text = BASE + "    retry:\n      max_attempts: -1\n"
    p = project(text, {"functions/tasks.py": TASKS})
    done = validate(procs, p.root)
    assert done.returncode == 2
    (found,) = problems(done.stderr)
    assert found["file"] == "dtqs.yaml"
    assert int(found["line"]) == line_of(text, "max_attempts")
    assert found["path"] == "functions.x.retry.max_attempts"


@pytest.mark.parametrize(
    ("extra", "files", "needle", "path", "words"),
    [
        ("    queue: nope\n", {}, "queue: nope", "functions.x.queue", ["nope"]),
        ("  y:\n    handler: functions/missing.py:f\n", {}, "missing.py", "functions.y.handler",
         ["functions/missing.py"]),
        ("  y:\n    handler: outside.py:echo\n", {"outside.py": TASKS}, "outside.py",
         "functions.y.handler", ["functions/"]),
    ],
    ids=["unknown-queue", "missing-handler-file", "handler-outside-functions"],
)  # fmt: skip
def test_validate_manifest_mistake(procs, project, extra, files, needle, path, words):
    text = BASE + extra
    p = project(text, {"functions/tasks.py": TASKS, **files})
    done = validate(procs, p.root)
    assert done.returncode == 2
    (found,) = problems(done.stderr)
    assert (found["file"], found["path"]) == ("dtqs.yaml", path)
    assert int(found["line"]) == line_of(text, needle)
    assert all(w in found["msg"] for w in words), found["msg"]


def test_validate_handler_syntax_error(procs, project):
    source = "import os\n\ndef echo(payload)\n    return payload\n"
    p = project(BASE.replace("tasks.py", "bad.py"), {"functions/bad.py": source})
    done = validate(procs, p.root)
    assert done.returncode == 2
    (found,) = problems(done.stderr)
    assert (found["file"], int(found["line"])) == ("functions/bad.py", 3)
    assert "SyntaxError" in found["msg"]


def test_validate_reports_every_mistake_at_once(procs, project):
    text = (
        BASE
        + "    retry:\n      max_attempts: -1\n"
        + "  y:\n    handler: functions/tasks.py:echo\n    queue: nope\n"
        + "  z:\n    handler: functions/missing.py:f\n"
    )
    p = project(text, {"functions/tasks.py": TASKS})
    done = validate(procs, p.root)
    assert done.returncode == 2
    found = problems(done.stderr)
    assert [(m["path"], int(m["line"])) for m in found] == [
        ("functions.x.retry.max_attempts", line_of(text, "max_attempts")),
        ("functions.y.queue", line_of(text, "queue: nope")),
        ("functions.z.handler", line_of(text, "missing.py")),
    ]
    assert "3 problem(s)" in done.stderr


def test_validate_deeply_nested_manifest_is_a_problem_not_a_traceback(procs, project):
    text = BASE + "schedules:\n  s: {function: x, payload: " + "[" * 500_000 + "]" * 500_000 + "}\n"
    p = project(text, {"functions/tasks.py": TASKS})
    done = validate(procs, p.root)  # also asserts: no traceback
    assert done.returncode == 2
    (found,) = problems(done.stderr)
    assert (found["file"], int(found["line"])) == ("dtqs.yaml", line_of(text, "payload"))
    assert found["msg"] == "nested deeper than 64 levels"


def test_validate_handler_that_cannot_take_a_payload(procs, project):
    p = project(BASE, {"functions/tasks.py": "import os\n\n\ndef echo():\n    return 1\n"})
    done = validate(procs, p.root)
    assert done.returncode == 2
    (found,) = problems(done.stderr)
    assert (found["file"], int(found["line"]), found["path"]) == (
        "functions/tasks.py",
        4,
        "functions.x.handler",
    )
    assert found["msg"].endswith("expected echo(payload) or echo(payload, ctx)")


def test_validate_warns_about_a_slow_pattern_and_passes(procs, project):
    schema = json.dumps({"properties": {"name": {"type": "string", "pattern": "^(a+)+$"}}})
    p = project(BASE + "    schema: schemas/slow.json\n",
                {"functions/tasks.py": TASKS, "schemas/slow.json": schema})  # fmt: skip
    done = validate(procs, p.root)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout
    [warning] = done.stderr.splitlines()
    assert warning.startswith(
        "schemas/slow.json: functions.x.schema: warning: /properties/name/pattern: "
        "pattern '^(a+)+$' repeats a group that itself holds a repeat"
    )


# -- a round trip against Redis ----------------------------------------------------


def test_cli_round_trip(procs, project, redis_url, r):
    p = project()  # conftest's manifest: function echo on queue "default"
    env = procs.env(redis_url)

    def dtqs(*args: str):
        done = procs.run(list(args), p.root, env)
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return done

    submitted = dtqs("submit", "echo", '{"n": 1}')
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    shown = dtqs("status", task_id)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert (info["id"], info["state"], info["payload"]) == (task_id, "queued", {"n": 1})

    assert dtqs("cancel", task_id).returncode == 0
    assert json.loads(dtqs("status", task_id).stdout)["state"] == "cancelled"
    again = dtqs("cancel", task_id)
    assert again.returncode == 4, again
    assert "cancelled" in again.stderr

    assert dtqs("status", "default.000000000000deadbeefdeadbeef").returncode == 3
    assert dtqs("status", "not-a-task-id").returncode == 3

    for priority in ("high", "normal", "normal"):
        assert dtqs("submit", "echo", "{}", "--priority", priority).returncode == 0
    counts = dtqs("queues", "--json")
    assert counts.returncode == 0, counts.stderr
    assert json.loads(counts.stdout)["default"]["pending"] == {
        "critical": 0, "high": 1, "normal": 2, "low": 0
    }  # fmt: skip

    bad = dtqs("submit", "echo", "{not json")
    assert bad.returncode == 2, bad
    assert "JSON" in bad.stderr

    nope = dtqs("worker", "--queues", "nope", "--log-level", "warning")
    assert nope.returncode == 2, nope
    assert "nope" in nope.stderr


def test_submit_wait_statuses(procs, project, redis_url, r):
    """--wait: the result and 0; a task that failed: 5 (it was 4, 'conflict'); a task
    still waiting at --timeout: 124. One line each, no traceback."""
    from dtqs.runtime.testing import InProcessWorker

    manifest = BASE.replace("functions:\n", "functions:\n  boom:\n"
                            "    handler: functions/tasks.py:boom\n"
                            "    retry: {max_attempts: 1}\n")  # fmt: skip
    p = project(manifest, {"functions/tasks.py": TASKS + "def boom(payload):\n    1 / 0\n"})
    env = procs.env(redis_url)
    with InProcessWorker(p.manifest(), redis_url):
        ok = procs.run(["submit", "x", '{"n": 1}', "--wait"], p.root, env)
        failed = procs.run(["submit", "boom", "{}", "--wait"], p.root, env)
    late = procs.run(["submit", "x", "{}", "--delay", "60", "--wait", "--timeout", "0.5"],
                     p.root, env)  # fmt: skip
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"n": 1}, ok.stderr
    assert failed.returncode == 5, failed
    assert failed.stderr.startswith("dtqs: error: task default.") and "ended dead" in failed.stderr
    assert "ZeroDivisionError" in failed.stderr and len(failed.stderr.splitlines()) == 1
    assert late.returncode == 124 and "still scheduled" in late.stderr, late
