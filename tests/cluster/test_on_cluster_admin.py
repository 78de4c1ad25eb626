"""tests/api/test_admin.py, run against the session's Redis Cluster (see conftest.py)."""

from tests.api.test_admin import *  # noqa: F403
