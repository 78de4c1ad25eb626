"""Process settings: where Redis is, read from flags, the environment and the manifest.

Order: an explicit value (a CLI flag or ``Client(redis_url=...)``), then
``$DTQS_REDIS_URL``, then the manifest's ``redis.url``, then the embedded server that
``dtqs run`` started for this project (found through ``.dtqs/server.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from dtqs.runtime.errors import BrokerUnavailableError
from dtqs.runtime.manifest import Manifest
from dtqs.runtime.redis import connect

#: Folder, beside dtqs.yaml, where `dtqs run` keeps the embedded server's data.
STATE_DIR = ".dtqs"
#: File in STATE_DIR naming the embedded server's URL and pid while it runs.
SERVER_FILE = "server.json"


def state_dir(manifest: Manifest) -> Path:
    return manifest.root / STATE_DIR


def embedded_url(manifest: Manifest) -> str | None:
    """The URL of this project's embedded server, if one is running."""
    try:
        info = json.loads((state_dir(manifest) / SERVER_FILE).read_text())
        pid, url = int(info["pid"]), str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return url


def check_url(url: str, source: str) -> str:
    """`url` if dtqs can connect with it (see runtime/redis/connect.py for the forms)."""
    return connect.check_url(url, source)


def redis_url(
    manifest: Manifest, explicit: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """The Redis URL this process should use; raises when none is configured or running."""
    env = os.environ if environ is None else environ
    if explicit:
        return check_url(explicit, "--redis-url")
    if env.get("DTQS_REDIS_URL"):
        return check_url(env["DTQS_REDIS_URL"], "DTQS_REDIS_URL")
    if manifest.redis_url:
        return check_url(manifest.redis_url, f"{manifest.path.name}: redis.url")
    url = embedded_url(manifest)
    if url:
        return url
    raise BrokerUnavailableError(
        "no Redis configured: set redis.url in the manifest or DTQS_REDIS_URL, "
        "or start `dtqs run` in this folder (it starts an embedded server)"
    )
