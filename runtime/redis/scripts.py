"""One typed wrapper per Lua script. Each builds KEYS from keys.py and decodes replies.

Scripts are read once from this package (``lua/*.lua``, with ``lua/_lib.lua``
prepended) and run by SHA (EVALSHA, loaded on first use by redis-py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from typing import Any, NamedTuple

from redis.commands.core import Script
from redis.exceptions import NoScriptError

from dtqs.runtime.manifest import Manifest, RetryPolicy
from dtqs.runtime.redis.keys import QueueKeys


@cache
def _source(name: str) -> str:
    folder = resources.files("dtqs.runtime.redis").joinpath("lua")
    lib = folder.joinpath("_lib.lua").read_text(encoding="utf-8")
    return lib + "\n" + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class NewTask:
    """A task to store, already validated and encoded."""

    id: str
    function: str
    priority: str
    level: int
    payload_json: str
    headers_json: str = ""
    delay_ms: int = -1  #: relative to the Redis server's clock; -1 = none
    run_at_ms: int = -1  #: absolute epoch ms; -1 = none
    idempotency_key: str = ""
    idempotency_ttl_ms: int = 86_400_000
    result_ttl_ms: int = 86_400_000


#: enqueue.lua's code per task -> the state it was stored in (None: it existed already).
_STORED_STATE: dict[int, str | None] = {0: None, 1: "queued", 2: "scheduled"}


class Stored(NamedTuple):
    """One submission's answer: the task's id (the earlier task's, for a repeated
    idempotency key) and the state it was stored in, on Redis's clock."""

    id: str
    state: str | None  #: queued | scheduled; None: an earlier task had the key or id

    @property
    def stored(self) -> bool:
        """True when this submission stored the task (False: an earlier one did)."""
        return self.state is not None


@dataclass(frozen=True)
class Leased:
    """A task a worker holds, as fetch returned it."""

    id: str
    token: str
    function: str
    payload_json: str
    attempts: int
    headers_json: str
    priority: str
    created_at_ms: int


@dataclass(frozen=True)
class FetchResult:
    now_ms: int
    next_due_ms: int | None  #: run-at of the earliest scheduled task
    tasks: list[Leased]


@dataclass(frozen=True)
class Outcome:
    """What became of one leased task; see finish.lua for the meaning of each field."""

    id: str
    token: str
    kind: str  #: succeeded | retry | park | dead | failed
    data: str = ""
    traceback: str = ""
    ms: int = 0
    reason: str = ""


@dataclass(frozen=True)
class FunctionEnd:
    """How a task of one function ends for good (the manifest's policy)."""

    max_attempts: int
    dead_letter: bool  #: False: it ends `failed`, its record kept result_ttl_ms
    result_ttl_ms: int


@dataclass(frozen=True)
class EndPolicy:
    """The manifest's current policies for the tasks of one queue that end for good
    inside a script (fetch: decode_error; reclaim: worker_lost). Functions the manifest
    does not know have none: their tasks are dead-lettered."""

    functions: Mapping[str, FunctionEnd]
    dead_letter_max: int  #: the queue's dead letters kept at most
    default_max_attempts: int = RetryPolicy.max_attempts  #: for functions not known

    @classmethod
    def of(cls, manifest: Manifest, queue: str) -> EndPolicy:
        # NOTE(deadletter): every function, not only this queue's: a task keeps its
        # function's policy when the manifest moved the function to another queue.
        functions = {
            name: FunctionEnd(f.retry.max_attempts, f.dead_letter, int(f.result_ttl_s * 1000))
            for name, f in manifest.functions.items()
        }
        return cls(functions, manifest.queues[queue].dead_letter_max)

    @cached_property
    def json(self) -> str:
        """Every function's policy in the scripts' form (see reclaim.lua), encoded once."""
        return self._encode(self.functions)

    @cached_property
    def failed_json(self) -> str:
        """Only the functions without dead letters, for fetch.lua (absent = dead letter).
        PERF(deadletter): fetch sends it on every call; in the usual manifest, where
        every function dead-letters, it is "{}" however many functions there are."""
        return self._encode({n: f for n, f in self.functions.items() if not f.dead_letter})

    @staticmethod
    def _encode(functions: Mapping[str, FunctionEnd]) -> str:
        table = {n: [f.max_attempts, f.dead_letter, f.result_ttl_ms] for n, f in functions.items()}
        return json.dumps(table, separators=(",", ":"))


