"""terraform/ (AWS): formatting, validation, `terraform test`, checkov, and the wiring.

The wiring tests parse the HCL with python-hcl2 and hold it against what dtqs really
serves and emits: the ALB's health check is dtqs's liveness (200 while Redis is down,
when submissions get 503 with Retry-After), the ALB forwards every public route of the
API and none of /metrics and /openapi.json, the worker autoscaling and the alarms read
metrics that the scheduler's CloudWatch EMF lines carry (with the deployment's own
Deployment dimension) or that AWS documents, the commands use real CLI options, a busy
worker asks the (fake, loopback) ECS agent for scale-in protection under the setting the
module passes, and the Redis URL the module builds is one dtqs accepts, over TLS.

`terraform validate` and `terraform test` need the terraform CLI and a local AWS
provider mirror (``/opt/tf-plugins``, or $DTQS_TF_PLUGIN_DIR): they skip without them.
Everything else fails when a tool is missing. checkov runs from its own venv, built once
under the user's cache dir: its pins clash with this project's (it needs
``bc-python-hcl2``, which installs the same ``hcl2`` package as ``python-hcl2``).
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import falcon.inspect
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
    "CKV2_AWS_28": "the WAF is optional (enable_waf): its rate depends on the producers",
    "CKV2_AWS_57": "token rotation needs a coordinated redeploy",
    "CKV2_AWS_76": "the anonymous-IP list blocks cloud hosts, where producers run",
}

#: The AWS metrics the alarms may read, with the dimensions AWS documents for them:
#: docs.aws.amazon.com/AmazonElastiCache/latest/dg/CacheMetrics.Redis.html (per node:
#: CacheClusterId), .../AmazonCloudWatch/latest/monitoring/Container-Insights-metrics-ECS.html
#: (ClusterName, ServiceName), .../elasticloadbalancing/latest/application/
#: load-balancer-cloudwatch-metrics.html (LoadBalancer).
AWS_METRICS = {
    ("AWS/ElastiCache", "DatabaseMemoryUsagePercentage"): ("CacheClusterId",),
    ("AWS/ElastiCache", "ReplicationLag"): ("CacheClusterId",),
    ("ECS/ContainerInsights", "RunningTaskCount"): ("ClusterName", "ServiceName"),
    ("ECS/ContainerInsights", "DesiredTaskCount"): ("ClusterName", "ServiceName"),
    ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"): ("LoadBalancer",),
    ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"): ("LoadBalancer",),
}

#: The routes the public listener must not forward: each scrape of /metrics reads Redis
#: and writes to it, /openapi.json lists every function; both are for the inside.
PRIVATE_ROUTES = ("/metrics", "/openapi.json")

#: Options of `dtqs api` the module must set: the drain and an idle timeout above the ALB's.
API_STOP_OPTIONS = {"--idle-timeout", "--drain"}

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
def test_alb_health_check_is_liveness_that_survives_a_redis_outage(module, project, redis_server):
    """ECS replaces a task whose ELB health check fails, so the target group checks
    /healthz: it stays 200 while Redis is gone, and clients get dtqs's 503 with
    Retry-After meanwhile (an ALB has no readiness of its own to route around it)."""
    tg = module.resource("aws_lb_target_group", "api")
    check = only(tg["health_check"])
    path = module.resolve(check["path"])
    assert path == "/healthz" != "/readyz" and check["matcher"] == "200"
    assert module.resolve(tg["port"]) == module.local("api_port") == 8080
    assert check["timeout"] >= 10 and check["unhealthy_threshold"] * check["interval"] >= 60

    server, port = redis_server("--maxmemory-policy", "noeviction")
    client = api_client(project(MANIFEST, FILES).manifest(), f"redis://127.0.0.1:{port}/0")
    api = testing.TestClient(create_app(ApiState(client)))
    try:
        assert api.simulate_get(path).status_code == 200
        assert api.simulate_post("/v1/tasks", json={"function": "echo"}).status_code == 202
        server.kill()
        server.wait(10)
        assert api.simulate_get(path).status_code == 200
        refused = api.simulate_post("/v1/tasks", json={"function": "echo"})
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
    finally:
        client.close()


def alb_matches(pattern: str, path: str) -> bool:
    """An ALB path pattern: * is any run of characters, ? one; case-sensitive."""
    return fnmatch.fnmatchcase(path, pattern.replace("[", "[[]"))


def test_public_listener_forwards_the_api_and_404s_metrics_and_openapi(module, project):
    """Every route dtqs serves is forwarded by the listener's rules, except /metrics
    and /openapi.json, which fall through to the listener's own 404."""
    groups = module.local("public_path_groups")
    assert all(1 <= len(g) <= 5 for g in groups)  # an ALB rule takes 5 condition values
    patterns = [p for g in groups for p in g]
    api = create_app(
        ApiState(api_client(project(MANIFEST, FILES).manifest(), "redis://127.0.0.1:1/0"))
    )
    routes = {re.sub(r"\{[^}]+\}", "x1", r.path) for r in falcon.inspect.inspect_routes(api)}
    assert set(PRIVATE_ROUTES) <= routes  # dtqs serves them: the ALB must hide them
    for route in routes:
        forwarded = any(alb_matches(p, route) for p in patterns)
        assert forwarded == (route not in PRIVATE_ROUTES), route
    for hidden in (*PRIVATE_ROUTES, "/metrics/", "/%6Detrics", "/v2/tasks"):
        assert not any(alb_matches(p, hidden) for p in patterns), hidden
    rule = module.resource("aws_lb_listener_rule", "public")
    assert only(rule["action"])["type"] == "forward"
    https = only(module.resource("aws_lb_listener", "https")["default_action"])
    assert (
        https["type"] == "fixed-response" and only(https["fixed_response"])["status_code"] == "404"
    )


