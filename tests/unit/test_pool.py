"""The worker pool's respawn backoff: crash loops slow down, kills from outside do not."""

from __future__ import annotations

import signal

import pytest

from dtqs.runtime.pool import RESPAWN_MAX_S, RESPAWN_MIN_S, respawn_delay

KILLED = -signal.SIGKILL


def test_a_crash_loop_doubles_the_delay_up_to_the_max():
    crashes, delays = 0, []
    for _ in range(10):
        delay, crashes = respawn_delay(1, 0.3, crashes)  # exits by itself at start
        delays.append(delay)
    assert delays[:4] == [RESPAWN_MIN_S, 2 * RESPAWN_MIN_S, 4 * RESPAWN_MIN_S, 8 * RESPAWN_MIN_S]
    assert delays[-1] == RESPAWN_MAX_S


@pytest.mark.parametrize("code", [KILLED, -signal.SIGSEGV])
def test_a_process_killed_after_start_up_comes_back_at_once_every_time(code):
    crashes = 0
    for _ in range(5):
        delay, crashes = respawn_delay(code, 1.5, crashes)
        assert delay == RESPAWN_MIN_S


def test_a_kill_during_start_up_still_counts_as_a_crash():
    _, crashes = respawn_delay(KILLED, 0.2, 0)
    delay, _ = respawn_delay(KILLED, 0.2, crashes)
    assert delay == 2 * RESPAWN_MIN_S


def test_a_long_healthy_run_resets_the_count():
    delay, crashes = respawn_delay(1, 60.0, 7)
    assert (delay, crashes) == (RESPAWN_MIN_S, 1)
