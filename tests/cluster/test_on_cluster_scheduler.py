"""tests/redis/test_scheduler.py, run against the session's Redis Cluster (see conftest.py)."""

from tests.redis.test_scheduler import *  # noqa: F403
