"""The deploy/ files read as data: Kubernetes manifests, Prometheus rules and scrape jobs, the Grafana
dashboard, the Dockerfile and .dockerignore, against each other and against the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import (
    DOCKERIGNORE,
    K8S,
    OWN_FILES,
    PLACEHOLDER,
    PROM,
    ROOT,
    SECRET_MOUNT,
    alert_rules,
    configmap_env,
    containers,
    dashboard,
    dashboard_exprs,
    deployments,
    dockerfile_instructions,
    docs,
    exposed_names,
    kustomization,
    manifests,
    one,
    panels,
    pod_env,
    registered_metrics,
    settings_from_env,
    unknown_metrics,
)


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


def test_no_hard_coded_ip_addresses() -> None:
    dotted = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
    for path in OWN_FILES:
        found = set(dotted.findall(path.read_text())) - {"127.0.0.1", "0.0.0.0"}
        assert not found, f"{path.relative_to(ROOT)}: {sorted(found)} (use DNS names)"
