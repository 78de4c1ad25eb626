"""The engine's core suites again, through a Sentinel-managed master: ``redis_url`` is
a ``redis+sentinel://`` URL (ACL user, Sentinel password, database 15) and ``r`` a
client of the master the Sentinels name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.cluster.servers import PASSWORD, USER, SentinelGroup

DB = 15


@pytest.fixture(scope="session")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    g = SentinelGroup(tmp_path_factory.mktemp("sentinels"))
    try:
        yield g.create()
    finally:
        g.stop()


@pytest.fixture(scope="session")
def redis_url(sentinels: SentinelGroup) -> str:
    return sentinels.url(db=DB)


@pytest.fixture
def r(sentinels: SentinelGroup) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=sentinels.master_port(), db=DB, username=USER,
                         password=PASSWORD, decode_responses=True)  # fmt: skip
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
