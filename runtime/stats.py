"""Queue and task statistics: what /metrics and autoscalers read, and the duration histogram.

Workers time each task and add it to a ``DurationRecorder`` in memory; the heartbeat
flushes the deltas to the queue's ``durations`` hash once per beat (one pipeline, not
one write per task). Readers (the API's /metrics) turn that hash back into cumulative
Prometheus buckets with ``duration_histograms``.

Autoscaling signals (``Autoscale``) are derived per queue on every read: backlog,
oldest age and in-flight straight from the queue's structures; arrival and completion
rates from samples of two running totals (tasks finished, tasks open) that readers
keep in the queue's ``rates`` list, so any number of stateless API replicas and
schedulers agree without a per-task write. See ``autoscale``.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dtqs.runtime.errors import DtqsError
from dtqs.runtime.manifest import Manifest
from dtqs.runtime.redis.broker import Broker

#: Upper bounds (seconds) of the task duration histogram; tasks run from ms to an hour.
DURATION_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, math.inf,
)  # fmt: skip
#: Stats hash counters exported per function.
COUNTERS = ("processed", "failed", "retried", "dead")
#: Counters whose sum is "attempts that ended" (success or failure, retried or not).
FINISHED = ("processed", "failed")
#: Rates are averaged over about this window.
RATE_WINDOW_S = 60.0
#: A reader adds a rate sample when the newest is older than this; 32 are kept.
RATE_SAMPLE_EVERY_S = 5.0
RATE_SAMPLES_KEPT = 32
#: The suggested worker count aims to drain the current backlog within this time.
DRAIN_TARGET_S = 60.0


def bucket_label(upper_s: float) -> str:
    """A bucket's upper bound as stored in the durations hash: ``0.005``, ``10``, ``+Inf``."""
    return "+Inf" if math.isinf(upper_s) else f"{upper_s:g}"


class DurationRecorder:
    """Task durations of one worker process, per (queue, function), until the next flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = {}

    def observe(self, queue: str, function: str, seconds: float) -> None:
        slot = bisect.bisect_left(DURATION_BUCKETS_S, max(seconds, 0.0))
        with self._lock:
            counts = self._counts.get((queue, function))
            if counts is None:
                counts = self._counts[(queue, function)] = [0] * len(DURATION_BUCKETS_S)
            counts[slot] += 1
            self._sums[(queue, function)] = self._sums.get((queue, function), 0.0) + seconds

    def take(self) -> dict[str, dict[str, float]]:
        """The deltas since the last take (queue -> hash field -> amount), and reset."""
        with self._lock:
            counts, sums = self._counts, self._sums
            self._counts, self._sums = {}, {}
        out: dict[str, dict[str, float]] = {}
        for (queue, function), per_bucket in counts.items():
            fields = out.setdefault(queue, {})
            for upper, n in zip(DURATION_BUCKETS_S, per_bucket, strict=True):
                if n:
                    fields[f"{function}:{bucket_label(upper)}"] = n
            fields[f"{function}:count"] = sum(per_bucket)
            fields[f"{function}:sum"] = float(sums[(queue, function)])
        return out

    def restore(self, deltas: Mapping[str, Mapping[str, float]]) -> None:
        """Put back deltas a flush could not write, so a Redis outage loses no observation."""
        with self._lock:
            for queue, fields in deltas.items():
                for name, amount in fields.items():
                    function, _, what = name.rpartition(":")
                    key = (queue, function)
                    if what == "sum":
                        self._sums[key] = self._sums.get(key, 0.0) + amount
                    elif what != "count":
                        counts = self._counts.setdefault(key, [0] * len(DURATION_BUCKETS_S))
                        upper = math.inf if what == "+Inf" else float(what)
                        counts[bisect.bisect_left(DURATION_BUCKETS_S, upper)] += int(amount)

    def flush(self, broker: Broker) -> int:
        """Write the deltas in one pipeline; returns how many tasks they cover.

        Raises:
            DtqsError: Redis failed; the deltas are kept for the next flush.
        """
        deltas = self.take()
        if not deltas:
            return 0
        try:
            broker.add_durations(deltas)
        except DtqsError:
            self.restore(deltas)
            raise
        return sum(int(v) for f in deltas.values() for k, v in f.items() if k.endswith(":count"))


@dataclass(frozen=True)
class Histogram:
    """One function's durations: cumulative (upper bound, count) pairs ending at +Inf."""

    buckets: list[tuple[float, int]]
    sum_s: float
    count: int


