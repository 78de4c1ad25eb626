"""Lint, format and types, run by the test suite so that `pytest` is CI's one command.

The tools come with the test extra, pinned (their verdicts change between releases);
their settings are in pyproject.toml.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The folders that install under the `dtqs` import name (pyproject: package-dir).
PACKAGE_DIRS = {"runtime": "runtime", "api": "api", "schemas": "schemas"}


def run(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_ruff_check() -> None:
    run("ruff", "check", "--no-cache", ".")


def test_ruff_format() -> None:
    run("ruff", "format", "--check", "--no-cache", ".")


def link_tree(root: Path) -> Path:
    """`root/dtqs/{runtime,api,schemas}` as links to the repo's folders.

    NOTE: the folders install as dtqs.runtime, dtqs.api, dtqs.schemas (a mapping mypy
    cannot read from a default editable install); links to whole folders keep new
    files visible without re-installing in setuptools' strict editable mode.
    """
    package = root / "dtqs"
    package.mkdir(parents=True)
    for name in ("__init__.py", "py.typed"):
        (package / name).symlink_to(REPO / "dtqs" / name)
    for name, folder in PACKAGE_DIRS.items():
        (package / name).symlink_to(REPO / folder, target_is_directory=True)
    return root


@pytest.mark.timeout(600)
def test_mypy_strict_on_runtime_and_api(tmp_path: Path) -> None:
    root = link_tree(tmp_path / "src")
    env = {**os.environ, "MYPYPATH": str(root)}
    out = run(
        "mypy", "--config-file", str(REPO / "pyproject.toml"), "--cache-dir",
        str(tmp_path / "cache"), "-p", "dtqs.runtime", "-p", "dtqs.api",
        cwd=root, env=env,
    )  # fmt: skip
    assert "Success" in out
