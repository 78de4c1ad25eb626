"""redis-py's failures become dtqs errors a caller can act on (runtime/redis/broker.py)."""

from __future__ import annotations

import pytest
import redis

from dtqs.runtime.errors import BrokerUnavailableError, DtqsError
from dtqs.runtime.redis.broker import POOL_EXHAUSTED, translate


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        # NOTE: redis-py strips the code from these; before, READONLY (a stale connection
        # to a demoted master) was "Redis refused a command" and a 500.
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
         "READONLY"),
        (redis.exceptions.MasterDownError("Link with MASTER is down"), "MASTERDOWN"),
        (redis.exceptions.ClusterDownError("The cluster is down"), "CLUSTERDOWN"),
        (redis.exceptions.TryAgainError("Multiple keys request during rehashing"), "TRYAGAIN"),
    ],
)  # fmt: skip
def test_a_redis_that_cannot_take_writes_now_is_unavailable(exc, code):
    error = translate(exc, "redis://u:secret@h:6379/0")
    assert isinstance(error, BrokerUnavailableError) and error.outage
    assert error.message.startswith(f"Redis cannot take writes now: {code} ")


def test_unreachable_loading_full_and_refused_each_say_so():
    down = translate(redis.exceptions.ConnectionError("Error 111"), "redis://u:secret@h:1/0")
    assert isinstance(down, BrokerUnavailableError) and down.outage
    assert "unreachable at redis://u:***@h:1/0" in down.message and "secret" not in down.message
    loading = translate(redis.exceptions.BusyLoadingError("loading"))
    assert isinstance(loading, BrokerUnavailableError) and "loading" in loading.message
    oom = translate(redis.exceptions.OutOfMemoryError("command not allowed when used "
                                                      "memory > 'maxmemory'."))  # fmt: skip
    assert isinstance(oom, BrokerUnavailableError) and "out of memory" in oom.message
    bug = translate(redis.exceptions.ResponseError("ERR unknown command 'X'"))
    assert type(bug) is DtqsError and bug.code == "internal"
    assert translate(ValueError("not redis")) is None


def test_a_busy_pool_and_a_late_submission_are_not_outages():
    busy = translate(redis.exceptions.ConnectionError(POOL_EXHAUSTED))
    assert isinstance(busy, BrokerUnavailableError) and not busy.outage
    assert "pool is exhausted" in busy.message and "unreachable" not in busy.message
    stale = translate(redis.exceptions.ResponseError("STALE the submission reached Redis ..."))
    assert isinstance(stale, BrokerUnavailableError) and not stale.outage


def test_a_server_that_is_not_redis_is_named_not_a_crash():
    error = translate(redis.exceptions.InvalidResponse('Protocol error, got "H"'), "redis://h:80/0")
    assert isinstance(error, BrokerUnavailableError)
    assert "does not answer as Redis does" in error.message and "redis://h:80/0" in error.message
