"""The operations surface (deploy/, docker-compose.yml, Dockerfile) against the code.

No network, no Docker: the files are parsed and cross-checked with what the worker and
the monitor really read (their settings dataclasses) and export (their metrics, built
here on fresh registries). promtool's static checks run here too; the checks that need
running processes are in tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.helpers import tool_missing
from worker import config
from worker.core.feature_stats import FeatureStats
from worker.model.profile import FeatureProfile, Profile
from worker.monitor.feature_stage import FeatureStage
from worker.monitor.feature_windows import FeatureWindows
from worker.monitor.stage_global import Snapshot
from worker.monitor.windows import HOUR_MS
from worker.monitor_app.features import FeatureCollector
from worker.monitor_app.gauges import FIGURES, MonitorCollector, loop_counters
from worker.monitor_app.restore_gauges import RestoreCollector
from worker.monitor_app.settings import MonitorSettings
from worker.probes import RestoreProgress
from worker.stream.metrics import SupervisorMetrics, WorkerMetrics

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
METRICS_REFERENCE = ROOT / "docs" / "monitoring" / "metrics.md"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
#: Series Prometheus makes itself rather than scraping them.
PROMETHEUS_OWN = frozenset({"ALERTS", "up"})
ALERTS = frozenset({"WorkerDown", "ScoringTargetsMissing", "DeadLetterRateHigh",
                    "ConsumerLagGrowing", "ScoringLatencyHigh", "ModelRecallLow",
                    "ModelAucLow", "ScoreDriftHigh", "LabelsStalled",
                    "MonitorFallingBehind", "EstimatedRecallLow", "EstimateGapLarge"})
SETTINGS_OF_COMMAND: dict[str, type[Any]] = {"run": config.Settings, "monitor": MonitorSettings}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# -- the files --------------------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    data = load_yaml(ROOT / "docker-compose.yml")
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    svc = compose()["services"]
    assert isinstance(svc, dict)
    return svc


@functools.cache
def alert_rules() -> dict[str, dict[str, Any]]:
    rules: dict[str, dict[str, Any]] = {}
    for group in load_yaml(DEPLOY / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            assert "alert" in rule, f"recording rules belong elsewhere: {rule}"
            assert rule["alert"] not in rules, f"duplicate alert {rule['alert']}"
            rules[rule["alert"]] = rule
    return rules


@functools.cache
def dashboards() -> dict[str, dict[str, Any]]:
    found = {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}
    assert found, "no dashboard in deploy/grafana/dashboards"
    return found


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def volumes_of(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((str(v.get("source", "")), str(v["target"])))
        else:
            parts = str(v).split(":")
            out.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return out


def host_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    out = {}
    for p in service.get("ports") or []:
        host, _, container = str(p).rpartition(":")
        out[int(container.split("/")[0])] = int(host.rsplit(":", 1)[-1])
    return out


# -- docker-compose.yml -------------------------------------------------------------------------


def test_compose_has_every_service_of_the_product() -> None:
    assert set(services()) >= {"kafka", "topics", "train-demo", "worker", "monitor", "producer",
                               "prometheus", "grafana"}


def test_kafka_is_a_single_kraft_node_with_replication_factor_1() -> None:
    kafka = services()["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env)
    for name in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                 "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                 "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[name] == "1", name
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "healthcheck" in kafka


def test_the_schema_registry_is_apicurio_wired_to_the_broker() -> None:
    svc = services()
    registry = svc["registry"]
    assert registry["image"].startswith("apicurio/apicurio-registry-kafkasql:")
    advertised = env_of(svc["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT://{env_of(registry)['KAFKA_BOOTSTRAP_SERVERS']}" in advertised
    assert registry["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "/apis/ccompat/v7" in " ".join(registry["healthcheck"]["test"])
    assert host_ports(registry) == {8080: 8081}  # container port -> host port


def test_workers_are_two_replicas_of_one_group_and_one_shots_run_first() -> None:
    svc = services()
    worker = svc["worker"]
    assert command_of(worker)[0] == "run"
    assert worker["deploy"]["replicas"] == 2
    assert env_of(worker)["SCORING_GROUP"]  # one group for every replica
    for one_shot in ("topics", "train-demo"):
        assert worker["depends_on"][one_shot]["condition"] == "service_completed_successfully"
        assert svc[one_shot].get("restart") == "no"
    assert command_of(svc["monitor"])[0] == "monitor"


def test_model_path_is_the_one_train_demo_writes_on_the_shared_volume() -> None:
    svc = services()
    cmd = command_of(svc["train-demo"])
    out = cmd[cmd.index("--out") + 1]
    assert env_of(svc["worker"])["SCORING_MODEL"] == out
    assert out in env_of(svc["monitor"])["SCORING_MODELS"].split(",")
    mounts = {name: dict((t, s) for s, t in volumes_of(svc[name]))
              for name in ("train-demo", "worker", "monitor")}
    volume = {m[t] for m in mounts.values() for t in m if out.startswith(t + "/")}
    assert len(volume) == 1, mounts  # the same named volume everywhere


def test_demo_producer_sends_labels_and_a_drift() -> None:
    cmd = command_of(services()["producer"])
    assert cmd[0] == "produce-demo"
    for flag in ("--labels-topic", "--drift-after", "--label-delay", "--topic"):
        assert flag in cmd, flag
    env = env_of(services()["worker"])
    assert cmd[cmd.index("--topic") + 1] == env["SCORING_INPUT_TOPIC"]
    assert (
        cmd[cmd.index("--labels-topic") + 1]
        == env_of(services()["monitor"])["SCORING_LABELS_TOPIC"]
    )


def test_topics_service_creates_what_the_workers_and_monitor_read() -> None:
    script = " ".join(command_of(services()["topics"]))
    worker, monitor = env_of(services()["worker"]), env_of(services()["monitor"])
    for topic in (worker["SCORING_INPUT_TOPIC"], worker["SCORING_OUTPUT_TOPIC"],
                  worker["SCORING_DLQ_TOPIC"], monitor["SCORING_LABELS_TOPIC"]):
        assert f"{topic}:" in script, topic
    assert monitor["SCORING_PREDICTIONS_TOPIC"] == worker["SCORING_OUTPUT_TOPIC"]


def test_every_scoring_variable_names_a_real_setting_of_the_command() -> None:
    checked = 0
    for name, svc in services().items():
        scoring = {k: v for k, v in env_of(svc).items() if k.startswith("SCORING_")}
        if not scoring:
            continue
        command = command_of(svc)[0]
        assert command in SETTINGS_OF_COMMAND, f"{name}: {command} reads no SCORING_* variable"
        cls = SETTINGS_OF_COMMAND[command]
        fields = {f.name for f in dataclasses.fields(cls)}
        for var in scoring:
            assert var[len("SCORING_") :].lower() in fields, f"{name}: {var} is no setting"
        # and every value reads as its field's type
        settings = config.load_into(cls, None, scoring, {})
        for var, value in scoring.items():
            got = getattr(settings, var[len("SCORING_") :].lower())
            if var != "SCORING_KAFKA":
                assert got == type(got)(value), (name, var, got)
        checked += len(scoring)
    assert checked >= 15


def test_ports_and_scrape_targets_match_what_the_services_listen_on() -> None:
    svc = services()
    worker_port = int(env_of(svc["worker"])["SCORING_METRICS_PORT"])
    monitor_port = int(env_of(svc["monitor"])["SCORING_METRICS_PORT"])
    assert (worker_port, monitor_port) == (8000, 8001)
    assert "ports" not in svc["worker"], "replicas cannot share a host port"
    assert [int(p) for p in svc["worker"]["expose"]] == [worker_port]
    assert host_ports(svc["monitor"]) == {monitor_port: monitor_port}
    assert host_ports(svc["prometheus"]) == {9090: 9090}
    assert host_ports(svc["grafana"]) == {3000: 3000}
    assert 9094 in host_ports(svc["kafka"])

    prom = load_yaml(DEPLOY / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    dns = jobs["scoring-worker"]["dns_sd_configs"][0]
    assert dns["names"] == ["worker"] and dns["port"] == worker_port and dns["type"] == "A"
    assert jobs["scoring-monitor"]["static_configs"][0]["targets"] == [f"monitor:{monitor_port}"]


def test_healthchecks_probe_the_services_own_endpoints() -> None:
    svc = services()
    for name, path in (("worker", "/healthz"), ("monitor", "/readyz")):
        test = " ".join(svc[name]["healthcheck"]["test"])
        port = env_of(svc[name])["SCORING_METRICS_PORT"]
        assert f"127.0.0.1:{port}{path}" in test, (name, test)
    for name in ("kafka", "prometheus", "grafana"):
        assert svc[name]["healthcheck"]["test"], name
    producer = svc["producer"]["depends_on"]
    assert producer["worker"]["condition"] == "service_healthy"
    assert producer["monitor"]["condition"] == "service_healthy"


def test_every_bind_mount_exists_and_every_named_volume_is_declared() -> None:
    declared = set(compose().get("volumes") or {})
    used = set()
    for name, svc in services().items():
        for source, target in volumes_of(svc):
            assert target.startswith("/"), (name, target)
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            elif source:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
        build = svc.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert (context / "Dockerfile").is_file(), name
            assert svc["image"] == "scoring-worker:local", name
    assert used == declared


def test_prometheus_and_grafana_find_their_files_where_they_are_mounted() -> None:
    svc = services()
    prom_mounts = {t: s for s, t in volumes_of(svc["prometheus"])}
    config_file = PurePosixPath("/etc/prometheus/prometheus.yml")
    assert f"--config.file={config_file}" in command_of(svc["prometheus"])
    assert (ROOT / prom_mounts[str(config_file)]).resolve() == DEPLOY / "prometheus.yml"
    for rule_file in load_yaml(DEPLOY / "prometheus.yml")["rule_files"]:
        in_container = config_file.parent / rule_file
        assert (ROOT / prom_mounts[str(in_container)]).resolve() == DEPLOY / rule_file

    graf_mounts = {t: (ROOT / s).resolve() for s, t in volumes_of(svc["grafana"])
                   if s.startswith(".")}
    assert graf_mounts["/etc/grafana/provisioning"] == PROVISIONING
    provider = load_yaml(PROVISIONING / "dashboards" / "scoring-worker.yml")["providers"][0]
    assert graf_mounts[provider["options"]["path"]] == DASHBOARDS
    home = env_of(svc["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert PurePosixPath(home).parent == PurePosixPath(provider["options"]["path"])
    assert PurePosixPath(home).name in dashboards()

    source = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"][0]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"]  # what the dashboard's datasource variable picks first
    for dash in dashboards().values():
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == source["type"]
    uids = {d.get("uid") for d in _walk_datasources(dashboards())}
    assert uids == {"${datasource}"}  # no fixed uid: any Prometheus data source works


def _walk_datasources(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and ds.get("type") == "prometheus":
            yield ds
        for v in node.values():
            yield from _walk_datasources(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_datasources(v)


def test_container_paths_exist_in_the_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY schemas /app/schemas$", dockerfile, re.M)
    schema = env_of(services()["worker"])["SCORING_SCHEMA"]
    assert schema.startswith("/app/schemas/")
    assert (ROOT / "schemas" / schema[len("/app/schemas/") :]).is_file()


# -- Dockerfile, .dockerignore, requirements.lock ---------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_image_runs_as_a_non_root_user_with_the_cli_as_entrypoint() -> None:
    steps = dockerfile_instructions()
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    final = steps[stages[-1] :]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    assert ("ENTRYPOINT", '["scoring-worker"]') in final
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", args["PYTHON_IMAGE"])
    assert any("-r /tmp/requirements.lock" in rest and "--no-deps" in rest
               for word, rest in steps if word == "RUN")
    assert any("pip check" in rest for word, rest in steps if word == "RUN")


def test_dockerignore_keeps_everything_the_dockerfile_copies() -> None:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*", "the build context is an allow-list"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = []
    for word, rest in dockerfile_instructions():
        if word == "COPY" and not rest.startswith("--from"):
            copied += rest.split()[:-1]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed or any(source.startswith(a + "/") for a in allowed), (
            f"{source} is copied but .dockerignore leaves it out"
        )


def _lock_script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_lock", DEPLOY / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_lock_pins_the_runtime_closure_and_no_dev_tool() -> None:
    pins = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"not pinned: {line}"
            pins[canonicalize_name(req.name)] = specs[0].version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}
    assert direct <= set(pins), f"run `make lock`: the lock misses {sorted(direct - set(pins))}"
    closure = _lock_script().runtime_closure()
    if all(pins.get(name) == version for name, version in closure.items()):
        # The venv the lock was made from: the lock is exactly its runtime closure. (A fresh
        # venv with newer releases may need other packages; there the Dockerfile's
        # `pip check` vouches for the lock's own consistency.)
        stale = sorted(set(pins) - set(closure))
        assert not stale, f"run `make lock`: {stale} are no runtime dependency any more"
    dev_only = {
        canonicalize_name(Requirement(d).name)
        for extra in project.get("optional-dependencies", {}).values()
        for d in extra
    } - set(closure)
    extra = sorted((dev_only | {"pip", "setuptools", "wheel", "scoring-worker"}) & set(pins))
    assert not extra, f"the image would install {extra}, which it does not need"
    for dep in project["dependencies"]:
        req = Requirement(dep)
        assert req.specifier.contains(pins[canonicalize_name(req.name)]), (dep, pins)


# -- alert rules --------------------------------------------------------------------------------


def test_every_alert_has_for_severity_summary_and_runbook() -> None:
    rules = alert_rules()
    assert set(rules) == ALERTS
    for name, rule in rules.items():
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert notes["summary"].strip() and "\n" not in notes["summary"], name
        assert len(notes["runbook"]) > 60 and "\n" not in notes["runbook"], name
        # The runbook page of the docs site: what it means, what to check, what to do.
        page = ROOT / notes["runbook_url"]
        assert page.is_file() and page.parent == ROOT / "docs/operations/alerts", name
        assert page.read_text().startswith(f"# {name}\n"), name


def test_alerts_say_what_the_issue_asked_for() -> None:
    expr = {name: " ".join(rule["expr"].split()) for name, rule in alert_rules().items()}
    assert "up{" in expr["WorkerDown"] and "== 0" in expr["WorkerDown"]
    assert "scoring_dead_letters_total" in expr["DeadLetterRateHigh"]
    assert "/ sum by (job) (rate(scoring_events_consumed_total" in expr["DeadLetterRateHigh"]
    assert "deriv(scoring_consumer_lag_messages[10m])) > 0" in expr["ConsumerLagGrowing"]
    assert "histogram_quantile(0.99," in expr["ScoringLatencyHigh"]
    assert 'scoring_model_recall_ratio{window="rolling"} < 0.6' in expr["ModelRecallLow"]
    assert 'scoring_model_labeled_events{window="rolling"} >= 200' in expr["ModelRecallLow"]
    assert "scoring_model_roc_auc_ratio" in expr["ModelAucLow"]
    assert 'scoring_model_score_psi{window="rolling"} > 0.25' in expr["ScoreDriftHigh"]
    assert 'scoring_model_predicted_events{window="rolling"} >= 500' in expr["ScoreDriftHigh"]
    assert "rate(scoring_monitor_joined_total[15m]) == 0" in expr["LabelsStalled"]
    assert "rate(scoring_monitor_predictions_total[15m]) > 0" in expr["LabelsStalled"]
    assert "deriv(scoring_monitor_consumer_lag_messages[10m])) > 0" in expr["MonitorFallingBehind"]
    assert "scoring_monitor_newest_join_age_seconds" in expr["MonitorFallingBehind"]


def test_every_alert_has_a_firing_and_a_quiet_promtool_test() -> None:
    tests = load_yaml(DEPLOY / "alerts.test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test") or []:
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fires == ALERTS
    assert quiet == ALERTS


def test_alerts_and_dashboard_use_only_the_scrape_jobs_prometheus_has() -> None:
    jobs = {j["job_name"] for j in load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]}
    used = set()
    for expr in [r["expr"] for r in alert_rules().values()] + dashboard_queries():
        for m in re.finditer(r'job\s*(=~?)\s*"([^"]*)"', expr):
            used |= set(m.group(2).split("|")) if m.group(1) == "=~" else {m.group(2)}
    assert used and used <= jobs, used - jobs


# -- metric names: every one used is one the code exports -----------------------------------------

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
             "summary": ("", "_sum", "_count"), "gauge": ("",), "unknown": ("",),
             "info": ("_info",), "stateset": ("",), "gaugehistogram": ("_bucket",)}
_PROMQL_WORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring",
                           "group_left", "group_right", "offset", "bool", "inf", "nan",
                           "Inf", "NaN", "atan2"})


@functools.cache
def exported_metric_names() -> frozenset[str]:
    """Series names of the worker and the monitor, from their own collectors."""
    worker = CollectorRegistry()
    WorkerMetrics(worker)
    SupervisorMetrics(worker)  # run --processes N's own, beside the sum
    monitor = CollectorRegistry()
    collector = MonitorCollector(monitor)
    loop_counters(monitor)
    RestoreCollector(monitor, RestoreProgress())
    figures: dict[str, int | float | None] = {fig: 0.5 for fig in FIGURES}
    collector.update(Snapshot(figures={("fraud-demo", "1", "rolling"): figures}))
    feature_series(monitor)
    names: set[str] = set()
    for registry in (worker, monitor):
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            if family.name.endswith("_created"):  # prometheus_client's creation times
                continue
            names |= {s.name for s in family.samples if not s.name.endswith("_created")}
            names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return frozenset(names)


def feature_series(registry: CollectorRegistry) -> None:
    """The feature collector with one window, one version off and one refused record."""
    profile = Profile((FeatureProfile("amount", "numeric", 4, 0, (1.0,), (2, 2), 0.0, 2.0),))
    windows = FeatureWindows(HOUR_MS, {("fraud-demo", "1"): profile, ("fraud-demo", "2"): None})
    stage = FeatureStage(windows, ())
    stats = FeatureStats("fraud-demo", "1", "w", 0, 1000, profile.digest(), 1, (1, 0, 0, 0, 0))
    stage.apply([(0, stats.encode()), (0, replace(stats, model_version="2").encode())])
    stage.tick(0)
    FeatureCollector(registry).update(stage)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and labels removed)."""
    lv = re.fullmatch(r"\s*label_values\(\s*(.*),\s*[a-zA-Z_]\w*\s*\)\s*", expr, re.S)
    if lv:
        return metric_names(lv.group(1))
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", e):
        if m.group(2) is None and m.group(1) not in _PROMQL_WORDS:
            names.add(m.group(1))
    return names


