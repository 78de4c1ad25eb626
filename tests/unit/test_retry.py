from __future__ import annotations

import random

from dtqs.runtime.manifest import RetryPolicy
from dtqs.runtime.retry import backoff_s


def test_exponential_doubles_up_to_the_cap():
    p = RetryPolicy(
        max_attempts=10, backoff="exponential", initial_delay_s=1, max_delay_s=5, jitter=False
    )
    assert [backoff_s(p, a) for a in range(1, 6)] == [1, 2, 4, 5, 5]


def test_fixed_and_none():
    assert backoff_s(RetryPolicy(backoff="fixed", initial_delay_s=2, jitter=False), 7) == 2
    assert backoff_s(RetryPolicy(backoff="none"), 3) == 0


def test_full_jitter_stays_within_zero_and_the_base():
    p = RetryPolicy(backoff="exponential", initial_delay_s=1, max_delay_s=60, jitter=True)
    rand = random.Random(7)
    delays = [backoff_s(p, 4, rand) for _ in range(200)]
    assert all(0 <= d <= 8 for d in delays) and max(delays) > 6 and min(delays) < 2
