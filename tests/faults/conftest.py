"""Shared pieces of the fault suite (issue 6).

Every test under ``tests/faults/`` carries the ``faults`` marker (and ``slow``: they
start real servers and processes and run serially). A scenario reports its figures
through the ``fault_report`` fixture; they are appended as one JSON line to
``tests/faults/results.jsonl`` (or ``$DTQS_FAULT_RESULTS``), from which
``python tests/faults/report.py`` writes ``tests/faults/REPORT.md``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
RESULTS = Path(os.environ.get("DTQS_FAULT_RESULTS", HERE / "results.jsonl"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record one scenario's figures.

    ``fault_report(scenario, title, accepted=…, lost=…, dup=…, recover_s=…, **figures)``:
    ``scenario`` is the issue's scenario number (or a short label such as
    ``"security"``); the standard figures may be None where they do not apply; any
    other keyword lands in ``figures``. Call it before the scenario's final asserts,
    so a failing run still leaves its numbers; the line records the test's outcome.
    """

    def record(
        scenario: int | str,
        title: str,
        *,
        accepted: int | None = None,
        lost: int | None = None,
        dup: int | None = None,
        recover_s: float | None = None,
        **figures: Any,
    ) -> None:
        entry = {
            "scenario": scenario,
            "title": title,
            "test": request.node.nodeid,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "accepted": accepted,
            "lost": lost,
            "dup": dup,
            "recover_s": None if recover_s is None else round(recover_s, 3),
            "figures": figures,
        }
        request.node.stash[_ENTRIES] = [*request.node.stash.get(_ENTRIES, []), entry]

    return record


_ENTRIES = pytest.StashKey[list[dict[str, Any]]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.failed):
        for entry in item.stash.get(_ENTRIES, []):
            entry["outcome"] = report.outcome
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with RESULTS.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry, sort_keys=True) + "\n")
    return report