def test_metric_name_extraction() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{le!="1", x=~"$m"}[5m]))) > 1e3'
        " and on (model) b_total offset 5m / ignoring(x) group_left(y) sum(c) without (z)"
        ' or absent(up{job="w"}) unless count by (alertname) (ALERTS[$__rate_interval])'
    ) == {"a_bucket", "b_total", "c", "up", "ALERTS"}
    assert metric_names("label_values(scoring_model_predicted_events, model)") == {
        "scoring_model_predicted_events"
    }


def dashboard_queries() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            query = node.get("query")
            if isinstance(query, dict) and isinstance(query.get("query"), str):
                found.append(query["query"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(list(dashboards().values()))
    return found


def test_the_code_exports_the_metrics_the_deploy_files_rely_on() -> None:
    exported = exported_metric_names()
    # what the issue lists, through the code's own export
    for name in ("scoring_events_consumed_total", "scoring_events_scored_total",
                 "scoring_dead_letters_total", "scoring_end_to_end_latency_seconds_bucket",
                 "scoring_consumer_lag_messages", "scoring_kafka_broker_rtt_seconds",
                 "scoring_producer_queue_messages", "scoring_model_accuracy_ratio",
                 "scoring_model_recall_ratio", "scoring_model_roc_auc_ratio",
                 "scoring_model_score_psi", "scoring_model_labeled_events",
                 "scoring_model_predicted_events", "scoring_model_label_coverage_ratio",
                 "scoring_monitor_joined_total", "scoring_monitor_predictions_total"):
        assert name in exported, name


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_used_is_exported_by_the_worker_or_the_monitor(source: str) -> None:
    if source == "alerts":
        exprs = {f"alert {n}": r["expr"] for n, r in alert_rules().items()}
    else:
        exprs = {f"query {q}": q for q in dashboard_queries()}
    assert exprs
    exported = exported_metric_names() | PROMETHEUS_OWN
    for where, expr in exprs.items():
        used = metric_names(expr)
        assert used, f"{where}: no metric found"
        unknown = used - exported
        assert not unknown, f"{where} uses {sorted(unknown)}, which nothing exports"


def test_every_exported_metric_is_in_the_metrics_reference() -> None:
    """The docs' metrics reference documents every series family the worker and the monitor
    export."""
    readme = METRICS_REFERENCE.read_text()
    documented = set(re.findall(r"^\| `(scoring_[a-z0-9_:]+)` \|", readme, re.M))
    exported = exported_metric_names()
    families = {n for n in exported if not n.endswith(("_bucket", "_sum", "_count"))}
    families |= {n[: -len("_bucket")] for n in exported if n.endswith("_bucket")}
    missing = sorted(families - documented)
    assert not missing, f"document {missing} in {METRICS_REFERENCE}"
    assert not documented - families, sorted(documented - families)


# -- Grafana dashboard ---------------------------------------------------------------------------


def test_dashboard_shows_what_the_issue_lists() -> None:
    queries = " ".join(" ".join(q.split()) for q in dashboard_queries())
    for needle in ("rate(scoring_events_consumed_total", "rate(scoring_events_scored_total",
                   "histogram_quantile(0.5, sum by (le) (rate(scoring_end_to_end_latency",
                   "histogram_quantile(0.99, sum by (le) (rate(scoring_end_to_end_latency",
                   "scoring_consumer_lag_messages", "sum by (reason) (rate(scoring_dead_letters",
                   'scoring_model_accuracy_ratio{window="rolling"',
                   'scoring_model_recall_ratio{window="rolling"',
                   'scoring_model_roc_auc_ratio{window="rolling"', "scoring_model_score_psi",
                   "scoring_model_label_coverage_ratio",
                   'ALERTS{alertstate="firing"}',
                   "max by (instance, model, model_version, sha256) (scoring_model_info)",
                   "sum by (instance, result) (increase(scoring_model_reloads_total"):
        assert needle in queries, needle
    for dash in dashboards().values():
        for panel in _panels(dash):
            legends = " ".join(t.get("legendFormat", "") for t in panel.get("targets", []))
            exprs = json.dumps(panel.get("targets", []))
            if "scoring_model_" in exprs and "scoring_model_reloads_total" not in exprs:
                assert "{{model_version}}" in legends, panel["title"]  # per model version


def _panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_dashboard_layout_is_valid() -> None:
    for name, dash in dashboards().items():
        assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30, name
        ids = [p["id"] for p in _panels(dash)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for p in _panels(dash):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, (name, p["title"])
            if p["type"] != "row":
                assert p.get("targets"), (name, p["title"])


# -- promtool (static checks; the live ones are in tests/integration/test_prometheus.py) -------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        tool_missing("promtool is not installed: run `make tools` (Debian's prometheus package)")
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(args: list[str]) -> None:
    r = subprocess.run([promtool(), *args], cwd=DEPLOY, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr
