"""terraform/ (AWS): formatting, validation, `terraform test`, checkov, and the wiring.

The wiring tests parse the HCL with python-hcl2 and hold it against what dtqs really
serves and emits: the ALB's health-check path is answered by dtqs's API (200 on a Redis
with ``noeviction``, 503 otherwise), the worker autoscaling reads the metric that the
scheduler's CloudWatch EMF lines carry, the commands use real CLI options, and the
Redis URL the module builds is one dtqs accepts, over TLS with the AUTH token.

`terraform validate` and `terraform test` need the terraform CLI and a local AWS
provider mirror (``/opt/tf-plugins``, or $DTQS_TF_PLUGIN_DIR): they skip without them.
Everything else fails when a tool is missing. checkov runs from its own venv, built once
under the user's cache dir: its pins clash with this project's (it needs
``bc-python-hcl2``, which installs the same ``hcl2`` package as ``python-hcl2``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from falcon import testing

from dtqs.api.app import ApiState, api_client, create_app
from dtqs.runtime import emf, settings
from dtqs.runtime.cli import cli
from dtqs.runtime.client import Client

try:
    import hcl2
except ImportError:  # reported by the hcl fixture: a missing tool is a failure
    hcl2 = None

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
MODULE = TERRAFORM / "modules" / "dtqs"
EXAMPLE = TERRAFORM / "examples" / "complete"
PLUGIN_DIR = Path(os.environ.get("DTQS_TF_PLUGIN_DIR", "/opt/tf-plugins"))
AWS_MIRROR = PLUGIN_DIR / "registry.terraform.io" / "hashicorp" / "aws"

CHECKOV_VERSION = "3.3.30"
#: Every check the terraform skips inline (`#checkov:skip=ID:reason`), and why.
CHECKOV_SKIPS = {
    "CKV_AWS_338": "log retention of a year is the operator's cost decision",
    "CKV_AWS_378": "waitress serves plain HTTP inside the VPC",
    "CKV_AWS_394": "the AZ list is pinned or the first az_count names",
    "CKV2_AWS_28": "WAF is deployment-specific",
    "CKV2_AWS_57": "token rotation needs a coordinated redeploy",
}

MANIFEST = """\
version: 1
queues:
  default: {}
  emails: {}
functions:
  echo: {handler: functions/tasks.py:echo}
  mail: {handler: functions/tasks.py:echo, queue: emails}