def metric_stats(module: Module) -> list[dict[str, Any]]:
    policy = module.resource("aws_appautoscaling_policy", "worker_load")
    spec = only(only(policy["target_tracking_scaling_policy_configuration"])
                ["customized_metric_specification"])  # fmt: skip
    dynamic = [only(d["metrics"]["content"]) for d in spec["dynamic"] if "metrics" in d]
    return [only(only(m["metric_stat"])["metric"]) for m in dynamic]


def scaling_expression(module: Module) -> str:
    policy = module.resource("aws_appautoscaling_policy", "worker_load")
    spec = only(only(policy["target_tracking_scaling_policy_configuration"])
                ["customized_metric_specification"])  # fmt: skip
    (returned,) = [m for m in spec["metrics"] if m["return_data"] is True]
    return returned["expression"]


@pytest.mark.redis
def test_autoscaling_reads_the_metrics_the_scheduler_emits(module, project, redis_url, r):
    """Namespace, metrics and dimensions of the scaling policy are those of the EMF lines
    that `dtqs scheduler` prints: Backlog and InFlight of each queue, for real tasks."""
    metric = only(metric_stats(module))
    assert module.resolve(metric["namespace"]) == emf.NAMESPACE
    assert module.resolve(metric["metric_name"]) == "${metrics.value.metric}"
    names = {module.local("backlog_metric"), module.local("in_flight_metric")}
    assert names == {"Backlog", "InFlight"} and names <= set(emf.METRICS)
    series = _source("autoscaling.tf")  # each queue's two series, in local.load_series
    assert (
        "metric = local.backlog_metric }" in series
        and "metric = local.in_flight_metric }" in series
    )
    dims = [module.resolve(d["name"]) for d in metric["dimensions"]]
    assert dims == [module.local("deployment_dimension"), emf.DIMENSION] == ["Deployment", "Queue"]
    assert module.local("emf_env") == emf.ENV
    # missing data must stay missing: FILL(…, 0) would read "schedulers down" as idle
    assert "FILL" not in scaling_expression(module) + module.local("load_sum")

    out = _Lines()
    with Client(redis_url=redis_url, config=project(MANIFEST, FILES).config) as client:
        client.submit("mail", {"to": "ada"})
        client.submit("mail", {"to": "bob"})
        assert emf.EmfEmitter(client, out=out).maybe_emit()  # type: ignore[arg-type]
    docs = {doc[emf.DIMENSION]: doc for doc in map(json.loads, out.lines)}
    (declared,) = docs["emails"]["_aws"]["CloudWatchMetrics"]
    assert declared["Namespace"] == emf.NAMESPACE
    assert emf.DIMENSION in only(declared["Dimensions"])
    assert names <= {m["Name"] for m in declared["Metrics"]}
    assert docs["emails"]["Backlog"] == 2 and docs["default"]["Backlog"] == 0
    assert docs["emails"]["InFlight"] == 0


