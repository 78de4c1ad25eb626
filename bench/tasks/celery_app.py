"""Celery: redis broker, no result backend, results ignored (fire-and-forget)."""

from __future__ import annotations

from celery import Celery

from bench.tasks.common import QUEUE, REDIS_URL, count_one, record_latency

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    # NOTE: with -l warning Celery still hijacks the root logger unless told not to.
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(ignore_result=True)
def noop(x: int) -> None:
    count_one()


@app.task(ignore_result=True)
def lat(t0: float) -> None:
    record_latency(t0)
