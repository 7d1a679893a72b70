"""The Helm chart (deploy/helm/scoring-worker) against the code.

`helm lint` and `helm template` run with the default values and with
ci/all-features-values.yaml; the rendered objects are parsed and cross-checked with what
the processes really read and serve: the ConfigMap's TOML files and the containers'
arguments go through the CLI's own parser and settings loader, probe paths are asked of
the real /healthz and /readyz server. helm is the binary `make tools` builds (its version
is the Makefile's HELM_VERSION), or one on PATH. No cluster, no network.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.unit.helpers import tool_missing
from worker import cli, config, settings_sources
from worker.monitor.alerts import parse_rules
from worker.monitor_app.settings import MonitorSettings
from worker.probes import Health, serve

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "scoring-worker"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
CONFIG_DIR = "/etc/scoring-worker"
RELEASE = "rel"
VARIANTS = {"default": (), "all-features": ("-f", str(ALL_FEATURES))}
Objects = list[dict[str, Any]]


# -- helm ---------------------------------------------------------------------------------------


def helm_version() -> str:
    m = re.search(r"^HELM_VERSION\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert m, "the Makefile has no HELM_VERSION"
    return m.group(1)


@functools.cache
def helm() -> str:
    cached = Path.home() / ".cache" / "scoring-worker" / f"helm-{helm_version()}" / "bin" / "helm"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    on_path = shutil.which("helm")
    if on_path is None:
        tool_missing(f"helm is not installed ({cached} is missing, none on PATH): "
                    "run `make tools` (it builds helm once from the Go module proxy)")
    return on_path


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HELM_NAMESPACE": "scoring"})


@functools.cache
def rendered_text(*args: str) -> str:
    r = run_helm("template", RELEASE, str(CHART), *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


@functools.cache
def rendered(*args: str) -> tuple[dict[str, Any], ...]:
    docs = [d for d in yaml.safe_load_all(rendered_text(*args)) if d]
    assert all(isinstance(d, dict) and "kind" in d for d in docs)
    return tuple(docs)


def render_fails(*args: str) -> str:
    """stderr of a `helm template` that must fail."""
    r = run_helm("template", RELEASE, str(CHART), *args)
    assert r.returncode != 0, f"rendered although it must not: {args}"
    return r.stderr


def objects(docs: tuple[dict[str, Any], ...], kind: str) -> Objects:
    return [d for d in docs if d["kind"] == kind]


def one(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    found = objects(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = deep_merge(out[k], v) if both else v
    return out


def values(variant: str) -> dict[str, Any]:
    """The values a variant renders with (values.yaml, then the variant's file)."""
    data = yaml.safe_load((CHART / "values.yaml").read_text())
    if variant == "all-features":
        data = deep_merge(data, yaml.safe_load(ALL_FEATURES.read_text()))
    assert isinstance(data, dict)
    return data


# -- the pods, as the kubelet would start them ----------------------------------------------


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    assert isinstance(c, dict)
    return c


def workloads(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    """The worker's and the monitor's workload, whatever their kind, by component label."""
    found = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs
             if d["kind"] in {"Deployment", "StatefulSet"}}
    assert sorted(found) == ["monitor", "worker"], sorted(found)
    assert found["monitor"]["kind"] == "StatefulSet"
    return {"worker": found["worker"], "monitor": found["monitor"]}


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args and env values."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)),
                  text)


