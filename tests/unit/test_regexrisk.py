"""The slow-pattern heuristic: what it flags and what it leaves alone."""

from __future__ import annotations

import pytest

from dtqs.runtime.regexrisk import NESTED, OVERLAP, risk


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("^(a+)+$", NESTED),
        ("(a*)*", NESTED),
        (r"(\w+)*", NESTED),
        ("(?:a+)+", NESTED),
        ("(a{1,3})+", NESTED),
        ("(.*)*x", NESTED),
        ("^((ab)+c?)*$", NESTED),
        ("(a|aa)+", OVERLAP),
        ("(a|b|ab)*", OVERLAP),
        ("(a|)+", OVERLAP),
        (r"(\d+|[0-9a-f])+", OVERLAP),
        ("(x(?:a|ab))+", OVERLAP),
    ],
)
def test_flagged(pattern: str, why: str) -> None:
    assert risk(pattern) == why


@pytest.mark.parametrize(
    "pattern",
    [
        "^[a-z0-9_-]{1,64}$",
        r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$",
        "(foo|bar)+",
        "(ab?)+",
        "(a{2})+",
        r"(\w|\d)+",  # one character class once parsed: nothing to backtrack over
        "(?>a+)+",  # atomic: never backtracks
        "(a++)+",  # possessive
        "(a+){2}",  # bounded outer repeat: polynomial at worst
        "((a|b)c)+",
        "(",  # not a regex at all: the schema check reports that, not this
    ],
)
def test_not_flagged(pattern: str) -> None:
    assert risk(pattern) is None