"""
FILES = {"functions/tasks.py": "def echo(payload):\n    return payload\n"}


# --- helpers -----------------------------------------------------------------------


def tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: CI checks terraform/ with it", pytrace=False)
    return found


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def terraform_env(tmp_path: Path) -> dict[str, str]:
    """No prompts, no update checks, and no user CLI config (some images point
    TF_CLI_CONFIG_FILE at a file that does not exist)."""
    rc = tmp_path / "terraformrc"
    rc.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env.update(TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1")
    env["TF_CLI_CONFIG_FILE"] = str(rc)
    return env


def load_dir(path: Path) -> dict[str, list[Any]]:
    """All .tf files of one directory, merged by top-level key (resource, locals, ...)."""
    options = hcl2.SerializationOptions(
        with_comments=False, explicit_blocks=False, strip_string_quotes=True
    )
    merged: dict[str, list[Any]] = {}
    for file in sorted(path.glob("*.tf")):
        with file.open() as f:
            for key, blocks in hcl2.load(f, serialization_options=options).items():
                merged.setdefault(key, []).extend(blocks)
    return merged


class Module:
    """The parsed module: resource(type, name), local(name), variable(name)."""

    def __init__(self, doc: dict[str, list[Any]]) -> None:
        self.doc = doc
        self.locals = {k: v for block in doc.get("locals", []) for k, v in block.items()}

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        for block in self.doc["resource"]:
            if kind in block and name in block[kind]:
                return block[kind][name]
        raise KeyError(f"resource {kind}.{name}")

    def variable(self, name: str) -> dict[str, Any]:
        for block in self.doc["variable"]:
            if name in block:
                return block[name]
        raise KeyError(f"variable {name}")

    def local(self, name: str) -> Any:
        return self.locals[name]

    def resolve(self, value: Any) -> Any:
        """`${local.x}` -> the literal of local.x (one level, enough for the wiring)."""
        m = re.fullmatch(r"\$\{local\.(\w+)\}", value) if isinstance(value, str) else None
        return self.local(m.group(1)) if m else value


@pytest.fixture(scope="module")
def module() -> Module:
    if hcl2 is None:
        pytest.fail("python-hcl2 is not installed: pip install -e '.[test]'", pytrace=False)
    return Module(load_dir(MODULE))


def only(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(blocks) == 1, blocks
    return blocks[0]


# --- terraform, checkov ------------------------------------------------------------


def test_terraform_fmt(tmp_path):
    result = run([tool("terraform"), "fmt", "-check", "-recursive", "-diff", "terraform"], ROOT,
                 terraform_env(tmp_path))  # fmt: skip
    assert result.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{result.stdout}"


def aws_provider_5x() -> str | None:
    versions = sorted(p.name for p in AWS_MIRROR.glob("5.*") if p.is_dir())
    return versions[-1] if versions else None


@pytest.mark.timeout(600)
def test_terraform_validate_and_test_with_a_mocked_provider(tmp_path):
    """init from the local mirror, validate module and example, run the module's
    `terraform test` (mock_provider "aws": no credentials, nothing leaves the machine)."""
    if not shutil.which("terraform"):
        pytest.skip("no terraform CLI on this machine")
    if not aws_provider_5x():
        pytest.skip(f"no hashicorp/aws 5.x provider (~> 5.0) mirrored under {PLUGIN_DIR}")
    env = terraform_env(tmp_path)
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    for root in (copy / "modules" / "dtqs", copy / "examples" / "complete"):
        init = run(["terraform", "init", "-backend=false", f"-plugin-dir={PLUGIN_DIR}",
                    "-no-color"], root, env)  # fmt: skip
        assert init.returncode == 0, init.stdout + init.stderr
        validate = run(["terraform", "validate", "-no-color"], root, env)
        assert validate.returncode == 0, validate.stdout + validate.stderr
    tested = run(["terraform", "test", "-no-color"], copy / "modules" / "dtqs", env, timeout=540)
    runs = sum(len(re.findall(r'^run "', f.read_text(), re.M)) for f in MODULE.glob("tests/*.hcl"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert f"Success! {runs} passed, 0 failed." in tested.stdout, tested.stdout


def checkov_binary() -> Path:
    """checkov==CHECKOV_VERSION in a venv of its own, built on first use."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    venv = cache / "dtqs-ci" / f"checkov-{CHECKOV_VERSION}"
    binary, ready = venv / "bin" / "checkov", venv / ".installed"
    if ready.exists() and binary.exists():
        return binary
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         f"checkov=={CHECKOV_VERSION}"],
    ]  # fmt: skip
    for step in steps:
        done = run(step, ROOT, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"could not install checkov into {venv}:\n{done.stderr[-3000:]}")
    ready.write_text(CHECKOV_VERSION)
    return binary


@pytest.mark.timeout(1200)
def test_checkov_passes_with_only_the_documented_skips():
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")
    result = run([str(checkov_binary()), "-d", "terraform", "--framework", "terraform",
                  "--skip-download", "--quiet", "-o", "json"], ROOT, env)  # fmt: skip
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov did not report JSON (exit {result.returncode}):\n{result.stderr}")
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in report["results"].get("failed_checks", [])
    ]
    assert summary["failed"] == 0 and result.returncode == 0, "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] >= 100, summary  # the module was really scanned


def test_checkov_skips_are_few_and_explained():
    skips = re.findall(
        r"#checkov:skip=([A-Z0-9_]+):(.*)$",
        "\n".join(f.read_text() for f in TERRAFORM.rglob("*.tf")),
        re.M,
    )
    assert skips
    assert {check for check, _ in skips} <= set(CHECKOV_SKIPS)
    assert all(len(reason.strip()) >= 30 for _, reason in skips), skips


# --- the wiring, against dtqs itself -------------------------------------------------


