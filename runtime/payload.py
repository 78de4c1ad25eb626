"""Payload checks: strict JSON encoding and each function's JSON Schema (compiled once)."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import validators

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
            validator = self._compiled[spec.name] = cls(
                spec.schema, format_checker=cls.FORMAT_CHECKER
            )
        found = sorted(
            validator.iter_errors(payload), key=lambda e: list(map(str, e.absolute_path))
        )
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
