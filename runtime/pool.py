"""The worker supervisor: spawns N worker processes, respawns them, stops them in order.

Each child is ``python -m dtqs.runtime.process`` in its own session (a terminal's
Ctrl-C reaches only the supervisor, which forwards it once) and dies with the
supervisor (PR_SET_PDEATHSIG), so no orphan is left behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from dtqs.runtime.scalein import BUSY_FD_ENV

log = logging.getLogger("dtqs.pool")

#: Respawn delay after a child crashed, doubled per crash in a row up to the max.
RESPAWN_MIN_S = 0.5
RESPAWN_MAX_S = 30.0
#: A child that ran this long is considered healthy again (crash backoff resets).
HEALTHY_AFTER_S = 10.0
#: A child killed by a signal after running this long was stopped from outside (the
#: OOM killer, an operator, a chaos test), not crashing at start: respawn it at once.
SIGNALLED_AFTER_S = 1.0


def respawn_delay(code: int, ran_s: float, crashes: int) -> tuple[float, int]:
    """(seconds before the respawn, crashes in a row now) for a child that exited with
    ``code`` (negative: killed by that signal) after ``ran_s`` seconds.

    Exiting on its own soon after start is a crash loop (an import error, a bad
    setting): the delay doubles per crash in a row. A kill from outside after start-up
    says nothing about the next process, so it does not count towards the doubling.
    """
    if ran_s > HEALTHY_AFTER_S or (code < 0 and ran_s > SIGNALLED_AFTER_S):
        crashes = 0
    crashes += 1
    return min(RESPAWN_MIN_S * 2 ** (crashes - 1), RESPAWN_MAX_S), crashes


@dataclass
class Child:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    retiring: bool = False  #: told to stop (reload, shutdown): not respawned
    busy_fd: int = -1  #: read end of its busy pipe (-1: none; see runtime/scalein.py)
    busy: bool = False  #: holds leased tasks, as it last said


class WorkerPool:
    """Keeps ``processes`` worker processes running until stopped."""

    def __init__(
        self,
        args: Sequence[str],
        processes: int,
        grace_s: float,
        env: dict[str, str] | None = None,
        *,
        busy_pipes: bool = False,
    ) -> None:
        """``busy_pipes``: each child tells when it becomes busy or idle (busy())."""
        self.args = list(args)
        self.busy_pipes = busy_pipes
        self.processes = processes
        self.grace_s = grace_s
        self.env = env
        self.children: list[Child] = []
        self.stopping = False
        self._crashes = [0] * processes
        self._respawn_at: dict[int, float] = {}

    def spawn(self, index: int) -> Child:
        env = dict(os.environ if self.env is None else self.env)
        env["DTQS_PARENT_PID"] = str(os.getpid())
        cmd = [sys.executable, "-m", "dtqs.runtime.process", *self.args, "--index", str(index)]
        read_fd, write_fd = os.pipe() if self.busy_pipes else (-1, -1)
        if self.busy_pipes:
            env[BUSY_FD_ENV] = str(write_fd)
            os.set_blocking(read_fd, False)
        try:
            proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                    pass_fds=(write_fd,) if self.busy_pipes else ())  # fmt: skip
        finally:
            if self.busy_pipes:
                os.close(write_fd)
        child = Child(index, proc, time.monotonic(), busy_fd=read_fd)
        self.children.append(child)
        return child

    def busy(self) -> bool:
        """Whether any live child holds leased tasks (from what each last said)."""
        for child in self.children:
            if child.busy_fd < 0:
                continue
            try:
                said = os.read(child.busy_fd, 64)
            except BlockingIOError:
                continue
            if said:
                child.busy = said.endswith(b"1")
            else:  # the child is gone
                os.close(child.busy_fd)
                child.busy_fd, child.busy = -1, False
        return any(c.busy for c in self.children)

    def start(self) -> None:
        for i in range(self.processes):
            self.spawn(i)
        log.info("started %d worker process(es)", self.processes)

    def poll(self) -> None:
        """Reap exited children and respawn the ones that should be running."""
        now = time.monotonic()
        for child in list(self.children):
            code = child.proc.poll()
            if code is None:
                continue
            self.children.remove(child)
            if self.stopping or child.retiring:
                continue
            if code == 0:  # recycled itself (max tasks, memory, stuck thread)
                self._respawn_at[child.index] = now
                continue
            delay, self._crashes[child.index] = respawn_delay(
                code, now - child.started, self._crashes[child.index]
            )
            log.warning(
                "worker process %d exited with %d; respawning in %.1fs", child.proc.pid, code, delay
            )
            self._respawn_at[child.index] = now + delay
        for index, when in list(self._respawn_at.items()):
            if now >= when and not self.stopping:
                del self._respawn_at[index]
                self.spawn(index)

    def restart(self) -> None:
        """Replace every worker process gracefully: new ones start, old ones drain."""
        old = [c for c in self.children if not c.retiring]
        for child in old:
            child.retiring = True
            self.spawn(child.index)
        for child in old:
            self._signal(child, signal.SIGTERM)

    def _signal(self, child: Child, sig: int) -> None:
        try:
            child.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def stop(self, force: bool = False) -> None:
        """Ask every child to stop gracefully (SIGTERM), or kill them (force)."""
        self.stopping = True
        for child in self.children:
            self._signal(child, signal.SIGKILL if force else signal.SIGTERM)

    def wait(self, timeout_s: float) -> bool:
        """Wait for every child to exit; SIGKILL the ones still alive after the timeout."""
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            left = max(deadline - time.monotonic(), 0)
            try:
                child.proc.wait(left)
            except subprocess.TimeoutExpired:
                log.warning("worker process %d did not stop in time; killing it", child.proc.pid)
                child.proc.kill()
                child.proc.wait()
        clean = all(c.proc.returncode == 0 for c in self.children)
        self.children = []
        return clean

    def alive(self) -> int:
        return sum(1 for c in self.children if c.proc.poll() is None)