@pytest.mark.redis
def test_alb_health_check_is_dtqs_readiness(module, project, redis_server):
    """The target group's path is dtqs's /readyz: 200 on a Redis that never evicts, 503
    once keys could be evicted, while liveness (/healthz, the image's check) stays 200."""
    tg = module.resource("aws_lb_target_group", "api")
    check = only(tg["health_check"])
    path = module.resolve(check["path"])
    assert path == "/readyz" and check["matcher"] == "200"
    assert module.resolve(tg["port"]) == module.local("api_port") == 8080

    _, port = redis_server("--maxmemory-policy", "noeviction")
    client = api_client(project(MANIFEST, FILES).manifest(), f"redis://127.0.0.1:{port}/0")
    api = testing.TestClient(create_app(ApiState(client)))
    try:
        ready = api.simulate_get(path)
        assert ready.status_code == 200 and ready.json["maxmemory_policy"] == "noeviction"
        redis.Redis(port=port).config_set("maxmemory-policy", "allkeys-lru")
        assert api.simulate_get(path).status_code == 503
        assert api.simulate_get("/healthz").status_code == 200
    finally:
        client.close()


def metric_stats(module: Module) -> list[dict[str, Any]]:
    policy = module.resource("aws_appautoscaling_policy", "worker_backlog")
    spec = only(only(policy["target_tracking_scaling_policy_configuration"])
                ["customized_metric_specification"])  # fmt: skip
    dynamic = [only(d["metrics"]["content"]) for d in spec["dynamic"] if "metrics" in d]
    return [only(only(m["metric_stat"])["metric"]) for m in dynamic]


@pytest.mark.redis
def test_autoscaling_reads_the_metric_the_scheduler_emits(module, project, redis_url, r):
    """Namespace, metric and dimension of the scaling policy are those of the EMF line
    that `dtqs scheduler` prints, for a real queue with a real backlog."""
    metric = only(metric_stats(module))
    namespace = module.resolve(metric["namespace"])
    name = module.resolve(metric["metric_name"])
    dimension = module.resolve(only(metric["dimensions"])["name"])
    assert (namespace, name, dimension) == (emf.NAMESPACE, "Backlog", emf.DIMENSION)
    assert name in emf.METRICS
    assert module.local("emf_env") == emf.ENV

    out = _Lines()
    with Client(redis_url=redis_url, config=project(MANIFEST, FILES).config) as client:
        client.submit("mail", {"to": "ada"})
        client.submit("mail", {"to": "bob"})
        assert emf.EmfEmitter(client, out=out).maybe_emit()  # type: ignore[arg-type]
    docs = {doc[dimension]: doc for doc in map(json.loads, out.lines)}
    (declared,) = docs["emails"]["_aws"]["CloudWatchMetrics"]
    assert declared["Namespace"] == namespace and declared["Dimensions"] == [[dimension]]
    assert name in {m["Name"] for m in declared["Metrics"]}
    assert docs["emails"][name] == 2 and docs["default"][name] == 0


