"""Hot reload: watch a project's manifest, functions/ and schemas/, and apply the changes.

``Watcher`` runs watchfiles in a thread and calls back once per debounced burst of
changes (an editor's save-rename-write is one burst). Two ways of applying them:

- ``ManifestReloader`` (API, scheduler): load the manifest in-process and hand it over;
  a bad one is reported once and the last good one keeps serving.
- ``PoolReloader`` (the worker supervisor): validate in a fresh interpreter, which also
  imports every handler without polluting the supervisor, then let the supervisor
  replace its worker processes. Handler code is never reloaded in place.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from watchfiles import Change, watch

from dtqs.runtime.errors import DtqsError, ManifestError
from dtqs.runtime.manifest import FUNCTIONS_DIR, Manifest, load_manifest

log = logging.getLogger("dtqs.reload")

#: Folders of a project (besides the manifest itself) whose files a reload follows.
WATCHED_DIRS = frozenset({FUNCTIONS_DIR, "schemas"})
#: Folder names never followed: bytecode, the embedded server's data, version control.
IGNORED_DIRS = frozenset({"__pycache__", ".dtqs", ".git", ".hg", ".mypy_cache", ".ruff_cache"})
#: File names never followed: editor swap, backup and probe files, bytecode, temp files.
IGNORED_NAMES = re.compile(r"(\.sw[a-px]|~|\.tmp|\.py[cod]|\.___jb_\w+___)$|^\.#|^4913$")
#: Quiet time (ms) that ends a burst of changes; then the burst is applied.
STEP_MS = 100
#: Longest (ms) a burst is gathered before it is applied even if changes go on.
DEBOUNCE_MS = 800
#: Longest a validation may take (a handler that blocks at import is a failure).
VALIDATE_TIMEOUT_S = 60.0
#: Set by a supervisor that reports reload errors in full for its children (`dtqs run`):
#: the children then log one short line instead of repeating the same problems.
PARENT_REPORTS_ENV = "DTQS_RELOAD_REPORTED_BY_PARENT"


class ProjectFilter:
    """watchfiles filter: the manifest file, and files under functions/ and schemas/."""

    def __init__(self, config: Path) -> None:
        self.root = config.parent
        self.manifest_name = config.name

    def __call__(self, change: Change, path: str) -> bool:
        try:
            parts = Path(path).relative_to(self.root).parts
        except ValueError:
            return False
        if not parts or any(p in IGNORED_DIRS for p in parts) or IGNORED_NAMES.search(parts[-1]):
            return False
        if len(parts) == 1:
            return parts[0] == self.manifest_name or parts[0] in WATCHED_DIRS
        return parts[0] in WATCHED_DIRS


class Watcher:
    """Calls ``on_change(paths)`` from a thread after each debounced burst of changes.

    NOTE: the whole project folder is watched (recursively, filtered) rather than the
    three paths: editors replace files by rename, which a watch on the file itself
    would lose, and functions/ or schemas/ may appear only later.
    """

    def __init__(
        self,
        config: Path,
        on_change: Callable[[set[str]], None],
        *,
        step_ms: int = STEP_MS,
        debounce_ms: int = DEBOUNCE_MS,
    ) -> None:
        self.config = config
        self.filter = ProjectFilter(config)
        self.on_change = on_change
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # NOTE: our own line says what changed; watchfiles' per-burst INFO line would double it.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._run, name="reload-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        restarted = False
        while not self._stop.is_set():
            try:
                if restarted:
                    # Changes made while the watcher was down would be lost: look once.
                    self.on_change({str(self.config)})
                self._watch()
                return
            except Exception as exc:  # NOTE: never end hot reload for good; watch again
                log.warning("watching %s failed (%s); watching again", self.filter.root, exc)
                restarted = True
                self._stop.wait(0.5)

    def _watch(self) -> None:
        changes = watch(
            self.filter.root,
            watch_filter=self.filter,
            debounce=self.debounce_ms,
            step=self.step_ms,
            stop_event=self._stop,
            raise_interrupt=False,
            ignore_permission_denied=True,
        )
        for batch in changes:
            paths = {p for _, p in batch}
            try:
                self.on_change(paths)
            except Exception:  # a bug in one reload must not end hot reload for good
                log.exception("reload failed")


def describe(paths: set[str], root: Path) -> str:
    """A short list of changed paths, relative to the project."""
    names = sorted(os.path.relpath(p, root) for p in paths)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


class ErrorOnce:
    """Logs a reload error once: again only after it changed or a reload succeeded."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last: str | None = None

    def failed(
        self, message: str, *, brief: bool = False, exc_info: BaseException | None = None
    ) -> None:
        if message == self.last:
            return
        self.last = message
        if brief:
            log.warning("%s: reload failed; keeping the last good configuration", self.name)
        else:
            log.error(
                "%s: reload failed; the last good configuration keeps serving until the "
                "files are fixed:\n%s",
                self.name,
                message,
                exc_info=exc_info,
            )

    def succeeded(self) -> None:
        if self.last is not None:
            log.info("%s: the files are fixed", self.name)
        self.last = None