def container_env(c: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment; a secretKeyRef becomes a marker naming its key."""
    env: dict[str, str] = {}
    for item in c.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
        elif "secretKeyRef" in item["valueFrom"]:
            env[item["name"]] = f"<secret {item['valueFrom']['secretKeyRef']['key']}>"
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", item
            env[item["name"]] = pod_name
    return env


@dataclasses.dataclass
class Started:
    """A container's command line, environment and settings, loaded by the CLI's code."""

    command: str
    args: list[str]
    env: dict[str, str]
    settings: Any
    toml: dict[str, Any]


def start(docs: tuple[dict[str, Any], ...], component: str, tmp: Path,
          pod_name: str = "pod-0") -> Started:
    workload = workloads(docs)[component]
    c = container(workload, component)
    cm = one(docs, "ConfigMap")
    (config_volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == "config"]
    assert config_volume["configMap"]["name"] == cm["metadata"]["name"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "config"]
    assert mount["mountPath"] == CONFIG_DIR and mount.get("readOnly") is True
    for item in config_volume["configMap"]["items"]:
        (tmp / item["path"]).write_text(cm["data"][item["key"]])
    env = container_env(c, pod_name)
    args = [expand(a, env).replace(CONFIG_DIR, str(tmp)) for a in c["args"]]
    ns = cli.build_parser().parse_args(args)  # every flag must be one the CLI knows
    assert ns.config is not None and ns.config.is_file(), "the container reads no config file"
    toml = tomllib.loads(ns.config.read_text())
    if ns.command == "run":
        settings: Any = config.load(ns.config, env, vars(ns), ns.kafka)
    else:
        settings = config.load_into(MonitorSettings, ns.config, env, vars(ns), ns.kafka,
                                    tables=("alerts",))
        if "alerts" in toml:
            parse_rules(toml["alerts"])
    return Started(ns.command, args, env, settings, toml)


def field_default(cls: type[Any], name: str) -> Any:
    (f,) = [f for f in dataclasses.fields(cls) if f.name == name]
    assert f.default is not dataclasses.MISSING
    return f.default


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


# -- lint and render ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_helm_lint_strict(name: str) -> None:
    r = run_helm("lint", "--strict", str(CHART), *VARIANTS[name])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 chart(s) failed" in r.stdout


def test_helm_is_the_version_make_tools_builds() -> None:
    r = run_helm("version", "--short")
    assert r.returncode == 0, r.stderr
    if helm() != shutil.which("helm"):
        assert r.stdout.strip() == helm_version()


def test_every_object_renders_with_labels_and_selectors_that_match(variant: str) -> None:
    docs = rendered(*VARIANTS[variant])
    kinds = sorted(d["kind"] for d in docs)
    expected = ["ConfigMap", "Deployment", "PodDisruptionBudget", "PodDisruptionBudget",
                "Service", "Service", "StatefulSet"]
    if variant == "all-features":
        expected += ["PersistentVolumeClaim", "ScaledObject", "Secret", "ServiceMonitor",
                     "ServiceMonitor", "TriggerAuthentication"]
    assert kinds == sorted(expected)
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, d["metadata"]["name"]
        assert len(d["metadata"]["name"]) <= 63
    pods = {name: w["spec"]["template"]["metadata"]["labels"]
            for name, w in workloads(docs).items()}
    for name, w in workloads(docs).items():
        assert w["spec"]["selector"]["matchLabels"].items() <= pods[name].items()
    for svc in objects(docs, "Service"):
        assert [n for n, p in pods.items() if svc["spec"]["selector"].items() <= p.items()] == [
            svc["metadata"]["labels"]["app.kubernetes.io/component"]]
    for pdb in objects(docs, "PodDisruptionBudget"):
        selected = [n for n, p in pods.items()
                    if pdb["spec"]["selector"]["matchLabels"].items() <= p.items()]
        assert selected == [pdb["metadata"]["labels"]["app.kubernetes.io/component"]]
        assert "maxUnavailable" in pdb["spec"] and "minAvailable" not in pdb["spec"]


# -- settings: the ConfigMap's TOML files and the command lines ---------------------------------


def test_config_toml_keys_are_settings_of_the_process_that_reads_them(
    variant: str, tmp_path: Path
) -> None:
    docs = rendered(*VARIANTS[variant])
    for workload in workloads(docs).values():
        # Service links would inject SCORING_<SERVICE>_PORT variables the settings loader reads.
        assert pod_spec(workload)["enableServiceLinks"] is False
    for component, cls, tables in (("worker", config.Settings, {"kafka"}),
                                   ("monitor", MonitorSettings, {"kafka", "alerts"})):
        started = start(docs, component, tmp_path)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(started.toml) - set(fields) - tables
        assert not unknown, f"{component}: not settings of {cls.__name__}: {sorted(unknown)}"
        for key, value in started.toml.items():
            if key in tables:
                continue
            default = fields[key].default
            kind = str if default is dataclasses.MISSING else type(default)
            # A whole number is fine for a float setting (the loader converts it).
            ok = type(value) in ((int, float) if kind is float else (kind,))
            assert ok, f"{component}.{key} = {value!r} is not a {kind.__name__}"
        kafka = started.toml.get("kafka", {})
        assert all(isinstance(v, str) for v in kafka.values()), kafka
        # [kafka] keys are librdkafka properties: dotted lower-case names, never a setting.
        assert all(re.fullmatch(r"[a-z0-9]+(\.[a-z0-9_]+)+", k) for k in kafka), kafka
        assert started.settings.kafka.keys() >= kafka.keys()
        assert started.command == ("run" if component == "worker" else "monitor")


def test_chart_and_code_agree_on_the_settings_the_chart_sets(tmp_path: Path) -> None:
    docs = rendered()
    v = values("default")
    worker = start(docs, "worker", tmp_path).settings
    assert worker.bootstrap == v["kafka"]["bootstrap"]
    assert worker.model == f"{v['models']['mountPath']}/{v['models']['name']}"
    assert worker.metrics_port == field_default(config.Settings, "metrics_port")
    for key, value in v["worker"]["config"].items():
        assert getattr(worker, key) == value, key
    monitor = start(docs, "monitor", tmp_path).settings
    assert monitor.bootstrap == v["kafka"]["bootstrap"]
    assert monitor.partitions == v["monitor"]["partitions"]
    assert monitor.metrics_port == field_default(MonitorSettings, "metrics_port")
    for key, value in v["monitor"]["config"].items():
        assert getattr(monitor, key) == value, key


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (("--set", "worker.config.bootstrap=x:9092"), "worker.config.bootstrap is set by"),
        (("--set", "worker.config.model=/m"), "worker.config.model is set by the chart"),
        (("--set", "monitor.config.instance_id=m"), "monitor.config.instance_id is set by"),
        (("--set", "monitor.config.partitions=8"), "monitor.config.partitions is set by"),
        (("--set", "worker.config.metrics_port=0"), "metrics_port 0"),
        (("--set-json", 'worker.config.batch_max={"a":1}'), "want integer"),
        (("--set-string", "monitor.config.horizon_s=1d"), "want number"),
        (("--set", "worker.config.batch_maxx=1"), "'batch_maxx' not allowed"),
        (("--set", "monitor.config.true_label=x"), "'true_label' not allowed"),
        (("--set", "worker.replica=3"), "'replica' not allowed"),
    ],
    ids=["bootstrap", "model", "instance_id", "partitions", "port-0", "table", "type",
         "unknown-setting", "unknown-monitor-setting", "unknown-value"],
)
def test_settings_the_chart_owns_misspelt_or_mistyped_are_refused(
    override: tuple[str, str], message: str
) -> None:
    assert message in render_fails(*override)


def test_values_schema_lists_every_setting_with_its_type() -> None:
    """values.schema.json refuses unknown or mistyped settings at render time (instead of a
    process refusing them at start); its lists must be the settings dataclasses'."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    json_type = {int: "integer", float: "number", str: "string", bool: "boolean"}
    for component, cls in (("worker", config.Settings), ("monitor", MonitorSettings)):
        listed = schema["properties"][component]["properties"]["config"]
        assert listed["additionalProperties"] is False
        expected = {f.name: {"type": "object" if f.name == "kafka" else json_type[
            str if f.default is dataclasses.MISSING else type(f.default)]}
            for f in dataclasses.fields(cls)}
        assert listed["properties"] == expected, f"{component}.config"


# -- probes and ports ---------------------------------------------------------------------------


def served_status(path: str, health: Health) -> int:
    server = serve(0, CollectorRegistry(), health)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code
    finally:
        server.shutdown()
        server.server_close()


def test_probe_paths_are_served_by_the_processes() -> None:
    """The paths the chart probes exist (200 or 503 by state, never 404)."""
    up = Health(stall_s=30.0, model_loaded=True, assigned=True, broker_ok=True)
    down = Health(stall_s=30.0)
    assert served_status("/healthz", up) == 200
    assert served_status("/readyz", up) == 200
    assert served_status("/readyz", down) == 503
    assert served_status("/no-such-probe", up) == 404


def test_probes_and_ports_match_what_the_processes_listen_on(
    variant: str, tmp_path: Path
) -> None:
    docs = rendered(*VARIANTS[variant])
    for component, cls in (("worker", config.Settings), ("monitor", MonitorSettings)):
        workload = workloads(docs)[component]
        c = container(workload, component)
        settings = start(docs, component, tmp_path).settings
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"metrics": settings.metrics_port}
        if variant == "default":
            assert settings.metrics_port == field_default(cls, "metrics_port")
        probes = {k: c[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert probes["startupProbe"]["path"] == "/healthz"
        assert probes["livenessProbe"]["path"] == "/healthz"
        assert probes["readinessProbe"]["path"] == "/readyz"
        for probe in probes.values():
            port = probe["port"]
            assert (ports[port] if isinstance(port, str) else port) == settings.metrics_port
        # The startup probe outlasts the broker wait at start (start_timeout_s, worker only).
        startup = c["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert budget > getattr(settings, "start_timeout_s", 30.0) + settings.health_stall_s
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        if variant == "all-features":
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == str(settings.metrics_port)
            assert annotations["prometheus.io/path"] == "/metrics"
        else:
            assert not any(k.startswith("prometheus.io/") for k in annotations)
    for svc in objects(docs, "Service"):
        component = svc["metadata"]["labels"]["app.kubernetes.io/component"]
        (port,) = svc["spec"]["ports"]
        assert port["targetPort"] == "metrics"
        assert port["port"] == start(docs, component, tmp_path).settings.metrics_port


def test_service_monitors_scrape_under_the_job_names_the_alerts_use() -> None:
    docs = rendered(*VARIANTS["all-features"])
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in prometheus["scrape_configs"]} - {"prometheus"}
    services = {s["metadata"]["labels"]["app.kubernetes.io/component"]: s
                for s in objects(docs, "Service")}
    got = set()
    for sm in objects(docs, "ServiceMonitor"):
        component = sm["metadata"]["labels"]["app.kubernetes.io/component"]
        svc = services[component]
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"]
        assert sm["metadata"]["labels"]["release"] == "prometheus"
        got.add(svc["metadata"]["labels"][sm["spec"]["jobLabel"]])
        assert svc["spec"]["publishNotReadyAddresses"] is True
    assert got == jobs
    assert not objects(rendered(), "ServiceMonitor"), "the ServiceMonitor is off by default"


# -- shutdown -----------------------------------------------------------------------------------


def test_grace_period_outlasts_the_drain(variant: str, tmp_path: Path) -> None:
    docs = rendered(*VARIANTS[variant])
    settings = start(docs, "worker", tmp_path).settings
    grace = pod_spec(workloads(docs)["worker"])["terminationGracePeriodSeconds"]
    assert grace > settings.flush_timeout_s
    if variant == "default":
        assert settings.flush_timeout_s == field_default(config.Settings, "flush_timeout_s")
    assert "must exceed flush_timeout_s" in render_fails(
        "--set", "worker.terminationGracePeriodSeconds=30")
    assert "must exceed flush_timeout_s" in render_fails(
        "--set", "worker.terminationGracePeriodSeconds=50",
        "--set", "worker.config.flush_timeout_s=50")
    rendered("--set", "worker.terminationGracePeriodSeconds=31")


def test_rollout_never_surges_beyond_the_partitions() -> None:
    strategy = one(rendered(), "Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxSurge"] == 0


def test_workers_as_a_statefulset_keep_their_instance_ids_through_a_replacement(
    tmp_path: Path,
) -> None:
    docs = rendered("--set", "worker.workload=StatefulSet", "--set", "keda.enabled=true")
    worker = workloads(docs)["worker"]
    assert worker["kind"] == "StatefulSet"
    assert "strategy" not in worker["spec"], "a StatefulSet takes updateStrategy"
    assert worker["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert worker["spec"]["podManagementPolicy"] == "Parallel"
    services = {s["metadata"]["name"]: s for s in objects(docs, "Service")}
    assert services[worker["spec"]["serviceName"]]["metadata"]["labels"][
        "app.kubernetes.io/component"] == "worker"
    assert one(docs, "ScaledObject")["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    # The instance id defaults to the host name, which is the pod name: the same for the
    # pod that replaces <name>-0, so its static member id and transactional id are too.
    started = start(docs, "worker", tmp_path)
    assert "instance_id" not in started.toml and "--instance-id" not in started.args
    assert started.settings.instance_id == socket.gethostname()
    assert "value must be one of 'Deployment', 'StatefulSet'" in render_fails(
        "--set", "worker.workload=DaemonSet")


# -- replicas and partitions --------------------------------------------------------------------


def test_replicas_stay_within_the_partitions(variant: str, tmp_path: Path) -> None:
    docs = rendered(*VARIANTS[variant])
    v = values(variant)
    deployment, statefulset = workloads(docs).values()
    scaled = objects(docs, "ScaledObject")
    if scaled:
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        assert scaled[0]["spec"]["maxReplicaCount"] <= v["worker"]["partitions"]
        assert scaled[0]["spec"]["minReplicaCount"] <= scaled[0]["spec"]["maxReplicaCount"]
    else:
        assert 1 <= deployment["spec"]["replicas"] <= v["worker"]["partitions"]
    monitor = start(docs, "monitor", tmp_path).settings
    assert 1 <= statefulset["spec"]["replicas"] <= monitor.partitions
    assert monitor.partitions == v["monitor"]["partitions"]


@pytest.mark.parametrize(
    ("bad", "good", "message"),
    [
        (["worker.replicas=5"], ["worker.replicas=4"],
         "worker.replicas (5) exceeds worker.partitions (4)"),
        (["keda.enabled=true", "keda.maxReplicaCount=5"],
         ["keda.enabled=true", "keda.maxReplicaCount=4"],
         "keda.maxReplicaCount (5) exceeds worker.partitions (4)"),
        (["keda.enabled=true", "keda.minReplicaCount=3", "keda.maxReplicaCount=2"],
         ["keda.enabled=true", "keda.minReplicaCount=2", "keda.maxReplicaCount=2"],
         "keda.minReplicaCount (3) exceeds keda.maxReplicaCount (2)"),
        (["monitor.replicas=5"], ["monitor.replicas=4"],
         "monitor.replicas (5) exceeds monitor.partitions (4)"),
    ],
    ids=["worker", "keda-max", "keda-min", "monitor"],
)
def test_more_replicas_than_partitions_fail_to_render(
    bad: list[str], good: list[str], message: str
) -> None:
    assert message in render_fails(*[a for s in bad for a in ("--set", s)])
    rendered(*[a for s in good for a in ("--set", s)])  # the limit itself renders


def test_a_values_file_with_more_replicas_than_partitions_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text("worker:\n  replicas: 6\n  partitions: 3\n")
    assert "worker.replicas (6) exceeds worker.partitions (3)" in render_fails("-f", str(bad))


# -- the monitor's identity ---------------------------------------------------------------------


def test_monitor_instance_id_is_its_stable_pod_name(variant: str, tmp_path: Path) -> None:
    docs = rendered(*VARIANTS[variant])
    sts = one(docs, "StatefulSet")
    name = sts["metadata"]["name"]
    assert sts["spec"]["serviceName"] in {s["metadata"]["name"] for s in objects(docs, "Service")}
    assert "instance_id" not in start(docs, "monitor", tmp_path).toml
    ids = []
    for ordinal in range(sts["spec"]["replicas"]):
        pod = f"{name}-{ordinal}"
        first = start(docs, "monitor", tmp_path, pod_name=pod).settings.instance_id
        again = start(docs, "monitor", tmp_path, pod_name=pod).settings.instance_id
        assert first == again == pod, "a restarted pod must keep its transactional id"
        ids.append(first)
    assert len(set(ids)) == len(ids)
    c = container(sts, "monitor")
    assert c["args"][c["args"].index("--instance-id") + 1] == "$(POD_NAME)"


# -- secrets ------------------------------------------------------------------------------------


def test_secrets_are_mounted_and_never_rendered_in_clear(tmp_path: Path) -> None:
    text = rendered_text(*VARIANTS["all-features"])
    docs = rendered(*VARIANTS["all-features"])
    secret_values = values("all-features")["kafka"]["secret"]
    secret = one(docs, "Secret")
    assert "stringData" not in secret
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == secret_values["data"]
    other_docs = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
    secret_keys = {*secret_values["properties"].values(), *secret_values["files"].values()}
    assert secret_keys >= {"sasl-password", "tls.key"}
    for key in secret_keys:
        value = secret_values["data"][key]
        assert value not in text, f"the value of {key} is rendered in clear"
        assert base64.b64encode(value.encode()).decode() not in other_docs
    name = secret["metadata"]["name"]
    for component in ("worker", "monitor"):
        workload = workloads(docs)[component]
        c = container(workload, component)
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]
                if "secretKeyRef" in e.get("valueFrom", {})}
        assert {r["name"] for r in refs.values()} == {name}
        assert {r["key"] for r in refs.values()} == set(secret_values["properties"].values())
        env = container_env(c, "pod-0")
        pairs = config.parse_kafka_pairs(env["SCORING_KAFKA"], "SCORING_KAFKA")
        assert pairs == {p: f"<secret {k}>" for p, k in secret_values["properties"].items()}
        settings = start(docs, component, tmp_path).settings
        assert settings.kafka["sasl.password"] == "<secret sasl-password>"
        assert not any(config.is_secret(k) for k in start(docs, component, tmp_path).toml["kafka"])
        (volume,) = [v for v in pod_spec(workload)["volumes"] if v.get("secret")]
        assert volume["secret"]["secretName"] == name
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True
        items = {i["key"]: i["path"] for i in volume["secret"]["items"]}
        for prop, key in secret_values["files"].items():
            assert settings.kafka[prop] == f"{mount['mountPath']}/{items[key]}"


def test_an_existing_secret_is_referenced_and_nothing_secret_is_rendered() -> None:
    args = (*VARIANTS["all-features"], "--set", "kafka.secret.create=false",
            "--set", "kafka.secret.existingSecret=team-kafka",
            "--set", "kafka.secret.data=null")
    docs = rendered(*args)
    assert not objects(docs, "Secret")
    text = rendered_text(*args)
    secret = values("all-features")["kafka"]["secret"]
    for key in {*secret["properties"].values(), *secret["files"].values()}:
        assert secret["data"][key] not in text
    for component, workload in workloads(docs).items():
        c = container(workload, component)
        refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"]
                if "secretKeyRef" in e.get("valueFrom", {})]
        assert refs and set(refs) == {"team-kafka"}
        assert [v["secret"]["secretName"] for v in pod_spec(workload)["volumes"]
                if v.get("secret")] == ["team-kafka"]
    auth = one(docs, "TriggerAuthentication")
    assert {r["name"] for r in auth["spec"]["secretTargetRef"]} == {"team-kafka"}


@pytest.mark.parametrize("marker", settings_sources.SECRET_MARKERS)
def test_secret_looking_kafka_properties_are_refused(marker: str) -> None:
    """The chart refuses what the processes would mask in their logs (config.is_secret)."""
    prop = f"sasl.oauthbearer.client.{marker}"
    assert config.is_secret(prop)
    escaped = prop.replace(".", "\\.")  # --set splits keys on unescaped dots
    err = render_fails("--set-string", f"kafka.properties.{escaped}=v")
    assert "looks secret" in err
    dotted = marker.replace(".", "\\.")  # a marker may hold a dot itself
    rendered("--set-string", f"kafka.properties.ssl\\.{dotted}\\.location=/x")


def test_secret_references_need_a_secret() -> None:
    assert "need a Secret" in render_fails("--set", "kafka.secret.properties.sasl\\.password=pw")
    assert "only used with kafka.secret.create" in render_fails(
        "--set", "kafka.secret.data.pw=hunter2")
    assert 'has no key "pw"' in render_fails(
        "--set", "kafka.secret.create=true", "--set", "kafka.secret.properties.sasl\\.password=pw")


# -- model store and promotion ------------------------------------------------------------------


def test_model_store_is_mounted_read_only_where_the_workers_look(
    variant: str, tmp_path: Path
) -> None:
    docs = rendered(*VARIANTS[variant])
    v = values(variant)["models"]
    settings = start(docs, "worker", tmp_path).settings
    assert settings.model == f"{v['mountPath']}/{v['name']}"
    for component, workload in workloads(docs).items():
        (mount,) = [m for m in container(workload, component)["volumeMounts"]
                    if m["name"] == "models"]
        assert mount["mountPath"] == v["mountPath"] and mount["readOnly"] is True
        (volume,) = [x for x in pod_spec(workload)["volumes"] if x["name"] == "models"]
        if v["source"] == "pvc":
            claim = one(docs, "PersistentVolumeClaim")
            assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"],
                                                       "readOnly": True}
            assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
            assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
            assert not pod_spec(workload).get("initContainers")
        else:
            assert volume == {"name": "models", "emptyDir": {}}
            (init,) = pod_spec(workload)["initContainers"]
            (store,) = [m["mountPath"] for m in init["volumeMounts"] if m["name"] == "models"]
            script = init["args"][0]
            assert f"models add --store {store}" in script
            assert f"models promote --store {store} {v['name']} 1" in script
            # The init container's commands are real CLI commands.
            for line in script.strip().splitlines():
                if line.startswith("scoring-worker "):
                    cli.build_parser().parse_args(line.split()[1:])
    monitor = start(docs, "monitor", tmp_path).settings
    assert all(p.startswith(v["mountPath"] + "/") for p in monitor.models.split(","))


