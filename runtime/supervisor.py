"""The process supervisor behind `dtqs worker` and `dtqs run`.

`dtqs run` (local development) starts, in order, the embedded server (when no Redis
is configured), the worker pool and the other components (API, scheduler: each a
``Component``), and stops them in reverse order on Ctrl-C. `dtqs worker` is the same
supervisor with the worker pool only. It holds no task state of its own.

With hot reload on (`dtqs run`, `dtqs worker --reload`) a change to the project's files
is validated in a fresh interpreter and then replaces the worker processes gracefully;
a change that does not validate is reported once and the running processes stay.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from dtqs.runtime import settings
from dtqs.runtime.client import Client
from dtqs.runtime.embedded import EmbeddedServer
from dtqs.runtime.errors import BrokerUnavailableError, DtqsError
from dtqs.runtime.manifest import Manifest, load_manifest
from dtqs.runtime.pool import WorkerPool
from dtqs.runtime.redis.broker import Broker
from dtqs.runtime.reloader import PoolReloader
from dtqs.runtime.scalein import Protector

log = logging.getLogger("dtqs.run")


def check_not_running(manifest: Manifest, redis_url: str | None) -> None:
    """Refuse a second `dtqs run` with the embedded server in one folder (conflict)."""
    other = settings.embedded_url(manifest)
    if other and not manifest.redis_url and not redis_url:
        state = settings.state_dir(manifest) / settings.SERVER_FILE
        raise DtqsError(
            f"another `dtqs run` is already serving this folder (server {other}); "
            f"stop it first, or remove {state}",
            code="conflict",
        )


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

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env or {})  #: added to this process's environment
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, redis_url: str) -> None:
        # NOTE: the URL goes in the environment, not argv: `ps` shows any user a
        # command line, and the URL may carry a password.
        env = {**os.environ, **self.env, "DTQS_PARENT_PID": str(os.getpid()),
               "DTQS_REDIS_URL": redis_url}  # fmt: skip
        cmd = [sys.executable, "-m", "dtqs.runtime.cli", *self.argv]
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
    reload: bool = False  #: replace the worker processes when the project's files change
    components: list[Component] = field(default_factory=list)


class Supervisor:
    """Runs everything `dtqs run` needs until a signal says stop."""

    def __init__(self, manifest: Manifest, options: RunOptions) -> None:
        self.manifest = manifest
        self.options = options
        self.embedded: EmbeddedServer | None = None
        self.pool: WorkerPool | None = None
        self.reloader: PoolReloader | None = None
        self.to_wake: set[str] = set()  #: functions back after a reload (see wake_parked)
        self.stop_requests = 0
        self.protector: Protector | None = None  #: ECS scale-in protection, on ECS
        self._sig_r = -1
        self._url = ""

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
        check_not_running(self.manifest, self.options.redis_url)

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
        """Wait up to timeout_s for signals (or changed files); the first signal stops
        gracefully, the next force."""
        fds = [self._sig_r] + ([self.reloader.fileno()] if self.reloader else [])
        ready, _, _ = select.select(fds, [], [], timeout_s)
        if self._sig_r not in ready:
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

    def grace_s(self) -> float:
        given = self.options.grace_s
        return self.manifest.workers.grace_s if given is None else given

    def child_env(self) -> dict[str, str]:
        """Worker processes' environment: the Redis URL goes here, never in argv, where
        `ps` would show its password to every user of the machine."""
        return {**os.environ, "DTQS_REDIS_URL": self._url}

    def pool_args(self) -> list[str]:
        """Arguments of every worker process (built anew on reload: grace may change)."""
        o = self.options
        args = ["--config", str(self.manifest.path)]  # the URL: in the env (child_env)
        args += ["--log-level", o.log_level]
        if o.concurrency:
            args += ["--concurrency", str(o.concurrency)]
        if o.queues:
            args += ["--queues", ",".join(o.queues)]
        return [*args, "--grace", str(self.grace_s())]

    def run(self) -> int:
        o = self.options
        try:
            self.protector = Protector.from_env(os.environ)
        except ValueError as exc:
            raise DtqsError(str(exc), code="invalid") from None
        self._listen()
        self._url = self.redis_url()
        self.pool = WorkerPool(self.pool_args(), o.processes, self.grace_s(), self.child_env(),
                               busy_pipes=self.protector is not None)  # fmt: skip
        if self.protector is not None:
            self.protector.start()
        started: list[Component] = []
        status = 0
        try:
            if o.reload:
                self.reloader = PoolReloader(self.manifest.path, self.reload)
                self.reloader.start()
            self.pool.start()
            for component in o.components:
                component.start(self._url)
                started.append(component)
            if o.embedded:
                log.info("dtqs is running (Ctrl-C stops it)")
            while not self.stop_requests:
                self._tick(0.05 if self.reloader and self.reloader.busy else 0.2)
                status = self._step(started) or status
        finally:
            if self.reloader is not None:
                self.reloader.stop()
                self.reloader = None
            for component in reversed(started):
                component.stop()
            self.pool.stop()
            deadline = time.monotonic() + self.pool.grace_s + 5
            while self.pool.alive() and time.monotonic() < deadline:
                self._tick(0.05)
            clean = self.pool.wait(0)
            if self.protector is not None:
                self.protector.stop()
            if self.embedded is not None:
                self.embedded.stop()
            log.info("stopped%s", "" if clean else " (some worker processes were killed)")
        return status

    def _step(self, started: list[Component]) -> int:
        """One round of the main loop after a wake-up; non-zero when a component died
        (its exit status, or 1 when it was killed by a signal)."""
        assert self.pool is not None
        self.pool.poll()
        if self.protector is not None:
            self.protector.want(self.pool.busy())
        if self.reloader is not None:
            self.reloader.step()
        if self.to_wake and not any(c.retiring for c in self.pool.children):
            names, self.to_wake = self.to_wake, set()
            self.wake_parked(names)
        for component in started:
            if (code := component.exited()) is not None:
                log.error("%s exited with status %d; stopping", component.name, code)
                self.stop_requests = 1
                # NOTE: its own status when it gave one (4: its port was taken, ...).
                return code if code > 0 else 1
        return 0

    # -- hot reload (called by the reloader on this, the main, thread) -------------

    def reload(self) -> None:
        """The files passed validation: take the new manifest and replace the workers.

        Old processes get SIGTERM: they stop fetching, finish their running tasks on
        the old code and release the rest; new processes run the new code.
        """
        if self.pool is None:
            return
        new = load_manifest(self.manifest.path)
        missing = [q for q in self.options.queues if q not in new.queues]
        if missing:
            raise DtqsError(
                f"--queues names {', '.join(missing)}, which the manifest no longer declares",
                code="invalid",
            )
        old, self.manifest = self.manifest, new
        self.report_removed(old, new)
        self.pool.args = self.pool_args()
        self.pool.grace_s = self.grace_s()
        self.pool.restart()
        added = set(new.functions) - set(old.functions)
        if added:
            self.wake_parked(added)
            # NOTE: once more when the old processes are gone: one of them may have
            # parked a task of a new function between the API's reload and its SIGTERM.
            self.to_wake |= added

    def client(self) -> Client:
        return Client(manifest=self.manifest, broker=Broker(self._url, self.manifest.prefix))

    def wake_parked(self, names: set[str]) -> None:
        """Tasks parked while their function was unknown run now, not at their next look."""
        try:
            with self.client() as client:
                woken = client.wake_parked(names)
        except DtqsError as exc:
            log.warning("could not wake tasks parked for %s: %s", ", ".join(sorted(names)), exc)
            return
        if woken:
            log.info("%d parked task(s) of %s run now", woken, ", ".join(sorted(names)))

    def report_removed(self, old: Manifest, new: Manifest) -> None:
        """One line per function the reload removed, with how many of its tasks wait."""
        removed = sorted(set(old.functions) - set(new.functions))
        if not removed:
            return
        queues = sorted({old.functions[name].queue for name in removed})
        try:
            with self.client() as client:
                found = {q: client.waiting_by_function(q) for q in queues}
        except DtqsError as exc:
            log.warning("removed function(s) %s; could not count their waiting tasks: %s",
                        ", ".join(removed), exc)  # fmt: skip
            return
        for name in removed:
            counts, complete = found[old.functions[name].queue]
            n = f"{counts.get(name, 0)}{'' if complete else '+'}"
            log.warning(
                "function %s was removed from the manifest; %s task(s) of it are still queued "
                "or scheduled: they wait (see `dtqs queues`) until it is back or they are "
                "cancelled",
                name,
                n,
            )
