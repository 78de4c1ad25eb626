"""Payload schema files: confined to the project, regular, bounded; $refs local and never
looping in place; slow patterns warned about. Through load_manifest, as every command
loads them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dtqs.runtime.errors import ManifestError, PayloadValidationError
from dtqs.runtime.manifest import Manifest, load_manifest
from dtqs.runtime.payload import Validators
from tests.unit.memcap import memory_cap

MANIFEST = """\
version: 1
queues:
  default: {}
functions:
  hello:
    handler: functions/hello.py:handle
    schema: SCHEMA
"""
WHERE = "functions.hello.schema"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    (root / "functions").mkdir(parents=True)
    (root / "functions" / "hello.py").write_text("def handle(payload):\n    return payload\n")
    (root / "schemas").mkdir()
    monkeypatch.chdir(root)
    return root


def load(project: Path, written: str) -> Manifest:
    (project / "dtqs.yaml").write_text(MANIFEST.replace("SCHEMA", written))
    return load_manifest(project / "dtqs.yaml", environ={})


def problems(project: Path, written: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load(project, written)
    return [str(p) for p in info.value.problems]


def schema_problems(project: Path, schema: dict[str, Any]) -> list[str]:
    (project / "schemas" / "s.json").write_text(json.dumps(schema))
    return problems(project, "schemas/s.json")


# -- where the file is and what it is ------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("written", ["/dev/zero", "../outside.json", "schemas/out.json"])
def test_schema_outside_the_project_is_refused_unread(project: Path, written: str) -> None:
    outside = project.parent / "outside.json"
    outside.write_text('{"type": "object"}')
    (project / "schemas" / "out.json").symlink_to(outside)  # leads out once resolved
    with memory_cap():  # /dev/zero used to be read until memory ran out
        assert problems(project, written) == [
            f"dtqs.yaml:7: {WHERE}: {written!r} is not inside the project folder; "
            "expected a path like schemas/hello.json"
        ]


@pytest.mark.timeout(60)  # the FIFO used to hang validate forever
def test_schema_fifo_is_refused_without_blocking(project: Path) -> None:
    os.mkfifo(project / "schemas" / "pipe.json")
    assert problems(project, "schemas/pipe.json") == [
        f"dtqs.yaml:7: {WHERE}: schemas/pipe.json is a FIFO, not a regular file; "
        "expected a JSON Schema file"
    ]


def test_schema_folder_is_refused(project: Path) -> None:
    [problem] = problems(project, "schemas")
    assert problem.endswith("schemas is a folder, not a regular file; expected a JSON Schema file")


def test_schema_size_is_bounded(project: Path) -> None:
    padding = " " * (2**20)
    (project / "schemas" / "big.json").write_text('{"type": "object"}' + padding)
    assert problems(project, "schemas/big.json") == [
        f"dtqs.yaml:7: {WHERE}: schemas/big.json is larger than 1 MiB; "
        "a payload schema may be at most 1 MiB"
    ]


def test_schema_nested_past_what_can_be_checked(project: Path) -> None:
    text = '{"allOf": [' * 50_000 + "{}" + "]}" * 50_000  # under 1 MiB
    (project / "schemas" / "deep.json").write_text(text)
    assert problems(project, "schemas/deep.json") == [
        f"schemas/deep.json: {WHERE}: nested too deeply or too large to check (RecursionError)"
    ]


# -- $refs ----------------------------------------------------------------------------

TREE = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#"}},
    },
    "required": ["name"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("schema", "at", "route"),
    [
        ({"$ref": "#"}, "/$ref", "# -> #"),
        (
            {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
             "$ref": "#/$defs/a"},
            "/$defs/b/$ref",
            "#/$defs/a -> #/$defs/b -> #/$defs/a",
        ),
        ({"anyOf": [{"type": "string"}, {"$ref": "#"}]}, "/anyOf/1/$ref", "# -> #/anyOf/1 -> #"),
        (
            {"$defs": {"n": {"allOf": [{"$ref": "#/$defs/n"}]}},
             "properties": {"x": {"$ref": "#/$defs/n"}}},
            "/$defs/n/allOf/0/$ref",
            "#/$defs/n -> #/$defs/n/allOf/0 -> #/$defs/n",
        ),
        ({"not": {"$ref": "#"}}, "/not/$ref", "# -> #/not -> #"),
        ({"if": {"$ref": "#"}}, "/if/$ref", "# -> #/if -> #"),
    ],
    ids=["self", "a-b-a", "anyOf", "allOf-in-defs", "not", "if"],
)  # fmt: skip
def test_ref_loops_in_place_are_refused(
    project: Path, schema: dict[str, Any], at: str, route: str
) -> None:
    assert schema_problems(project, schema) == [
        f"schemas/s.json: {WHERE}: $ref at {at} loops back without descending into the "
        f"payload ({route}); a recursive schema must pass through properties, items or the like"
    ]


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("http://example.com/user.json", "refers outside this file"),
        ("other.json#/$defs/a", "refers outside this file"),
        ("https://json-schema.org/draft/2020-12/schema", "refers outside this file"),
        ("#/$defs/nope", "points to nothing in this file"),
        ("#/required/0", "points to a str, not a schema"),
        ("#/required/x", "points to nothing in this file"),
    ],
)
def test_refs_must_stay_in_the_file(project: Path, ref: str, why: str) -> None:
    schema = {"required": ["a"], "properties": {"a": {"$ref": ref}}}
    [problem] = schema_problems(project, schema)
    assert problem.startswith(f"schemas/s.json: {WHERE}: $ref {ref!r} at /properties/a/$ref {why}")


def test_every_bad_ref_is_reported_up_to_a_bound(project: Path) -> None:
    schema = {"properties": {f"p{n}": {"$ref": f"http://x/{n}"} for n in range(15)}}
    found = schema_problems(project, schema)
    assert len(found) == 11 and found[-1].endswith("... and 5 more such $ref problem(s)")


def test_recursive_tree_schema_is_accepted_and_validates(project: Path) -> None:
    (project / "schemas" / "tree.json").write_text(json.dumps(TREE))
    spec = load(project, "schemas/tree.json").functions["hello"]
    validators = Validators()
    validators.check(spec, {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]})
    with pytest.raises(PayloadValidationError) as info:
        validators.check(spec, {"name": "a", "children": [{"name": "b", "children": [{}]}]})
    assert [v.pointer for v in info.value.violations] == ["/payload/children/0/children/0"]


def test_refs_through_ids_and_anchors_in_the_file_are_accepted(project: Path) -> None:
    schema = {
        "$id": "https://example.com/tree",
        "$defs": {"leaf": {"$anchor": "leaf", "type": "string"}},
        "properties": {
            "kids": {"items": {"$ref": "https://example.com/tree"}},
            "tag": {"$ref": "#leaf"},
        },
    }
    (project / "schemas" / "s.json").write_text(json.dumps(schema))
    spec = load(project, "schemas/s.json").functions["hello"]
    with pytest.raises(PayloadValidationError):
        Validators().check(spec, {"kids": [{"tag": 1}]})


def test_a_schema_that_still_fails_is_never_a_500(project: Path) -> None:
    # Defence behind the load-time checks: a spec built by hand with a remote $ref
    # gives a clear client error and fetches nothing; a payload too deep for a
    # recursive schema is the client's to fix.
    (project / "schemas" / "tree.json").write_text(json.dumps(TREE))
    spec = load(project, "schemas/tree.json").functions["hello"]
    deep: dict[str, Any] = {"name": "leaf"}
    for _ in range(1000):
        deep = {"name": "n", "children": [deep]}
    with pytest.raises(PayloadValidationError) as info:
        Validators().check(spec, deep)
    assert "nested too deeply to check" in info.value.message
    remote = type(spec)(**{**vars(spec), "schema": {"$ref": "http://127.0.0.1:9/s.json"}})
    with pytest.raises(PayloadValidationError) as info:
        Validators().check(remote, {})
    assert "unresolvable $ref" in info.value.message


# -- slow patterns -------------------------------------------------------------------


def test_slow_patterns_are_warnings_with_file_and_pointer(project: Path) -> None:
    schema = {
        "properties": {"name": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(x|xy)+$": {"pattern": "^[a-z]+$"}},
    }
    (project / "schemas" / "s.json").write_text(json.dumps(schema))
    manifest = load(project, "schemas/s.json")  # loads: a warning is not a problem
    assert manifest.functions["hello"].schema == schema
    assert [str(w) for w in manifest.warnings] == [
        f"schemas/s.json: {WHERE}: warning: /patternProperties/^(x|xy)+$: pattern '^(x|xy)+$' "
        "repeats alternatives that can match the same text, like (a|aa)+; a long string that "
        "does not match can take seconds to check, on every submission",
        f"schemas/s.json: {WHERE}: warning: /properties/name/pattern: pattern '^(a+)+$' "
        "repeats a group that itself holds a repeat, like (a+)+; a long string that does not "
        "match can take seconds to check, on every submission",
    ]


def test_safe_patterns_give_no_warning(project: Path) -> None:
    schema = {"properties": {"id": {"pattern": "^[a-z0-9_-]{1,64}$"}, "n": {"pattern": r"^\d+$"}}}
    (project / "schemas" / "s.json").write_text(json.dumps(schema))
    assert load(project, "schemas/s.json").warnings == ()


def test_a_long_ref_loop_is_shown_shortened(project: Path) -> None:
    defs = {f"d{n}": {"anyOf": [{"$ref": f"#/$defs/d{n + 1}"}]} for n in range(100)}
    defs["d100"] = {"$ref": "#/$defs/d0"}
    [problem] = schema_problems(project, {"$defs": defs, "$ref": "#/$defs/d0"})
    assert (
        "(#/$defs/d0 -> #/$defs/d0/anyOf/0 -> #/$defs/d1 -> #/$defs/d1/anyOf/0 -> ... ->" in problem
    )
    assert len(problem) < 400
