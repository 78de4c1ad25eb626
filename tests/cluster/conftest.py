"""Fixtures of the cluster suite: a Redis Cluster shared by the session, and the
``redis_url``/``r`` fixtures pointed at it, so the engine's own test modules
(re-collected by the ``test_on_cluster_*`` files) run against the cluster unchanged.

Every test here carries the ``cluster`` and ``slow`` markers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from tests.cluster.servers import Cluster, SentinelGroup, make_certs

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents or Path(str(item.fspath)).parent == HERE:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three masters, three replicas, ACL user; shared by the tests that do not kill nodes."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c.create()
    finally:
        c.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of the test's own, for tests that kill a node."""
    c = Cluster(tmp_path / "cluster")
    c.folder.mkdir()
    try:
        yield c.create()
    finally:
        c.stop()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    g = SentinelGroup(tmp_path / "sentinel")
    g.folder.mkdir()
    try:
        yield g.create()
    finally:
        g.stop()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def redis_url(cluster: Cluster) -> str:
    """Overrides the top-level fixture: the engine's tests talk to the cluster."""
    return cluster.url()


@pytest.fixture
def r(cluster: Cluster) -> Iterator[RedisCluster]:
    """A cluster client, every master flushed before and after each test."""
    client = cluster.client()
    client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    client.close()
