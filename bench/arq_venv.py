"""arq's own venv: arq 0.28 pins redis-py < 6, which kombu 5.7 (Celery) refuses.

Made once under bench/.venvs/arq (gitignored) and reused; without network it cannot be
made, and arq is then reported as skipped with the reason.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

#: Pinned like the peer measurements before dtqs existed.
ARQ_REQUIREMENTS = ("arq==0.28.0", "hiredis>=3")
VENV_DIR = Path(__file__).resolve().parent / ".venvs" / "arq"
#: Written after a complete install, so a half-made venv is made again.
_STAMP = VENV_DIR / "bench-ready"


class ArqVenvError(RuntimeError):
    """The arq venv could not be made (no network, pip failed)."""


def arq_python(log: bool = True) -> Path:
    """The venv's python, making the venv first if needed.

    Raises:
        ArqVenvError: when it cannot be made.
    """
    python = VENV_DIR / "bin" / "python"
    if _STAMP.exists() and _STAMP.read_text() == " ".join(ARQ_REQUIREMENTS):
        return python
    if log:
        print(
            f"bench: making arq's venv in {VENV_DIR} (first use; {' '.join(ARQ_REQUIREMENTS)})",
            file=sys.stderr,
            flush=True,
        )
    try:
        venv.EnvBuilder(clear=True, with_pip=True).create(VENV_DIR)
        done = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *ARQ_REQUIREMENTS,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ArqVenvError(f"could not make {VENV_DIR}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ArqVenvError(f"pip install {' '.join(ARQ_REQUIREMENTS)} failed: {' '.join(tail)}")
    _STAMP.write_text(" ".join(ARQ_REQUIREMENTS))
    return python
