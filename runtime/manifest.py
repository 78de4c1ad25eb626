"""dtqs.yaml -> JSON Schema check -> frozen dataclasses. The one loader every command uses.

Raw dicts never leave this module.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from referencing import Registry

from dtqs.runtime.errors import ManifestError, Problem
from dtqs.runtime.schemafile import read_schema_file
from dtqs.runtime.yamlpos import Document, YamlPath, dotted, load_yaml

#: Default priority levels of a queue, first = served first.
DEFAULT_PRIORITIES = ("critical", "high", "normal", "low")
#: Manifest file used when neither --config nor $DTQS_CONFIG names one.
DEFAULT_CONFIG = "dtqs.yaml"
#: Queue of a function that names none.
DEFAULT_QUEUE = "default"
#: Priority of a function that names none, when its queue has this level (else its last).
DEFAULT_PRIORITY = "normal"
#: Handler files must live under this folder of the project.
FUNCTIONS_DIR = "functions"
#: Largest manifest read (bytes): a bigger file is refused before it is parsed.
MAX_MANIFEST_BYTES = 2**20

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)\s*")
_SIZE_BYTES = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
               "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}  # fmt: skip
#: API tokens starting with this (any case) are the example files' placeholders: refused.
PLACEHOLDER_PREFIX = "change-me"
#: Smallest worker memory limit accepted: below it a fresh process would recycle at once.
MIN_MEMORY_MB = 16
_DURATION_HINT = "expected seconds (a number >= 0) or a string like 500ms, 30s, 5m, 1h, 1d"
_SECTIONS = ("queues", "functions", "schedules")
_ABOVE_ZERO = -1.0  #: as a duration's lower bound: any length but 0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how far apart a failed task is tried again."""

    max_attempts: int = 3  #: total executions, the first included
    backoff: str = "exponential"  #: exponential | fixed | none
    initial_delay_s: float = 1.0
    max_delay_s: float = 300.0
    jitter: bool = True


@dataclass(frozen=True)
class QueueSpec:
    name: str
    priorities: tuple[str, ...] = DEFAULT_PRIORITIES
    concurrency: int = 16  #: slots per worker process
    visibility_timeout_s: float = 60.0  #: lease length; renewed while a handler runs
    #: None = strict priority order; else level name -> positive weight
    weights: Mapping[str, int] | None = None
    dead_letter_max: int = 10_000  #: dead letters kept per queue (oldest dropped first)
    dead_letter_ttl_s: float = 30 * 86400.0  #: dead letters older than this are dropped

    def level(self, priority: str) -> int:
        return self.priorities.index(priority)


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    handler: str  #: as written: "functions/hello.py:handle"
    handler_file: Path  #: absolute path of the handler file
    handler_attr: str  #: the function's name inside that file
    queue: str
    priority: str
    timeout_s: float = 300.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    schema_file: Path | None = None
    schema: Mapping[str, Any] | None = None  #: the payload's JSON Schema (already checked)
    result_ttl_s: float = 86400.0  #: 0 = forget the record as soon as the task succeeds
    dead_letter: bool = True  #: False: a task out of attempts ends as `failed`
    idempotency_ttl_s: float = 86400.0


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    function: str
    cron: str | None = None
    every_s: float | None = None
    timezone: str = "UTC"
    payload: Any = None
    jitter_s: float = 0.0
    enabled: bool = True
    misfire: str = "skip"  #: skip | once
    misfire_grace_s: float = 3600.0


@dataclass(frozen=True)
class WorkerSpec:
    """Settings of worker processes (the `workers:` section)."""

    grace_s: float = 30.0
    heartbeat_interval_s: float | None = None  #: None = a third of the shortest lease
    reclaim_interval_s: float = 1.0
    max_tasks_per_child: int | None = None
    #: RSS limit in MiB, from `max_memory: 200MB` (or the older `max_memory_mb: 200`)
    max_memory_mb: float | None = None


@dataclass(frozen=True)
class ApiToken:
    """A bearer token of the REST API. ``admin`` may do everything ``submit`` may."""

    name: str  #: shown in logs instead of the token
    token: str
    scope: str  #: submit | admin