def test_model_store_from_an_image_or_an_existing_claim() -> None:
    docs = rendered("--set", "models.source=image", "--set", "models.image.repository=reg/models",
                    "--set", "models.image.tag=7")
    (init,) = pod_spec(one(docs, "Deployment"))["initContainers"]
    assert init["image"] == "reg/models:7"
    (store,) = [m["mountPath"] for m in init["volumeMounts"] if m["name"] == "models"]
    assert store != "/models", "the volume would hide the image's /models"
    assert init["args"] == [f"cp -R /models/. {store}/"]
    docs = rendered("--set", "models.source=pvc", "--set", "models.pvc.existingClaim=store")
    assert not objects(docs, "PersistentVolumeClaim")
    (volume,) = [x for x in pod_spec(one(docs, "Deployment"))["volumes"] if x["name"] == "models"]
    assert volume["persistentVolumeClaim"] == {"claimName": "store", "readOnly": True}
    assert "set models.pvc.existingClaim" in render_fails("--set", "models.source=pvc")
    assert "models.name to fraud-demo" in render_fails("--set", "models.name=other")


def rendered_notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt rendered (helm template leaves it out): through tpl in a copy of the chart."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "notes.txt").write_text((chart / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "zz-notes.yaml").write_text(
        'kind: Notes\ntext: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n')
    r = run_helm("template", RELEASE, str(chart), *args)
    assert r.returncode == 0, r.stderr
    (notes,) = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "Notes"]
    return str(notes["text"])