def _source(name: str) -> str:
    return (MODULE / name).read_text()


def _emf_documents(text: str) -> list[dict[str, Any]]:
    docs = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs


@pytest.mark.redis
def test_scheduler_publishes_the_deployment_dimension_the_module_matches(
    module, project, redis_url, r, procs
):
    """`dtqs scheduler` with the environment the module gives it (DTQS_CLOUDWATCH_EMF=1,
    DTQS_DEPLOYMENT=<name>) prints lines with Dimensions [["Deployment", "Queue"]] and
    the deployment's name: the series the scaling policy and the alarms read."""
    environment = module.local("environments")["scheduler"]
    assert "(local.deployment_env) = var.name" in environment
    assert '(local.emf_env) = "1"' in environment
    p = project(MANIFEST, FILES)
    env = procs.env(
        redis_url, **{module.local("emf_env"): "1", module.local("deployment_env"): "staging"}
    )
    scheduler = procs.spawn(["scheduler", "--log-level", "warning"], p.root, env)
    deadline = time.monotonic() + 30
    while not _emf_documents(procs.output(scheduler)) and time.monotonic() < deadline:
        assert scheduler.poll() is None, procs.output(scheduler)[-3000:]
        time.sleep(0.2)
    docs = _emf_documents(procs.output(scheduler))
    assert {d["Queue"] for d in docs} >= {"default", "emails"}, procs.output(scheduler)[-3000:]
    for doc in docs:
        (declared,) = doc["_aws"]["CloudWatchMetrics"]
        assert declared["Dimensions"] == [["Deployment", "Queue"]]
        assert doc["Deployment"] == "staging"


class _FakeEcsAgent(http.server.ThreadingHTTPServer):
    """The ECS agent's task-protection endpoint, on loopback: records every PUT."""

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/task-protection/v1/state":
                    agent.states.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"protection": {}}')

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.mark.redis
def test_busy_worker_asks_for_scale_in_protection_for_the_minutes_the_module_sets(
    module, project, redis_url, r, procs
):
    """With the variable the module sets (DTQS_SCALE_IN_PROTECTION_MINUTES) and the
    ECS_AGENT_URI that ECS sets, a worker holding a task PUTs protection for that many
    minutes, and releases it once idle."""
    assert (
        "(local.protection_env) = tostring(var.worker_scale_in_protection_minutes)"
        in (module.local("environments")["worker"])
    )
    slow = {"functions/tasks.py": "import time\n\ndef echo(payload):\n    time.sleep(2)\n"}
    p = project(MANIFEST, slow)
    agent = _FakeEcsAgent()
    threading.Thread(target=agent.serve_forever, daemon=True).start()
    try:
        env = procs.env(
            redis_url,
            ECS_AGENT_URI=f"http://127.0.0.1:{agent.server_address[1]}",
            **{module.local("protection_env"): "7"},
        )
        worker = procs.spawn(["worker", "--processes", "1", "--queues", "default"], p.root, env)
        with Client(redis_url=redis_url, config=p.config) as client:
            task_id = client.submit("echo", {})
            assert client.wait(task_id, timeout=30).state == "succeeded", procs.output(worker)
        deadline = time.monotonic() + 5  # the release follows the task's end
        while time.monotonic() < deadline:
            flags = [s.get("ProtectionEnabled") for s in agent.states]
            if True in flags and False in flags[flags.index(True) :]:
                break
            time.sleep(0.1)
        assert worker.poll() is None, procs.output(worker)[-3000:]
        states = list(agent.states)
        on = [s for s in states if s.get("ProtectionEnabled") is True]
        assert on and all(s.get("ExpiresInMinutes") == 7 for s in on), states
        first_on = states.index(on[0])
        assert any(s == {"ProtectionEnabled": False} for s in states[first_on:]), states
    finally:
        agent.shutdown()
        agent.server_close()


