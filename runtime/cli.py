"""The `dtqs` command. The only module that parses argv, prints for humans, or exits.

Exit statuses (README, "Exit statuses"): 0 ok; 1 a child process of `dtqs run` was
killed; 2 the user's input was wrong (manifest, arguments, payload); 3 not found;
4 conflict (a running task, another `dtqs run`, a port in use); 5 a waited-for task
failed; 69 Redis unavailable; 70 internal error; 124 a --wait timed out; 130
interrupted before it started.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from dtqs.runtime import logs
from dtqs.runtime.errors import (
    EXIT_STATUS,
    INTERNAL,
    INVALID,
    DtqsError,
    ManifestError,
    TaskFailedError,
)
from dtqs.runtime.manifest import Manifest, load_manifest, resolve_config_path

F = TypeVar("F", bound=Callable[..., Any])


def config_option(fn: F) -> F:
    return click.option(
        "--config", "config", metavar="FILE", envvar="DTQS_CONFIG",
        help="The manifest (default: $DTQS_CONFIG, else ./dtqs.yaml).",
    )(fn)  # fmt: skip


def redis_option(fn: F) -> F:
    return click.option(
        "--redis-url", metavar="URL", envvar="DTQS_REDIS_URL",
        help="Redis to use (default: $DTQS_REDIS_URL, the manifest's redis.url, "
        "else the embedded server of a `dtqs run` in this folder).",
    )(fn)  # fmt: skip


def log_option(fn: F) -> F:
    return click.option(
        "--log-level", type=click.Choice(logs.LEVELS), default="info", show_default=True
    )(fn)


def reload_option(fn: F) -> F:
    return click.option(
        "--reload", is_flag=True,
        help="Follow changes to dtqs.yaml, functions/ and schemas/ without a restart.",
    )(fn)  # fmt: skip


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def load(config: str | None) -> Manifest:
    return load_manifest(resolve_config_path(config))


#: How often a child of `dtqs run` looks again at a manifest broken since the run began.
BROKEN_AT_START_RETRY_S = 0.5


def load_reloadable(config: str | None, reload: bool) -> Manifest:
    """The manifest of a process that follows changes (--reload).

    NOTE: a child of `dtqs run` (DTQS_PARENT_PID set) starts from files its parent
    validated, so a manifest broken now was broken in between, while the run's hot
    reload reports it: the child waits for the fix, as a reload would, instead of
    exiting and stopping the whole run. Anywhere else a broken manifest is an error.
    """
    if not (reload and os.environ.get("DTQS_PARENT_PID")):
        return load(config)
    while True:
        try:
            return load(config)
        except ManifestError:
            time.sleep(BROKEN_AT_START_RETRY_S)


def make_client(config: str | None, redis_url: str | None, manifest: Manifest | None = None) -> Any:
    from dtqs.runtime.client import Client

    return Client(redis_url=redis_url, manifest=manifest or load(config))


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """dtqs: durable, prioritised, retried, scheduled functions on Redis."""
    ctx.obj = {"verbose": verbose}


@cli.command()
@config_option
def validate(config: str | None) -> None:
    """Check the manifest and import every handler; report every problem at once."""
    from dtqs.runtime.handlers import check_handlers

    manifest = load(config)
    for warning in manifest.warnings:  # e.g. a slow pattern: said, but not a failure
        click.echo(str(warning), err=True)
    problems = check_handlers(manifest)
    if problems:
        raise ManifestError(problems)
    click.echo(
        f"{manifest.path.name}: ok ({len(manifest.queues)} queue(s), "
        f"{len(manifest.functions)} function(s), {len(manifest.schedules)} schedule(s))"
    )


@cli.command()
@config_option
@redis_option
@click.option("--queues", help="Comma-separated queues to serve (default: all).")
@click.option("--processes", type=click.IntRange(1, 256), help="Worker processes (default: CPUs).")
@click.option("--concurrency", type=click.IntRange(1, 4096), help="Slots per queue per process.")
@click.option("--grace", type=click.FloatRange(0), help="Seconds to finish tasks on stop.")
@reload_option
@log_option
def worker(
    config: str | None,
    redis_url: str | None,
    queues: str | None,
    processes: int | None,
    concurrency: int | None,
    grace: float | None,
    reload: bool,
    log_level: str,
) -> None:
    """Run worker processes until SIGTERM/SIGINT (a second signal forces)."""
    logs.setup("pool", log_level)
    manifest = load(config)
    names = [q for q in (queues or "").split(",") if q]
    unknown = [q for q in names if q not in manifest.queues]
    if unknown:
        raise click.BadParameter(
            f"unknown queue(s) {', '.join(unknown)}; declared: {', '.join(manifest.queues)}",
            param_hint="--queues",
        )
    supervise(manifest, processes, concurrency, grace, log_level, redis_url, queues=names,
              embedded=False, reload=reload)  # fmt: skip


def supervise(
    manifest: Manifest,
    processes: int | None,
    concurrency: int | None,
    grace: float | None,
    log_level: str,
    redis_url: str | None,
    **more: Any,
) -> None:
    from dtqs.runtime.supervisor import RunOptions, Supervisor

    options = RunOptions(
        processes=processes or os.cpu_count() or 1,
        concurrency=concurrency,
        grace_s=grace,
        log_level=log_level,
        redis_url=redis_url,
        **more,
    )
    status = Supervisor(manifest, options).run()
    if status:
        raise click.exceptions.Exit(status)


@cli.command()
@config_option
@redis_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--processes", type=click.IntRange(1, 256), help="Worker processes (default: CPUs).")
@click.option("--concurrency", type=click.IntRange(1, 4096), help="Slots per queue per process.")
@click.option("--grace", type=click.FloatRange(0), help="Seconds to finish tasks on stop.")
@click.option("--insecure", is_flag=True, help="Serve the API beyond loopback without tokens.")
@log_option
def run(
    config: str | None,
    redis_url: str | None,
    host: str,
    port: int,
    processes: int | None,
    concurrency: int | None,
    grace: float | None,
    insecure: bool,
    log_level: str,
) -> None:
    """Local development: embedded server (if no Redis is set), workers, API, scheduler."""
    from dtqs.api.server import check_exposure, check_free
    from dtqs.runtime.supervisor import ChildCommand, check_not_running

    logs.setup("run", log_level)
    manifest = load(config)
    check_exposure(manifest, host, insecure)
    check_not_running(manifest, redis_url)  # NOTE: says more than "port in use" would
    check_free(host, port)
    from dtqs.runtime.reloader import PARENT_REPORTS_ENV

    api_argv = ["api", "--config", str(manifest.path), "--host", host, "--port", str(port)]
    api_argv += ["--log-level", log_level, "--reload"] + (["--insecure"] if insecure else [])
    api_argv += ["--drain", "5"]  # NOTE: Ctrl-C in development: stop soon
    scheduler_argv = ["scheduler", "--config", str(manifest.path), "--log-level", log_level]
    scheduler_argv += ["--reload"]
    # Hot reload is always on: this supervisor prints each reload error in full once.
    quiet = {PARENT_REPORTS_ENV: "1"}
    components = [
        ChildCommand("api", api_argv, quiet),
        ChildCommand("scheduler", scheduler_argv, quiet),
    ]
    supervise(manifest, processes, concurrency, grace, log_level, redis_url, components=components,
              reload=True)  # fmt: skip


@cli.command()
@config_option
@redis_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--threads", type=click.IntRange(1, 1024), default=8, show_default=True)
@click.option("--insecure", is_flag=True, help="Serve beyond loopback without API tokens.")
@click.option(
    "--idle-timeout", type=click.FloatRange(1), default=75.0, show_default=True,
    help="Seconds an idle connection is kept: above the idle timeout of any proxy in front.",
)  # fmt: skip
@click.option(
    "--drain", type=click.FloatRange(0), default=20.0, show_default=True,
    help="Seconds requests in flight get to finish after SIGTERM.",
)  # fmt: skip
@reload_option
@log_option
def api(
    config: str | None,
    redis_url: str | None,
    log_level: str,
    **options: Any,
) -> None:
    """Serve the REST API with waitress (SIGTERM drains it)."""
    from dtqs.api.server import ServeOptions, run_api
    from dtqs.runtime.process import die_with_parent

    die_with_parent()
    logs.setup("api", log_level)
    manifest = load_reloadable(config, options["reload"])
    run_api(manifest, redis_url, ServeOptions(**options))


@cli.command()
@config_option
@redis_option
@reload_option
@log_option
def scheduler(config: str | None, redis_url: str | None, reload: bool, log_level: str) -> None:
    """Fire the manifest's schedules (run two or three for availability: ticks fire once)."""
    import signal

    from dtqs.runtime import emf
    from dtqs.runtime.process import die_with_parent
    from dtqs.runtime.reloader import ManifestReloader
    from dtqs.runtime.scheduler import Scheduler

    die_with_parent()
    logs.setup("scheduler", log_level)
    manifest = load_reloadable(config, reload)
    client = make_client(config, redis_url, manifest)
    try:
        emitter = emf.EmfEmitter(client) if emf.enabled(os.environ) else None
    except ValueError as exc:
        raise DtqsError(str(exc), code=INVALID) from None
    runner = Scheduler(client, emf=emitter)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    reloader = ManifestReloader(manifest.path, runner.reload, name="scheduler") if reload else None
    if reloader is not None:
        reloader.start()
    try:
        runner.run(manifest)  # starts once Redis answers (its clock places the schedules)
    finally:
        if reloader is not None:
            reloader.stop()


