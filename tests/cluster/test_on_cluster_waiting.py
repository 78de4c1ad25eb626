"""tests/redis/test_waiting.py, run against the session's Redis Cluster (see conftest.py):
the scripts' PUBLISH reaches a waiter subscribed through the cluster client."""

from tests.redis.test_waiting import *  # noqa: F403
