"""dtqs.yaml loading: durations, ${VAR}s, every kind of problem with file:line, the dataclasses."""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from dtqs.runtime.errors import ManifestError
from dtqs.runtime.manifest import (
    DEFAULT_PRIORITIES,
    FunctionSpec,
    Manifest,
    QueueSpec,
    RetryPolicy,
    WorkerSpec,
    load_manifest,
    manifest_schema,
    parse_duration,
    resolve_config_path,
)
from tests.unit.memcap import memory_cap

REPO = Path(__file__).resolve().parents[2]

HELLO_SCHEMA = """{
  "type": "object",
  "properties": {"name": {"type": "string", "minLength": 1}},
  "required": ["name"],
  "additionalProperties": false
}
"""

#: A valid manifest; tests append to it or write their own.
BASE = """\
version: 1
queues:
  default: {}
functions:
  hello:
    handler: functions/hello.py:handle
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (the working directory) with functions/hello.py and schemas/hello.json."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "functions").mkdir()
    (tmp_path / "functions" / "hello.py").write_text("def handle(payload):\n    return payload\n")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "hello.json").write_text(HELLO_SCHEMA)
    return tmp_path


def write(project: Path, text: str) -> Path:
    path = project / "dtqs.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(project: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    """The problems load_manifest reports for `text`, as the CLI prints them."""
    with pytest.raises(ManifestError) as info:
        load_manifest(write(project, text), environ=environ or {})
    return [str(problem) for problem in info.value.problems]


# -- durations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        (" 2m ", 120.0),
        ("45", 45.0),
        (30, 30.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["5x", "-1s", -1, "", "s", "1 h", "1e3s", True, None, [], math.nan]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration .*expected seconds"):
        parse_duration(value)


def test_parse_duration_names_where() -> None:
    with pytest.raises(ValueError, match=r"^functions.hello.timeout: invalid duration '5x'"):
        parse_duration("5x", where="functions.hello.timeout")


# -- a valid manifest --------------------------------------------------------------


def test_valid_manifest_gives_frozen_dataclasses(project: Path) -> None:
    path = write(
        project,
        """\
        version: 1
        redis: {url: "redis://r:6379/0", prefix: app}
        queues:
          default:
            concurrency: 4
            visibility_timeout: 2m
            weights: {critical: 8, high: 4, normal: 2, low: 1}
            dead_letter_ttl: 1h
          bulk:
            priorities: [fast, slow]
        functions:
          hello:
            handler: functions/hello.py:handle
            timeout: 30s
            retry:
              {max_attempts: 5, backoff: fixed, initial_delay: 500ms, max_delay: 5m, jitter: false}
            schema: schemas/hello.json
            result_ttl: 0
            dead_letter: false
          batch:
            handler: functions/hello.py:handle
            queue: bulk
        schedules:
          tick:
            function: hello
            every: 90
            payload: {name: tick}
            misfire: once
        workers: {grace: 10s, heartbeat_interval: 2s, max_tasks_per_child: 100, max_memory_mb: 256}
        """,
    )
    manifest = load_manifest(path, environ={})
    assert isinstance(manifest, Manifest)
    assert manifest.path == path and manifest.root == project
    assert (manifest.redis_url, manifest.prefix, manifest.version) == ("redis://r:6379/0", "app", 1)
    default = manifest.queues["default"]
    assert default == QueueSpec(
        name="default",
        priorities=DEFAULT_PRIORITIES,
        concurrency=4,
        visibility_timeout_s=120.0,
        weights={"critical": 8, "high": 4, "normal": 2, "low": 1},
        dead_letter_max=10_000,
        dead_letter_ttl_s=3600.0,
    )
    assert manifest.queues["bulk"].priorities == ("fast", "slow")
    hello = manifest.functions["hello"]
    assert hello.handler_file == project / "functions" / "hello.py"
    assert (hello.handler_attr, hello.queue, hello.priority) == ("handle", "default", "normal")
    assert hello.timeout_s == 30.0 and hello.result_ttl_s == 0.0 and hello.dead_letter is False
    assert hello.retry == RetryPolicy(5, "fixed", 0.5, 300.0, False)
    assert hello.schema_file == project / "schemas" / "hello.json"
    assert hello.schema is not None and hello.schema["required"] == ["name"]
    # No "normal" level in bulk: the queue's last level is the default priority.
    assert manifest.functions["batch"].priority == "slow"
    tick = manifest.schedules["tick"]
    assert (tick.every_s, tick.cron, tick.timezone, tick.payload) == (
        90.0,
        None,
        "UTC",
        {"name": "tick"},
    )
    assert (tick.misfire, tick.enabled, tick.jitter_s) == ("once", True, 0.0)
    assert manifest.workers == WorkerSpec(10.0, 2.0, 1.0, 100, 256)
    with pytest.raises(dataclasses.FrozenInstanceError):
        hello.queue = "bulk"  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.functions["x"] = hello  # type: ignore[index]


def test_defaults(project: Path) -> None:
    manifest = load_manifest(write(project, BASE), environ={})
    assert manifest.redis_url == "" and manifest.prefix == "dtqs"
    assert manifest.queues["default"] == QueueSpec(name="default")
    hello = manifest.functions["hello"]
    assert hello == FunctionSpec(
        name="hello",
        handler="functions/hello.py:handle",
        handler_file=project / "functions" / "hello.py",
        handler_attr="handle",
        queue="default",
        priority="normal",
    )
    assert dict(manifest.schedules) == {} and manifest.workers == WorkerSpec()


def test_repository_manifest_loads() -> None:
    manifest = load_manifest(REPO / "dtqs.yaml", environ={})
    assert manifest.redis_url == ""
    assert manifest.queues["default"].priorities == ("critical", "high", "normal", "low")
    assert manifest.queues["default"].visibility_timeout_s == 60.0
    hello = manifest.functions["hello"]
    assert hello.retry == RetryPolicy(5, "exponential", 1.0, 300.0, True)
    assert (hello.timeout_s, hello.result_ttl_s, hello.priority) == (30.0, 86400.0, "normal")
    assert hello.schema_file == REPO / "schemas" / "hello.json"
    nightly = manifest.schedules["nightly"]
    assert (nightly.cron, nightly.timezone, nightly.payload) == (
        "0 2 * * *",
        "UTC",
        {"name": "nightly"},
    )


# -- where the manifest comes from ------------------------------------------------


def test_resolve_config_path(project: Path) -> None:
    write(project, BASE)
    (project / "other.yaml").write_text(BASE)
    assert resolve_config_path(None, environ={}) == project / "dtqs.yaml"
    assert (
        resolve_config_path(None, environ={"DTQS_CONFIG": "other.yaml"}) == project / "other.yaml"
    )
    assert resolve_config_path("other.yaml", environ={"DTQS_CONFIG": "x"}) == project / "other.yaml"
    with pytest.raises(ManifestError) as info:
        resolve_config_path("missing.yaml", environ={})
    assert str(info.value) == "missing.yaml: no such file; pass --config FILE or set DTQS_CONFIG"


def test_load_manifest_uses_dtqs_config(project: Path) -> None:
    (project / "conf").mkdir()
    (project / "conf" / "functions").mkdir()
    (project / "conf" / "functions" / "hello.py").write_text("def handle(p):\n    return p\n")
    (project / "conf" / "x.yaml").write_text(BASE)
    manifest = load_manifest(environ={"DTQS_CONFIG": "conf/x.yaml"})
    assert manifest.root == project / "conf"


# -- ${VAR} expansion --------------------------------------------------------------


ENV_MANIFEST = """\
version: 1
redis:
  url: ${URL}
  prefix: ${PREFIX:-dtqs}