@cli.command()
@config_option
@redis_option
@json_option
def schedules(config: str | None, redis_url: str | None, as_json: bool) -> None:
    """Each schedule with its next 3 fire times and its last fire."""
    from dtqs.runtime.schedule_times import next_fire_times

    client = make_client(config, redis_url)
    specs = client.manifest.schedules
    last = client.broker.last_fires(list(specs))
    rows = []
    for name, spec in specs.items():
        fired = last.get(name) or {}
        rows.append({
            "name": name,
            "function": spec.function,
            "rule": spec.cron or f"every {spec.every_s:g}s",
            "timezone": spec.timezone,
            "enabled": spec.enabled,
            "next": [t.isoformat() for t in next_fire_times(spec, 3)],
            "last_fire_ms": int(fired["last_fire_ms"]) if fired.get("last_fire_ms") else None,
            "last_task_id": fired.get("last_task_id"),
        })  # fmt: skip
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        state = "" if row["enabled"] else " (disabled)"
        click.echo(f"{row['name']}: {row['function']} {row['rule']} {row['timezone']}{state}")
        for at in row["next"]:
            click.echo(f"  next {at}")
        if row["last_task_id"]:
            click.echo(f"  last {row['last_task_id']}")


def parse_payload(text: str | None) -> Any:
    if text is None:
        return None
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="JSON") from exc


