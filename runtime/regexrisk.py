"""A heuristic for regular expressions that can backtrack for exponential time.

A payload schema's `pattern`s run on every submission, in Python's backtracking `re`.
A repeated group whose body can match the same text in more than one way makes a
non-matching string of a few dozen characters take seconds (`^(a+)+$` took 1.9 s
for 26 characters). `dtqs validate` warns about a pattern that repeats without bound
(`*`, `+`, `{n,}`) a group that

- itself holds a repeat of variable length: `(a+)+`, `(a*)*`, `(\\w+)*`; or
- holds alternatives of which one can match nothing or two can begin with the same
  character: `(a|aa)+`, `(a|ab)*`.

A repeat or group that is possessive or atomic (`a++`, `(?>…)`) never backtracks and
is not counted. It is a heuristic: it can warn about a safe pattern (`([a-z]+\\.)*`,
where each turn must end with a dot) and miss other slow ones.
"""

from __future__ import annotations

import importlib
from typing import Any

# NOTE(manifest): the standard library's own regex parser, so the warning is about the
# pattern Python will actually run. It is private (re._parser since 3.11, sre_parse
# before, which now warns on import), hence imported by name and used defensively.
_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

NESTED = "repeats a group that itself holds a repeat, like (a+)+"
OVERLAP = "repeats alternatives that can match the same text, like (a|aa)+"

_REPEATS = (_c.MAX_REPEAT, _c.MIN_REPEAT)
_ZERO_WIDTH = (_c.AT, _c.ASSERT, _c.ASSERT_NOT)
_Ranges = list[tuple[int, int]] | None  #: characters a match can begin with; None = any


def risk(pattern: str) -> str | None:
    """Why `pattern` may take exponential time on some strings, or None."""
    try:
        return _scan(_parser.parse(pattern), repeated=False)
    except Exception:  # re.error (checked elsewhere), RecursionError on absurd nesting
        return None


def _scan(items: Any, *, repeated: bool) -> str | None:
    """The first risk in a parsed sequence; `repeated`: it lies in an unbounded repeat."""
    for op, av in items:
        found = None
        if op in _REPEATS:
            low, high, body = av
            if repeated and high > 1 and high > low:
                return NESTED
            found = _scan(body, repeated=repeated or high == _c.MAXREPEAT)
        elif op is _c.BRANCH:
            if repeated and _overlapping(av[1]):
                return OVERLAP
            found = next((r for alt in av[1] if (r := _scan(alt, repeated=repeated))), None)
        elif op is _c.SUBPATTERN:
            found = _scan(av[3], repeated=repeated)
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            found = _scan(av[1], repeated=repeated)
        if found:
            return found
    return None


def _overlapping(alternatives: list[Any]) -> bool:
    """True when one alternative can match nothing or two can begin alike."""
    starts: list[_Ranges] = []
    for alternative in alternatives:
        first, empty = _first(alternative)
        if empty or any(_meet(first, other) for other in starts):
            return True
        starts.append(first)
    return False


def _first(items: Any) -> tuple[_Ranges, bool]:
    """(characters a match of `items` can begin with, whether it can match nothing)."""
    ranges: _Ranges = []
    for op, av in items:
        if op in _ZERO_WIDTH:
            continue
        first, empty = _first_of(op, av)
        ranges = None if ranges is None or first is None else ranges + first
        if not empty:
            return ranges, False
    return ranges, True


def _first_of(op: Any, av: Any) -> tuple[_Ranges, bool]:
    if op is _c.LITERAL:
        return [(av, av)], False
    if op is _c.IN:
        if any(kind is not _c.LITERAL and kind is not _c.RANGE for kind, _ in av):
            return None, False  # a category or a negated set: assume it meets anything
        return [(v, v) if kind is _c.LITERAL else v for kind, v in av], False
    if op in (*_REPEATS, _c.POSSESSIVE_REPEAT):
        first, empty = _first(av[2])
        return first, empty or av[0] == 0
    if op is _c.SUBPATTERN:
        return _first(av[3])
    if op is _c.ATOMIC_GROUP:
        return _first(av)
    if op is _c.BRANCH:
        found = [_first(alt) for alt in av[1]]
        ranges: _Ranges = []
        for first, _ in found:
            ranges = None if ranges is None or first is None else ranges + first
        return ranges, any(empty for _, empty in found)
    return None, op is _c.GROUPREF_EXISTS  # ANY, NOT_LITERAL, GROUPREF...: anything


def _meet(a: _Ranges, b: _Ranges) -> bool:
    if a is None or b is None:
        return a != [] and b != []
    return any(lo1 <= hi2 and lo2 <= hi1 for lo1, hi1 in a for lo2, hi2 in b)
