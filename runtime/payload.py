"""Payload checks: strict JSON encoding and each function's JSON Schema (compiled once)."""

from __future__ import annotations

import json
import math
from typing import Any

from jsonschema import validators
from referencing import Registry
from referencing.exceptions import Unresolvable

from dtqs.runtime.errors import PayloadValidationError, Violation
from dtqs.runtime.manifest import FunctionSpec

#: Strict, compact JSON: no NaN/Infinity. PERF: one encoder, reused; json.dumps with
#: any option builds a new JSONEncoder per call.
STRICT_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


#: What JSON can hold, as Python types; a container's members are looked at, not these.
_SCALARS = (str, int, float, bool, type(None))
_CONTAINERS = (dict, list, tuple)


def encode_json(value: Any, what: str) -> str:
    """Strict JSON text (no NaN/Infinity), or PayloadValidationError saying why not."""
    try:
        return STRICT_JSON.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        where = _unencodable(value)
        violations = [Violation(pointer(what, where), "not JSON")] if where is not None else []
        raise PayloadValidationError(f"{what} is not JSON-serialisable: {exc}", violations) from exc


def encode_submitted(value: Any, what: str) -> str:
    """As encode_json, and every object key must be a str.

    NOTE(requests): json turns the key 1 into "1" (and True into "true"), so {1: "a", "1": "b"}
    would be stored with "1" twice, and a payload would not read back as it was given. The
    API can never send such keys (JSON text has only string keys), so the client refuses
    them too rather than change the payload silently.
    """
    text = encode_json(value, what)
    if isinstance(value, _CONTAINERS):
        where = _non_str_key(value)
        if where is not None:
            key = where[-1]
            raise PayloadValidationError(
                f"{what}: object keys must be strings, got {type(key).__name__} {key!r} at "
                f"{pointer(what, where)}",
                [Violation(pointer(what, where), f"object key {key!r} is not a string")],
            )
    return text


def pointer(what: str, path: tuple[Any, ...]) -> str:
    """The JSON pointer (RFC 6901) of `path` inside the submission's member `what`."""
    parts = [what, *(str(p).replace("~", "~0").replace("/", "~1") for p in path)]
    return "/" + "/".join(parts)


#: A path while walking, as links (parent link, key): O(1) a step, however deep the value.
_Link = tuple[Any, Any] | None


def _non_str_key(value: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The path to an object key that is not a str, or None.

    PERF(requests): runs on every submission after the payload encoded, so it has no cycles
    to guard against and walks containers only; a scalar member costs one isinstance.
    """
    stack: list[tuple[Any, _Link]] = [(value, None)]
    while stack:
        node, link = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str):
                    return _path((link, key))
                if isinstance(item, _CONTAINERS):
                    stack.append((item, (link, key)))
        else:
            for index, item in enumerate(node):
                if isinstance(item, _CONTAINERS):
                    stack.append((item, (link, index)))
    return None


def _unencodable(value: Any) -> tuple[Any, ...] | None:
    """Where a value that failed to encode goes wrong (a key or a value JSON cannot hold,
    NaN or infinity), or None when not found (a cycle: the encoder's message says so)."""
    stack: list[tuple[Any, _Link]] = [(value, None)]
    seen: set[int] = set()  # NOTE(requests): only so that a cycle ends the walk
    while stack:
        node, link = stack.pop()
        if isinstance(node, float):
            if not math.isfinite(node):
                return _path(link)
        elif not isinstance(node, _SCALARS):
            if not isinstance(node, _CONTAINERS):
                return _path(link)
            if id(node) not in seen:
                seen.add(id(node))
                members = node.items() if isinstance(node, dict) else enumerate(node)
                for key, item in members:
                    if not isinstance(key, _SCALARS):
                        return _path((link, key))
                    stack.append((item, (link, key)))
    return None


def _path(link: _Link) -> tuple[Any, ...]:
    keys = []
    while link is not None:
        link, key = link
        keys.append(key)
    return tuple(reversed(keys))


class Validators:
    """Compiled JSON Schema validators of a manifest's functions, built on first use."""

    def __init__(self) -> None:
        self._compiled: dict[str, Any] = {}

    def check(self, spec: FunctionSpec, payload: Any) -> None:
        """Raise PayloadValidationError listing every violation of the function's schema."""
        if spec.schema is None:
            return
        validator = self._compiled.get(spec.name)
        if validator is None:
            cls = validators.validator_for(spec.schema)
            # NOTE(manifest): an empty registry: a $ref outside the schema's own file
            # (refused at load) is never fetched from the network here either.
            validator = self._compiled[spec.name] = cls(
                spec.schema, format_checker=cls.FORMAT_CHECKER, registry=Registry()
            )
        try:
            found = sorted(
                validator.iter_errors(payload), key=lambda e: list(map(str, e.absolute_path))
            )
        except RecursionError:
            # A recursive schema (a tree) follows the payload down: too deep a payload
            # is the client's to fix, not a server error.
            message = f"payload of {spec.name!r} is nested too deeply to check against its schema"
            raise PayloadValidationError(message, [Violation("/payload", message)]) from None
        except Unresolvable as exc:  # refused when the manifest loads; never a 500 anyway
            message = f"the schema of {spec.name!r} cannot be used: unresolvable $ref ({exc})"
            raise PayloadValidationError(message, [Violation("/payload", message)]) from None
        if found:
            violations = [
                Violation("/payload" + "".join(f"/{p}" for p in e.absolute_path), e.message)
                for e in found
            ]
            raise PayloadValidationError(
                f"payload of {spec.name!r} does not match its schema: "
                + "; ".join(f"{v.pointer}: {v.message}" for v in violations),
                violations,
            )
