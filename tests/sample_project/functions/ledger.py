"""Test handlers that leave evidence outside Redis: one ledger line per event.

Each line is ``<task id> <attempt> <pid> start|done <time.time()>``, written with one
O_APPEND write, so lines from concurrent threads and processes never interleave. The
ledger is the payload's "ledger", else ``$DTQS_TEST_LEDGER``. The sleep is
``$DTQS_TEST_SLEEP_S`` when set (a later worker can then run the same tasks fast),
else the payload's "sleep" (seconds).
"""

from __future__ import annotations

import os
import time
from typing import Any


def _append(path: str, task_id: str, attempt: int, event: str) -> None:
    line = f"{task_id} {attempt} {os.getpid()} {event} {time.time():.6f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def work(payload: Any, ctx: Any) -> dict[str, Any]:
    """Log start, sleep, log done; returns the pid that ran it."""
    payload = payload if isinstance(payload, dict) else {}
    path = payload.get("ledger") or os.environ["DTQS_TEST_LEDGER"]
    sleep_s = float(os.environ.get("DTQS_TEST_SLEEP_S") or payload.get("sleep") or 0)
    _append(path, ctx.task_id, ctx.attempt, "start")
    time.sleep(sleep_s)
    _append(path, ctx.task_id, ctx.attempt, "done")
    return {"pid": os.getpid(), "slept": sleep_s}
