from __future__ import annotations

import json
import os

import pytest

from dtqs.runtime import settings
from dtqs.runtime.errors import BrokerUnavailableError, SettingsError


def test_redis_url_order(project, monkeypatch):
    p = project()
    m = p.manifest()
    with pytest.raises(BrokerUnavailableError, match="no Redis configured"):
        settings.redis_url(m, environ={})
    state = settings.state_dir(m)
    state.mkdir()
    (state / settings.SERVER_FILE).write_text(
        json.dumps({"url": "redis://e:1/0", "pid": os.getpid()})
    )
    assert settings.redis_url(m, environ={}) == "redis://e:1/0"
    assert settings.redis_url(m, environ={"DTQS_REDIS_URL": "redis://env:2"}) == "redis://env:2"
    assert (
        settings.redis_url(m, "redis://flag:3", {"DTQS_REDIS_URL": "redis://env"})
        == "redis://flag:3"
    )
    with pytest.raises(SettingsError, match="not a Redis URL"):
        settings.redis_url(m, "http://x", {})


def test_a_dead_embedded_server_is_not_used(project):
    m = project().manifest()
    settings.state_dir(m).mkdir()
    (settings.state_dir(m) / settings.SERVER_FILE).write_text(
        '{"url": "redis://x", "pid": 999999999}'
    )
    assert settings.embedded_url(m) is None
