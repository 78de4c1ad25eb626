"""TLS (``rediss://`` and ``rediss+cluster://``) with an ACL user, against servers that
accept only TLS; certificates are made for the session with the openssl CLI."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from dtqs.runtime.client import Client
from dtqs.runtime.errors import BrokerUnavailableError
from tests.cluster.servers import (
    PASSWORD,
    PASSWORD_URL,
    USER,
    Cluster,
    SentinelGroup,
    Servers,
    acl_args,
    admin,
    tls_server_args,
    wait_until,
)
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl CLI")

MANIFEST = """\
version: 1
queues: {alpha: {}, bravo: {}, charlie: {}, delta: {}}
functions:
  a: {handler: functions/tasks.py:echo, queue: alpha}
  b: {handler: functions/tasks.py:echo, queue: bravo}
  c: {handler: functions/tasks.py:echo, queue: charlie}
  d: {handler: functions/tasks.py:echo, queue: delta}
"""


@pytest.fixture
def tls_server(tmp_path: Any, certs: dict[str, str]) -> Any:
    servers = Servers(tmp_path)
    port = free_port()
    servers.start(port, "--save", "", "--appendonly", "no", *acl_args(),
                  *tls_server_args(certs), tls_port=True)  # fmt: skip
    wait_until(admin(port, ssl=True, ssl_ca_certs=certs["ca"]).ping, 10, "the TLS server")
    yield port
    servers.stop()


def test_rediss_with_an_acl_user_runs_tasks(tls_server, certs, project, procs, wait_for):
    url = f"rediss://{USER}:{PASSWORD_URL}@127.0.0.1:{tls_server}/0?ssl_ca_certs={certs['ca']}"
    p = project(MANIFEST)
    procs.spawn(["worker", "--processes", "1", "--concurrency", "2"], p.root, procs.env(url))
    with Client(redis_url=url, config=p.config) as c:
        ids = c.submit_many([{"function": f, "payload": {"n": f}} for f in "abcd"])
        wait_for(lambda: all(c.get(t).state == "succeeded" for t in ids), 30,
                 "a worker over TLS to run the tasks")  # fmt: skip
        assert [c.get(t).result for t in ids] == [{"n": f} for f in "abcd"]


def test_a_certificate_that_cannot_be_verified_is_refused(tls_server, project):
    # No CA given: the server's certificate (signed by the test CA) cannot be verified.
    url = f"rediss://{USER}:{PASSWORD_URL}@127.0.0.1:{tls_server}/0"
    with Client(redis_url=url, config=project(MANIFEST).config) as c:
        with pytest.raises(BrokerUnavailableError, match="CERTIFICATE_VERIFY_FAILED") as err:
            c.submit("a", 1)
    assert PASSWORD not in str(err.value)
    # A plain-text client on the TLS port gets nowhere either.
    plain = f"redis://{USER}:{PASSWORD_URL}@127.0.0.1:{tls_server}/0"
    with Client(redis_url=plain, config=project(MANIFEST).config) as c:
        with pytest.raises(BrokerUnavailableError):
            c.submit("a", 1)


def test_a_tls_cluster(tmp_path, certs, project, procs, wait_for):
    cluster = Cluster(tmp_path / "tls-cluster", tls=certs)
    cluster.folder.mkdir()
    try:
        cluster.create()
        url = cluster.url(scheme="rediss+cluster")
        assert url.startswith("rediss+cluster://") and "ssl_ca_certs=" in url
        p = project(MANIFEST)
        procs.spawn(["worker", "--processes", "1", "--concurrency", "2"], p.root, procs.env(url))
        with Client(redis_url=url, config=p.config) as c:
            ids = c.submit_many([{"function": f, "payload": f} for f in "abcd"])
            wait_for(lambda: all(c.get(t).state == "succeeded" for t in ids), 30,
                     "a worker over TLS to run one task per queue")  # fmt: skip
        out = procs.run(["queues", "--json"], p.root, procs.env(url))
        queues = json.loads(out.stdout)
        assert sum(q["stats"].get("processed", 0) for q in queues.values()) == 4
    finally:
        cluster.stop()


def test_a_tls_sentinel_group(tmp_path, certs, project, procs, wait_for):
    group = SentinelGroup(tmp_path / "tls-sentinel", tls=certs)
    group.folder.mkdir()
    try:
        group.create()
        url = group.url(db=2)
        assert url.startswith("rediss+sentinel://") and "ssl_ca_certs=" in url
        p = project(MANIFEST)
        procs.spawn(["worker", "--processes", "1", "--concurrency", "2"], p.root, procs.env(url))
        with Client(redis_url=url, config=p.config) as c:
            ids = c.submit_many([{"function": f, "payload": f} for f in "abcd"])
            wait_for(lambda: all(c.get(t).state == "succeeded" for t in ids), 30,
                     "a worker over TLS (through TLS Sentinels) to run the tasks")  # fmt: skip
    finally:
        group.stop()