class _Lines:
    """A text sink that keeps the lines written to it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.extend(text.splitlines())

    def flush(self) -> None:
        pass


def test_replication_group_is_multi_az_encrypted_and_never_evicts(module):
    group = module.resource("aws_elasticache_replication_group", "this")
    for flag in ("automatic_failover_enabled", "multi_az_enabled",
                 "at_rest_encryption_enabled", "transit_encryption_enabled"):  # fmt: skip
        assert group[flag] is True, flag
    assert group["auth_token"] == "${local.redis_auth_token}"
    assert module.resolve(group["port"]) == 6379
    params = module.resource("aws_elasticache_parameter_group", "this")["parameter"]
    assert {p["name"]: p["value"] for p in params} == {"maxmemory-policy": "noeviction"}
    assert module.variable("redis_node_count")["default"] >= 2


def test_redis_url_secret_is_a_tls_url_dtqs_and_redis_py_accept(module, project):
    """The module's format string, filled like terraform does (urlencode'd token), gives
    a URL dtqs takes from DTQS_REDIS_URL and redis-py opens over TLS with the token."""
    expr = module.local("redis_url")
    template = re.search(r'format\(\s*"([^"]+)"', expr).group(1)
    assert "urlencode(local.redis_auth_token)" in expr
    token = "t0k:en#with?odd%chars"
    url = template.replace("%d", "%s") % (quote(token, safe=""), "master.example.cache", 6379)
    manifest = project(MANIFEST, FILES).manifest()
    assert settings.redis_url(manifest, environ={"DTQS_REDIS_URL": url}) == url
    pool = redis.ConnectionPool.from_url(url)
    assert pool.connection_class is redis.SSLConnection
    kwargs = pool.connection_kwargs
    assert kwargs["password"] == token and kwargs.get("db", 0) == 0
    assert (kwargs["host"], kwargs["port"]) == ("master.example.cache", 6379)


def test_redis_url_and_tokens_reach_containers_as_secrets_only(module):
    secrets = module.local("container_secrets")
    assert secrets.startswith("${concat(") and '{name = "DTQS_REDIS_URL"' in secrets
    environment = module.variable("environment")
    assert "DTQS_REDIS_URL" in only(environment["validation"])["condition"]
    definitions = module.local("container_definitions")
    assert "secrets = local.container_secrets" in definitions
    policy = module.resource("aws_iam_role_policy", "execution")["policy"]
    assert "Resource = local.readable_secret_arns" in policy


def test_commands_are_real_dtqs_cli_options(module):
    commands = module.local("commands")
    worker = module.local("worker_command")
    listed = {
        "api": commands["api"],
        "scheduler": commands["scheduler"],
        "worker": re.findall(r'"([^"]+)"', worker.split("],", 1)[0]),
    }
    assert listed["worker"][:3] == ["dtqs", "worker", "--grace"]
    assert '"--processes"' in worker  # the optional part of the worker's command
    listed["worker"].append("--processes")
    for name, argv in listed.items():
        assert argv[:2] == ["dtqs", name]
        options = {o for p in cli.commands[name].params for o in p.opts}
        flags = {a for a in argv if a.startswith("--")}
        assert flags <= options, (name, flags - options)


def dockerfile_instruction(name: str) -> list[str]:
    """The JSON (exec form) argument of a Dockerfile instruction, e.g. ENTRYPOINT."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.findall(rf"^{name}\s+(?:--\S+\s+)*(?:CMD\s+)?(\[.*\])\s*$", text, re.M)
    assert found, f"no exec-form {name} in Dockerfile"
    return json.loads(found[-1])


def test_containers_keep_the_images_init_and_health_check(module):
    """The task definitions set entryPoint + command = the image's ENTRYPOINT + role, so
    tini stays PID 1 (SIGTERM reaches dtqs) and the image's health check still reads the
    role off PID 1's command line; ECS runs that check only when the task asks for it."""
    entry = module.local("entry_point")
    assert entry + ["dtqs"] == dockerfile_instruction("ENTRYPOINT")
    assert module.local("health_check")["command"] == [
        "CMD",
        *dockerfile_instruction("HEALTHCHECK"),
    ]
    definitions = module.local("container_definitions")
    assert "entryPoint = local.entry_point" in definitions
    assert "healthCheck = local.health_check" in definitions


def test_worker_stop_timeout_exceeds_grace_for_every_allowed_grace(module):
    """ECS sends SIGTERM, then SIGKILL after stopTimeout (at most 120 s on Fargate)."""
    assert module.local("worker_stop_timeout") == (
        "${min(var.worker_grace_seconds + local.stop_grace_margin, 120)}"
    )
    margin = module.local("stop_grace_margin")
    grace = module.variable("worker_grace_seconds")
    bound = re.search(r"var\.worker_grace_seconds <= (\d+)", only(grace["validation"])["condition"])
    highest = int(bound.group(1))
    assert grace["default"] == 30  # dtqs's own workers.grace default
    assert all(min(g + margin, 120) > g for g in range(1, highest + 1)) and highest < 120
    definitions = module.local("container_definitions")
    assert 'stopTimeout = svc == "worker" ? local.worker_stop_timeout' in definitions


def test_every_variable_is_described_and_inputs_are_validated(module):
    unvalidated = []
    for block in module.doc["variable"]:
        ((name, spec),) = block.items()
        assert len(spec.get("description", "")) > 20, name
        if spec["type"] not in ("bool", "${map(string)}") and "validation" not in spec:
            unvalidated.append(name)
    assert unvalidated == []


def test_providers_are_pinned(module):
    terraform = only(module.doc["terraform"])
    assert terraform["required_version"] == ">= 1.6"
    aws = only(terraform["required_providers"])["aws"]
    assert aws == {"source": "hashicorp/aws", "version": "~> 5.0"}
    example = only(load_dir(EXAMPLE)["terraform"])
    assert only(example["required_providers"])["aws"]["version"] == "~> 5.0"
