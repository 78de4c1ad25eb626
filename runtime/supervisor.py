"""`dtqs run`: one terminal for local development.

Starts, in order, the embedded server (when no Redis is configured), the worker pool
and the other components (API, scheduler, reloader: each a ``Component``), and stops
them in reverse order on Ctrl-C. It holds no task state of its own.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Protocol

from dtqs.runtime import settings
from dtqs.runtime.embedded import EmbeddedServer
from dtqs.runtime.errors import BrokerUnavailableError, DtqsError
from dtqs.runtime.manifest import Manifest
from dtqs.runtime.pool import WorkerPool

log = logging.getLogger("dtqs.run")


class Component(Protocol):
    """A piece `dtqs run` starts after the workers and stops before them."""

    name: str

    def start(self, redis_url: str) -> None: ...

    def stop(self) -> None: ...


@dataclass
class RunOptions:
    processes: int
    concurrency: int | None = None
    grace_s: float | None = None
    log_level: str = "info"
    redis_url: str | None = None
    components: list[Component] = field(default_factory=list)


class Supervisor:
    """Runs everything `dtqs run` needs until a signal says stop."""

    def __init__(self, manifest: Manifest, options: RunOptions) -> None:
        self.manifest = manifest
        self.options = options
        self.embedded: EmbeddedServer | None = None
        self.pool: WorkerPool | None = None
        self.stop_requests = 0
        self._wake = threading.Event()

    def redis_url(self) -> str:
        """The configured Redis, or a freshly started embedded server."""
        try:
            return settings.redis_url(self.manifest, self.options.redis_url)
        except BrokerUnavailableError:
            pass
        self.embedded = EmbeddedServer(settings.state_dir(self.manifest))
        return self.embedded.start()

    def check_not_running(self) -> None:
        other = settings.embedded_url(self.manifest)
        if other and not self.manifest.redis_url and not self.options.redis_url:
            state = settings.state_dir(self.manifest) / settings.SERVER_FILE
            raise DtqsError(
                f"another `dtqs run` is already serving this folder (server {other}); "
                f"stop it first, or remove {state}",
                code="conflict",
            )

    def on_signal(self, signum: int, _frame: object) -> None:
        self.stop_requests += 1
        if self.stop_requests == 1:
            log.info("stopping (signal %d); a second Ctrl-C forces", signum)
        elif self.pool is not None:
            self.pool.stop()  # second request: children exit now
        self._wake.set()

    def run(self) -> int:
        o = self.options
        self.check_not_running()
        url = self.redis_url()
        grace = self.manifest.workers.grace_s if o.grace_s is None else o.grace_s
        args = ["--config", str(self.manifest.path), "--redis-url", url, "--log-level", o.log_level]
        if o.concurrency:
            args += ["--concurrency", str(o.concurrency)]
        args += ["--grace", str(grace)]
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)
        self.pool = WorkerPool(args, o.processes, grace)
        started: list[Component] = []
        try:
            self.pool.start()
            for component in o.components:
                component.start(url)
                started.append(component)
            log.info("dtqs is running (Ctrl-C stops it)")
            while not self.stop_requests:
                self._wake.wait(0.2)
                self.pool.poll()
        finally:
            for component in reversed(started):
                component.stop()
            self.pool.stop()
            clean = self.pool.wait(grace + 5)
            if self.embedded is not None:
                self.embedded.stop()
            log.info("stopped%s", "" if clean else " (some worker processes were killed)")
        return 0
