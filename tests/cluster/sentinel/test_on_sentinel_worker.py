"""tests/redis/test_worker.py, through Sentinel (see conftest.py)."""

from tests.redis.test_worker import *  # noqa: F403
