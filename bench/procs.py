"""Start the processes under test, measure their memory, and stop exactly those.

Every command runs in its own session; it is stopped by the ids of its process tree,
collected while it runs (dtqs worker children live in sessions of their own).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

#: Seconds a stopped command gets to exit on SIGTERM before its tree is SIGKILLed.
STOP_GRACE_S = 15.0


@dataclass
class Spawned:
    """One command line we started, with its log file."""

    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]
    #: every process of its tree we have seen: pid -> creation time (pids get reused)
    seen: dict[int, float] = field(default_factory=dict)

    def tree(self) -> list[psutil.Process]:
        """The live process tree (the command and all its descendants)."""
        try:
            root = psutil.Process(self.proc.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for p in found:
            try:
                self.seen.setdefault(p.pid, p.create_time())
            except psutil.NoSuchProcess:
                pass
        return found

    def log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def spawn(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path | None = None
) -> Spawned:
    log = open(log_path, "ab")  # noqa: SIM115 (closed in stop())
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return Spawned(list(argv), proc, log_path, log)


def exited(spawned: Sequence[Spawned]) -> Spawned | None:
    """The first command of `spawned` that has exited, if any."""
    return next((s for s in spawned if s.proc.poll() is not None), None)


def stop(spawned: Sequence[Spawned]) -> None:
    """SIGTERM each command, wait, then SIGKILL whatever of their trees is left."""
    for s in spawned:
        s.tree()  # NOTE: record the children now; after the parent dies they are orphans.
        _signal(s.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for s in spawned:
        try:
            s.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for s in spawned:
        for pid, created in s.seen.items():
            if _same_process(pid, created):
                _signal(pid, signal.SIGKILL)
        try:
            s.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        s._log.close()


def _same_process(pid: int, created: float) -> bool:
    # NOTE: a pid can be reused once its process is gone: kill it only if it is still
    # the process we saw (same creation time).
    try:
        return bool(psutil.Process(pid).create_time() == created)
    except psutil.NoSuchProcess:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(frozen=True)
class Memory:
    """RSS of a worker command's processes, in MB (2**20 bytes)."""

    per_worker_mb: float  #: mean RSS of the processes that run tasks (the leaves)
    total_mb: float  #: the whole tree, supervisors included
    workers: int  #: processes counted in per_worker_mb


def memory(spawned: Sequence[Spawned]) -> Memory:
    """RSS per task-running process: the leaves of each tree (a lone process is a leaf)."""
    leaves: list[int] = []
    total = 0
    for s in spawned:
        procs = s.tree()
        parents = set()
        for p in procs:
            try:
                parents.add(p.ppid())
            except psutil.NoSuchProcess:
                continue
        for p in procs:
            try:
                rss = p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            total += rss
            if p.pid not in parents:
                leaves.append(rss)
    mb = 2**20
    per = sum(leaves) / len(leaves) / mb if leaves else 0.0
    return Memory(round(per, 1), round(total / mb, 1), len(leaves))
