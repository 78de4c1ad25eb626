"""The report generator turns recorded figures into one table row per scenario."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _report_module():
    path = Path(__file__).with_name("report.py")
    spec = importlib.util.spec_from_file_location("fault_report_mod", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_latest_entry_per_scenario_wins_and_rows_are_ordered() -> None:
    render = _report_module().render
    base = {"accepted": 10, "lost": 0, "dup": 1, "recover_s": 1.5, "figures": {"kills": 4}}
    text = render(
        [
            {**base, "scenario": 10, "title": "ten", "at": "t1", "outcome": "failed"},
            {**base, "scenario": 2, "title": "two", "at": "t1", "outcome": "passed"},
            {**base, "scenario": 10, "title": "ten", "at": "t2", "outcome": "passed"},
            {**base, "scenario": "security", "title": "sec", "at": "t1", "outcome": "passed"},
            {**base, "scenario": "16a", "title": "mem", "at": "t1", "outcome": "passed"},
        ]
    )
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split("|")[1].strip() for row in rows] == ["2", "10", "16a", "security"]
    assert "| 10 | ten | passed | 10 | 0 | 1 | 1.5 | kills=4 | t2 |" in rows[1]
