"""Example handler: greets the name in its payload."""

from __future__ import annotations

from typing import Any


def handle(payload: dict[str, Any]) -> dict[str, str]:
    """Return a greeting for `payload["name"]`."""
    return {"greeting": f"Hello, {payload['name']}!"}
