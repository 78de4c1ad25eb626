"""Query parameters and request bodies, checked: a client's mistake is a 4xx naming it."""

from __future__ import annotations

import base64
import json
from typing import Any

import falcon

from dtqs.api import media
from dtqs.api.errors import ProblemError


def number(
    req: falcon.Request, name: str, default: float, low: float, high: float, *, integer: bool
) -> Any:
    """The query parameter `name` as a number within [low, high], else a 400."""
    raw = req.get_param(name)
    if raw is None or raw == "":
        return default
    kind = "an integer" if integer else "a number"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ProblemError(
            400, f"query parameter {name!r}: expected {kind} from {low:g} to {high:g}, got {raw!r}"
        )
    return value


def encode_cursor(position: tuple[int, ...] | None) -> str | None:
    if position is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")


def decode_cursor(req: falcon.Request, size: int) -> tuple[int, ...]:
    """The `cursor` parameter as `size` non-negative integers (all 0 when absent)."""
    raw = req.get_param("cursor")
    if not raw:
        return (0,) * size
    try:
        value = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if (
            isinstance(value, list)
            and len(value) == size
            and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in value
            )
        ):
            return tuple(value)
    except (ValueError, TypeError):
        pass
    raise ProblemError(400, "query parameter 'cursor': not a cursor this API returned")


def json_body(req: falcon.Request, limit: int) -> Any:
    """The request's JSON body: 415 for another media type, 413 past `limit`, 400 if malformed.

    The body is read at most to limit + 1 bytes, so an oversized one is refused without
    being read whole (waitress refuses it even earlier, from the same limit).
    """
    if req.content_length is not None and req.content_length > limit:
        raise ProblemError(413, f"the body is larger than {limit} bytes")
    media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ProblemError(
            415, f"expected Content-Type application/json, got {media_type or 'none'}"
        )
    data = req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise ProblemError(413, f"the body is larger than {limit} bytes")
    if not data.strip():
        raise ProblemError(400, "a JSON body is required")
    try:
        return media.loads(data)
    except ValueError as exc:
        raise ProblemError(400, f"malformed JSON: {exc}") from None
