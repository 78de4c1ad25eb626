"""tests/redis/test_worker.py, run against the session's Redis Cluster (see conftest.py)."""

from tests.redis.test_worker import *  # noqa: F403