class ManifestReloader:
    """In-process hot reload (API, scheduler): load the manifest on every change.

    ``apply`` gets each good manifest; ``on_failure`` each failure's message (every
    one, for metrics); the log gets each distinct failure once.
    """

    def __init__(
        self,
        config: Path,
        apply: Callable[[Manifest], None],
        *,
        name: str,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.apply = apply
        self.name = name
        self.on_failure = on_failure
        self.errors = ErrorOnce(name)
        self.brief = bool(os.environ.get(PARENT_REPORTS_ENV))
        self.watcher = Watcher(config, self.changed)

    def start(self) -> None:
        self.watcher.start()
        log.debug("%s: watching %s for changes", self.name, self.config.parent)

    def stop(self) -> None:
        self.watcher.stop()

    def changed(self, paths: set[str]) -> None:
        self.reload(describe(paths, self.config.parent))

    def reload(self, what: str = "") -> bool:
        """Load and apply the manifest now; False (and the old one kept) if it is bad."""
        try:
            manifest = load_manifest(self.config)
            self.apply(manifest)
        except Exception as exc:
            # NOTE(manifest): whatever the files did to the loader, this process keeps
            # serving its last good configuration; any failure is reported and counted.
            self.failed(exc)
            return False
        self.errors.succeeded()
        log.info("%s: reloaded %s", self.name, what or self.config.name)
        return True

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, DtqsError):
            message = str(exc)
            self.errors.failed(message, brief=self.brief and isinstance(exc, ManifestError))
        else:  # a bug of ours: its traceback goes to the log once, like the message
            message = f"unexpected error while loading {self.config.name}: {exc!r}"
            self.errors.failed(message, exc_info=exc)
        if self.on_failure is not None:
            self.on_failure(message)


class Validation:
    """`dtqs validate` in a fresh interpreter: loads the manifest and imports every handler."""

    def __init__(self, config: Path, timeout_s: float = VALIDATE_TIMEOUT_S) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self._out: IO[bytes] = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "dtqs.runtime.cli", "validate", "--config", str(config)]
        # NOTE: its own session, so a terminal's Ctrl-C meant for the supervisor does not
        # turn into a spurious failure; output goes to a file, which cannot fill up.
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def poll(self) -> tuple[bool, str] | None:
        """(passed, output) once it has finished, else None."""
        if self.proc.poll() is None:
            if time.monotonic() < self.deadline:
                return None
            self.kill()
            return False, (
                f"validation did not finish in {self.timeout_s:g}s "
                "(does a handler module block while it is imported?)"
            )
        self._out.seek(0)
        text = self._out.read().decode("utf-8", errors="replace").strip()
        self._out.close()
        return self.proc.returncode == 0, text

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


class PoolReloader:
    """Hot reload of the worker pool, driven by the supervisor's main loop.

    The watcher thread only writes a byte to a pipe, which the supervisor's select()
    waits on; validation runs in a child process and ``apply`` is called from
    ``step()``, on the supervisor's main thread. NOTE: children die by
    PR_SET_PDEATHSIG when the *thread* that forked them exits, so worker processes
    must never be spawned from the watcher thread.
    """

    def __init__(self, config: Path, apply: Callable[[], None]) -> None:
        self.config = config
        self.apply = apply
        self.errors = ErrorOnce("workers")
        self.validation: Validation | None = None
        self._dirty = False
        self._what: set[str] = set()
        self._lock = threading.Lock()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.watcher = Watcher(config, self._changed)

    def fileno(self) -> int:
        """A descriptor that becomes readable when files changed."""
        return self._r

    @property
    def busy(self) -> bool:
        return self.validation is not None or self._dirty

    def start(self) -> None:
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()
        if self.validation is not None:
            self.validation.kill()
            self.validation = None
        os.close(self._r)
        os.close(self._w)

    def _changed(self, paths: set[str]) -> None:
        with self._lock:
            self._what |= paths
        try:
            os.write(self._w, b"c")
        except OSError:
            pass  # full of wake-ups already (one is enough), or closed: stopping

    def step(self) -> None:
        """Advance: note changes, poll the running validation, apply a good one."""
        try:
            if os.read(self._r, 512):
                self._dirty = True
        except BlockingIOError:
            pass
        if self.validation is not None:
            result = self.validation.poll()
            if result is None:
                return
            self.validation = None
            if not self._dirty:  # files changed meanwhile: validate the newer state instead
                self._finish(*result)
        if self._dirty:
            self._dirty = False
            self.validation = Validation(self.config)

    def _finish(self, passed: bool, output: str) -> None:
        with self._lock:
            what, self._what = self._what, set()
        error: Exception | None = None
        if passed:
            try:
                self.apply()
            except DtqsError as exc:  # e.g. the files changed again since validation
                passed, output = False, str(exc)
            except Exception as exc:  # NOTE(manifest): never take the supervisor down
                passed, output, error = False, f"unexpected error while reloading: {exc!r}", exc
        if not passed:
            self.errors.failed(output or "validation failed without a message", exc_info=error)
            return
        self.errors.succeeded()
        log.info("workers: reloaded after changes to %s", describe(what, self.config.parent))