def test_notes_promote_through_the_control_topic_with_the_workers_settings(
    tmp_path: Path,
) -> None:
    notes = rendered_notes(tmp_path)
    v = values("default")
    deployment = one(rendered(), "Deployment")["metadata"]["name"]
    assert f"deploy/{deployment} -c worker -- python - {v['models']['name']} VERSION" in notes
    assert f"models promote --store {v['models']['mountPath']} {v['models']['name']}" in notes
    m = re.search(r"<<'EOF'\n(.*?)\nEOF\n", notes, re.S)
    assert m, "no promotion snippet"
    tree = ast.parse(m.group(1))  # valid Python, not indented
    used = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "s"}
    assert used and used <= {f.name for f in dataclasses.fields(config.Settings)}
    assert "control_topic" in used
    assert f'Path("{CONFIG_DIR}/worker.toml")' in m.group(1)
    assert "worker.toml" in container(one(rendered(), "Deployment"), "worker")["args"][-1]
    off = rendered_notes(tmp_path / "off", "--set", "worker.config.control_topic=")
    assert "<<'EOF'" not in off and "models promote" in off



def test_notes_reach_the_monitors_status_page(tmp_path: Path) -> None:
    notes = rendered_notes(tmp_path)
    sts = one(rendered(), "StatefulSet")
    port = container(sts, "monitor")["ports"][0]["containerPort"]
    assert f"port-forward pod/{sts['metadata']['name']}-0 {port}" in notes
    assert f"http://localhost:{port}/" in notes