def duration_histograms(raw: Mapping[str, str]) -> dict[str, Histogram]:
    """Function -> histogram, from a queue's durations hash (per-bucket counts)."""
    per: dict[str, dict[float, int]] = {}
    sums: dict[str, float] = {}
    for name, value in raw.items():
        function, _, what = name.rpartition(":")
        try:
            if what == "sum":
                sums[function] = float(value)
            elif what != "count":
                upper = math.inf if what == "+Inf" else float(what)
                per.setdefault(function, {})[upper] = int(value)
        except ValueError:
            continue  # a field written by hand: skip it rather than fail the scrape
    out = {}
    for function, counts in per.items():
        bounds = sorted(set(DURATION_BUCKETS_S) | set(counts))
        running, buckets = 0, []
        for upper in bounds:
            running += counts.get(upper, 0)
            buckets.append((upper, running))
        out[function] = Histogram(buckets, sums.get(function, 0.0), running)
    return out


def function_counters(raw: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Counter name -> function -> value, from a queue's stats hash (``<name>:<function>``)."""
    out: dict[str, dict[str, int]] = {name: {} for name in COUNTERS}
    for key, value in raw.items():
        name, _, function = key.partition(":")
        if function and name in out:
            try:
                out[name][function] = int(value)
            except ValueError:
                continue
    return out


@dataclass(frozen=True)
class Autoscale:
    """What an autoscaler needs about one queue (exported on /metrics and in listings).

    ``suggested_workers`` is a count of worker *processes* serving this queue: enough
    slots (``concurrency`` each) for the arrival rate times the mean task duration
    (Little's law), plus the slots that drain the backlog within ``DRAIN_TARGET_S``,
    and never fewer than the tasks leased right now. It is at least 1 whenever a task
    is ready or leased, so an autoscaler following it never scales to zero mid-task.
    """

    backlog: int  #: ready tasks, every priority
    oldest_age_s: float
    in_flight: int
    #: attempts/s arriving (new tasks, retries), over about RATE_WINDOW_S
    arrival_rate: float
    #: attempts/s that ended (succeeded or failed), same window
    completion_rate: float
    suggested_workers: int

    @property
    def idle(self) -> bool:
        return self.backlog == 0 and self.in_flight == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "backlog": self.backlog,
            "oldest_age_s": round(self.oldest_age_s, 3),
            "in_flight": self.in_flight,
            "arrival_rate": round(self.arrival_rate, 3),
            "completion_rate": round(self.completion_rate, 3),
            "suggested_workers": self.suggested_workers,
            "idle": self.idle,
        }


def rate_sample(now_ms: int, finished: int, open_: int) -> str:
    return f"{now_ms}:{finished}:{open_}"


def rates(samples: list[str], now_ms: int, finished: int, open_: int) -> tuple[float, float]:
    """(arrival, completion) tasks/s between now and the newest sample at least
    ``RATE_WINDOW_S`` old (else the oldest one). Arrivals are derived: what finished
    plus what more is open now (ready, scheduled, leased) than then."""
    base = None
    for raw in samples:  # newest first
        try:
            at, done, was_open = (int(x) for x in raw.split(":"))
        except ValueError:
            continue
        if now_ms - at <= 0:
            continue
        base = (at, done, was_open)
        if now_ms - at >= RATE_WINDOW_S * 1000:
            break
    if base is None:
        return 0.0, 0.0
    span_s = (now_ms - base[0]) / 1000
    completed = max(finished - base[1], 0)
    arrived = max(completed + open_ - base[2], 0)
    return arrived / span_s, completed / span_s