@dataclass(frozen=True)
class ApiSpec:
    """Settings of the REST API (the `api:` section)."""

    tokens: tuple[ApiToken, ...] = ()
    max_body_bytes: int = 1024 * 1024
    redis_timeout_s: float = 1.0  #: longest a request waits on Redis before a 503
    max_wait_s: float = 30.0  #: longest long-poll of GET /v1/tasks/{id}?wait=
    #: long-polls that may wait at once (each on a server thread of its own, beside
    #: the --threads that serve everything else); more get 429 at once
    max_long_polls: int = 32


@dataclass(frozen=True)
class Manifest:
    path: Path  #: absolute path of dtqs.yaml
    root: Path  #: the folder holding it; handler and schema paths are relative to it
    version: int
    redis_url: str  #: "" = none configured
    queues: Mapping[str, QueueSpec]
    functions: Mapping[str, FunctionSpec]
    schedules: Mapping[str, ScheduleSpec]
    workers: WorkerSpec = field(default_factory=WorkerSpec)
    prefix: str = "dtqs"  #: namespace of every Redis key
    api: ApiSpec = field(default_factory=ApiSpec)
    #: replicas that must confirm a submission (Redis WAIT) before it is acknowledged
    wait_replicas: int = 0
    wait_timeout_s: float = 1.0  #: how long a submission waits for them
    #: what `dtqs validate` warns about without failing (e.g. slow schema patterns)
    warnings: tuple[Problem, ...] = ()


def parse_duration(value: object, *, where: str = "") -> float:
    """Seconds in `value`: a number of seconds, or a string like 500ms, 30s, 5m, 1h, 1d."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}invalid duration {value!r}; {_DURATION_HINT}")
    return seconds


def display_path(path: Path) -> str:
    """`path` relative to the working directory when it lies under it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def resolve_config_path(
    config: str | os.PathLike[str] | None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """The manifest to load: `config`, else $DTQS_CONFIG, else ./dtqs.yaml (absolute).

    Raises:
        ManifestError: that file does not exist.
    """
    env = os.environ if environ is None else environ
    path = Path(os.path.abspath(config or env.get("DTQS_CONFIG") or DEFAULT_CONFIG))
    if not path.is_file():
        message = "no such file; pass --config FILE or set DTQS_CONFIG"
        raise ManifestError([Problem(display_path(path), None, "", message)])
    return path


@functools.cache
def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of dtqs.yaml (schemas/manifest.schema.json)."""
    text = resources.files("dtqs.schemas").joinpath("manifest.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_manifest(
    path: Path | str | None = None, *, environ: Mapping[str, str] | None = None
) -> Manifest:
    """Read, expand ${VAR}s in, validate and freeze a manifest.

    Raises:
        ManifestError: with every problem found, sorted by line.
    """
    file_path = resolve_config_path(path, environ=environ)
    file = display_path(file_path)
    try:
        return _load(file_path, file, os.environ if environ is None else environ)
    except (RecursionError, MemoryError) as exc:
        # NOTE(manifest): the files are the user's input, and a hostile one must be an
        # ordinary problem (exit 2, a failed reload), never a traceback or a dead API.
        message = f"nested too deeply or too large to load ({type(exc).__name__})"
        raise ManifestError([Problem(file, None, "", message)]) from None


def _load(file_path: Path, file: str, environ: Mapping[str, str]) -> Manifest:
    text = _read_manifest(file_path, file)
    doc = load_yaml(text, file=file, environ=environ)
    if doc.problems and doc.data is None:
        raise ManifestError(doc.problems)
    if not isinstance(doc.data, dict):
        got = "the file is empty" if doc.data is None else f"got {type(doc.data).__name__}"
        expected = "expected a mapping with version, queues and functions"
        raise ManifestError([Problem(file, doc.line((0,)), "", f"{got}; {expected}")])
    doc.check(manifest_schema())
    manifest = _Builder(file_path, doc).build()
    if doc.problems:
        # By line: the manifest first, then the other files (payload schemas) it names.
        order = sorted(doc.problems, key=lambda p: (p.file != file, p.file, p.line or 0, p.path))
        raise ManifestError(order)
    return manifest


def _read_manifest(file_path: Path, file: str) -> str:
    """The manifest's text, refused unread when it is over MAX_MANIFEST_BYTES."""
    try:
        with file_path.open("rb") as stream:
            data = stream.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            limit = f"{MAX_MANIFEST_BYTES // 2**20} MiB"
            message = (
                f"larger than {limit}; a manifest may be at most {limit} (is it the right file?)"
            )
            raise ManifestError([Problem(file, None, "", message)])
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem(file, None, "", f"cannot read: {exc}")]) from None