queues:
  default:
    concurrency: ${CONCURRENCY:-16}
functions: {}
"""


def test_env_expansion(project: Path) -> None:
    environ = {"URL": "redis://h:1/2", "CONCURRENCY": "3"}
    manifest = load_manifest(write(project, ENV_MANIFEST), environ=environ)
    assert manifest.redis_url == "redis://h:1/2"
    assert manifest.prefix == "dtqs"
    assert manifest.queues["default"].concurrency == 3  # typed after expansion


def test_env_default_when_empty_and_escape(project: Path) -> None:
    text = ENV_MANIFEST.replace("${PREFIX:-dtqs}", "${PREFIX:-p}").replace("${URL}", "'$${URL}'")
    manifest = load_manifest(write(project, text), environ={"PREFIX": ""})
    assert (manifest.prefix, manifest.redis_url) == ("p", "${URL}")


def test_env_unset_is_a_problem_with_its_line(project: Path) -> None:
    assert problems(project, ENV_MANIFEST) == [
        "dtqs.yaml:3: redis.url: environment variable URL is not set"
        " (write ${URL:-default} to allow that)"
    ]


def test_env_empty_default_is_an_empty_string(project: Path) -> None:
    manifest = load_manifest(write(project, ENV_MANIFEST.replace("${URL}", "${URL:-}")), environ={})
    assert manifest.redis_url == ""


# -- problems, each with file:line and path ---------------------------------------


def test_yaml_syntax_error(project: Path) -> None:
    [problem] = problems(project, BASE + "  bad: [1, 2\n")
    assert problem.startswith("dtqs.yaml:8: invalid YAML: ")


def test_yaml_syntax_error_in_mapping(project: Path) -> None:
    [problem] = problems(project, "version: 1\nqueues:\n  default: {}\n functions: {}\n")
    assert problem.startswith("dtqs.yaml:4: invalid YAML: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "dtqs.yaml: the file is empty; expected a mapping with version, queues and functions"),
        (
            "# nothing\n",
            "dtqs.yaml: the file is empty; expected a mapping with version, queues and functions",
        ),
        (
            "- 1\n- 2\n",
            "dtqs.yaml:1: got list; expected a mapping with version, queues and functions",
        ),
    ],
)
def test_not_a_mapping(project: Path, text: str, expected: str) -> None:
    assert problems(project, text) == [expected]


def test_schema_violation_on_its_line(project: Path) -> None:
    text = BASE + "    retry:\n      max_attempts: -1\n"
    assert problems(project, text) == [
        "dtqs.yaml:8: functions.hello.retry.max_attempts: -1 is less than the minimum of 1"
    ]


def test_unknown_key(project: Path) -> None:
    [problem] = problems(project, BASE + "    timeuot: 5s\n")
    assert problem.startswith(
        "dtqs.yaml:7: functions.hello.timeuot: unknown key; expected one of: handler, "
    )


def test_missing_required_key(project: Path) -> None:
    text = "version: 1\nqueues:\n  default: {}\nfunctions:\n  hello:\n    queue: default\n"
    assert problems(project, text) == [
        "dtqs.yaml:5: functions.hello: 'handler' is a required property"
    ]


def test_wrong_version_and_bad_names(project: Path) -> None:
    text = BASE.replace("version: 1", "version: 2").replace(
        "  default: {}", "  default: {}\n  Bad: {}"
    )
    assert problems(project, text) == [
        "dtqs.yaml:1: version: 2 is not supported; expected 1",
        "dtqs.yaml:4: queues.Bad: invalid name: 'Bad' does not match '^[a-z][a-z0-9_-]*$'",
    ]


def test_bad_duration(project: Path) -> None:
    [problem] = problems(project, BASE + "    timeout: 5 minutes\n")
    assert problem == (
        "dtqs.yaml:7: functions.hello.timeout: '5 minutes' is not a duration;"
        " expected seconds (a number >= 0) or a string like 500ms, 30s, 5m, 1h, 1d"
    )


def test_duration_below_its_minimum(project: Path) -> None:
    text = (
        BASE.replace("  default: {}", "  default:\n    visibility_timeout: 500ms")
        + "    timeout: 0s\n"
    )
    assert problems(project, text) == [
        "dtqs.yaml:4: queues.default.visibility_timeout: '500ms' is too short;"
        " expected at least 1s",
        "dtqs.yaml:8: functions.hello.timeout: '0s' is too short; expected more than 0",
    ]


def test_duplicate_key(project: Path) -> None:
    assert problems(project, BASE + "    queue: default\n    queue: default\n") == [
        "dtqs.yaml:8: functions.hello.queue: duplicate key (first at line 7)"
    ]


def test_unknown_queue(project: Path) -> None:
    assert problems(project, BASE + "    queue: emails\n") == [
        "dtqs.yaml:7: functions.hello.queue: no queue 'emails' is declared (declared: default)"
    ]


def test_default_queue_must_exist(project: Path) -> None:
    text = BASE.replace("  default: {}", "  emails: {}")
    assert problems(project, text) == [
        "dtqs.yaml:5: functions.hello.queue: no queue 'default' is declared (declared: emails)"
    ]


def test_unknown_priority(project: Path) -> None:
    assert problems(project, BASE + "    priority: urgent\n") == [
        "dtqs.yaml:7: functions.hello.priority: 'urgent' is not a level of queue 'default';"
        " expected one of: critical, high, normal, low"
    ]


def test_weights_must_name_the_queue_levels(project: Path) -> None:
    text = BASE.replace(
        "  default: {}", "  default:\n    priorities: [high, low]\n    weights: {high: 3, lo: 1}"
    )
    assert problems(project, text) == [
        "dtqs.yaml:5: queues.default.weights: no weight for low; give every level a weight",
        "dtqs.yaml:5: queues.default.weights.lo: 'lo' is not a level of this queue;"
        " expected one of: high, low",
    ]


@pytest.mark.parametrize(
    "handler", ["../x.py:f", "/etc/x.py:f", "functions/../x.py:f", "other/x.py:f"]
)
def test_handler_outside_functions(project: Path, handler: str) -> None:
    (project / "x.py").write_text("def f(p):\n    return p\n")
    [problem] = problems(project, BASE.replace("functions/hello.py:handle", handler))
    assert problem.startswith("dtqs.yaml:6: functions.hello.handler: ")
    assert "is not inside functions/; expected a path like functions/hello.py:handle" in problem


def test_handler_symlink_out_of_functions(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "evil.py"
    outside.write_text("def handle(p):\n    return p\n")
    (project / "functions" / "evil.py").symlink_to(outside)
    [problem] = problems(project, BASE.replace("hello.py", "evil.py"))
    assert "functions.hello.handler: 'functions/evil.py' is not inside functions/" in problem


def test_handler_file_missing(project: Path) -> None:
    assert problems(project, BASE.replace("hello.py", "nope.py")) == [
        "dtqs.yaml:6: functions.hello.handler: no such file: functions/nope.py"
    ]


def test_handler_not_in_the_expected_form(project: Path) -> None:
    [problem] = problems(
        project, BASE.replace("functions/hello.py:handle", "functions.hello.handle")
    )
    assert problem.startswith(
        "dtqs.yaml:6: functions.hello.handler: 'functions.hello.handle' does not match"
    )


def test_schema_file_missing(project: Path) -> None:
    assert problems(project, BASE + "    schema: schemas/nope.json\n") == [
        "dtqs.yaml:7: functions.hello.schema: no such file: schemas/nope.json"
    ]


def test_schema_file_invalid_json(project: Path) -> None:
    (project / "schemas" / "bad.json").write_text(
        '{\n  "type": "object",\n  "required": ["a",]\n}\n'
    )
    [problem] = problems(project, BASE + "    schema: schemas/bad.json\n")
    assert problem.startswith("schemas/bad.json:3: functions.hello.schema: invalid JSON: ")


def test_schema_file_invalid_json_schema(project: Path) -> None:
    (project / "schemas" / "bad.json").write_text('{"properties": {"a": {"type": "strin"}}}')
    [problem] = problems(project, BASE + "    schema: schemas/bad.json\n")
    assert problem.startswith("schemas/bad.json: functions.hello.schema: not a valid JSON Schema: ")
    assert problem.endswith("(at properties.a.type)")


def test_schema_checked_by_the_draft_it_names(project: Path) -> None:
    # "exclusiveMinimum": true is valid in draft 4 only.
    draft4 = "http://json-schema.org/draft-04/schema#"
    schema = f'{{"$schema": "{draft4}", "minimum": 1, "exclusiveMinimum": true}}'
    (project / "schemas" / "d4.json").write_text(schema)
    manifest = load_manifest(write(project, BASE + "    schema: schemas/d4.json\n"), environ={})
    assert manifest.functions["hello"].schema is not None


SCHEDULE = (
    BASE
    + """\
