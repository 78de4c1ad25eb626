"""tests/api/test_health_metrics.py, run against the session's Redis Cluster (see conftest.py)."""

from tests.api.test_health_metrics import *  # noqa: F403
