"""Every Redis key name dtqs uses is built here, and nowhere else.

Keys of one queue share the hash tag ``{<queue>}`` so that one queue lives in one
Redis Cluster slot and every script touches one slot only. Global keys are few and
each is touched alone.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Default namespace of every key (the manifest's ``redis.prefix``).
DEFAULT_PREFIX = "dtqs"


@dataclass(frozen=True)
class QueueKeys:
    """The keys of one queue. Scripts get these in KEYS; they never build names."""

    prefix: str
    queue: str
    levels: int  #: number of priority levels

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}"

    def pending(self, level: int) -> str:
        """LIST of task ids ready to run at one priority level (LPUSH in, RPOP out)."""
        return f"{self.base}:pending:{level}"

    @property
    def all_pending(self) -> list[str]:
        return [self.pending(i) for i in range(self.levels)]

    @property
    def scheduled(self) -> str:
        """ZSET task id -> run-at ms: delayed tasks and retries waiting for their time."""
        return f"{self.base}:scheduled"

    @property
    def active(self) -> str:
        """ZSET task id -> lease deadline ms: tasks a worker holds."""
        return f"{self.base}:active"

    @property
    def dead(self) -> str:
        """ZSET task id -> died-at ms: the dead-letter set."""
        return f"{self.base}:dead"

    @property
    def done(self) -> str:
        """ZSET task id -> record expiry ms: finished tasks whose record is kept for a while."""
        return f"{self.base}:done"

    @property
    def notify(self) -> str:
        """LIST of wake-up tokens; idle workers block on it instead of polling."""
        return f"{self.base}:notify"

    @property
    def finished(self) -> str:
        """Pub/sub CHANNEL (not a key) on which the scripts publish the ids of tasks that
        reached a final state; long-poll waiters listen to it (runtime/waiting.py)."""
        return f"{self.base}:finished"

    @property
    def paused(self) -> str:
        """STRING present while the queue is paused."""
        return f"{self.base}:paused"

    @property
    def stats(self) -> str:
        """HASH of counters: processed, failed, retried, dead (also per function)."""
        return f"{self.base}:stats"

    @property
    def task_prefix(self) -> str:
        """Prefix of task record HASHes; passed in KEYS, the script appends the id."""
        return f"{self.base}:t:"

    def task(self, task_id: str) -> str:
        """HASH: the task record."""
        return f"{self.task_prefix}{task_id}"

    @property
    def idem_prefix(self) -> str:
        """Prefix of idempotency STRINGs (``<function>:<key>`` -> task id)."""
        return f"{self.base}:idem:"

    @property
    def rates(self) -> str:
        """LIST of ``<ms>:<completed>:<open>`` samples, newest first, from which readers
        derive arrival and completion rates (see runtime/stats.py)."""
        return f"{self.base}:rates"

    @property
    def durations(self) -> str:
        """HASH of task duration histogram counts written by workers (see runtime/stats.py):
        ``<function>:<bucket le>`` -> count, ``<function>:sum`` and ``<function>:count``."""
        return f"{self.base}:durations"


def workers_key(prefix: str) -> str:
    """ZSET worker id -> last heartbeat ms."""
    return f"{prefix}:workers"


def worker_key(prefix: str, worker_id: str) -> str:
    """STRING (JSON, with TTL): one worker process's heartbeat record."""
    return f"{prefix}:worker:{worker_id}"


def schedule_key(prefix: str, name: str) -> str:
    """HASH: a schedule's last fire (last_fire_ms, last_task_id), written by the scheduler."""
    return f"{prefix}:schedule:{name}"


def probe_key(prefix: str) -> str:
    """STRING (with a short TTL): written by /readyz to learn whether Redis takes writes."""
    return f"{prefix}:probe"