class _Builder:
    """Checks what the schema cannot and builds the dataclasses; problems go to the doc.

    Values the schema (or ${VAR} expansion) found bad are read as their defaults and
    checks that read them are skipped, so one mistake gives one problem, not a cascade.
    """

    def __init__(self, path: Path, doc: Document) -> None:
        self.path = path
        self.root = path.parent
        self.doc = doc
        self.warnings: list[Problem] = []

    def problem(self, path: YamlPath, message: str, *, file: str = "", line: int = 0) -> None:
        """Report at `path` in the manifest, or at `line` (0 = none) of another `file`."""
        where = (file, line or None) if file else (self.doc.file, self.doc.line(path))
        self.doc.problems.append(Problem(*where, dotted(path), message))

    def clean(self, *paths: YamlPath) -> bool:
        """True when no known-bad value lies at, above or under any of `paths`."""
        bad = self.doc.bad_paths
        return not any(b[: len(p)] == p or p[: len(b)] == b for p in paths for b in bad)

    def get(self, raw: Any, path: YamlPath, key: str, default: Any) -> Any:
        if not isinstance(raw, dict) or key not in raw or not self.clean((*path, key)):
            return default
        return raw[key]

    def seconds(self, raw: Any, path: YamlPath, key: str, default: Any, least: float = 0) -> Any:
        """The duration at `path.key` in seconds, at least `least` (or _ABOVE_ZERO)."""
        value = self.get(raw, path, key, None)
        if value is None:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:  # the schema checked the form; this is .inf or .nan
            self.problem((*path, key), str(exc))
            return default
        if seconds < least or (least == _ABOVE_ZERO and seconds == 0):
            expected = f"at least {least:g}s" if least > 0 else "more than 0"
            self.problem((*path, key), f"{value!r} is too short; expected {expected}")
            return default
        return seconds

    def build(self) -> Manifest:
        data = self.doc.data
        items = {k: v.items() if isinstance(v := data.get(k), dict) else () for k in _SECTIONS}
        queues = {n: self.queue(n, raw) for n, raw in items["queues"]}
        functions = {n: self.function(n, raw, queues) for n, raw in items["functions"]}
        schedules = {n: self.schedule(n, raw, functions) for n, raw in items["schedules"]}
        redis = self.get(data, (), "redis", {})
        return Manifest(
            path=self.path,
            root=self.root,
            version=self.get(data, (), "version", 1),
            redis_url=self.get(redis, ("redis",), "url", ""),
            queues=MappingProxyType({n: q for n, q in queues.items() if q}),
            functions=MappingProxyType({n: f for n, f in functions.items() if f}),
            schedules=MappingProxyType({n: s for n, s in schedules.items() if s}),
            workers=self.workers(self.get(data, (), "workers", {})),
            prefix=self.get(redis, ("redis",), "prefix", "dtqs"),
            api=self.api(data.get("api")),  # its parts are checked one by one
            wait_replicas=self.get(redis, ("redis",), "wait_replicas", 0),
            wait_timeout_s=self.seconds(redis, ("redis",), "wait_timeout", 1.0, least=_ABOVE_ZERO),
            warnings=tuple(self.warnings),
        )

    def queue(self, name: str, raw: Any) -> QueueSpec | None:
        if not isinstance(raw, dict):
            return None
        path: YamlPath = ("queues", name)
        levels = tuple(self.get(raw, path, "priorities", DEFAULT_PRIORITIES))
        weights = self.get(raw, path, "weights", None)
        if weights is not None and self.clean((*path, "priorities")):
            for level in weights:
                if level not in levels:
                    expected = f"expected one of: {', '.join(levels)}"
                    message = f"{level!r} is not a level of this queue; {expected}"
                    self.problem((*path, "weights", level), message)
            if missing := [level for level in levels if level not in weights]:
                message = f"no weight for {', '.join(missing)}; give every level a weight"
                self.problem((*path, "weights"), message)
        return QueueSpec(
            name=name,
            priorities=levels,
            concurrency=int(self.get(raw, path, "concurrency", 16)),
            visibility_timeout_s=self.seconds(raw, path, "visibility_timeout", 60.0, least=1),
            weights=MappingProxyType({k: int(v) for k, v in weights.items()}) if weights else None,
            dead_letter_max=int(self.get(raw, path, "dead_letter_max", 10_000)),
            dead_letter_ttl_s=self.seconds(raw, path, "dead_letter_ttl", 30 * 86400.0),
        )

    def function(self, name: str, raw: Any, queues: Mapping[str, Any]) -> FunctionSpec | None:
        if not isinstance(raw, dict):
            return None
        path: YamlPath = ("functions", name)
        queue = self.get(raw, path, "queue", DEFAULT_QUEUE)
        levels = queues[queue].priorities if queues.get(queue) else ()
        priority = self.get(raw, path, "priority", None)
        if queue not in queues and self.clean((*path, "queue")):
            declared = ", ".join(queues) or "none"
            self.problem((*path, "queue"), f"no queue {queue!r} is declared (declared: {declared})")
        elif levels and priority is not None and priority not in levels:
            expected = f"expected one of: {', '.join(levels)}"
            message = f"{priority!r} is not a level of queue {queue!r}; {expected}"
            self.problem((*path, "priority"), message)
        if priority is None and levels:
            priority = DEFAULT_PRIORITY if DEFAULT_PRIORITY in levels else levels[-1]
        retry, retry_path = self.get(raw, path, "retry", {}), (*path, "retry")
        handler = self.get(raw, path, "handler", ":")
        schema_file, schema = self.schema((*path, "schema"), self.get(raw, path, "schema", None))
        return FunctionSpec(
            name=name,
            handler=handler,
            handler_file=self.handler_file((*path, "handler"), handler),
            handler_attr=handler.rpartition(":")[2],
            queue=queue,
            priority=priority or DEFAULT_PRIORITY,
            timeout_s=self.seconds(raw, path, "timeout", 300.0, least=_ABOVE_ZERO),
            retry=RetryPolicy(
                max_attempts=int(self.get(retry, retry_path, "max_attempts", 3)),
                backoff=self.get(retry, retry_path, "backoff", "exponential"),
                initial_delay_s=self.seconds(retry, retry_path, "initial_delay", 1.0),
                max_delay_s=self.seconds(retry, retry_path, "max_delay", 300.0),
                jitter=self.get(retry, retry_path, "jitter", True),
            ),
            schema_file=schema_file,
            schema=schema,
            result_ttl_s=self.seconds(raw, path, "result_ttl", 86400.0),
            dead_letter=self.get(raw, path, "dead_letter", True),
            idempotency_ttl_s=self.seconds(
                raw, path, "idempotency_ttl", 86400.0, least=_ABOVE_ZERO
            ),
        )

    def handler_file(self, path: YamlPath, handler: str) -> Path:
        """The handler's file (absolute, normalised); it must exist under <root>/functions/."""
        written = os.path.normpath(handler.rpartition(":")[0])
        target = self.root / written
        if not self.clean(path):
            return target
        try:  # NOTE(manifest): resolved too, so a symlink cannot lead out of functions/
            inside = target.resolve().is_relative_to((self.root / FUNCTIONS_DIR).resolve())
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop
            inside = False
        if Path(written).is_absolute() or Path(written).parts[0] != FUNCTIONS_DIR or not inside:
            expected = f"expected a path like {FUNCTIONS_DIR}/hello.py:handle"
            self.problem(path, f"{written!r} is not inside {FUNCTIONS_DIR}/; {expected}")
        elif not target.is_file():
            self.problem(path, f"no such file: {display_path(target)}")
        return target

    def schema(self, path: YamlPath, written: str | None) -> tuple[Path | None, Any]:
        """The payload schema file named at `path`, read and checked."""
        if written is None:
            return None, None
        found = read_schema_file(self.root, written, display_path)
        shown = display_path(found.path)
        for problem in found.problems:
            if problem.in_file:
                self.problem(path, problem.message, file=shown, line=problem.line or 0)
            else:
                self.problem(path, problem.message)
        self.warnings += [
            Problem(shown, w.line, dotted(path), w.message, warning=True) for w in found.warnings
        ]
        return found.path, found.schema

    def schedule(self, name: str, raw: Any, functions: Mapping[str, Any]) -> ScheduleSpec | None:
        if not isinstance(raw, dict):
            return None
        path: YamlPath = ("schedules", name)
        function = self.get(raw, path, "function", "")
        if function and function not in functions:
            self.problem((*path, "function"), f"no function {function!r} is declared")
        timezone = self.get(raw, path, "timezone", "UTC")
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            expected = "expected an IANA name like UTC or Europe/Paris"
            self.problem((*path, "timezone"), f"unknown time zone {timezone!r}; {expected}")
            timezone = "UTC"
        if (cron := self.get(raw, path, "cron", None)) is not None:
            from dtqs.runtime.schedule_times import cron_trigger  # it imports this module

            try:
                cron_trigger(cron, timezone)
            except ValueError as exc:
                self.problem((*path, "cron"), f"invalid cron expression {cron!r}: {exc}")
        payload = self.get(raw, path, "payload", None)
        schema = functions[function].schema if functions.get(function) else None
        if schema is not None and self.clean((*path, "payload")):
            validator = validator_for(schema, default=Draft202012Validator)(
                schema, registry=Registry()
            )  # its $refs stay in its file: nothing to fetch
            for error in validator.iter_errors(payload):
                at = f" (at {dotted(tuple(error.absolute_path))})" if error.absolute_path else ""
                message = f"does not match the schema of {function}: {error.message}{at}"
                self.problem((*path, "payload"), message)
        return ScheduleSpec(
            name=name,
            function=function,
            cron=cron,
            every_s=self.seconds(raw, path, "every", None, least=_ABOVE_ZERO),
            timezone=timezone,
            payload=payload,
            jitter_s=self.seconds(raw, path, "jitter", 0.0),
            enabled=self.get(raw, path, "enabled", True),
            misfire=self.get(raw, path, "misfire", "skip"),
            misfire_grace_s=self.seconds(raw, path, "misfire_grace", 3600.0),
        )

    def workers(self, raw: Any) -> WorkerSpec:
        path: YamlPath = ("workers",)
        return WorkerSpec(
            grace_s=self.seconds(raw, path, "grace", 30.0),
            heartbeat_interval_s=self.seconds(
                raw, path, "heartbeat_interval", None, least=_ABOVE_ZERO
            ),
            reclaim_interval_s=self.seconds(raw, path, "reclaim_interval", 1.0, least=_ABOVE_ZERO),
            max_tasks_per_child=self.get(raw, path, "max_tasks_per_child", None),
            max_memory_mb=self.memory_limit(raw, path),
        )

    def memory_limit(self, raw: Any, path: YamlPath) -> float | None:
        """MiB from `max_memory` (a size like 200MB) or the older `max_memory_mb` (MiB)."""
        old: float | None = self.get(raw, path, "max_memory_mb", None)
        size: str | None = self.get(raw, path, "max_memory", None)
        if size is None:
            return old
        if old is not None:
            self.problem((*path, "max_memory"), "give max_memory or max_memory_mb, not both")
            return old
        number, unit = _SIZE.fullmatch(size).groups()  # type: ignore[union-attr] # schema
        mib = float(number) * _SIZE_BYTES[unit] / 2**20
        if mib < MIN_MEMORY_MB:
            self.problem((*path, "max_memory"), f"{size!r} is too small; expected at least 16MiB")
            return None
        return mib

    def api(self, raw: Any) -> ApiSpec:
        path: YamlPath = ("api",)
        written = raw.get("tokens") if isinstance(raw, dict) else None
        tokens: list[ApiToken] = []
        seen: dict[str, str] = {}
        for name, entry in (written or {}).items() if isinstance(written, dict) else ():
            if not self.clean((*path, "tokens", name)):
                continue  # already reported; a bad entry grants nothing
            if entry["token"] in seen:
                message = f"the same token as {seen[entry['token']]!r}; give each its own"
                self.problem((*path, "tokens", name, "token"), message)
            if entry["token"].strip().lower().startswith(PLACEHOLDER_PREFIX):
                # NOTE: the example deployment files ship such values; a deployment that
                # forgot to replace one would accept a token printed in this repository.
                message = (f"{PLACEHOLDER_PREFIX}…: a placeholder from the example files, not a "
                           "token; set a secret one (e.g. openssl rand -hex 24)")  # fmt: skip
                self.problem((*path, "tokens", name, "token"), message)
                continue
            seen[entry["token"]] = name
            tokens.append(ApiToken(name, entry["token"], entry["scope"]))
        return ApiSpec(
            tokens=tuple(tokens),
            max_body_bytes=int(self.get(raw, path, "max_body_bytes", 1024 * 1024)),
            redis_timeout_s=self.seconds(raw, path, "redis_timeout", 1.0, least=_ABOVE_ZERO),
            max_wait_s=self.seconds(raw, path, "max_wait", 30.0),
            max_long_polls=int(self.get(raw, path, "max_long_polls", 32)),
        )
