"""deploy/: the files parse, agree with each other and with the code they deploy.

promtool (Debian's `prometheus` package, installed by `make test` as root) checks the alert
rules and scrape configuration and runs the alert unit tests in alerts_test.yml.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.settings import Config, load_config
from gateway.rules.loader import rules_version
from gateway.runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "compliance-gateway.json"
PROMTOOL = shutil.which("promtool")
ENV_REFERENCE = re.compile(r'"\$\{([A-Za-z_][A-Za-z0-9_]*)\}"')

sys.path.insert(0, str(K8S))
from rules_configmap import KEY_SEPARATOR, rules_configmap  # noqa: E402


def documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in documents(path):
            if document.get("kind") != "Kustomization":
                objects[document["kind"], document["metadata"]["name"]] = document
    return objects


def gateway_container(objects: dict) -> dict[str, Any]:
    spec = objects["Deployment", "compliance-gateway"]["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "gateway")


def configmap_toml(objects: dict) -> str:
    return objects["ConfigMap", "compliance-gateway-config"]["data"]["gateway.toml"]


def load_deployed_config(
    toml: str,
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    paths: dict[str, Path],
) -> Config:
    """Load a deployed gateway.toml here: its env values set, its in-image paths mapped."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for deployed, local in paths.items():
        toml = toml.replace(f'"{deployed}', f'"{local}')
    path = tmp_path / "gateway.toml"
    path.write_text(toml, encoding="utf-8")
    return load_config(path)


def test_every_yaml_file_under_deploy_parses() -> None:
    paths = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    assert len(paths) >= 12
    for path in paths:
        assert documents(path), f"{path} holds no YAML document"


needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: it comes with Debian's `prometheus` package, which "
    "`make test` installs when run as root",
)


