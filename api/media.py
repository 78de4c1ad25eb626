"""Strict JSON in and out.

In: UTF-8 only, no NaN/Infinity, no duplicate keys, bounded nesting; anything else
is a 400, never a 500. Out: ASCII-escaped JSON, so that any Python string
(even a lone surrogate from a client's payload) encodes and round-trips.
"""

from __future__ import annotations

import json
from typing import Any

import falcon
from falcon import media

from dtqs.runtime.payload import STRICT_JSON

#: Deepest nesting of arrays and objects a request body may have.
MAX_DEPTH = 200


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _depth_ok(text: str) -> bool:
    """A cheap bound on nesting before parsing (strings may hide brackets: that is fine,
    it only makes the bound stricter than needed for such bodies)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # PERF: C-speed answer for most bodies
        return True
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def loads(data: str | bytes) -> Any:
    if isinstance(data, bytes):
        data = data.decode("utf-8")  # UnicodeDecodeError is a ValueError: a 400
    if not _depth_ok(data):
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(data, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def dumps(value: Any) -> str:
    return STRICT_JSON.encode(value)


def handlers() -> media.Handlers:
    json_handler = media.JSONHandler(dumps=dumps, loads=loads)
    return media.Handlers(
        {falcon.MEDIA_JSON: json_handler, "application/problem+json": json_handler}
    )
