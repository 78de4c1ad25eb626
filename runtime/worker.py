"""One worker process: per queue, a fetcher, N handler slots and an acknowledger.

Tasks are leased in batches (only as many as there are free slots), run on threads
(or on one event loop for ``async def`` handlers), and their outcomes recorded in
batches, fenced by the lease token. Leases are renewed by a heartbeat thread that
does not depend on the handlers' threads; see heartbeat.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import traceback as tb_mod
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from dtqs.runtime import handlers
from dtqs.runtime.context import TaskContext
from dtqs.runtime.errors import BrokerUnavailableError, DtqsError
from dtqs.runtime.manifest import FunctionSpec, Manifest
from dtqs.runtime.payload import STRICT_JSON
from dtqs.runtime.redis.broker import Broker
from dtqs.runtime.redis.scripts import Leased, Outcome
from dtqs.runtime.retry import Retry, SkipRetry, backoff_s
from dtqs.runtime.runner import IDLE_WAIT_S, QueueRunner, Running
from dtqs.runtime.stats import DurationRecorder

log = logging.getLogger("dtqs.worker")
task_log = logging.getLogger("dtqs.task")

#: Delay before a task of a function this worker does not know is tried again.
UNKNOWN_FUNCTION_DELAY_S = 30.0
#: A worker process warns about parked tasks of one unknown function at most this often.
UNKNOWN_FUNCTION_WARN_S = 60.0
#: Pause before a handler that failed to import is tried once more.
IMPORT_RETRY_S = 0.2
#: How long a handler's import failure is remembered before the file is read again.
IMPORT_FAILURE_TTL_S = 5.0
#: Characters of a traceback kept on the task record.
TRACEBACK_MAX = 8000


def rss_mb() -> float:
    """This process's resident set size in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def capped_traceback(exc: BaseException, limit: int = TRACEBACK_MAX) -> str:
    """The traceback of `exc` in at most `limit` characters, its useful ends kept.

    Why not just its last `limit` characters: an exception with a huge message (a
    50 KB repr) would then leave only the message and no frame at all. Over the
    limit, the exception line is cut to a quarter of it and the middle of the stack
    is dropped, keeping the outermost and innermost frames.
    """
    full = "".join(tb_mod.format_exception(exc))
    if len(full) <= limit:
        return full
    last = "".join(tb_mod.format_exception_only(exc))
    if len(last) > limit // 4:
        last = last[: limit // 4 - 20] + " …[message cut]\n"
    stack = "Traceback (most recent call last):\n" + "".join(tb_mod.format_tb(exc.__traceback__))
    room = limit - len(last) - 40
    if len(stack) > room:
        cut = len(stack) - room
        stack = f"{stack[: room // 2]}\n  …[{cut} characters of frames cut]…\n{stack[-room // 2 :]}"
    return stack + last


def _error_json(exc: BaseException | str, kind: str | None = None) -> str:
    if isinstance(exc, BaseException):
        return json.dumps({"type": kind or type(exc).__name__, "message": str(exc)[:2000]})
    return json.dumps({"type": kind or "Error", "message": exc[:2000]})


def final_outcome(
    leased: Leased, spec: FunctionSpec, error: str, trace: str, reason: str
) -> Outcome:
    """The outcome of a task that ends for good, as its function's policy says: a dead
    letter, or `failed` with its record kept for result_ttl (dead_letter: false)."""
    if spec.dead_letter:
        return Outcome(leased.id, leased.token, "dead", error, trace, 0, reason)
    ttl_ms = int(spec.result_ttl_s * 1000)
    return Outcome(leased.id, leased.token, "failed", error, trace, ttl_ms, reason)


class Worker:
    """A worker process's engine: queue runners, heartbeat and sweep, graceful stop."""

    def __init__(
        self,
        manifest: Manifest,
        broker: Broker,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        *,
        worker_id: str | None = None,
    ) -> None:
        self.manifest = manifest
        self.broker = broker
        names = list(queues) if queues else list(manifest.queues)
        unknown = [q for q in names if q not in manifest.queues]
        if unknown:
            raise DtqsError(
                f"unknown queue(s) {', '.join(unknown)}; the manifest declares "
                f"{', '.join(manifest.queues)}",
                code="invalid",
            )
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.runners = [
            QueueRunner(self, manifest.queues[q], concurrency or manifest.queues[q].concurrency)
            for q in names
        ]
        self.stopping = threading.Event()  #: no new task starts
        self.draining = threading.Event()  #: fetch no more (recycling)
        self.hard_stop = threading.Event()
        self.lock = threading.Lock()
        self.held: dict[str, Running] = {}
        self.abandoned: list[Running] = []
        self.started_at = datetime.now(UTC)
        self.tasks_done = 0  #: outcomes recorded
        self.tasks_run = 0  #: handlers that returned (max_tasks_per_child counts these)
        self._handlers: dict[str, handlers.Handler] = {}
        #: function -> (until when, the error): a handler that failed to import lately
        self._failed_imports: dict[str, tuple[float, DtqsError]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_trouble = 0.0
        self._parked_warned: dict[str, float] = {}  #: unknown function -> last warning
        self.log_tasks = task_log.isEnabledFor(logging.INFO)
        # NOTE(metrics): task durations for /metrics, flushed to Redis by the heartbeat.
        self.durations = DurationRecorder()

    # -- bookkeeping -------------------------------------------------------------

    def hold(self, entries: Sequence[Running]) -> None:
        with self.lock:
            for e in entries:
                self.held[e.leased.token] = e

    def unhold(self, entries: Sequence[Running], *, finished: bool = True) -> None:
        with self.lock:
            for e in entries:
                self.held.pop(e.leased.token, None)
            if finished:
                self.tasks_done += len(entries)

    def in_flight(self) -> int:
        with self.lock:
            return len(self.held)

    def redis_trouble(self, exc: DtqsError) -> None:
        """A call failed and will be retried. An outage is logged once by the broker
        (runtime/outage.py); anything else at most every 5 s."""
        if isinstance(exc, BrokerUnavailableError) and exc.outage:
            return
        now = time.monotonic()
        if now - self._last_trouble > 5 and not self.stopping.is_set():
            log.warning("Redis trouble, retrying: %s", exc)
            self._last_trouble = now

    # -- running handlers ----------------------------------------------------------

    def handler_for(self, spec: FunctionSpec) -> handlers.Handler:
        found = self._handlers.get(spec.name)
        if found is None:
            found = self._handlers[spec.name] = self._load(spec)
        return found

    def _load(self, spec: FunctionSpec) -> handlers.Handler:
        """Import a handler. NOTE: a first failure is tried again after a short pause (a
        file read while it was being rewritten, e.g. by the hot reload that starts this
        very process); a failure is then remembered for a few seconds, so a broken
        handler costs each of its tasks an attempt, not an import."""
        failed = self._failed_imports.get(spec.name)
        if failed is not None and time.monotonic() < failed[0]:
            raise failed[1]
        try:
            found = handlers.Handler.load(spec)
        except DtqsError as exc:
            if failed is not None:  # it failed before: no second chance this time
                self._remember_failure(spec, exc)
                raise
            time.sleep(IMPORT_RETRY_S)
            try:
                found = handlers.Handler.load(spec)
            except DtqsError as again:
                self._remember_failure(spec, again)
                raise
        self._failed_imports.pop(spec.name, None)
        return found

    def _remember_failure(self, spec: FunctionSpec, exc: DtqsError) -> None:
        self._failed_imports[spec.name] = (time.monotonic() + IMPORT_FAILURE_TTL_S, exc)

    def dispatch(self, entries: Sequence[Running]) -> list[Running]:
        """Send `async def` tasks to the event loop in one call; return the others, for
        slot threads (an unknown function or a handler that fails to import among them:
        its slot thread reports that as the outcome)."""
        on_loop: list[tuple[Running, FunctionSpec, handlers.Handler]] = []
        plain: list[Running] = []
        for entry in entries:
            spec = self.manifest.functions.get(entry.leased.function)
            try:
                found = self.handler_for(spec) if spec is not None else None
            except DtqsError:
                found = None  # the slot thread reports the import error as the outcome
            if spec is not None and found is not None and found.is_async:
                on_loop.append((entry, spec, found))
            else:
                plain.append(entry)
        if on_loop:
            # PERF: one wake-up of the loop per batch, not a future per task.
            self.event_loop().call_soon_threadsafe(self._start_async, on_loop)
        return plain

    def _start_async(self, batch: list[tuple[Running, FunctionSpec, handlers.Handler]]) -> None:
        loop = asyncio.get_running_loop()
        for entry, spec, found in batch:
            entry.is_async = True
            loop.create_task(self.run_async(entry, spec, found))

    def _begin(self, entry: Running) -> tuple[FunctionSpec | None, Any, str | None]:
        """Resolve the function and decode the payload; (spec, payload, problem kind)."""
        leased = entry.leased
        spec = self.manifest.functions.get(leased.function)
        if spec is None:
            return None, None, "unknown_function"
        try:
            # NOTE: encode() fails on the surrogates the broker decodes non-UTF-8 into.
            leased.payload_json.encode()
            return spec, json.loads(leased.payload_json), None
        except ValueError:
            return spec, None, "decode_error"

    def _context(self, entry: Running, spec: FunctionSpec) -> TaskContext:
        leased = entry.leased
        qk = entry.runner.qk

        def report(data: str) -> bool:
            with self.broker.translated():
                return self.broker.scripts.progress(qk, leased.id, leased.token, data)

        return TaskContext(
            task_id=leased.id,
            attempt=leased.attempts,
            function=spec.name,
            queue=spec.queue,
            priority=leased.priority,
            deadline=datetime.now(UTC) + timedelta(seconds=spec.timeout_s),
            headers=json.loads(leased.headers_json) if leased.headers_json else {},
            _report=report,
        )

    def _args(
        self, entry: Running, spec: FunctionSpec, found: handlers.Handler, payload: Any
    ) -> tuple[Any, ...]:
        if found.takes_context:
            return (payload, self._context(entry, spec))
        return (payload,)

    def _claim(self, entry: Running, timeout_s: float) -> bool:
        """Mark a task started unless the worker is stopping (then stop() releases it)."""
        with self.lock:
            if self.stopping.is_set():
                return False
            entry.started = True
            # NOTE: 0 = no deadline: a task without a handler (unknown function) is not
            # timed; the monitor only looks at entries with a deadline.
            entry.deadline = time.monotonic() + timeout_s if timeout_s > 0 else 0.0
            return True

    def run_sync(self, entry: Running) -> None:
        runner = entry.runner
        spec, payload, problem = self._begin(entry)
        if not self._claim(entry, spec.timeout_s if spec else 0.0):
            runner.slot_done()  # no task starts after the signal
            return
        outcome: Outcome
        if spec is None or problem:
            outcome = self.problem_outcome(entry, spec, problem or "unknown_function")
        else:
            started = time.monotonic()
            try:
                found = self.handler_for(spec)
                args = self._args(entry, spec, found, payload)
                if self.log_tasks:
                    task_log.info(
                        "start %s %s attempt=%d", entry.leased.id, spec.name, entry.leased.attempts
                    )
                result = found.fn(*args)
                outcome = self.success(entry, spec, result, started)
            except BaseException as exc:  # noqa: BLE001 - every failure becomes an outcome
                outcome = self.failure(entry, spec, exc, started)
        with self.lock:
            if entry.abandoned:
                return  # timed out: its outcome was recorded and its slot handed over
            entry.done = True
        runner.outcomes.put((entry, outcome))
        self.after_task()  # NOTE: before the slot frees: a recycle must not fetch one more
        runner.slot_done()

    async def run_async(self, entry: Running, spec: FunctionSpec, found: handlers.Handler) -> None:
        """Run one `async def` handler on the event loop; asyncio enforces its timeout."""
        runner = entry.runner
        _, payload, problem = self._begin(entry)
        if not self._claim(entry, spec.timeout_s):
            runner.slot_done()
            return
        started = time.monotonic()
        if problem:
            outcome = self.problem_outcome(entry, spec, problem)
        else:
            try:
                # PERF: asyncio.timeout, not wait_for, which wraps every call in a task.
                async with asyncio.timeout(spec.timeout_s):
                    result = await found.fn(*self._args(entry, spec, found, payload))
                outcome = self.success(entry, spec, result, started)
            except TimeoutError:
                exc = TimeoutError(f"handler ran past its timeout of {spec.timeout_s:g}s")
                outcome = self.failure(entry, spec, exc, started, reason="timeout")
            except BaseException as exc:  # noqa: BLE001 - every failure becomes an outcome
                outcome = self.failure(entry, spec, exc, started)
        with self.lock:
            entry.done = True
        runner.outcomes.put((entry, outcome))
        self.after_task()  # NOTE: before the slot frees: a recycle must not fetch one more
        runner.slot_done()

    def event_loop(self) -> asyncio.AbstractEventLoop:
        with self.lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="asyncio", daemon=True).start()
                self._loop = loop
            return self._loop

    def after_task(self) -> None:
        """Recycle this process once it ran max_tasks_per_child tasks or grew past
        max_memory; checked after each task (not only at the heartbeat) so a leaking
        handler cannot run again in a process that is already over its limit."""
        with self.lock:
            self.tasks_run += 1
            ran = self.tasks_run
        if self.draining.is_set():
            return
        limits = self.manifest.workers
        if limits.max_tasks_per_child and ran >= limits.max_tasks_per_child:
            log.info("recycling after %d tasks (max_tasks_per_child)", ran)
            self.draining.set()
        elif limits.max_memory_mb and (rss := rss_mb()) > limits.max_memory_mb:
            log.warning("recycling: RSS %.0f MiB is over max_memory (%.0f MiB)", rss,
                        limits.max_memory_mb)  # fmt: skip
            self.draining.set()

    # -- outcomes ----------------------------------------------------------------

    def success(self, entry: Running, spec: FunctionSpec, result: Any, started: float) -> Outcome:
        try:
            data = STRICT_JSON.encode(result)
        except (TypeError, ValueError) as exc:
            error = TypeError(f"the handler's result is not JSON-serialisable: {exc}")
            return self.failure(entry, spec, error, started)
        # NOTE(metrics): here, after the result encoded; failure() observes its own.
        self.durations.observe(spec.queue, spec.name, time.monotonic() - started)
        if self.log_tasks:
            task_log.info(
                "done %s %s in %.1f ms",
                entry.leased.id,
                spec.name,
                (time.monotonic() - started) * 1000,
            )
        return Outcome(
            entry.leased.id, entry.leased.token, "succeeded", data, ms=int(spec.result_ttl_s * 1000)
        )

    def failure(
        self,
        entry: Running,
        spec: FunctionSpec,
        exc: BaseException,
        started: float,
        *,
        reason: str = "max_attempts",
        kind: str | None = None,
    ) -> Outcome:
        leased = entry.leased
        self.durations.observe(spec.queue, spec.name, time.monotonic() - started)  # metrics
        trace = capped_traceback(exc)
        error = _error_json(exc, kind or ("Timeout" if reason == "timeout" else None))
        policy = spec.retry
        if isinstance(exc, SkipRetry):
            reason, more = "skip_retry", False
        else:
            more = leased.attempts < policy.max_attempts
        if more:
            delay = backoff_s(policy, leased.attempts)
            if isinstance(exc, Retry) and exc.delay_s is not None:
                delay = exc.delay_s
            task_log.warning(
                "attempt %d of %s %s failed (%s: %s); retry in %.2fs",
                leased.attempts, leased.id, spec.name, type(exc).__name__, exc, delay,
            )  # fmt: skip
            return Outcome(leased.id, leased.token, "retry", error, trace, int(delay * 1000))
        task_log.error(
            "task %s %s failed for good after %d attempt(s) (%s): %s: %s",
            leased.id, spec.name, leased.attempts, reason, type(exc).__name__, exc,
        )  # fmt: skip
        return final_outcome(leased, spec, error, trace, reason)

    def problem_outcome(self, entry: Running, spec: FunctionSpec | None, problem: str) -> Outcome:
        leased = entry.leased
        if problem == "decode_error" and spec is not None:
            error = _error_json("the task's payload is not valid JSON", "DecodeError")
            log.error("task %s: payload is not valid JSON; it ended for good", leased.id)
            return final_outcome(leased, spec, error, "", "decode_error")
        # NOTE(reload): a missing function is not the task's fault (it was removed from
        # the manifest, or this worker is older than the submitter): park the task, its
        # attempt not counted, until the function is back or someone cancels it.
        message = (
            f"function {leased.function!r} is not in this worker's manifest; the task "
            f"waits for it (looked at again every {UNKNOWN_FUNCTION_DELAY_S:g}s)"
        )
        now = time.monotonic()
        last = self._parked_warned.get(leased.function)
        if last is None or now - last >= UNKNOWN_FUNCTION_WARN_S:
            self._parked_warned[leased.function] = now
            log.warning(
                "tasks of function %r are parked: it is not in this worker's manifest; they "
                "stay queued until it is back or they are cancelled (see `dtqs queues`)",
                leased.function,
            )
        error = _error_json(message, "UnknownFunction")
        return Outcome(
            leased.id, leased.token, "park", error, "", int(UNKNOWN_FUNCTION_DELAY_S * 1000)
        )

    def expire_overdue(self) -> int:
        """Fail sync handlers past their timeout; hand their slot to a new thread."""
        now = time.monotonic()
        overdue = []
        with self.lock:
            for entry in self.held.values():
                if entry.started and not entry.done and not entry.abandoned and not entry.is_async:
                    if entry.deadline and now > entry.deadline:
                        entry.abandoned = True
                        entry.done = True
                        overdue.append(entry)
                        self.abandoned.append(entry)
        for entry in overdue:
            spec = self.manifest.functions[entry.leased.function]
            exc = TimeoutError(f"handler ran past its timeout of {spec.timeout_s:g}s")
            outcome = self.failure(
                entry, spec, exc, entry.deadline - spec.timeout_s, reason="timeout"
            )
            entry.runner.outcomes.put((entry, outcome))
            entry.runner.add_slot_thread()
            entry.runner.slot_done()
        return len(overdue)

    def stuck_threads(self) -> int:
        """Threads still running a handler that timed out (only a new process frees them)."""
        with self.lock:
            self.abandoned = [e for e in self.abandoned if e.thread and e.thread.is_alive()]
            return len(self.abandoned)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the queue runners. No Redis call here: a worker started before Redis
        (or during an outage) serves as soon as Redis answers (the runners retry)."""
        for runner in self.runners:
            runner.start()

    def check_eviction_policy(self) -> None:
        """Warn when Redis may evict task keys (called by the heartbeat whenever Redis
        answers after start or after an outage: a restarted server may have a new one)."""
        policy = self.broker.eviction_policy()
        if policy not in ("noeviction", "unknown"):
            log.warning(
                "Redis maxmemory-policy is %r: Redis may evict task keys and lose tasks; "
                "set it to noeviction",
                policy,
            )

    def stop(self, grace_s: float) -> int:
        """Stop fetching, let running tasks finish within grace, release the rest at once.

        Returns the number of tasks released back to their queues.
        """
        with self.lock:
            self.stopping.set()
        started = time.monotonic()
        self.wake_fetchers()
        deadline = started + grace_s
        while time.monotonic() < deadline:
            with self.lock:
                busy = any(e.started and not e.done for e in self.held.values())
            if not busy:
                break
            time.sleep(0.02)
        released = self.release_unfinished()
        for runner in self.runners:
            # NOTE: a fetcher blocked in its idle wait may still lease tasks when the
            # wait ends; it gives them back itself, before this process may exit.
            runner.wait_fetch_idle(started + IDLE_WAIT_S + 0.5 - time.monotonic())
        for runner in self.runners:
            runner.outcomes.put(None)
        for runner in self.runners:
            if runner._acker is not None:
                runner._acker.join(timeout=10)
        self.hard_stop.set()  # an acknowledger still retrying gives up: leases take over
        return released

    def wake_fetchers(self) -> None:
        """Cut idle waits short (best effort: a wake-up token may go to another worker)."""
        try:
            with self.broker.translated():
                self.broker.wake([runner.qk for runner in self.runners])
        except DtqsError:
            pass  # Redis is away: the waits end by their timeout

    def release_unfinished(self) -> int:
        with self.lock:
            todo = [e for e in self.held.values() if not e.done]
        total = 0
        for runner in self.runners:
            mine = [(e.leased.id, e.leased.token) for e in todo if e.runner is runner]
            if not mine:
                continue
            try:
                with self.broker.translated():
                    total += self.broker.scripts.release(runner.qk, mine)
            except DtqsError as exc:
                log.warning("could not release %d task(s) (leases will expire): %s", len(mine), exc)
        self.unhold(todo, finished=False)
        if total:
            log.info("released %d unfinished task(s) back to their queues", total)
        return total
