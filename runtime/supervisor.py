"""The process supervisor behind `dtqs worker` and `dtqs run`.

`dtqs run` (local development) starts, in order, the embedded server (when no Redis
is configured), the worker pool and the other components (API, scheduler, reloader:
each a ``Component``), and stops them in reverse order on Ctrl-C. `dtqs worker` is the
same supervisor with the worker pool only. It holds no task state of its own.

Signals: the first SIGTERM/SIGINT stops everything gracefully; each later one is
passed on to the worker processes, which exit at once on their second.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
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

    def exited(self) -> int | None:
        """The exit status if it stopped by itself, else None."""
        ...

    def stop(self) -> None: ...


class ChildCommand:
    """A `dtqs` subcommand run as a child process (the API, the scheduler)."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, redis_url: str) -> None:
        env = {**os.environ, "DTQS_PARENT_PID": str(os.getpid())}
        cmd = [sys.executable, "-m", "dtqs.runtime.cli", *self.argv, "--redis-url", redis_url]
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in 10 s; killing it", self.name)
            self.proc.kill()
            self.proc.wait()


@dataclass
class RunOptions:
    processes: int
    concurrency: int | None = None
    grace_s: float | None = None
    log_level: str = "info"
    redis_url: str | None = None
    queues: list[str] = field(default_factory=list)  #: empty = every queue
    embedded: bool = True  #: start the embedded server when no Redis is configured
    components: list[Component] = field(default_factory=list)


class Supervisor:
    """Runs everything `dtqs run` needs until a signal says stop."""

    def __init__(self, manifest: Manifest, options: RunOptions) -> None:
        self.manifest = manifest
        self.options = options
        self.embedded: EmbeddedServer | None = None
        self.pool: WorkerPool | None = None
        self.stop_requests = 0
        self._sig_r = -1

    def redis_url(self) -> str:
        """The configured Redis, or (for `dtqs run`) a freshly started embedded server."""
        if not self.options.embedded:
            return settings.redis_url(self.manifest, self.options.redis_url)
        self.check_not_running()
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

    def _listen(self) -> None:
        """Count every SIGINT/SIGTERM, even two that arrive at once.

        Python runs a handler once for signals that land together, so a fast double
        Ctrl-C would look like one; the wake-up fd gets one byte per signal instead.
        """
        self._sig_r, w = os.pipe()
        os.set_blocking(self._sig_r, False)
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)

    def _tick(self, timeout_s: float) -> None:
        """Wait up to timeout_s for signals; the first stops gracefully, the next force."""
        ready, _, _ = select.select([self._sig_r], [], [], timeout_s)
        if not ready:
            return
        try:
            count = len(os.read(self._sig_r, 64))
        except BlockingIOError:
            return
        for _ in range(count):
            self.stop_requests += 1
            if self.stop_requests == 1:
                log.info("stopping; a second Ctrl-C or SIGTERM forces")
            elif self.pool is not None:
                log.warning("stopping now: worker processes are killed, leases bring tasks back")
                self.pool.stop(force=True)

    def run(self) -> int:
        o = self.options
        self._listen()
        url = self.redis_url()
        grace = self.manifest.workers.grace_s if o.grace_s is None else o.grace_s
        args = ["--config", str(self.manifest.path), "--redis-url", url, "--log-level", o.log_level]
        if o.concurrency:
            args += ["--concurrency", str(o.concurrency)]
        if o.queues:
            args += ["--queues", ",".join(o.queues)]
        args += ["--grace", str(grace)]
        self.pool = WorkerPool(args, o.processes, grace)
        started: list[Component] = []
        status = 0
        try:
            self.pool.start()
            for component in o.components:
                component.start(url)
                started.append(component)
            if o.embedded:
                log.info("dtqs is running (Ctrl-C stops it)")
            while not self.stop_requests:
                self._tick(0.2)
                self.pool.poll()
                for component in started:
                    if (code := component.exited()) is not None:
                        log.error("%s exited with status %d; stopping", component.name, code)
                        self.stop_requests, status = 1, 1
        finally:
            for component in reversed(started):
                component.stop()
            self.pool.stop()
            deadline = time.monotonic() + grace + 5
            while self.pool.alive() and time.monotonic() < deadline:
                self._tick(0.05)
            clean = self.pool.wait(0)
            if self.embedded is not None:
                self.embedded.stop()
            log.info("stopped%s", "" if clean else " (some worker processes were killed)")
        return status
