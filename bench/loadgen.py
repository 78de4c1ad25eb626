"""HTTP load generators: wrk when it is installed, else a Python one on raw sockets.

Both keep C connections open (keep-alive), each sending the same POST back to back for a
fixed time, and report requests/s, p50/p99 latency and the non-2xx count.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: wrk threads: one per core of this 2-core machine, as in the peer measurements.
WRK_THREADS = 2


@dataclass(frozen=True)
class Load:
    requests: int  #: completed with a 2xx
    errors: int  #: non-2xx answers and socket errors
    seconds: float
    p50_ms: float
    p99_ms: float
    tool: str

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def available_tool(choice: str) -> str:
    """'wrk' or 'python' for --loadgen auto|wrk|python."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise SystemExit("bench: --loadgen wrk, but wrk is not installed (apt-get install wrk)")
    return choice


def run_load(
    tool: str, port: int, path: str, body: bytes, seconds: float, connections: int, scratch: Path
) -> Load:
    if tool == "wrk":
        return _wrk(port, path, body, seconds, connections, scratch)
    return asyncio.run(_python_load(port, path, body, seconds, connections))


# -- wrk ----------------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _duration_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNIT_MS[m.group(2)] if m else float("nan")


def _wrk(
    port: int, path: str, body: bytes, seconds: float, connections: int, scratch: Path
) -> Load:
    script = scratch / "post.lua"
    # NOTE: a Lua long string takes the JSON body as is (it never contains "]==]").
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    argv = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if total is None:
        raise RuntimeError(f"wrk printed no result: {out.strip()[-300:]}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in sock.groups()) if sock else 0
    )
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M))
    elapsed = _duration_ms(total.group(2) + total.group(3)) / 1000
    return Load(
        int(total.group(1)) - (int(non2xx.group(1)) if non2xx else 0),
        errors,
        elapsed,
        _duration_ms(pct.get("50", "")),
        _duration_ms(pct.get("99", "")),
        f"wrk -t{WRK_THREADS} -c{connections} -d{seconds:g}s",
    )


# -- Python -------------------------------------------------------------------------


async def _python_load(port: int, path: str, body: bytes, seconds: float, connections: int) -> Load:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(_connection(port, request, deadline, latencies, counts) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, round(p / 100 * (len(latencies) - 1)))] * 1000

    tool = f"python asyncio loadgen -c{connections} -d{seconds:g}s"
    return Load(counts["ok"], counts["errors"], elapsed, pct(50), pct(99), tool)


async def _connection(
    port: int, request: bytes, deadline: float, latencies: list[float], counts: dict[str, int]
) -> None:
    writer = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            counts["errors"] += 1
            writer = None
            await asyncio.sleep(0.01)
            continue
        latencies.append(time.perf_counter() - sent)
        status = int(head[9:12])
        counts["ok" if 200 <= status < 300 else "errors"] += 1
        if re.search(rb"(?i)\r\nconnection:\s*close", head):
            writer.close()
            writer = None
    if writer is not None:
        writer.close()
