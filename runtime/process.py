"""Entry point of one worker process (``python -m dtqs.runtime.process``).

Started by the pool supervisor, never by hand. Signals: the first SIGTERM/SIGINT
stops fetching, lets running tasks finish within the grace period and releases the
rest at once; a second one exits now (the leases bring the tasks back).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading

from dtqs.runtime import logs, settings
from dtqs.runtime.errors import DtqsError
from dtqs.runtime.handlers import check_handlers
from dtqs.runtime.heartbeat import Heartbeat, Sweep
from dtqs.runtime.manifest import load_manifest
from dtqs.runtime.redis.broker import Broker
from dtqs.runtime.scalein import BusySignal
from dtqs.runtime.worker import Worker

log = logging.getLogger("dtqs.worker")

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its supervisor dies (no orphans).

    Only for processes a dtqs supervisor started (it sets DTQS_PARENT_PID): a command
    started from a shell must outlive that shell.
    """
    parent = int(os.environ.get("DTQS_PARENT_PID", "0"))
    if not parent:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dtqs-worker-process")
    p.add_argument("--config", required=True)
    p.add_argument("--redis-url")
    p.add_argument("--queues", default="")
    p.add_argument("--concurrency", type=int)
    p.add_argument("--grace", type=float)
    p.add_argument("--log-level", default="info")
    p.add_argument("--index", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    die_with_parent()
    logs.setup(f"worker-{args.index}", args.log_level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now; leases will return unfinished tasks")
            os._exit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        manifest = load_manifest(args.config)
        queues = [q for q in args.queues.split(",") if q]
        # NOTE: a connection per slot (a handler's ctx.progress), plus the fetchers,
        # acknowledgers, heartbeat and sweep: nobody waits for a pooled connection.
        slots = sum(args.concurrency or q.concurrency for q in manifest.queues.values()
                    if not queues or q.name in queues)  # fmt: skip
        url = settings.redis_url(manifest, args.redis_url)
        broker = Broker(url, manifest.prefix, max_connections=slots + 16)
        worker = Worker(manifest, broker, queues, args.concurrency)
    except DtqsError as exc:
        log.error("%s", exc)
        return 2
    # NOTE(reload): import every handler now, not at its first task, so this process
    # keeps running the code it started with even if a file breaks later (hot reload
    # keeps the last good processes serving until the files are fixed).
    for problem in check_handlers(manifest):
        log.warning("%s", problem)
    grace = manifest.workers.grace_s if args.grace is None else args.grace
    # NOTE: none of these calls Redis: a worker started before Redis (or during an
    # outage) serves once it answers. Anything they raise is a bug: the process exits
    # non-zero and the supervisor starts a new one, instead of idling here for good.
    worker.start()
    heartbeat, sweep = Heartbeat(worker, busy=BusySignal.from_env(os.environ)), Sweep(worker)
    heartbeat.start()
    sweep.start()
    log.info(
        "worker %s serving %s", worker.worker_id,
        ", ".join(f"{r.spec.name}×{r.concurrency}" for r in worker.runners),
    )  # fmt: skip
    while not stop.wait(0.2):
        if worker.draining.is_set() and worker.in_flight() == 0:
            break
    released = worker.stop(grace)
    sweep.stop()
    heartbeat.stop()
    log.info("worker %s stopped (%d task(s) released)", worker.worker_id, released)
    logging.shutdown()
    # NOTE: os._exit, not return: a handler thread stuck past its timeout must not
    # keep the process alive; every outcome has been recorded or released by now.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