# -- KEDA -----------------------------------------------------------------------------------------


def test_keda_scales_the_worker_group_on_its_input_topic(tmp_path: Path) -> None:
    docs = rendered(*VARIANTS["all-features"])
    settings = start(docs, "worker", tmp_path).settings
    scaled = one(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment",
                                                one(docs, "Deployment")["metadata"]["name"])
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["bootstrapServers"] == settings.bootstrap
    assert meta["consumerGroup"] == settings.group
    assert meta["topic"] == settings.input_topic
    assert all(isinstance(x, str) for x in meta.values()), "KEDA metadata values are strings"
    assert int(meta["lagThreshold"]) > 0
    # The scaler talks to the cluster the way the worker does: SASL_SSL, SCRAM-SHA-512.
    assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable")
    auth = one(docs, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    keys = set(one(docs, "Secret")["data"])
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"username", "password", "ca", "cert", "key", "keyPassword"}
    assert all(r["key"] in keys for r in refs.values())
    # Off by default, and then the Deployment keeps its replica count.
    assert not objects(rendered(), "ScaledObject")
    plain = rendered("--set", "keda.enabled=true")
    assert "sasl" not in one(plain, "ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert "replicas" not in one(plain, "Deployment")["spec"]


def test_the_schema_registry_url_is_a_setting_and_its_credentials_a_secret(
    tmp_path: Path,
) -> None:
    url = "https://registry.example:8443/apis/ccompat/v7"
    args = ("--set", "schemaRegistry.existingSecret=team-registry",
            "--set-string", "worker.config.input_format=avro",
            "--set-string", f"worker.config.schema_registry={url}")
    docs = rendered(*args)
    worker = start(docs, "worker", tmp_path)
    assert worker.settings.input_format == "avro" and worker.settings.schema_registry == url
    assert worker.settings.schema_registry_user == "<secret username>"
    assert worker.settings.schema_registry_password == "<secret password>"
    c = container(workloads(docs)["worker"], "worker")
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {"team-registry"}
    monitor = container(workloads(docs)["monitor"], "monitor")  # --prediction-format avro
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in monitor["env"]
            if "SCORING_SCHEMA_REGISTRY" in e["name"]} == {"team-registry"}
    for who in ("worker", "monitor"):
        err = render_fails("--set-string", f"{who}.config.schema_registry_password=hunter2")
        assert f"{who}.config.schema_registry_user/password would be rendered in clear" in err


def test_the_monitor_keeps_its_join_state_on_a_mounted_volume(variant: str,
                                                               tmp_path: Path) -> None:
    """The monitor's own default (under XDG_STATE_HOME) would be on the read-only root
    filesystem: the chart names a folder on a volume of the pod."""
    docs = rendered(*VARIANTS[variant])
    state = Path(start(docs, "monitor", tmp_path).settings.state_dir)
    mounts = [Path(m["mountPath"]) for m in
              container(workloads(docs)["monitor"], "monitor")["volumeMounts"]]
    assert any(state.is_relative_to(m) for m in mounts), (state, mounts)
