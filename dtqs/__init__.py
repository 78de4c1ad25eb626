"""dtqs: a Redis-backed function runner. The public Python API lives here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dtqs.runtime.client import Client
    from dtqs.runtime.errors import DtqsError
    from dtqs.runtime.task import TaskInfo

__all__ = ["Client", "DtqsError", "TaskInfo"]


def __getattr__(name: str) -> Any:
    # NOTE: lazy, so that `import dtqs.runtime.manifest` does not pull in redis-py.
    if name in ("Client", "TaskInfo"):
        from dtqs.runtime import client

        return getattr(client, name)
    if name == "DtqsError":
        from dtqs.runtime.errors import DtqsError

        return DtqsError
    raise AttributeError(f"module 'dtqs' has no attribute {name!r}")
