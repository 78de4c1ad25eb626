"""Payload checks: strict JSON encoding and each function's JSON Schema (compiled once)."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import validators
from referencing import Registry
from referencing.exceptions import Unresolvable

from dtqs.runtime.errors import PayloadValidationError, Violation
from dtqs.runtime.manifest import FunctionSpec

#: Strict, compact JSON: no NaN/Infinity. PERF: one encoder, reused; json.dumps with
#: any option builds a new JSONEncoder per call.
STRICT_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def encode_json(value: Any, what: str) -> str:
    """Strict JSON text (no NaN/Infinity), or PayloadValidationError saying why not."""
    try:
        return STRICT_JSON.encode(value)
    except (TypeError, ValueError) as exc:
        raise PayloadValidationError(f"{what} is not JSON-serialisable: {exc}") from exc


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