@needs_promtool
@pytest.mark.parametrize(
    "args",
    [
        ("check", "rules", "alerts.yml"),
        ("check", "config", "prometheus.yml"),
        ("test", "rules", "alerts_test.yml"),
    ],
    ids=["check-rules", "check-config", "alert-unit-tests"],
)
def test_promtool(args: tuple[str, str, str]) -> None:
    result = subprocess.run(
        [PROMTOOL, *args[:2], str(PROMETHEUS / args[2])],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def exported_metric_names() -> set[str]:
    """Every series name the gateway's registry can expose, with the type suffixes."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        metric.name + suffix
        for metric in Metrics().registry.collect()
        for suffix in suffixes[metric.type]
    }


def alert_rules() -> list[dict[str, Any]]:
    [document] = documents(PROMETHEUS / "alerts.yml")
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_alerts_and_dashboard_query_only_metrics_the_gateway_exports() -> None:
    exported = exported_metric_names()
    expressions = [r["expr"] for r in alert_rules()] + dashboard_expressions()
    used = {name for e in expressions for name in re.findall(r"\bgateway_[a-z_]+\b", e)}
    assert "gateway_messages_total" in used
    assert used <= exported, f"not exported by the gateway: {sorted(used - exported)}"
    recorded = {r["record"] for r in alert_rules() if "record" in r}
    for expression in expressions:
        for name in re.findall(r"\bgateway:[a-z_0-9:]+", expression):
            assert name in recorded, f"{name} is not a recording rule"


def known_reason_codes() -> set[str]:
    codes = set()
    for path in (ROOT / "rules").glob("*.toml"):
        codes |= set(re.findall(r'^code = "([A-Z_]+)"', path.read_text(), re.MULTILINE))
    for path in (ROOT / "gateway").rglob("*.py"):
        codes |= set(re.findall(r'"([A-Z][A-Z_]{3,})"', path.read_text()))
    return codes


def test_alerts_name_real_reason_codes_and_cover_the_brief() -> None:
    alerts = {r["alert"]: r for r in alert_rules() if "alert" in r}
    assert {
        "GatewayBlockRateSpike",
        "GatewayUpstreamErrorRate",
        "GatewayStoreUnreachable",
        "GatewayCallingWindowBlocksSurge",
    } <= alerts.keys()
    expressions = " ".join(r["expr"] for r in alert_rules())
    named = {
        code
        for match in re.findall(r'reason=~?"([^"]+)"', expressions)
        for code in match.split("|")
    }
    assert {"QUIET_HOURS", "RESTRICTED_DAY", "UPSTREAM_UNAVAILABLE"} <= named
    assert named <= known_reason_codes(), f"unknown codes: {named - known_reason_codes()}"
    calling_codes = set(
        re.findall(
            r'^code = "([A-Z_]+)"', (ROOT / "rules" / "calling.toml").read_text(), re.MULTILINE
        )
    )
    assert {"QUIET_HOURS", "RESTRICTED_DAY"} <= calling_codes
    for alert in alerts.values():
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_kubernetes_manifests_have_the_essentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = k8s_objects()
    kinds = {kind for kind, _ in objects}
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "HorizontalPodAutoscaler",
    } <= kinds
    deployment = objects["Deployment", "compliance-gateway"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = gateway_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"

    secret = objects["Secret", "compliance-gateway-secrets"]
    assert container["envFrom"] == [{"secretRef": {"name": "compliance-gateway-secrets"}}]
    toml = configmap_toml(objects)
    referenced = set(ENV_REFERENCE.findall(toml))
    assert referenced <= secret["stringData"].keys(), "every ${NAME} comes from the Secret"
    certificate = tmp_path / "tls.crt"
    certificate.write_text("placeholder")
    config = load_deployed_config(
        toml,
        secret["stringData"],
        tmp_path,
        monkeypatch,
        {
            "/etc/gateway/tls/tls.crt": certificate,
            "/etc/gateway/tls/tls.key": certificate,
            "/etc/gateway/rules": ROOT / "rules",
        },
    )
    assert (ports["http"], ports["smtp"]) == (config.http.listen.port, config.smtp.listen.port)
    assert config.store_url.startswith("postgresql://"), "replicas share PostgreSQL"
    assert config.tokens.keys and config.privacy.erasure_key, "replicas share keys"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/gateway/config", "/etc/gateway/rules", "/etc/gateway/tls"} <= mounts
    assert {"name": "GATEWAY_CONFIG", "value": "/etc/gateway/config/gateway.toml"} in container[
        "env"
    ]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > config.drain_timeout_s + pre_stop

    for kind, name in objects:
        if kind == "Service":
            service = objects[kind, name]["spec"]
            assert service["selector"].items() <= labels.items()
            for port in service["ports"]:
                assert port["targetPort"] in ports, f"{name}: no container port {port}"
    assert {
        p["targetPort"]
        for kind, name in objects
        if kind == "Service"
        for p in objects[kind, name]["spec"]["ports"]
    } == {"smtp", "http"}
    pdb = objects["PodDisruptionBudget", "compliance-gateway"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["minAvailable"] == 1
    hpa = objects["HorizontalPodAutoscaler", "compliance-gateway"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "compliance-gateway"
    assert hpa["minReplicas"] >= 2
    [kustomization] = documents(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.example.yaml" not in kustomization["resources"], "no placeholder secrets"


def test_rules_configmap_matches_rules_and_init_container_rebuilds_the_same_version(
    tmp_path: Path,
) -> None:
    objects = k8s_objects()
    data = objects["ConfigMap", "compliance-gateway-rules"]["data"]
    assert data == rules_configmap()["data"], "stale: run `make k8s-rules`"
    source, target = tmp_path / "rules-src", tmp_path / "rules"
    source.mkdir()
    target.mkdir()
    for key, text in data.items():
        (source / key).write_text(text, encoding="utf-8")
    assert any(KEY_SEPARATOR in key for key in data)
    spec = objects["Deployment", "compliance-gateway"]["spec"]["template"]["spec"]
    [init] = spec["initContainers"]
    script = (
        init["command"][-1]
        .replace("/etc/gateway/rules-src", str(source))
        .replace("/etc/gateway/rules/", f"{target}/")
    )
    subprocess.run(["sh", "-c", script], check=True, timeout=60)
    assert rules_version(target) == rules_version(ROOT / "rules")


def compose_defaults(value: str) -> str:
    """`${NAME:-default}` as docker compose expands it with NAME unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_stack_wires_gateway_postgres_prometheus_grafana(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [compose] = documents(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert {"gateway", "postgres", "prometheus", "grafana"} <= services.keys()
    gateway = services["gateway"]
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile"
    mounted = {v.split(":")[1]: v.split(":")[0] for v in gateway["volumes"] if v.startswith(".")}
    config_file = DEPLOY / mounted["/etc/gateway/gateway.toml"]
    env = {k: compose_defaults(v) for k, v in gateway["environment"].items()}
    config = load_deployed_config(
        config_file.read_text(), env, tmp_path, monkeypatch, {"/app/rules": ROOT / "rules"}
    )
    assert config.store_url.startswith("postgresql://gateway:")
    assert "@postgres:5432/" in config.store_url
    published = {int(p.rsplit(":", 1)[1]) for p in gateway["ports"]}
    assert published == {config.smtp.listen.port, config.http.listen.port}

    [scrape] = documents(PROMETHEUS / "prometheus.yml")[0]["scrape_configs"]
    assert scrape["static_configs"][0]["targets"] == [f"gateway:{config.http.listen.port}"]
    prometheus_mounts = {v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert {"./prometheus/prometheus.yml", "./prometheus/alerts.yml"} <= prometheus_mounts

    grafana_mounts = {
        v.split(":")[0]: v.split(":")[1]
        for v in services["grafana"]["volumes"]
        if v.startswith(".")
    }
    [provider] = documents(
        DEPLOY / "grafana" / "provisioning" / "dashboards" / "compliance-gateway.yml"
    )[0]["providers"]
    assert grafana_mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    [datasource] = documents(
        DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    )[0]["datasources"]
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {datasource["uid"]}
    assert datasource["url"] == "http://prometheus:9090"


def test_dockerfile_is_slim_non_root_and_checks_healthz() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    instructions = {line.split()[0] for line in lines}
    assert {"FROM", "USER", "HEALTHCHECK", "EXPOSE", "ENTRYPOINT"} <= instructions
    assert next(line for line in lines if line.startswith("FROM")) == "FROM python:3.11-slim"
    user = next(line for line in lines if line.startswith("USER")).split()[1]
    assert user.split(":")[0] not in ("0", "root")
    text = (DEPLOY / "Dockerfile").read_text()
    healthcheck = text[text.index("\nHEALTHCHECK") :].split("\nENTRYPOINT")[0]
    assert "http://127.0.0.1:8080/healthz" in healthcheck
    exposed = next(line for line in lines if line.startswith("EXPOSE")).split()[1:]
    ports = {p["containerPort"] for p in gateway_container(k8s_objects())["ports"]}
    assert {int(p) for p in exposed} == ports
