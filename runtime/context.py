"""What a handler receives as its second argument: ``handler(payload, ctx)``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class TaskContext:
    """The running task as its handler sees it."""

    task_id: str
    attempt: int  #: 1 for the first run
    function: str
    queue: str
    priority: str
    deadline: datetime  #: when the function's timeout fails this attempt (UTC)
    headers: Mapping[str, str] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("dtqs.task"))
    _report: Callable[[str], bool] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.task_id

    def progress(self, fraction: float, message: str | None = None) -> bool:
        """Store progress (0..1) on the task record; False if the lease was lost."""
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"progress fraction must be within 0..1, got {fraction!r}")
        if self._report is None:
            return False
        return self._report(json.dumps({"fraction": float(fraction), "message": message}))
