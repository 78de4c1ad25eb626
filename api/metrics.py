"""Prometheus metrics: request counts and latencies, and queue state read from Redis.

Every series is prefixed ``dtqs_``. Each app has its own registry (no global state,
so tests and embedders can build many apps). Queue series are read from Redis at
scrape time by ``QueueCollector``; when Redis is away the scrape still answers, with
``dtqs_redis_up 0``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import falcon
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from dtqs.runtime.errors import DtqsError
from dtqs.runtime.redis.broker import MemoryState
from dtqs.runtime.stats import QueueStats, queue_stats

if TYPE_CHECKING:
    from dtqs.api.app import ApiState

log = logging.getLogger("dtqs.api")

#: Methods counted by name; anything else is counted as "other" (bounded label values).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Request latency buckets (seconds): the API answers in ms, long polls take up to 30 s.
REQUEST_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class RequestMetrics:
    """Falcon middleware counting requests by route template, method and status."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dtqs_api_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dtqs_api_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=REQUEST_BUCKETS_S,
            registry=self.registry,
        )

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()
        # NOTE: the /metrics resource finds this app's registry here, without globals.
        req.context.request_metrics = self

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        # The template, never the raw path: ids in paths would make a series per task.
        route = req.uri_template or "unmatched"
        method = req.method if req.method in METHODS else "other"
        self.requests.labels(route, method, str(resp.status_code)).inc()
        started = req.context.get("metrics_started")
        if started is not None:
            self.latency.labels(route, method).observe(time.perf_counter() - started)


def _le(upper_s: float) -> str:
    """A bucket bound as Prometheus writes it: ``0.005``, ``10.0``, ``+Inf``."""
    text: str = floatToGoString(upper_s)  # type: ignore[no-untyped-call]
    return text


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class QueueCollector:
    """Reads every queue's state from Redis at scrape time (a few round trips in all)."""

    def __init__(self, state: ApiState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []  # NOTE: registration must not touch Redis

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("dtqs_redis_up", "1 when Redis answered this scrape, else 0.")
        client = self.state.client
        try:
            stats = queue_stats(client.broker, client.manifest)
            workers = len(client.workers())
            memory = client.broker.memory()
        except DtqsError as exc:
            log.debug("metrics: Redis did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._queue_families(stats)
        live = _gauge("dtqs_workers", "Live worker processes (unexpired heartbeats).", [])
        live.add_metric([], workers)
        yield live
        yield from self._memory_families(memory)

    @staticmethod
    def _memory_families(memory: MemoryState) -> Iterator[Metric]:
        """Redis's memory, for an alert before maxmemory refuses submissions."""
        used = _gauge(
            "dtqs_redis_memory_used_bytes",
            "Memory Redis uses (the master with least headroom on a cluster).",
            [],
        )
        used.add_metric([], memory.used_bytes)
        limit = _gauge(
            "dtqs_redis_maxmemory_bytes", "Redis's maxmemory (0: no limit), of the same master.", []
        )
        limit.add_metric([], memory.max_bytes)
        yield used
        yield limit

    def _queue_families(self, stats: Iterable[QueueStats]) -> Iterator[Metric]:
        q = ["queue"]
        depth = _gauge(
            "dtqs_queue_depth", "Tasks ready to run, per priority level.", [*q, "priority"]
        )
        gauges: dict[str, tuple[GaugeMetricFamily, Callable[[QueueStats], float]]] = {
            "scheduled": (
                _gauge(
                    "dtqs_queue_scheduled", "Tasks waiting for their time (delays, retries).", q
                ),
                lambda s: s.scheduled,
            ),
            "in_flight": (
                _gauge("dtqs_queue_in_flight", "Tasks leased by a worker right now.", q),
                lambda s: s.in_flight,
            ),
            "dead": (_gauge("dtqs_queue_dead", "Dead letters kept.", q), lambda s: s.dead),
            "paused": (
                _gauge("dtqs_queue_paused", "1 while the queue is paused.", q),
                lambda s: int(s.paused),
            ),
            "age": (
                _gauge(
                    "dtqs_queue_oldest_age_seconds",
                    "How long the oldest ready task has waited (0 when none is ready).",
                    q,
                ),
                lambda s: s.oldest_age_s,
            ),
            "backlog": (
                _gauge("dtqs_queue_backlog", "Tasks ready to run, every priority.", q),
                lambda s: s.autoscale.backlog if s.autoscale else 0,
            ),
            "arrival": (
                _gauge("dtqs_queue_arrival_rate", "Tasks/s arriving, over about 60 s.", q),
                lambda s: s.autoscale.arrival_rate if s.autoscale else 0,
            ),
            "completion": (
                _gauge("dtqs_queue_completion_rate", "Tasks/s finished, over about 60 s.", q),
                lambda s: s.autoscale.completion_rate if s.autoscale else 0,
            ),
            "suggested": (
                _gauge(
                    "dtqs_queue_suggested_workers",
                    "Worker processes this queue needs now (>= 1 while a task is ready or leased).",
                    q,
                ),
                lambda s: s.autoscale.suggested_workers if s.autoscale else 0,
            ),
        }
        qf = [*q, "function"]
        counters = {
            "processed": CounterMetricFamily(
                "dtqs_tasks_processed", "Tasks that succeeded.", labels=qf
            ),
            "failed": CounterMetricFamily(
                "dtqs_tasks_failed", "Failed attempts (retried or not).", labels=qf
            ),
            "retried": CounterMetricFamily(
                "dtqs_tasks_retried", "Failed attempts scheduled to run again.", labels=qf
            ),
            "dead": CounterMetricFamily(
                "dtqs_tasks_dead", "Tasks moved to the dead letters.", labels=qf
            ),
        }
        durations = HistogramMetricFamily(
            "dtqs_task_duration_seconds", "Handler run time, as reported by workers.", labels=qf
        )
        for s in stats:
            for level, n in s.pending.items():
                depth.add_metric([s.name, level], n)
            for family, value in gauges.values():
                family.add_metric([s.name], value(s))
            for name, per_function in s.counters.items():
                for function, n in sorted(per_function.items()):
                    counters[name].add_metric([s.name, function], n)
            for function, h in sorted(s.durations.items()):
                buckets = [(_le(upper), n) for upper, n in h.buckets]
                durations.add_metric([s.name, function], buckets, h.sum_s)
        yield depth
        for family, _ in gauges.values():
            yield family
        yield from counters.values()
        yield durations


class ReloadCollector:
    """Hot reload failures of this API process (a counter kept on the state)."""

    def __init__(self, state: ApiState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        failures = CounterMetricFamily(
            "dtqs_reload_failures",
            "Hot reloads that failed (bad manifest); the last good one kept serving.",
        )
        failures.add_metric([], self.state.reload_failures)
        yield failures


class _Scrape:
    """Request metrics plus queue metrics, as one collector for the encoder."""

    def __init__(self, *parts: Any) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


class MetricsResource:
    """GET /metrics: Prometheus text (or OpenMetrics when the scraper asks for it)."""

    scopes = {"GET": None}

    def __init__(self, state: ApiState) -> None:
        self.queues = QueueCollector(state)
        self.reloads = ReloadCollector(state)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        request_metrics = req.context.get("request_metrics")
        parts: list[Any] = [self.reloads, self.queues]
        if request_metrics is not None:
            parts.insert(0, request_metrics.registry)
        encoder, content_type = choose_encoder(req.get_header("Accept") or "")
        resp.content_type = content_type
        resp.data = encoder(_Scrape(*parts))
