"""tests/redis/test_scripts.py, through Sentinel (see conftest.py)."""

from tests.redis.test_scripts import *  # noqa: F403
