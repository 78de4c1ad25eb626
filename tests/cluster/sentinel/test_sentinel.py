"""Sentinel URLs: the master is found by name, in the URL's database, and every
credential problem is a clear error that shows no password."""

from __future__ import annotations

import pytest

from dtqs.runtime.errors import BrokerUnavailableError
from dtqs.runtime.redis.broker import Broker
from tests.cluster.servers import PASSWORD, PASSWORD_URL, SentinelGroup


def test_the_url_names_the_master_and_the_database(sentinels: SentinelGroup, r):
    broker = Broker(sentinels.url(db=15))
    try:
        broker.redis.set("probe", "1")
        assert r.get("probe") == "1"  # r: the master the Sentinels name, database 15
        assert broker.eviction_policy() == "noeviction" and broker.ping()
    finally:
        broker.close()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("?sentinel_password=sentinel-pw-77", ""), "Sentinels at .* refused the credentials"),
        (("sentinel-pw-77", "bad-sentinel-pw"), "Sentinels at .* refused the credentials"),
        ((PASSWORD_URL, "bad-master-pw"), "refused the credentials"),
        (("/dtqsmaster/", "/nosuchmaster/"), "no Sentinel named a master .nosuchmaster."),
    ],
    ids=["no-sentinel-password", "wrong-sentinel-password", "wrong-password", "unknown-master"],
)
def test_credential_and_name_errors_are_clear_and_redacted(sentinels: SentinelGroup, change,
                                                           expected):  # fmt: skip
    url = sentinels.url(db=15).replace(*change)
    broker = Broker(url)
    try:
        with pytest.raises(BrokerUnavailableError, match=expected) as err:
            broker.ping()
    finally:
        broker.close()
    text = str(err.value)
    for secret in (PASSWORD, PASSWORD_URL, "sentinel-pw-77", "bad-sentinel-pw", "bad-master-pw"):
        assert secret not in text