schedules:
  nightly:
    function: hello
    cron: "0 2 * * *"
"""
)


def test_schedule_unknown_function(project: Path) -> None:
    assert problems(project, SCHEDULE.replace("function: hello", "function: goodbye")) == [
        "dtqs.yaml:9: schedules.nightly.function: no function 'goodbye' is declared"
    ]


def test_schedule_bad_cron(project: Path) -> None:
    assert problems(project, SCHEDULE.replace("0 2 * * *", "0 2 * *")) == [
        "dtqs.yaml:10: schedules.nightly.cron: invalid cron expression '0 2 * *':"
        " expected 5 fields (minute hour day month weekday), got 4"
    ]


def test_schedule_cron_weekdays_mean_what_crontab_says(project: Path) -> None:
    # 7 is Sunday in crontab; APScheduler's from_crontab alone would refuse it.
    manifest = load_manifest(write(project, SCHEDULE.replace("0 2 * * *", "0 9 * * 7")), environ={})
    assert manifest.schedules["nightly"].cron == "0 9 * * 7"


def test_schedule_bad_timezone(project: Path) -> None:
    assert problems(project, SCHEDULE + "    timezone: Mars/Olympus\n") == [
        "dtqs.yaml:11: schedules.nightly.timezone: unknown time zone 'Mars/Olympus';"
        " expected an IANA name like UTC or Europe/Paris"
    ]


def test_schedule_cron_and_every(project: Path) -> None:
    assert problems(project, SCHEDULE + "    every: 30s\n") == [
        "dtqs.yaml:8: schedules.nightly: not a valid schedule; set exactly one of cron and every"
    ]
    assert problems(project, SCHEDULE.replace('    cron: "0 2 * * *"\n', "")) == [
        "dtqs.yaml:8: schedules.nightly: not a valid schedule; set exactly one of cron and every"
    ]


def test_schedule_payload_checked_against_the_function_schema(project: Path) -> None:
    text = SCHEDULE.replace(
        "    handler: functions/hello.py:handle\n",
        "    handler: functions/hello.py:handle\n    schema: schemas/hello.json\n",
    )
    assert problems(project, text + "    payload: {name: ''}\n") == [
        "dtqs.yaml:12: schedules.nightly.payload: does not match the schema of hello:"
        " '' should be non-empty (at name)"
    ]


def test_all_problems_at_once_sorted_by_line(project: Path) -> None:
    text = """\
    version: 1
    queues:
      default:
        concurrency: 0
    functions:
      hello:
        handler: functions/hello.py:handle
        queue: emails
    schedules:
      nightly:
        function: hello
        cron: "0 25 * * *"
    """
    found = problems(project, text)
    assert len(found) == 3
    assert found[0] == "dtqs.yaml:4: queues.default.concurrency: 0 is less than the minimum of 1"
    assert found[1].startswith("dtqs.yaml:8: functions.hello.queue: no queue 'emails'")
    assert found[2].startswith("dtqs.yaml:12: schedules.nightly.cron: invalid cron expression")


def test_one_mistake_gives_one_problem(project: Path) -> None:
    # The bad priority list must not also make the weights check complain.
    text = BASE.replace(
        "  default: {}", "  default:\n    priorities: [high, High]\n    weights: {high: 1}"
    )
    [problem] = problems(project, text)
    assert problem.startswith("dtqs.yaml:4: queues.default.priorities[1]: 'High' does not match")


def test_type_errors_in_yaml_words(project: Path) -> None:
    text = "version: 1\nqueues: []\nfunctions:\n"
    assert problems(project, text) == [
        "dtqs.yaml:2: queues: expected a mapping, got []",
        "dtqs.yaml:3: functions: expected a mapping, got an empty value",
    ]


def test_anchors_and_merge_keys(project: Path) -> None:
    text = """\
    version: 1
    queues:
      default: &base {concurrency: 4, visibility_timeout: 30s}
      other:
        <<: *base
        concurrency: 8
    functions: {}
    """
    manifest = load_manifest(write(project, text), environ={})
    assert manifest.queues["other"].concurrency == 8
    assert manifest.queues["other"].visibility_timeout_s == 30.0


def test_dates_stay_strings(project: Path) -> None:
    text = SCHEDULE.replace('cron: "0 2 * * *"', 'cron: "0 2 * * *"\n    payload: {on: 2024-01-31}')
    assert load_manifest(write(project, text), environ={}).schedules["nightly"].payload == {
        "on": "2024-01-31"
    }


def test_manifest_schema_is_closed_everywhere() -> None:
    schema = manifest_schema()
    Draft202012Validator.check_schema(schema)

    def objects(node: object) -> list[dict[str, object]]:
        if isinstance(node, list):
            return [found for item in node for found in objects(item)]
        if not isinstance(node, dict):
            return []
        own = [node] if node.get("type") == "object" else []
        return own + [found for value in node.values() for found in objects(value)]

    assert objects(schema)
    for node in objects(schema):
        assert "additionalProperties" in node, node


# -- the api section -------------------------------------------------------------------


def test_api_tokens_come_from_the_environment(project: Path) -> None:
    text = BASE + textwrap.dedent("""\
        api:
          tokens:
            ci: {token: "${CI_TOKEN}", scope: submit}
            ops: {token: "${OPS_TOKEN}", scope: admin}
          max_body_bytes: 2048
          redis_timeout: 500ms
        """)
    env = {"CI_TOKEN": "c" * 32, "OPS_TOKEN": "o" * 32}
    manifest = load_manifest(write(project, text), environ=env)
    assert [(t.name, t.token, t.scope) for t in manifest.api.tokens] == [
        ("ci", "c" * 32, "submit"),
        ("ops", "o" * 32, "admin"),
    ]
    assert manifest.api.max_body_bytes == 2048 and manifest.api.redis_timeout_s == 0.5
    assert load_manifest(write(project, BASE), environ={}).api.tokens == ()


def test_api_token_problems(project: Path) -> None:
    text = BASE + textwrap.dedent("""\
        api:
          tokens:
            a: {token: "${UNSET}", scope: submit}
            b: {token: "bbbbbbbbbbbbbbbbbbbb", scope: root}
            c: {token: "cccccccccccccccccccc", scope: admin}
            d: {token: "cccccccccccccccccccc", scope: submit}
        """)
    found = problems(project, text)
    assert any("dtqs.yaml:9: api.tokens.a.token" in p and "UNSET" in p for p in found), found
    assert any("dtqs.yaml:10: api.tokens.b.scope" in p for p in found), found
    assert any("dtqs.yaml:12: api.tokens.d.token" in p and "same token" in p for p in found)


def test_placeholder_tokens_from_the_example_files_are_refused(project: Path) -> None:
    """The deployment examples ship `change-me…` values long enough to pass as tokens:
    a deployment that kept one would accept a token printed in this repository."""
    text = BASE + textwrap.dedent("""\
        api:
          tokens:
            ci: {token: "${CI_TOKEN}", scope: submit}
        """)
    env = {"CI_TOKEN": "Change-Me-ci-token-00000000"}
    (found,) = problems(project, text, environ=env)
    assert "dtqs.yaml:9: api.tokens.ci.token: change-me…: a placeholder" in found, found


def test_redis_wait_replicas(project: Path) -> None:
    assert load_manifest(write(project, BASE), environ={}).wait_replicas == 0
    text = BASE + "redis: {url: 'redis+cluster://h:1', wait_replicas: 1, wait_timeout: 250ms}\n"
    manifest = load_manifest(write(project, text), environ={})
    assert (manifest.wait_replicas, manifest.wait_timeout_s) == (1, 0.25)
    [negative] = problems(project, BASE + "redis: {wait_replicas: -1}\n")
    assert "redis.wait_replicas: -1 is less than the minimum of 0" in negative
    [zero] = problems(project, BASE + "redis: {wait_replicas: 1, wait_timeout: 0s}\n")
    assert "redis.wait_timeout" in zero and "too short" in zero


# -- worker memory limit (issue 6: `max_memory: 200MB`; `max_memory_mb` still works) --


@pytest.mark.parametrize(
    ("written", "mib"),
    [
        ("max_memory: 200MB", 200e6 / 2**20),
        ("max_memory: 512MiB", 512.0),
        ("max_memory: 1.5GB", 1.5e9 / 2**20),
        ("max_memory: 1GiB", 1024.0),
        ("max_memory_mb: 256", 256),
        ("grace: 1s", None),
    ],
)
def test_worker_memory_limit(project: Path, written: str, mib: float | None) -> None:
    manifest = load_manifest(write(project, BASE + f"workers: {{{written}}}\n"), environ={})
    assert manifest.workers.max_memory_mb == pytest.approx(mib) if mib else mib is None


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("max_memory: 200 megs", "'200 megs' is not a size; expected a size like 200MB"),
        ("max_memory: 10MB", "'10MB' is too small; expected at least 16MiB"),
        ("{max_memory: 200MB, max_memory_mb: 200}", "give max_memory or max_memory_mb, not both"),
    ],
)
def test_worker_memory_limit_problems(project: Path, written: str, message: str) -> None:
    inner = written[1:-1] if written.startswith("{") else written
    [problem] = problems(project, BASE + f"workers: {{{inner}}}\n")
    assert message in problem and "workers.max_memory" in problem


# -- hostile manifests: bounded, and ordinary problems -------------------------------


def laughs(levels: int = 9) -> str:
    """A billion laughs: each anchor a list of ten aliases of the one before."""
    lines = [BASE.rstrip("\n"), "x:", '  a0: &a0 ["lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels + 1):
        lines.append(f"  a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_at_its_line(project: Path) -> None:
    text = laughs()
    assert len(text) < 700
    with memory_cap():  # the code before the bound took 3 GiB: MemoryError here
        [problem] = problems(project, text)
    assert problem.startswith("dtqs.yaml:")
    assert "more than 100,000 values once aliases (*name) are expanded" in problem


def test_merge_key_bomb_is_refused(project: Path) -> None:
    lines = [BASE.rstrip("\n"), "x:", "  m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5}"]
    for n in range(1, 10):
        lines.append(f"  m{n}: &m{n} {{<<: [" + ", ".join([f"*m{n - 1}"] * 10) + "]}")
    with memory_cap():
        [problem] = problems(project, "\n".join(lines) + "\n")
    assert problem.startswith("dtqs.yaml:") and "merge keys (<<) expand to more than" in problem


def test_aliases_within_the_bounds_still_work(project: Path) -> None:
    tens = ", ".join(["*a1"] * 10)
    text = (
        BASE
        + f"""\