def suggest_workers(
    backlog: int, in_flight: int, rate: float, mean_s: float | None, concurrency: int
) -> int:
    if backlog == 0 and in_flight == 0:
        return 0
    if mean_s is None:  # nothing timed yet: one slot per task
        slots = float(backlog + in_flight)
    else:
        slots = rate * mean_s + backlog * mean_s / DRAIN_TARGET_S
    return max(1, math.ceil(max(slots, in_flight) / concurrency))


@dataclass(frozen=True)
class QueueStats:
    """One queue as an autoscaler or dashboard sees it, at one moment."""

    name: str
    pending: dict[str, int]  #: ready tasks per priority level
    scheduled: int
    in_flight: int  #: leased by a worker right now
    dead: int
    paused: bool
    oldest_age_s: float  #: how long the oldest ready task has waited (0 when none)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    durations: dict[str, Histogram] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)  #: COUNTERS over all functions
    autoscale: Autoscale | None = None

    def as_counts(self) -> dict[str, Any]:
        """The shape of ``Client.queues()`` entries (CLI and API listings)."""
        return {
            "pending": dict(self.pending),
            "scheduled": self.scheduled,
            "active": self.in_flight,
            "dead": self.dead,
            "paused": self.paused,
            "stats": dict(self.totals),
            "autoscale": self.autoscale.as_dict() if self.autoscale else None,
        }


def _mean_duration_s(durations: Mapping[str, Histogram]) -> float | None:
    count = sum(h.count for h in durations.values())
    return sum(h.sum_s for h in durations.values()) / count if count else None


def _totals(raw: Mapping[str, str]) -> dict[str, int]:
    out = {}
    for name in COUNTERS:
        try:
            out[name] = int(raw.get(name, 0))
        except ValueError:
            out[name] = 0
    return out


def queue_stats(
    broker: Broker, manifest: Manifest, queues: Iterable[str] | None = None
) -> list[QueueStats]:
    """The named queues (default: every queue of the manifest), read in two round trips
    (three when a rate sample is due).

    Raises:
        BrokerUnavailableError: Redis did not answer.
    """
    specs = [manifest.queues[q] for q in queues] if queues else list(manifest.queues.values())
    qks = [broker.qkeys(q.name, len(q.priorities)) for q in specs]
    now_ms, raw = broker.queue_metrics(qks)
    out, due = [], []
    for spec, qk, r in zip(specs, qks, raw, strict=True):
        since: Any = r["ready_since_ms"]
        age = max((now_ms - since) / 1000, 0.0) if since is not None else 0.0
        totals = _totals(r["stats"])
        durations = duration_histograms(r["durations"])
        backlog = sum(r["pending"])
        finished = sum(totals[name] for name in FINISHED)
        open_ = backlog + r["scheduled"] + r["active"]
        arrival, completion = rates(r["rates"], now_ms, finished, open_)
        newest = int(r["rates"][0].split(":", 1)[0]) if r["rates"] else 0
        if now_ms - newest >= RATE_SAMPLE_EVERY_S * 1000:
            due.append((qk, rate_sample(now_ms, finished, open_)))
        rate = max(arrival, completion)
        auto = Autoscale(
            backlog=backlog,
            oldest_age_s=age,
            in_flight=r["active"],
            arrival_rate=arrival,
            completion_rate=completion,
            suggested_workers=suggest_workers(
                backlog, r["active"], rate, _mean_duration_s(durations), spec.concurrency
            ),
        )
        out.append(
            QueueStats(
                name=spec.name,
                pending=dict(zip(spec.priorities, r["pending"], strict=True)),
                scheduled=r["scheduled"],
                in_flight=r["active"],
                dead=r["dead"],
                paused=r["paused"],
                oldest_age_s=age,
                counters=function_counters(r["stats"]),
                durations=durations,
                totals=totals,
                autoscale=auto,
            )
        )
    if due:
        broker.add_rate_samples(due, RATE_SAMPLES_KEPT)
    return out
