"""Query parameters and request bodies, checked: a client's mistake is a 4xx naming it."""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Sequence
from typing import Any

import falcon

from dtqs.api import media
from dtqs.api.errors import ProblemError
from dtqs.runtime.manifest import manifest_schema

#: Most characters of a query value quoted back in a problem's detail.
SHOWN = 60
#: Longest cursor accepted: the ones this API returns are far shorter.
MAX_CURSOR = 512
#: What a cursor looks like: unpadded base64url (RFC 4648 section 5).
CURSOR = re.compile(r"[A-Za-z0-9_-]+")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
#: Longest number accepted, in characters (int() of thousands of digits is slow).
_MAX_NUMBER = 32
#: A header value every client sends the same way: visible ASCII and spaces. NOTE(requests):
#: spaces around it are not part of it (HTTP servers strip them), so it needs one visible.
HEADER_TEXT = "^[\\x20-\\x7E]*[\\x21-\\x7E][\\x20-\\x7E]*$"
_HEADER_TEXT = re.compile(HEADER_TEXT)


def function_name_schema() -> dict[str, Any]:
    """A function's name as the manifest's schema defines it (pattern and maxLength)."""
    schema: dict[str, Any] = manifest_schema()["$defs"]["function_name"]
    return schema


@functools.cache
def _function_name() -> re.Pattern[str]:
    return re.compile(function_name_schema()["pattern"])


def bad_param(name: str, expected: str, raw: str | list[str] | None = None) -> ProblemError:
    """A 400 naming the query parameter, what it expects and (shortened) what it got."""
    detail = f"query parameter {name!r}: expected {expected}"
    if isinstance(raw, list):
        detail += f", got {len(raw)} values"
    elif raw is not None:
        detail += f", got {raw[:SHOWN]!r}" + ("..." if len(raw) > SHOWN else "")
    return ProblemError(400, detail, errors=[{"parameter": name, "detail": f"expected {expected}"}])


def text(req: falcon.Request, name: str) -> str | None:
    """The query parameter's one value, None when absent.

    Given empty (``?queue=``) or more than once it is a 400, never a silent "no filter":
    a client whose variable was empty would otherwise act on every queue.
    """
    raw = req.params.get(name)
    if raw is None:
        return None
    if isinstance(raw, list):
        raise bad_param(name, "one value", raw)
    if raw == "":
        raise bad_param(name, "a value (leave the parameter out for none)")
    return str(raw)


def header_text(req: falcon.Request, name: str) -> str | None:
    """A header's value, None when absent; anything but visible ASCII is a 400 naming it.

    NOTE(requests): header values are bytes, and clients disagree on how to send other
    text (requests sends latin-1, curl whatever the terminal has, often UTF-8), so "é"
    could be two different keys. RFC 9110 section 5.5 asks new fields to keep to
    visible ASCII, as the IETF Idempotency-Key draft does; other keys go in the body.
    """
    raw = req.get_header(name)
    if raw is not None and not _HEADER_TEXT.fullmatch(raw):
        raise ProblemError(
            400,
            f"header {name!r}: expected visible ASCII, got {raw[:SHOWN]!r}",
            errors=[{"parameter": name, "detail": "expected visible ASCII"}],
        )
    return raw


def choice(req: falcon.Request, name: str, allowed: Sequence[str]) -> str | None:
    """The query parameter as one of `allowed`, None when absent, else a 400."""
    raw = text(req, name)
    if raw is not None and raw not in allowed:
        raise bad_param(name, f"one of {', '.join(allowed)}", raw)
    return raw


def function_name(req: falcon.Request) -> str | None:
    """The `function` filter: a well-formed function name (declared or not), or None."""
    raw = text(req, "function")
    schema = function_name_schema()
    if raw is not None and not (
        len(raw) <= schema["maxLength"] and _function_name().fullmatch(raw)
    ):
        raise bad_param(
            "function", f"a function name ({schema['pattern']}, {schema['maxLength']} at most)", raw
        )
    return raw


def number(
    req: falcon.Request, name: str, default: float, low: float, high: float, *, integer: bool
) -> Any:
    """The query parameter `name` as a number within [low, high], else a 400.

    Only ASCII decimal numbers: int() and float() would also take "1_0", " 5", "nan" or
    Arabic-Indic digits, which the document's integer/number do not describe.
    """
    raw = text(req, name)
    if raw is None:
        return default
    kind = "an integer" if integer else "a number"
    syntax = _INTEGER if integer else _NUMBER
    value = None
    if len(raw) <= _MAX_NUMBER and syntax.fullmatch(raw):
        value = int(raw) if integer else float(raw)
    if value is None or not low <= value <= high:
        raise bad_param(name, f"{kind} from {low:g} to {high:g}", raw)
    return value


def encode_cursor(position: tuple[int, ...] | None) -> str | None:
    if position is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")


def decode_cursor(req: falcon.Request, size: int) -> tuple[int, ...]:
    """The `cursor` parameter as `size` non-negative integers (all 0 when absent)."""
    raw = text(req, "cursor")
    if raw is None:
        return (0,) * size
    if len(raw) > MAX_CURSOR or not CURSOR.fullmatch(raw):
        raise bad_param("cursor", "the next_cursor of a page (base64url)", raw)
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
    raise bad_param("cursor", "the next_cursor of a page: not a cursor this API returned", raw)


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