schedules:
  s:
    function: hello
    every: 1s
    payload:
      a0: &a0 [lol, lol, lol, lol, lol]
      a1: &a1 [{tens.replace("a1", "a0")}]
      a2: &a2 [{tens}]
      a3: [{tens.replace("a1", "a2")}]
"""
    )
    payload = load_manifest(write(project, text), environ={}).schedules["s"].payload
    assert len(payload["a3"]) == 10 and payload["a3"][9][9][9] == ["lol"] * 5  # 5,000 lols


def test_deep_nesting_is_refused_without_recursing(project: Path) -> None:
    # The composer used to recurse once per level: RecursionError, or a dead API.
    deep = "[" * 500_000 + "]" * 500_000
    [problem] = problems(project, BASE + f"schedules:\n  s: {{function: hello, payload: {deep}}}\n")
    assert problem == "dtqs.yaml:8: nested deeper than 64 levels"


def test_nesting_within_the_bound_is_fine(project: Path) -> None:
    payload = "[" * 60 + "]" * 60  # levels: root, schedules, s, payload, then 60 lists
    text = BASE + f"schedules:\n  s: {{function: hello, every: 1s, payload: {payload}}}\n"
    nested = load_manifest(write(project, text), environ={}).schedules["s"].payload
    for _ in range(59):
        nested = nested[0]
    assert nested == []


def test_aliases_cannot_nest_past_the_depth_bound(project: Path) -> None:
    # Each anchor 30 levels deep holding the one before: shallow as text, deep expanded.
    lines = [BASE.rstrip("\n"), "x:", "  d0: &d0 " + "[" * 30 + "]" * 30]
    for n in range(1, 4):
        lines.append(f"  d{n}: &d{n} " + "[" * 30 + f"*d{n - 1}" + "]" * 30)
    [problem] = problems(project, "\n".join(lines) + "\n")
    assert "nested deeper than 64 levels once aliases are expanded" in problem


def test_too_many_aliases(project: Path) -> None:
    text = BASE + "x:\n  a: &a 1\n  b: [" + ", ".join(["*a"] * 10_001) + "]\n"
    [problem] = problems(project, text)
    assert problem == "dtqs.yaml:9: more than 10,000 aliases (*name) in one file"


def test_too_much_text_once_expanded(project: Path) -> None:
    big = "y" * 200_000
    text = BASE + f"x:\n  s: &s {big}\n  l: &l [" + ", ".join(["*s"] * 60) + "]\n"
    [problem] = problems(project, text)
    assert "more than 10 MiB of text once aliases are expanded" in problem


def test_a_mapping_merging_itself(project: Path) -> None:
    [problem] = problems(project, "version: 1\nqueues: &q {default: {}, <<: *q}\nfunctions: {}\n")
    assert problem == (
        "dtqs.yaml:2: invalid YAML: a mapping merges itself (<< with an alias of its own anchor)"
    )


def test_merge_keys_keep_yaml_precedence(project: Path) -> None:
    # Own keys win over merged ones; of a list of merged mappings, the first wins.
    text = """\
    version: 1
    queues:
      one: &one {concurrency: 1, visibility_timeout: 10s}
      two: &two {concurrency: 2, visibility_timeout: 20s, dead_letter_max: 5}
      default:
        <<: [*one, *two]
        visibility_timeout: 30s
    functions: {}
    """
    queue = load_manifest(write(project, text), environ={}).queues["default"]
    assert (queue.concurrency, queue.visibility_timeout_s, queue.dead_letter_max) == (1, 30.0, 5)


def test_manifest_size_is_bounded(project: Path) -> None:
    text = BASE + "# " + "x" * (2**20) + "\n"
    assert problems(project, text) == [
        "dtqs.yaml: larger than 1 MiB; a manifest may be at most 1 MiB (is it the right file?)"
    ]


def test_recursion_error_while_loading_is_the_users_input(project: Path) -> None:
    # A smaller stack stands for a deeper file: whatever recursion runs out of while
    # loading the user's files is reported as their input, not raised as a traceback.
    payload = "[" * 60 + "]" * 60
    write(project, BASE + f"schedules:\n  s: {{function: hello, every: 1s, payload: {payload}}}\n")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 80)
    try:
        with pytest.raises(ManifestError) as info:
            load_manifest(project / "dtqs.yaml", environ={})
    finally:
        sys.setrecursionlimit(limit)
    assert [str(p) for p in info.value.problems] == [
        "dtqs.yaml: nested too deeply or too large to load (RecursionError)"
    ]
