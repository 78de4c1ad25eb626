"""Redis URL forms (runtime/redis/connect.py): parsing, errors and redaction; no server."""

from __future__ import annotations

import pytest

from dtqs.runtime.errors import BrokerUnavailableError, SettingsError
from dtqs.runtime.redis.connect import check_url, connect, parse, redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
        ("redis://:pw@h", "redis://:***@h"),
        ("redis://h:1/2", "redis://h:1/2"),
        ("rediss+cluster://u:p%40w@a:1,b:2/", "rediss+cluster://u:***@a:1,b:2/"),
        (
            "redis+sentinel://u:pw@a:1,b:2/m/3?sentinel_password=spw&ssl_cert_reqs=none",
            "redis+sentinel://u:***@a:1,b:2/m/3?sentinel_password=***&ssl_cert_reqs=none",
        ),
        (
            "redis+sentinel://a:1/m?sentinel_password=spw",
            "redis+sentinel://a:1/m?sentinel_password=***",
        ),
    ],
)
def test_redact_hides_every_password(url, shown):
    assert redact(url) == shown


def test_cluster_url():
    t = parse(
        "rediss+cluster://app:p%40ss%2Fw@10.0.0.1:7000,[::1]:7001,node3/?ssl_ca_certs=/ca.pem"
    )
    assert t.nodes == [("10.0.0.1", 7000), ("::1", 7001), ("node3", 6379)]
    assert (t.username, t.password, t.tls, t.db) == ("app", "p@ss/w", True, 0)
    assert t.options == {"ssl_ca_certs": "/ca.pem"}
    assert parse("redis+cluster://:pw@h:1").username is None
    assert parse("redis+cluster://h:1/0").db == 0


def test_sentinel_url():
    t = parse("redis+sentinel://app:pw@s1:26379,s2:26380/mymaster/4?sentinel_password=x")
    assert t.nodes == [("s1", 26379), ("s2", 26380)]
    assert (t.service, t.db, t.username, t.password, t.tls) == ("mymaster", 4, "app", "pw", False)
    assert t.options == {"sentinel_password": "x"}
    assert parse("redis+sentinel://s1:1/m").db == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:1", "is not a Redis URL"),
        ("redis+cluster://u:topsecret@h:1/3", "Redis Cluster has only database 0"),
        ("redis+cluster://u:topsecret@/", "names no host:port"),
        ("redis+cluster://u:topsecret@h:notaport", "is not host:port"),
        ("redis+sentinel://u:topsecret@h:1", r"expected /<master name>\[/<db>\]"),
        ("redis+sentinel://u:topsecret@h:1/m/x", "database must be a number"),
        (
            "redis+cluster://u:topsecret@h:1/?sentinel_password=z",
            "unknown option 'sentinel_password'",
        ),
        ("redis+sentinel://u:topsecret@h:1/m?timeout=3", "unknown option 'timeout'"),
    ],
)
def test_bad_urls_say_what_is_wrong_without_the_password(url, message):
    with pytest.raises(SettingsError, match=message) as err:
        check_url(url, "DTQS_REDIS_URL")
    assert "topsecret" not in str(err.value) and str(err.value).startswith("DTQS_REDIS_URL: ")


def test_plain_forms_pass_through():
    for url in ("redis://h:1/0", "rediss://u:p@h:1", "unix:///tmp/r.sock"):
        assert check_url(url, "x") == url


def test_an_unreachable_cluster_is_unavailable_and_the_password_stays_hidden(unused_port):
    url = f"redis+cluster://app:topsecret@127.0.0.1:{unused_port}/"
    with pytest.raises(BrokerUnavailableError, match="unreachable") as err:
        connect(url, socket_connect_timeout=0.5, decode_responses=True)
    assert "topsecret" not in str(err.value) and "app:***@" in str(err.value)


def test_a_malformed_single_server_url_is_a_settings_error():
    with pytest.raises(SettingsError, match="--redis-url: 'redis://u:\\*\\*\\*@h:x/0'") as err:
        check_url("redis://u:topsecret@h:x/0", "--redis-url")
    assert "topsecret" not in str(err.value)