class _Lines:
    """A text sink that keeps the lines written to it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.extend(text.splitlines())

    def flush(self) -> None:
        pass


def test_alarms_read_metrics_that_exist(module):
    """Each alarm names a metric from local.alarm_metrics; the dtqs ones are metrics the
    scheduler's EMF lines carry (with the Deployment and Queue dimensions), the AWS ones
    metrics and dimensions AWS documents."""
    catalog = module.local("alarm_metrics")
    for key, spec in catalog.items():
        namespace, name = module.resolve(spec["namespace"]), module.resolve(spec["name"])
        dims = tuple(module.resolve(d) for d in spec["dimensions"])
        if namespace == emf.NAMESPACE:
            assert name in emf.METRICS, key
            assert dims == ("Deployment", emf.DIMENSION), key
        else:
            assert AWS_METRICS.get((namespace, name)) == dims, (key, namespace, name, dims)

    alarms = {}
    for block in module.doc["resource"]:
        alarms.update(block.get("aws_cloudwatch_metric_alarm", {}))
    assert len(alarms) == 7
    used = set()
    for alarm_name, alarm in alarms.items():
        metrics = [alarm] if "metric_name" in alarm else [
            only(q["metric"]) for q in alarm["metric_query"] if "metric" in q
        ]  # fmt: skip
        assert metrics, alarm_name
        for metric in metrics:
            ref = re.fullmatch(r"\$\{local\.alarm_metrics\.(\w+)\.name\}", metric["metric_name"])
            assert ref, (alarm_name, metric["metric_name"])  # every alarm reads the catalog
            key = ref.group(1)
            used.add(key)
            assert metric["namespace"] == f"${{local.alarm_metrics.{key}.namespace}}"
            dims = [re.sub(r"^\$\{\((.*)\)\}$", r"${\1}", d) for d in metric["dimensions"]]
            assert dims == catalog[key]["dimensions"], (alarm_name, dims)
        assert alarm["alarm_actions"] == alarm["ok_actions"] == "${local.alarm_actions}"
    assert used == set(catalog)
    assert {"redis_memory", "redis_replication_lag", "running_tasks", "target_5xx", "elb_5xx",
            "oldest_task_age"} <= used  # fmt: skip
    # Dead letters: the EMF lines carry no dead-letter count, so no alarm can read one.
    assert not any("dead" in n.lower() for n in emf.METRICS)


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


def command_flags(module: Module) -> dict[str, set[str]]:
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
    return {name: {a for a in argv if a.startswith("--")} for name, argv in listed.items()}


def cli_options(name: str) -> set[str]:
    return {o for p in cli.commands[name].params for o in p.opts}


def test_commands_are_real_dtqs_cli_options(module):
    for name, flags in command_flags(module).items():
        assert flags <= cli_options(name), (name, flags - cli_options(name))


def test_api_command_sets_drain_and_an_idle_timeout_above_the_albs(module):
    """waitress must not close idle connections before the ALB does (502s on reuse),
    and ECS's stopTimeout must cover --drain."""
    assert API_STOP_OPTIONS <= command_flags(module)["api"] <= cli_options("api")
    api = module.local("commands")["api"]
    assert api[api.index("--idle-timeout") + 1] == "${tostring(var.api_idle_timeout_seconds)}"
    assert api[api.index("--drain") + 1] == "${tostring(var.api_drain_seconds)}"
    assert (
        module.variable("api_idle_timeout_seconds")["default"]
        > (module.variable("alb_idle_timeout_seconds")["default"])
    )
    assert module.resource("aws_lb", "api")["idle_timeout"] == "${var.alb_idle_timeout_seconds}"
    option = next(p for p in cli.commands["api"].params if "--idle-timeout" in p.opts)
    assert option.default is None or float(option.default) > 60  # dtqs's own default too


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
    """ECS sends SIGTERM, then SIGKILL after stopTimeout (at most 120 s on Fargate). By
    default stopTimeout = grace + 15; one given explicitly must leave 5 s after the grace
    to release unfinished tasks (a precondition; terraform test checks it refuses)."""
    assert module.local("worker_stop_timeout") == (
        "${coalesce(var.worker_stop_timeout_seconds, "
        "min(var.worker_grace_seconds + local.stop_grace_margin, 120))}"
    )
    margin = module.local("stop_grace_margin")
    grace = module.variable("worker_grace_seconds")
    bound = re.search(r"var\.worker_grace_seconds <= (\d+)", only(grace["validation"])["condition"])
    highest = int(bound.group(1))
    release = module.local("release_margin")
    assert grace["default"] == 30  # dtqs's own workers.grace default
    assert all(min(g + margin, 120) >= g + release for g in range(1, highest + 1))
    assert highest + release <= 120
    preconditions = only(module.resource("terraform_data", "inputs")["lifecycle"])["precondition"]
    conditions = [c["condition"] for c in preconditions]
    assert (
        "${local.worker_stop_timeout >= var.worker_grace_seconds + local.release_margin}"
        in conditions
    )
    assert "${local.api_stop_timeout > var.api_drain_seconds}" in conditions
    assert "${var.api_idle_timeout_seconds > var.alb_idle_timeout_seconds}" in conditions
    assert "${var.certificate_arn != null || var.allow_plain_http}" in conditions
    definitions = module.local("container_definitions")
    assert "stopTimeout = local.stop_timeouts[svc]" in definitions
    assert module.local("stop_timeouts")["worker"] == "${local.worker_stop_timeout}"
    assert module.local("stop_timeouts")["api"] == "${local.api_stop_timeout}"


