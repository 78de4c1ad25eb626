"""A cap on the test process's address space while hostile input is loaded.

Regression tests of memory bombs (a billion-laughs manifest, `schema: /dev/zero`) must
fail, not take the machine down, when run against code without the bounds: under
the cap the old code's runaway allocation raises MemoryError, which fails the test.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager


def _address_space_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextmanager
def memory_cap(extra_mib: int = 512) -> Iterator[None]:
    """Allow at most `extra_mib` MiB more address space inside the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space_bytes() + extra_mib * 2**20
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