@cli.command()
@config_option
@redis_option
@click.argument("function")
@click.argument("payload", metavar="[JSON]", required=False)
@click.option("--priority", help="A level of the function's queue (default: the function's).")
@click.option("--delay", type=click.FloatRange(0), help="Seconds before the task may run.")
@click.option("--run-at", help="ISO 8601 time at which the task may run.")
@click.option("--idempotency-key", help="Submissions with the same key store one task.")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the outcome and print the result.")
@click.option("--timeout", type=click.FloatRange(0), default=60.0, show_default=True)
def submit(
    config: str | None,
    redis_url: str | None,
    function: str,
    payload: str | None,
    priority: str | None,
    delay: float | None,
    run_at: str | None,
    idempotency_key: str | None,
    wait_: bool,
    timeout: float,
) -> None:
    """Submit FUNCTION with a JSON payload ('-' reads stdin); prints the task id."""
    client = make_client(config, redis_url)
    task_id = client.submit(
        function, parse_payload(payload), priority=priority, delay=delay, run_at=run_at,
        idempotency_key=idempotency_key,
    )  # fmt: skip
    if not wait_:
        click.echo(task_id)
        return
    info = client.wait(task_id, timeout)
    if info.state == "succeeded":
        echo_json(info.result)
        return
    raise TaskFailedError(f"task {task_id} ended {info.state}: {json.dumps(info.error)}")


@cli.command()
@config_option
@redis_option
@click.argument("task_id", metavar="ID")
def status(config: str | None, redis_url: str | None, task_id: str) -> None:
    """Print a task's record as JSON."""
    from dtqs.runtime.errors import TaskNotFoundError

    info = make_client(config, redis_url).get(task_id)
    if info is None:
        raise TaskNotFoundError(f"no task {task_id!r} (unknown, or its record expired)")
    echo_json(info.to_dict())


@cli.command()
@config_option
@redis_option
@click.argument("task_id", metavar="ID")
def cancel(config: str | None, redis_url: str | None, task_id: str) -> None:
    """Cancel a queued or scheduled task."""
    make_client(config, redis_url).cancel_task(task_id)
    click.echo(f"cancelled {task_id}")


