"""api/server.py listen(): an address that cannot be bound is one DtqsError line, and a
listener opened before the failure is closed again."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from dtqs.api.httpguard import create_server
from dtqs.api.server import listen, listen_error
from dtqs.runtime.errors import DtqsError
from dtqs.runtime.manifest import load_manifest

MANIFEST = """\
version: 1
queues: {default: {}}
functions:
  work: {handler: functions/tasks.py:work}
"""
FILES = {"functions/tasks.py": "def work(payload):\n    return payload\n"}


def app(environ, start_response):  # never called: nothing gets to listen
    raise AssertionError("no request expected")


@pytest.fixture
def manifest(project):
    return load_manifest(project(MANIFEST, FILES).root / "dtqs.yaml")


@pytest.fixture
def busy() -> Iterator[tuple[str, int]]:
    """An address another socket listens on."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        yield holder.getsockname()
    finally:
        holder.close()


def test_a_busy_port_is_a_conflict_naming_the_address_and_port_option(manifest, busy):
    host, port = busy
    with pytest.raises(DtqsError) as caught:
        listen(app, manifest, host, port, 1)
    assert caught.value.code == "conflict" and caught.value.exit_status == 4
    assert caught.value.message == (
        f"cannot listen on 127.0.0.1:{port}: address already in use (another process "
        "holds it); stop it or choose another --port"
    )


def test_an_address_of_no_interface_is_invalid_naming_the_host_option(manifest):
    with pytest.raises(DtqsError) as caught:
        listen(app, manifest, "192.0.2.1", 8080, 1)  # TEST-NET-1: never on this machine
    assert caught.value.code == "invalid"
    assert caught.value.message == (
        "cannot listen on 192.0.2.1:8080: address not available (no interface of this "
        "machine has it); choose another --host"
    )


def test_a_host_that_does_not_resolve_is_invalid(manifest):
    with pytest.raises(DtqsError) as caught:
        listen(app, manifest, "nosuch.invalid", 8080, 1)
    assert caught.value.code == "invalid"
    assert caught.value.message.startswith("cannot listen on nosuch.invalid:8080: ")
    assert "--host" in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("err", "code", "says"),
    [
        (errno.EACCES, "invalid", "permission denied (ports below 1024 need privileges)"),
        (errno.EMFILE, "unavailable", "too many open files"),
    ],
)
def test_other_bind_errors_are_one_line(err, code, says):
    # NOTE: tests run as root here, so a privileged port cannot be refused for real.
    exc = listen_error("::1", 80, OSError(err, os.strerror(err)))
    assert exc.code == code
    assert exc.message.startswith(f"cannot listen on [::1]:80: {says}")
    assert "\n" not in exc.message


def test_listeners_opened_before_a_failed_bind_are_closed(busy):
    _, port = busy  # 127.0.0.1:port is taken; 127.0.0.2:port is free
    with pytest.raises(OSError):
        create_server(app, max_body_bytes=10, listen=f"127.0.0.2:{port} 127.0.0.1:{port}")
    with socket.socket() as again:
        again.bind(("127.0.0.2", port))  # the first listener did not stay open
