"""`python -m bench --quick` keeps working: every installed system gets figures.

No timing is asserted: the quick run is far too small for its figures to mean anything.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIGURES = ("enqueue_per_s", "enqueue_bulk_per_s", "drain_per_s", "p50_ms", "p99_ms", "rss_mb")
#: Peers that install into this interpreter with `pip install -e '.[bench]'`.
PEERS = ("celery", "rq", "dramatiq", "huey")
#: Written by the harness once arq's own venv is complete.
ARQ_READY = REPO / "bench" / ".venvs" / "arq" / "bench-ready"


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_quick_run_measures_every_installed_system(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out), "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) == {"machine", "systems", "http", "scaling"}
    assert (tmp_path / "results.md").exists()
    systems = result["systems"]

    must_run = {"dtqs", "dtqs-async"}
    must_run |= {name for name in systems if name.split("-")[0] in PEERS and _installed(name)}
    if ARQ_READY.exists():
        must_run.add("arq")
    measured = {name for name, s in systems.items() if "skipped" not in s}
    assert must_run <= measured, {n: systems.get(n, {}).get("skipped") for n in must_run}
    for name in measured:
        for figure in FIGURES:
            value = systems[name][figure]
            assert value is not None and value > 0, (name, figure, systems[name].get("errors"))

    http = result["http"]
    for endpoint in ("bare_lpush", "dtqs_submit", "dtqs_batch"):
        assert http[endpoint]["requests_per_s"] > 0, http[endpoint]
    scaling = result["scaling"]
    for axis in ("processes", "queues"):
        for value in ("1", "2", "4"):
            assert scaling[axis][value]["drain_per_s"] > 0, scaling[axis][value]


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name.split("-")[0]) is not None


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cost_breakdown_gives_every_row(tmp_path: Path) -> None:
    out = tmp_path / "cost.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.cost", "-n", "500", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1].strip() for row in rows] == [
        "redis-py INCR, 1 thread",
        "redis-py INCR, 64 threads",
        "dtqs worker, 1 process x 64 slots, empty body",
        "dtqs worker, 1 process x 64 slots, INCR body",
    ]
    for row in rows:
        per_s, cpu_us = (float(c.strip().replace(",", "")) for c in row.split("|")[2:4])
        assert per_s > 0 and cpu_us > 0, row