@cli.command()
@config_option
@redis_option
@json_option
def queues(config: str | None, redis_url: str | None, as_json: bool) -> None:
    """Depth per queue and priority, in flight, scheduled, dead."""
    client = make_client(config, redis_url)
    data = client.queues()
    known = client.manifest.functions
    for name, q in data.items():
        counts, complete = client.waiting_by_function(name)
        # Tasks of functions the manifest no longer declares wait (parked), never dropped.
        q["unknown_functions"] = {f: n for f, n in counts.items() if f not in known}
        q["unknown_functions_complete"] = complete
    if as_json:
        echo_json(data)
        return
    click.echo(
        f"{'QUEUE':<16} {'PENDING (by priority)':<40} {'SCHED':>6} {'ACTIVE':>6} {'DEAD':>6}"
    )
    for name, q in data.items():
        levels = " ".join(f"{k}={v}" for k, v in q["pending"].items())
        paused = "  (paused)" if q["paused"] else ""
        click.echo(
            f"{name:<16} {levels:<40} {q['scheduled']:>6} {q['active']:>6} {q['dead']:>6}{paused}"
        )
        if q["unknown_functions"]:
            scan = client.WAITING_SCAN_MAX
            more = "" if q["unknown_functions_complete"] else f" (among the first {scan})"
            found = " ".join(f"{f}={n}" for f, n in sorted(q["unknown_functions"].items()))
            click.echo(f"  waiting for functions not in the manifest: {found}{more}")


@cli.command()
@config_option
@redis_option
def workers(config: str | None, redis_url: str | None) -> None:
    """Live worker processes, from their heartbeats."""
    echo_json(make_client(config, redis_url).workers())


@cli.group("dead")
def dead() -> None:
    """Dead letters: list, replay, purge."""


def _dead_args(fn: F) -> F:
    for deco in (
        config_option,
        redis_option,
        click.option("--queue", default="default", show_default=True),
        click.option("--function", help="Only dead letters of this function."),
    ):
        fn = deco(fn)
    return fn


@dead.command("list")
@_dead_args
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
def dead_list(
    config: str | None, redis_url: str | None, queue: str, function: str | None, limit: int
) -> None:
    """Dead tasks with their last error."""
    infos = make_client(config, redis_url).dead_letters(queue, function, limit)
    echo_json([i.to_dict() for i in infos])


@dead.command("replay")
@_dead_args
@click.argument("ids", nargs=-1)
def dead_replay(
    config: str | None,
    redis_url: str | None,
    queue: str,
    function: str | None,
    ids: tuple[str, ...],
) -> None:
    """Send dead letters (the IDS given, else all matching) back to their queue."""
    client = make_client(config, redis_url)
    count = len(client.replay(queue, ids)) if ids else client.replay_all(queue, function)
    click.echo(f"replayed {count} task(s)")


@dead.command("purge")
@_dead_args
@click.argument("ids", nargs=-1)
def dead_purge(
    config: str | None,
    redis_url: str | None,
    queue: str,
    function: str | None,
    ids: tuple[str, ...],
) -> None:
    """Delete dead letters (the IDS given, else all matching) for good."""
    client = make_client(config, redis_url)
    count = client.purge(queue, ids) if ids else client.purge_all(queue, function)
    click.echo(f"purged {count} dead letter(s)")


def report(exc: DtqsError) -> None:
    if isinstance(exc, ManifestError):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"dtqs: error: {len(exc.problems)} problem(s) found", err=True)
        return
    click.echo(f"dtqs: error: {exc.message}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (README, Commands: every status it returns)."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args or "--verbose" in args
    try:
        # NOTE: with standalone_mode=False click returns a command's exit status (from
        # click.exceptions.Exit) instead of exiting; it was ignored, so `dtqs run`
        # exited 0 after its API child failed.
        status = cli.main(args=args, prog_name="dtqs", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("aborted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except DtqsError as exc:
        if verbose:
            traceback.print_exc()
        report(exc)
        return exc.exit_status
    except (RecursionError, MemoryError) as exc:
        # NOTE: from a user's file (a manifest, schema or handler too deep or too big)
        if verbose:
            traceback.print_exc()
        kind = "nested too deeply" if isinstance(exc, RecursionError) else "too large"
        click.echo(f"dtqs: error: the input is {kind} to load ({type(exc).__name__})", err=True)
        return EXIT_STATUS[INVALID]
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback with -v
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else " (run with -v for the traceback)"
        click.echo(f"dtqs: internal error: {type(exc).__name__}: {exc}{hint}", err=True)
        return EXIT_STATUS[INTERNAL]
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
