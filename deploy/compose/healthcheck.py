#!/usr/bin/env python3
"""The image's HEALTHCHECK: one check for every dtqs role, read off the command line.

One image runs `dtqs api`, `dtqs worker` and `dtqs scheduler`, and only the API has a
port, so the check first reads which role the container runs from the command line of
PID 1 (``tini -- dtqs ROLE …``), then checks what that role can show:

- ``api`` (and ``run``): ``GET /healthz`` on the port it serves answers 200. That is
  liveness only: /healthz never touches Redis, so an API waiting for Redis to come back
  stays healthy (the load balancer routes on /readyz instead).
- ``worker``: the supervisor still has at least one live worker process. It respawns
  crashed ones, so none at all for three checks in a row means it is stuck.
- ``scheduler``: it has no port, and its container ends with the process, so the check
  only confirms that the process is neither a zombie nor stopped.

Standard library only and no dtqs import: the check must not break with the code it
checks, nor pay for its imports every few seconds. It speaks HTTP with http.client,
not urllib, so an HTTP(S)_PROXY in the container's environment cannot reroute it.

Usage: ``dtqs-healthcheck [PID]`` (default 1). Exit 0 healthy, 1 unhealthy, as Docker
expects; the one line printed is what ``docker inspect`` shows as the reason.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from pathlib import Path

HEALTH_PATH = "/healthz"
DEFAULT_PORT = 8080
TIMEOUT_S = 3.0
#: How the dtqs command appears in argv: the console script or `python -m`.
DTQS_COMMANDS = ("dtqs", "dtqs.runtime.cli")
WORKER_PROCESS = "dtqs.runtime.process"
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def cmdline(pid: int) -> list[str]:
    """The argv of `pid`, or [] if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def state(pid: int) -> str:
    """The one-letter state of `pid` (R, S, Z, T…), or "" if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from each process's parent in /proc/N/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def dtqs_args(argv: list[str]) -> list[str] | None:
    """The arguments after the dtqs command in `argv` (e.g. ["api", "--port", "8080"])."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) in DTQS_COMMANDS:
            return argv[i + 1 :]
    return None


def option(args: list[str], name: str) -> str | None:
    """The value of `--name V` or `--name=V` in `args`."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def check_http(args: list[str]) -> tuple[bool, str]:
    host = option(args, "--host") or "127.0.0.1"
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host.strip("[]")
    port = int(option(args, "--port") or DEFAULT_PORT)
    where = f"http://{host}:{port}{HEALTH_PATH}"
    try:
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
        try:
            conn.request("GET", HEALTH_PATH)
            resp = conn.getresponse()
            body = resp.read(4096)
        finally:
            conn.close()
    except OSError as exc:
        return False, f"{where}: {exc}"
    if resp.status != 200:
        return False, f"{where}: HTTP {resp.status}"
    try:
        ok = json.loads(body).get("status") == "ok"
    except (ValueError, AttributeError):
        ok = False
    return ok, f"{where}: HTTP 200" + ("" if ok else f", unexpected body {body[:80]!r}")


def check_worker(pid: int) -> tuple[bool, str]:
    alive = [p for p in descendants(pid) if WORKER_PROCESS in cmdline(p) and state(p) not in "ZTX"]
    if alive:
        return True, f"{len(alive)} worker process(es) alive"
    return False, "the supervisor has no live worker process"


def check_process(pid: int) -> tuple[bool, str]:
    tree = [pid, *descendants(pid)]
    running = [p for p in tree if dtqs_args(cmdline(p)) is not None and state(p) not in "ZTX"]
    if running:
        return True, "scheduler process running"
    return False, "no running dtqs process"


def check(pid: int) -> tuple[bool, str]:
    """(healthy, reason) for the dtqs process started as `pid` (or below it, under tini)."""
    args = dtqs_args(cmdline(pid))
    if args is None:
        return False, f"process {pid} is not a dtqs command: {cmdline(pid)!r}"
    role = next((a for a in args if not a.startswith("-")), None)  # after `-v`, if given
    if role in ("api", "run"):
        return check_http(args)
    if role == "worker":
        return check_worker(pid)
    if role == "scheduler":
        return check_process(pid)
    return True, f"no check for `dtqs {' '.join(args)}`"


def main(argv: list[str]) -> int:
    pid = int(argv[1]) if len(argv) > 1 else 1
    healthy, reason = check(pid)
    print(("healthy: " if healthy else "unhealthy: ") + reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
