"""python -m bench [--quick] [--json PATH] [--systems dtqs,celery,rq,dramatiq,arq,huey]

Starts one private redis-server, measures every selected system on it (enqueue, drain,
latency, memory; dtqs's HTTP submit and scaling too), and writes results.md, chart.png
and the JSON. See bench/README.md for the method and every command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench import api_load
from bench.arq_venv import ArqVenvError, arq_python
from bench.chart import write_chart
from bench.dtqs_project import VARIANTS, write_project
from bench.loadgen import available_tool
from bench.markdown import render
from bench.measure import Harness, log
from bench.plan import FULL, QUICK, Plan
from bench.report import http_section, scaling_section, systems_section
from bench.server import RedisServer, redis_benchmark
from bench.systems import CONFIGS, DISTS, LIBS, Context, WorkerConfig, display, missing_reason

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: Where a full run writes results.md, chart.png and results.json (committed).
RESULTS_DIR = HERE / "results"
#: Per-invocation scratch (logs, the generated dtqs projects, --quick output); gitignored.
SCRATCH_DIR = HERE / ".scratch"
#: Scratch folders kept; older ones are removed at start.
KEEP_SCRATCH = 5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small N, one run: keeps the harness working (CI), not figures",
    )
    parser.add_argument("--json", type=Path, help="write the JSON here (default: OUT/results.json)")
    parser.add_argument(
        "--out",
        type=Path,
        help="folder of results.md and chart.png "
        "(default: bench/results; --quick: its scratch folder)",
    )
    parser.add_argument(
        "--systems", default=",".join(LIBS), help=f"comma-separated subset of {','.join(LIBS)}"
    )
    parser.add_argument("--runs", type=int, help="repetitions per figure (default 3; quick 1)")
    parser.add_argument(
        "-n", type=int, help="tasks per enqueue and drain (default 20000; quick 500)"
    )
    parser.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="HTTP load generator (auto: wrk when installed)",
    )
    args = parser.parse_args(argv)
    libs = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(libs) - set(LIBS))
    if unknown:
        parser.error(f"--systems: unknown {', '.join(unknown)}; choose from {', '.join(LIBS)}")
    args.libs = [lib for lib in LIBS if lib in libs]
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.runs:
        changes["runs"] = args.runs
    if args.n:
        changes["n"] = args.n
    return Plan(**{**plan.__dict__, **changes}) if changes else plan


def scratch_folder() -> Path:
    SCRATCH_DIR.mkdir(parents=True, exist_ok=True)
    for old in sorted(SCRATCH_DIR.iterdir())[:-KEEP_SCRATCH]:
        shutil.rmtree(old, ignore_errors=True)
    path = SCRATCH_DIR / time.strftime("%Y%m%d-%H%M%S")
    path.mkdir()
    (path / "logs").mkdir()
    return path


def find_skipped(libs: list[str], notes: list[str]) -> tuple[dict[str, str], Path | None]:
    skipped = {lib: why for lib in libs if (why := missing_reason(lib))}
    arq = None
    if "arq" in libs:
        try:
            arq = arq_python()
            notes.append(
                "arq runs from its own venv, bench/.venvs/arq (made on first use): "
                "arq 0.28 pins redis-py < 6, which kombu 5.7 (Celery) refuses."
            )
        except ArqVenvError as exc:
            skipped["arq"] = str(exc)
    for lib, why in skipped.items():
        log(f"skipping {lib}: {why}")
    return skipped, arq


def machine(server: RedisServer, plan: Plan, h: Harness, libs: list[str]) -> dict[str, Any]:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    os_name = platform.platform()
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    versions: dict[str, str] = {}
    for lib in libs:
        python = str(h.ctx.arq_python) if lib == "arq" else sys.executable
        try:
            found = h.producer(python, "versions", *DISTS[lib])
        except RuntimeError:
            continue
        for dist, version in found.items():
            key = f"{dist} ({lib} venv)" if lib == "arq" and dist != "arq" else dist
            versions[key] = version
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": os_name,
        "python": platform.python_version(),
        "redis": server.version(),
        "redis_args": "--save '' --appendonly no (private, loopback, free port)",
        "versions": versions,
        "loadgen": h.tool,
        "plan": plan.__dict__,
    }


def method_notes(plan: Plan, libs: list[str]) -> list[str]:
    notes = [
        "Task body everywhere: one INCR on a plain redis-py client (arq: its own pool); "
        "fire-and-forget settings (Celery no backend, RQ result_ttl=0, Huey results=False, "
        "arq keep_result=0, dtqs result_ttl: 0); workers log at warning.",
        "enqueue: one producer process, N tasks with one small int argument into an empty "
        "server; connection and one warm-up enqueue untimed. The second row of a library "
        "(dtqs-async, celery-threads) shares the first row's enqueue figures.",
        "drain: N tasks pre-enqueued, clock from worker spawn (start-up included) until the "
        "tasks' own counter reaches N.",
        "latency: on the same, now idle workers: submit -> handler start, one task in flight, "
        "random think time U[0,100 ms] between samples (arq: U[0,500 ms], its poll period).",
        "RSS: mean RSS of the processes that run tasks (leaves of the worker's process tree), "
        "read right after the drain.",
    ]
    if "arq" in libs:
        notes.append(
            "arq runs with its defaults: poll_delay 0.5 s with queue_read_limit 100 "
            "caps one worker near 200 tasks/s and puts its latency near the poll "
            "period; with poll_delay=0.01 (not a default) it drained ~1.5k/s in the "
            "earlier peer measurements."
        )
    if plan.n_caps:
        notes.append(
            "Drains of the slow peers use a smaller N (their rate is steady): "
            + ", ".join(f"{k} N={v:,}" for k, v in plan.n_caps.items())
            + "."
        )
    return notes


def one_run(h: Harness, run: int, configs: list[WorkerConfig], libs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"systems": {}, "scaling": {}, "http": {}}
    for lib in libs:
        mine = [c for c in configs if c.lib == lib]
        out["systems"].update(h.lib_run(lib, mine, run))
    dtqs = next((c for c in configs if c.name == "dtqs"), None)
    if dtqs is not None:
        out["scaling"] = h.scaling_run(dtqs, run)
        out["http"] = api_load.http_run(h, run)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    scratch = scratch_folder()
    out_dir = args.out or (scratch if plan.quick else RESULTS_DIR)
    json_path = args.json or out_dir / "results.json"
    notes: list[str] = []
    skipped, arq = find_skipped(args.libs, notes)
    libs = [lib for lib in args.libs if lib not in skipped]
    configs = [c for c in CONFIGS if c.lib in libs]
    started = time.monotonic()
    server = RedisServer.start(scratch)
    log(f"{server.version()} on {server.url}; scratch {scratch}")
    try:
        dtqs_configs = {v: write_project(scratch / f"project-{v}", v) for v in VARIANTS}
        ctx = Context(server.url, Path(sys.executable).parent, arq, dtqs_configs)
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {
            **os.environ,
            "BENCH_REDIS_URL": server.url,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": path,
        }
        h = Harness(server, plan, ctx, scratch / "logs", env, REPO, available_tool(args.loadgen))
        log("redis-benchmark (the ceiling)")
        ceiling = redis_benchmark(server.port, plan.redis_benchmark_requests)
        runs = []
        for run in range(1, plan.runs + 1):
            runs.append(one_run(h, run, configs, libs))
        (scratch / "runs.json").write_text(json.dumps(runs, indent=1))
        info = machine(server, plan, h, libs)
    finally:
        server.stop()
    info["redis_benchmark"] = ceiling
    info["notes"] = notes + method_notes(plan, libs)
    info["seconds"] = round(time.monotonic() - started, 1)
    dtqs = next((c for c in CONFIGS if c.name == "dtqs"), None)
    scaling_cmd = display(dtqs.commands(ctx)[0], ctx) if dtqs and "dtqs" in libs else None
    result = {
        "machine": info,
        "systems": systems_section([c for c in CONFIGS if c.lib in args.libs], runs, skipped),
        "http": http_section(runs) if "dtqs" in libs else {"skipped": "dtqs not selected"},
        "scaling": scaling_section(runs, scaling_cmd) if "dtqs" in libs else {},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    markdown = render(result)
    (out_dir / "results.md").write_text(markdown)
    why_no_chart = write_chart(result, out_dir / "chart.png")
    print(markdown)
    if why_no_chart:
        log(why_no_chart)
    log(
        f"wrote {json_path}, {out_dir / 'results.md'}"
        + ("" if why_no_chart else f", {out_dir / 'chart.png'}")
        + f" in {info['seconds']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
