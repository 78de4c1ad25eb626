"""Fixtures of the behaviour scenarios: ``stack`` (see helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Procs, Project
from tests.faults.behaviour.helpers import Stack


@pytest.fixture
def stack(
    project: Callable[..., Project],
    procs: Procs,
    redis_server: Callable[..., Any],
    tmp_path: Path,
) -> Iterator[Callable[..., Stack]]:
    """make(manifest, files, *redis_args) -> a Stack on a fresh private redis-server."""
    made: list[Stack] = []

    def make(manifest: str, files: dict[str, str], *redis_args: str) -> Stack:
        _, port = redis_server(*redis_args)
        s = Stack(project(manifest, files), procs, f"redis://127.0.0.1:{port}/0",
                  tmp_path / "ledger.txt")  # fmt: skip
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
