"""What is benchmarked: each library, and each worker configuration (a row of the table).

Worker command lines follow the peer measurements made before dtqs existed, sized for the
machine (``CPUS`` processes or pool slots where a library forks).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Library names accepted by --systems, in report order.
LIBS = ("dtqs", "celery", "rq", "dramatiq", "arq", "huey")
#: Worker processes (or prefork slots) per configuration: one per core.
CPUS = os.cpu_count() or 1
#: Slots per queue per dtqs worker process in the headline drain (16 is also reported).
DTQS_CONCURRENCY = 64
#: Threads per process where a peer runs threads (as measured before dtqs existed).
PEER_THREADS = 8
#: Distributions whose versions the report lists.
DISTS = {
    "dtqs": ["dtqs", "redis", "hiredis"],
    "celery": ["celery", "kombu", "billiard"],
    "rq": ["rq"],
    "dramatiq": ["dramatiq"],
    "arq": ["arq", "redis", "hiredis"],
    "huey": ["huey"],
}


@dataclass(frozen=True)
class Context:
    """Where things are for this invocation."""

    redis_url: str
    bin_dir: Path  #: scripts of the interpreter running the harness (celery, rq, dtqs ...)
    arq_python: Path | None  #: arq's venv, when it could be made
    dtqs_configs: dict[str, Path]  #: variant (sync, async) -> generated dtqs.yaml

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)


@dataclass(frozen=True)
class WorkerConfig:
    """One row: a library, its worker command lines, and how to call it in the report."""

    name: str
    lib: str
    label: str
    variant: str = "sync"  #: dtqs only: which handler module

    def python(self, ctx: Context) -> str:
        if self.lib == "arq":
            if ctx.arq_python is None:
                raise RuntimeError("arq's venv is not available")
            return str(ctx.arq_python)
        return sys.executable

    def commands(self, ctx: Context, **dtqs: int) -> list[list[str]]:
        """One argv per OS process to start; ``dtqs`` overrides processes/concurrency/queues."""
        if self.lib == "dtqs":
            return [dtqs_worker(ctx, self.variant, **dtqs)]
        if self.lib == "arq":
            arq = str(Path(self.python(ctx)).parent / "arq")
            return [
                [
                    arq,
                    "--custom-log-dict",
                    "bench.tasks.arq_worker.LOG_WARN",
                    "bench.tasks.arq_worker.WorkerSettings",
                ]
            ]
        return PEER_COMMANDS[self.name](ctx)


#: Worker command lines of a peer: one argv per OS process to start.
PeerCommand = Callable[[Context], list[list[str]]]


def dtqs_worker(
    ctx: Context,
    variant: str,
    processes: int = CPUS,
    concurrency: int = DTQS_CONCURRENCY,
    queues: int = 1,
) -> list[str]:
    from bench.dtqs_project import QUEUES

    return [
        ctx.tool("dtqs"),
        "worker",
        "--config",
        str(ctx.dtqs_configs[variant]),
        "--redis-url",
        ctx.redis_url,
        "--queues",
        ",".join(QUEUES[:queues]),
        "--processes",
        str(processes),
        "--concurrency",
        str(concurrency),
        "--log-level",
        "warning",
    ]


def _celery(pool: str, slots: int) -> PeerCommand:
    def argv(ctx: Context) -> list[list[str]]:
        return [
            [
                ctx.tool("celery"),
                "-A",
                "bench.tasks.celery_app",
                "worker",
                "-Q",
                "bench",
                "-l",
                "warning",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-P",
                pool,
                "-c",
                str(slots),
            ]
        ]

    return argv


PEER_COMMANDS: dict[str, PeerCommand] = {
    "celery": _celery("prefork", CPUS),
    "celery-threads": _celery("threads", PEER_THREADS),
    # NOTE: SimpleWorker runs jobs in the worker process; RQ's default Worker forks per
    # job and drains ~80 tasks/s here, which says nothing about its queue.
    "rq": lambda ctx: (
        [
            [
                ctx.tool("rq"),
                "worker",
                "-q",
                "-w",
                "rq.worker.SimpleWorker",
                "-u",
                ctx.redis_url,
                "bench",
            ]
        ]
        * CPUS
    ),
    "dramatiq": lambda ctx: [
        [
            ctx.tool("dramatiq"),
            "bench.tasks.dramatiq_actors",
            "-p",
            str(CPUS),
            "-t",
            str(PEER_THREADS),
            "-Q",
            "bench",
        ]
    ],
    "huey": lambda ctx: [
        [
            ctx.tool("huey_consumer"),
            "bench.tasks.huey_app.huey",
            "-q",
            "-w",
            str(CPUS),
            "-k",
            "process",
        ]
    ],
}

CONFIGS = (
    WorkerConfig("dtqs", "dtqs", f"dtqs, sync handler, {CPUS} proc x {DTQS_CONCURRENCY}"),
    WorkerConfig(
        "dtqs-async", "dtqs", f"dtqs, async handler, {CPUS} proc x {DTQS_CONCURRENCY}", "async"
    ),
    WorkerConfig("celery", "celery", f"Celery prefork -c {CPUS}"),
    WorkerConfig("celery-threads", "celery", f"Celery threads -c {PEER_THREADS}"),
    WorkerConfig("rq", "rq", f"RQ SimpleWorker x {CPUS}"),
    WorkerConfig("dramatiq", "dramatiq", f"Dramatiq -p {CPUS} -t {PEER_THREADS}"),
    WorkerConfig("arq", "arq", "arq x 1 (defaults: max_jobs 10, poll_delay 0.5 s)"),
    WorkerConfig("huey", "huey", f"Huey -w {CPUS} -k process"),
)


def missing_reason(lib: str) -> str | None:
    """Why `lib` cannot run in this interpreter (arq is checked by its venv), else None."""
    if lib in ("dtqs", "arq"):
        return None
    if importlib.util.find_spec(lib) is None:
        return f"{lib} is not installed (pip install -e '.[bench]')"
    return None


def display(argv: list[str], ctx: Context, **more: str) -> str:
    """A command line as the README shows it: no absolute tool paths or scratch paths.

    ``more`` maps other literal text (a port) to the placeholder shown instead.
    """
    swaps = {ctx.redis_url: "$REDIS_URL", **more}
    for variant, path in ctx.dtqs_configs.items():
        swaps[str(path.parent)] = f"$PROJECT_{variant.upper()}"
    words = [os.path.basename(argv[0])]
    for word in argv[1:]:
        for text, placeholder in swaps.items():
            word = word.replace(text, placeholder)
        words.append(word)
    return " ".join(words)
