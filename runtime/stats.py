"""Queue and task statistics: what /metrics and autoscalers read, and the duration histogram.

Workers time each task and add it to a ``DurationRecorder`` in memory; the heartbeat
flushes the deltas to the queue's ``durations`` hash once per beat (one pipeline, not
one write per task). Readers (the API's /metrics) turn that hash back into cumulative
Prometheus buckets with ``duration_histograms``.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Mapping
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


def queue_stats(broker: Broker, manifest: Manifest) -> list[QueueStats]:
    """Every queue of the manifest, read in two round trips.

    Raises:
        BrokerUnavailableError: Redis did not answer.
    """
    specs = list(manifest.queues.values())
    qks = [broker.qkeys(q.name, len(q.priorities)) for q in specs]
    now_ms, raw = broker.queue_metrics(qks)
    out = []
    for spec, r in zip(specs, raw, strict=True):
        since: Any = r["ready_since_ms"]
        age = max((now_ms - since) / 1000, 0.0) if since is not None else 0.0
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
                durations=duration_histograms(r["durations"]),
            )
        )
    return out
