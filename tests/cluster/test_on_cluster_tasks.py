"""tests/api/test_tasks.py, run against the session's Redis Cluster (see conftest.py)."""

from tests.api.test_tasks import *  # noqa: F403
