"""Queue metrics for AWS CloudWatch, as Embedded Metric Format (EMF) log lines.

On ECS or Lambda, a JSON line in the EMF shape written to stdout becomes CloudWatch
metrics through the awslogs driver, with no SDK, credentials or API calls in dtqs.
``dtqs scheduler`` prints one line per queue every ``interval_s`` when
``DTQS_CLOUDWATCH_EMF=1`` (terraform/ scales workers on ``dtqs``/``Backlog``).

With ``DTQS_DEPLOYMENT`` set (say "prod"), every metric also carries the dimension
``Deployment``: two deployments in one account and region then publish separate
series, and neither autoscaler follows the other's backlog.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from dtqs.runtime.client import Client
from dtqs.runtime.stats import QueueStats, queue_stats

#: Environment variable that turns the emitter on ("1", "true", "yes" or "on").
ENV = "DTQS_CLOUDWATCH_EMF"
_ON, _OFF = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
NAMESPACE = "dtqs"
DIMENSION = "Queue"
#: Environment variable naming this deployment; the value of the Deployment dimension.
DEPLOYMENT_ENV = "DTQS_DEPLOYMENT"
DEPLOYMENT_DIMENSION = "Deployment"
#: CloudWatch metric name -> (unit, value of a queue's autoscaling signals).
METRICS: dict[str, tuple[str, Callable[[QueueStats], float]]] = {
    "Backlog": ("Count", lambda s: s.autoscale.backlog if s.autoscale else 0),
    "OldestTaskAgeSeconds": ("Seconds", lambda s: round(s.oldest_age_s, 3)),
    "InFlight": ("Count", lambda s: s.in_flight),
    "ArrivalRate": ("Count/Second", lambda s: s.autoscale.arrival_rate if s.autoscale else 0),
    "CompletionRate": (
        "Count/Second",
        lambda s: s.autoscale.completion_rate if s.autoscale else 0,
    ),
    "SuggestedWorkers": ("Count", lambda s: s.autoscale.suggested_workers if s.autoscale else 0),
}


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether ``DTQS_CLOUDWATCH_EMF`` asks for the emitter.

    Raises:
        ValueError: a value that is neither on nor off (a typo must not silently
            leave an autoscaler without its metric).
    """
    value = environ.get(ENV, "").strip().lower()
    if value in _ON or value in _OFF:
        return value in _ON
    raise ValueError(f"{ENV}={environ[ENV]!r}: expected one of 1, true, yes, on, 0, false, no, off")


def emf_line(stats: QueueStats, timestamp_ms: int, deployment: str = "") -> str:
    """One queue's metrics as an EMF document (one line of JSON); with `deployment`,
    dimensioned by Deployment and Queue."""
    dimensions = [DEPLOYMENT_DIMENSION, DIMENSION] if deployment else [DIMENSION]
    doc: dict[str, object] = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [dimensions],
                    "Metrics": [{"Name": n, "Unit": unit} for n, (unit, _) in METRICS.items()],
                }
            ],
        },
        DIMENSION: stats.name,
    }
    if deployment:
        doc[DEPLOYMENT_DIMENSION] = deployment
    for name, (_, value) in METRICS.items():
        doc[name] = value(stats)
    return json.dumps(doc, separators=(",", ":"))


class EmfEmitter:
    """Prints every queue's line at most once per ``interval_s`` (monotonic clock)."""

    def __init__(
        self,
        client: Client,
        interval_s: float = 60.0,
        out: TextIO | None = None,
        deployment: str | None = None,
    ):
        self.client = client
        #: the Deployment dimension ("": none); default $DTQS_DEPLOYMENT
        self.deployment = (
            os.environ.get(DEPLOYMENT_ENV, "") if deployment is None else deployment
        ).strip()
        self.interval_s = interval_s
        self.out = out or sys.stdout
        self.next_at = 0.0

    def seconds_until_due(self) -> float:
        return max(self.next_at - time.monotonic(), 0.0)

    def maybe_emit(self) -> bool:
        """Emit if due; True when lines were written. Raises DtqsError if Redis failed
        (the next call tries again)."""
        if time.monotonic() < self.next_at:
            return False
        stats = queue_stats(self.client.broker, self.client.manifest)
        now_ms = int(time.time() * 1000)
        self.out.write("".join(emf_line(s, now_ms, self.deployment) + "\n" for s in stats))
        self.out.flush()
        self.next_at = time.monotonic() + self.interval_s
        return True
