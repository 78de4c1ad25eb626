"""Read and check a payload schema file named by `functions.<name>.schema`.

The file is the user's input, read by `dtqs validate` and by every hot reload of a
running API, so it is read defensively: only a regular file inside the project
folder (resolved, so a symlink cannot lead out), at most MAX_SCHEMA_BYTES, never
blocking on a FIFO. Its content must be a JSON Schema of the draft it names whose
$refs stay in the file and never loop in place (schemagraph), and patterns that may
backtrack for exponential time are warned about (regexrisk).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.validators import validator_for

from dtqs.runtime.regexrisk import risk
from dtqs.runtime.schemagraph import MAX_REPORTED, SchemaGraph, escape
from dtqs.runtime.yamlpos import dotted

#: Largest payload schema file read (bytes); a bigger one is refused unread.
MAX_SCHEMA_BYTES = 2**20
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


@dataclass(frozen=True)
class Finding:
    """One thing wrong with (or worth a warning about) a schema file."""

    message: str
    in_file: bool = True  #: about the file's content; False: about the manifest's entry
    line: int | None = None  #: in the schema file


@dataclass
class SchemaFile:
    """A payload schema file: its path, its content if usable, and what was found."""

    path: Path
    schema: dict[str, Any] | None = None
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)


class _Refused(Exception):
    """The file is not read: `message` says why."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


def read_schema_file(root: Path, written: str, shown: Any) -> SchemaFile:
    """The schema file at `written` (relative to the project folder `root`), checked.

    `shown(path)` gives a path as messages show it.
    """
    target = Path(os.path.normpath(root / written))
    found = SchemaFile(target)
    try:
        text = _read(root, written, target, shown(target))
        schema = json.loads(text)
        if error := _schema_error(schema):
            raise _Refused(Finding(error))
        graph = SchemaGraph(schema)
    except _Refused as refused:
        found.problems.append(refused.finding)
        return found
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} (column {exc.colno})"
        found.problems.append(Finding(message, line=exc.lineno))
        return found
    except (RecursionError, MemoryError) as exc:
        # NOTE(manifest): hostile input, not a bug of ours: say so, never a traceback.
        message = f"nested too deeply or too large to check ({type(exc).__name__})"
        found.problems.append(Finding(message))
        return found
    found.problems += [Finding(message) for _, message in graph.problems[:MAX_REPORTED]]
    if len(graph.problems) > MAX_REPORTED:
        more = len(graph.problems) - MAX_REPORTED
        found.problems.append(Finding(f"... and {more} more such $ref problem(s)"))
    found.warnings = [Finding(m) for m in _pattern_warnings(graph)]
    if not found.problems:
        found.schema = schema
    return found


def _read(root: Path, written: str, target: Path, shown: str) -> str:
    """The file's text; _Refused unless it is a readable regular file in the project."""
    try:  # NOTE(manifest): resolved, so a symlink cannot lead out of the project
        inside = target.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        inside = False
    if not inside:
        expected = "expected a path like schemas/hello.json"
        raise _Refused(Finding(f"{written!r} is not inside the project folder; {expected}", False))
    try:
        # NOTE(manifest): stat first, never open a FIFO or a device: opening one can
        # block or have effects. O_NONBLOCK and fstat cover a file swapped meanwhile.
        _check_kind(os.stat(target), shown)
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            _check_kind(os.fstat(file.fileno()), shown)
            data = file.read(MAX_SCHEMA_BYTES + 1)
    except FileNotFoundError:
        raise _Refused(Finding(f"no such file: {shown}", False)) from None
    except OSError as exc:
        raise _Refused(Finding(f"cannot read {shown}: {exc.strerror or exc}", False)) from None
    if len(data) > MAX_SCHEMA_BYTES:
        raise _Refused(Finding(_too_big(shown), False))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused(Finding(f"cannot read {shown}: {exc}", False)) from None


def _check_kind(info: os.stat_result, shown: str) -> None:
    for test, kind in _KINDS:
        if test(info.st_mode):
            message = f"{shown} is {kind}, not a regular file; expected a JSON Schema file"
            raise _Refused(Finding(message, False))
    if info.st_size > MAX_SCHEMA_BYTES:
        raise _Refused(Finding(_too_big(shown), False))


def _too_big(shown: str) -> str:
    limit = f"{MAX_SCHEMA_BYTES // 2**20} MiB"
    return f"{shown} is larger than {limit}; a payload schema may be at most {limit}"


def _schema_error(schema: Any) -> str | None:
    """Why `schema` (a payload schema file's content) is not a JSON Schema, if it is not."""
    if not isinstance(schema, dict):
        return "a JSON Schema must be a JSON object"
    try:  # NOTE(manifest): the draft its $schema names decides what is valid
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        at = f" (at {dotted(tuple(exc.absolute_path))})" if exc.absolute_path else ""
        return f"not a valid JSON Schema: {exc.message}{at}"
    return None


def _pattern_warnings(graph: SchemaGraph) -> list[str]:
    """One warning per `pattern` or `patternProperties` regex that may backtrack badly."""
    found = []
    for pointer, schema in graph.subschemas():
        patterns = [(f"{pointer}/pattern", schema.get("pattern"))]
        if isinstance(named := schema.get("patternProperties"), dict):
            patterns += [(f"{pointer}/patternProperties/{escape(p)}", p) for p in named]
        for at, pattern in patterns:
            if isinstance(pattern, str) and (why := risk(pattern)):
                found.append(
                    f"{at}: pattern {pattern!r} {why}; a long string that does not match "
                    "can take seconds to check, on every submission"
                )
    return sorted(found)
