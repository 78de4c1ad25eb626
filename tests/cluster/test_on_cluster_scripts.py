"""tests/redis/test_scripts.py, run against the session's Redis Cluster (see conftest.py)."""

from tests.redis.test_scripts import *  # noqa: F403

# NOTE: counts EVALSHA calls in one node's INFO commandstats, which on a cluster sees
# only its own share; test_cluster.py checks the same recovery across the masters.
del test_a_batch_over_two_queues_survives_a_flushed_script_cache  # noqa: F821
