"""Retry maths (pure) and the control-flow signals a handler may raise."""

from __future__ import annotations

import random

from dtqs.runtime.manifest import RetryPolicy


class Retry(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a handler to ask for another attempt, optionally after ``delay_s``."""

    def __init__(self, message: str = "retry requested", *, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class SkipRetry(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a handler to fail the task now, without further attempts."""


def backoff_s(policy: RetryPolicy, attempt: int, rand: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    exponential: initial * 2**(attempt-1), capped at max_delay; with jitter, "full
    jitter" (uniform in [0, that]) so that retries of many tasks spread out.
    """
    if policy.backoff == "none":
        return 0.0
    if policy.backoff == "fixed":
        base = policy.initial_delay_s
    else:
        base = policy.initial_delay_s * (2 ** max(attempt - 1, 0))
    base = min(base, policy.max_delay_s)
    if policy.jitter:
        return (rand or random).uniform(0, base)
    return base