def test_only_the_autoscaled_worker_service_ignores_its_desired_count(module):
    """api and scheduler follow api_desired_count and scheduler_count after the first
    apply (terraform test: counts_follow_their_variables); autoscaling owns the worker's."""
    fixed = module.resource("aws_ecs_service", "this")
    assert "lifecycle" not in fixed
    assert module.local("fixed_counts") == {
        "api": "${var.api_desired_count}",
        "scheduler": "${var.scheduler_count}",
    }
    worker = module.resource("aws_ecs_service", "worker")
    assert only(worker["lifecycle"])["ignore_changes"] == ["desired_count"]
    target = module.resource("aws_appautoscaling_target", "worker")
    assert "aws_ecs_service.worker.name" in target["resource_id"]


def test_redis_keeps_a_final_snapshot_and_ships_engine_and_slow_logs(module):
    group = module.resource("aws_elasticache_replication_group", "this")
    assert group["final_snapshot_identifier"] == "${local.redis_final_snapshot}"
    assert group["snapshot_retention_limit"] == "${var.redis_snapshot_retention_days}"
    assert module.variable("redis_snapshot_retention_days")["default"] >= 7
    assert group["snapshot_window"] == "${var.redis_snapshot_window}"
    assert set(module.local("redis_logs")) == {"engine-log", "slow-log"}
    logs = module.resource("aws_cloudwatch_log_group", "redis")
    assert logs["kms_key_id"] == "${local.kms_key_arn}"
    # No prevent_destroy in the module (see terraform/README.md, "Protecting the broker").
    assert "prevent_destroy" not in json.dumps(group.get("lifecycle", []))


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
