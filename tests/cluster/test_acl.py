"""ACL users on one plain-text server: ``redis://user:pass@…`` works, and a wrong
password or a user without the rights dtqs needs is a clear error without secrets."""

from __future__ import annotations

from typing import Any

import pytest

from dtqs.runtime.client import Client
from dtqs.runtime.errors import BrokerUnavailableError
from tests.cluster.servers import PASSWORD, PASSWORD_URL, USER, Servers, acl_args, admin, wait_until
from tests.conftest import free_port

MANIFEST = (
    "version: 1\nqueues: {default: {}}\nfunctions:\n  echo: {handler: functions/tasks.py:echo}\n"
)


@pytest.fixture
def acl_server(tmp_path: Any) -> Any:
    servers = Servers(tmp_path)
    port = free_port()
    # "reader" may only read: every dtqs write (a script) is refused with NOPERM.
    servers.start(port, "--save", "", "--appendonly", "no", *acl_args(),
                  "--user", "reader", "on", ">reader-pw", "~*", "+@read", "+ping")  # fmt: skip
    wait_until(admin(port).ping, 10, "the server")
    yield port
    servers.stop()


def test_an_acl_user_in_a_plain_url(acl_server: int, project: Any) -> None:
    url = f"redis://{USER}:{PASSWORD_URL}@127.0.0.1:{acl_server}/3"
    with Client(redis_url=url, manifest=project(MANIFEST).manifest()) as c:
        task_id = c.submit("echo", {"x": 1})
        assert c.get(task_id).payload == {"x": 1}
    assert admin(acl_server).execute_command("SELECT", 3) and admin(acl_server).dbsize() == 0


@pytest.mark.parametrize(
    ("userinfo", "error", "expected"),
    [
        (f"{USER}:not-the-pw", BrokerUnavailableError, "refused the credentials"),
        ("", BrokerUnavailableError, "refused the credentials"),
        # NOTE: the first command a submission sends is TIME (its deadline is on
        # Redis's clock), then EVALSHA: either one is refused to this user.
        ("reader:reader-pw", BrokerUnavailableError, "lacks a permission .*('time'|evalsha)"),
    ],
    ids=["wrong-password", "no-credentials", "no-rights"],
)
def test_credential_problems_are_clear(acl_server: int, project: Any, userinfo: str,
                                       error: type, expected: str) -> None:  # fmt: skip
    at = "@" if userinfo else ""
    url = f"redis://{userinfo}{at}127.0.0.1:{acl_server}/0"
    with Client(redis_url=url, manifest=project(MANIFEST).manifest()) as c:
        with pytest.raises(error, match=expected) as err:
            c.submit("echo", 1)
    for secret in (PASSWORD, "not-the-pw", "reader-pw"):
        assert secret not in str(err.value)