class Scripts:
    """The engine's atomic operations, bound to one redis-py client (or pipeline)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._scripts: dict[str, Script] = {}

    def _script(self, name: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = Script(self._client, _source(name))
        return script

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA, loading the script first when the server does not know it (NOSCRIPT)."""
        return self._script(name)(keys=keys, args=args, client=self._client)

    @staticmethod
    def _enqueue_call(
        qk: QueueKeys, tasks: Iterable[NewTask], not_after_ms: int
    ) -> tuple[list[str], list[Any]]:
        args: list[Any] = [qk.queue, not_after_ms]
        for t in tasks:
            args += [
                t.id, t.function, t.priority, t.level, t.payload_json, t.headers_json,
                t.delay_ms, t.run_at_ms, t.idempotency_key, t.idempotency_ttl_ms,
                t.result_ttl_ms,
            ]  # fmt: skip
        return [qk.notify, qk.scheduled, qk.task_prefix, qk.idem_prefix, *qk.all_pending], args

    def enqueue(
        self, groups: Sequence[tuple[QueueKeys, Sequence[NewTask]]], not_after_ms: int = -1
    ) -> list[Any]:
        """Store tasks of one or more queues (one script call per queue) in one round trip.

        ``not_after_ms`` (Redis's clock; -1 none): a call that reaches Redis later stores
        nothing and fails with STALE (see enqueue.lua).
        """
        calls = [self._enqueue_call(qk, tasks, not_after_ms) for qk, tasks in groups]
        if len(calls) == 1:
            return [self._run("enqueue", *calls[0])]
        # PERF: plain EVALSHA in the pipeline. Handing redis-py the Script object would
        # make every execute() send SCRIPT EXISTS first: a second round trip per submit.
        script = self._script("enqueue")
        replies = self._pipeline(script.sha, calls)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:  # the server restarted or flushed its script cache: load, redo those
            self._client.script_load(script.script)
            for i, reply in zip(
                missing, self._pipeline(script.sha, [calls[i] for i in missing]), strict=True
            ):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def enqueue_calls(
        self, groups: Sequence[tuple[QueueKeys, Sequence[NewTask]]], not_after_ms: int = -1
    ) -> tuple[Script, list[tuple[list[str], list[Any]]]]:
        """The enqueue script and its (KEYS, ARGV) per queue, for a caller that must run
        them on a connection of its own choosing (runtime/redis/durable.py: WAIT)."""
        calls = [self._enqueue_call(qk, tasks, not_after_ms) for qk, tasks in groups]
        return self._script("enqueue"), calls

    def _pipeline(self, sha: str, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for keys, args in calls:
            # NOTE: execute_command, not pipe.evalsha(): redis-py's cluster pipeline blocks
            # the evalsha method but routes the command by its keys like any other.
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        return list(pipe.execute(raise_on_error=False))

    @staticmethod
    def decode_enqueue(reply: Sequence[Any]) -> list[Stored]:
        """What became of each task, in submission order."""
        return [
            Stored(str(reply[i]), _STORED_STATE[int(reply[i + 1])]) for i in range(0, len(reply), 2)
        ]

    def fetch(
        self, qk: QueueKeys, count: int, lease_ms: int, token_base: str, order: Sequence[int],
        policy: EndPolicy,
    ) -> FetchResult:  # fmt: skip
        """Lease up to `count` tasks; a garbage record found on the way ends for good as
        `policy` says (see fetch.lua)."""
        call = self.fetch_call(qk, count, lease_ms, token_base, order, policy)
        return self.decode_fetch(self._run("fetch", *call))

    def wait_then_fetch(
        self, qk: QueueKeys, timeout_s: float, count: int, lease_ms: int, token_base: str,
        order: Sequence[int], policy: EndPolicy,
    ) -> FetchResult:  # fmt: skip
        """Block on the queue's wake-up list up to `timeout_s`, then fetch as `fetch` does,
        in one round trip: Redis runs a blocked client's next pipelined command as soon as
        the block ends, so a task submitted to an idle queue is leased without the worker
        first hearing of it (one round trip less between submit and handler start)."""
        keys, args = self.fetch_call(qk, count, lease_ms, token_base, order, policy)
        script = self._script("fetch")
        pipe = self._client.pipeline(transaction=False)
        pipe.blpop([qk.notify], timeout=max(timeout_s, 0.001))
        # NOTE: execute_command, not evalsha (blocked in redis-py's cluster pipeline).
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        woken, reply = pipe.execute(raise_on_error=False)
        if isinstance(reply, NoScriptError):  # the server lost its scripts: load and fetch
            return self.fetch(qk, count, lease_ms, token_base, order, policy)
        for answer in (woken, reply):
            if isinstance(answer, Exception):
                raise answer
        return self.decode_fetch(reply)

    @staticmethod
    def fetch_call(
        qk: QueueKeys, count: int, lease_ms: int, token_base: str, order: Sequence[int],
        policy: EndPolicy,
    ) -> tuple[list[str], list[Any]]:  # fmt: skip
        keys = [qk.scheduled, qk.active, qk.paused, qk.dead, qk.task_prefix, qk.done, qk.stats,
                *qk.all_pending]  # fmt: skip
        order_arg = ",".join(map(str, order))
        args = [count, lease_ms, token_base, order_arg, policy.failed_json,
                policy.dead_letter_max, qk.finished]  # fmt: skip
        return keys, args

    @staticmethod
    def decode_fetch(reply: Sequence[Any]) -> FetchResult:
        now, due, n = int(reply[0]), int(reply[1]), int(reply[2])
        tasks = []
        for i in range(3, 3 + 8 * n, 8):
            r = reply[i : i + 8]
            tasks.append(Leased(r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6], int(r[7] or 0)))
        return FetchResult(now, due if due >= 0 else None, tasks)

    def finish(
        self, qk: QueueKeys, outcomes: Sequence[Outcome], dead_letter_max: int
    ) -> list[bool]:
        args: list[Any] = [dead_letter_max, qk.finished]
        for o in outcomes:
            args += [o.id, o.token, o.kind, o.data, o.traceback, o.ms, o.reason]
        keys = [qk.active, qk.scheduled, qk.dead, qk.done, qk.stats, qk.notify, qk.task_prefix]
        return [bool(x) for x in self._run("finish", keys, args)]

    def extend(self, qk: QueueKeys, lease_ms: int, held: Iterable[tuple[str, str]]) -> list[str]:
        args: list[Any] = [lease_ms]
        for task_id, token in held:
            args += [task_id, token]
        return [str(x) for x in self._run("extend", [qk.active, qk.task_prefix], args)]

    def release(self, qk: QueueKeys, held: Iterable[tuple[str, str]]) -> int:
        args = [x for pair in held for x in pair]
        keys = [qk.active, qk.notify, qk.task_prefix, *qk.all_pending]
        return int(self._run("release", keys, args))

    def reclaim(
        self, qk: QueueKeys, policy: EndPolicy, dead_letter_ttl_ms: int, limit: int = 1000
    ) -> tuple[int, int, int, int]:
        """Sweep one queue (see reclaim.lua); a task out of attempts ends as `policy`
        says. Returns (requeued, ended for good, records dropped, dead letters dropped)."""
        r = self._run("reclaim", *self.reclaim_call(qk, policy, dead_letter_ttl_ms, limit))
        return int(r[0]), int(r[1]), int(r[2]), int(r[3])

    @staticmethod
    def reclaim_call(
        qk: QueueKeys, policy: EndPolicy, dead_letter_ttl_ms: int, limit: int = 1000
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of reclaim, for a caller that runs it itself (a fault test
        queues it inside a MULTI)."""
        keys = [qk.active, qk.dead, qk.done, qk.notify, qk.stats, qk.task_prefix, *qk.all_pending]
        args = [policy.json, policy.default_max_attempts, dead_letter_ttl_ms, limit,
                policy.dead_letter_max, qk.finished]  # fmt: skip
        return keys, args

    def cancel(self, qk: QueueKeys, task_id: str, keep_ms: int) -> tuple[int, str]:
        keys = [qk.task(task_id), qk.scheduled, qk.done, *qk.all_pending]
        r = self._run("cancel", keys, [task_id, keep_ms, qk.finished])
        return int(r[0]), str(r[1])

    def progress(self, qk: QueueKeys, task_id: str, token: str, data_json: str) -> bool:
        return bool(self._run("progress", [qk.task(task_id)], [token, data_json]))

    def replay(
        self, qk: QueueKeys, function: str = "", ids: Sequence[str] = (), limit: int = 1000
    ) -> list[str]:
        keys = [qk.dead, qk.notify, qk.task_prefix, *qk.all_pending]
        return [str(x) for x in self._run("replay", keys, [function, limit, *ids])]

    def purge(
        self, qk: QueueKeys, function: str = "", ids: Sequence[str] = (), limit: int = 1000
    ) -> int:
        return int(self._run("purge", [qk.dead, qk.task_prefix], [function, limit, *ids]))
