"""deploy/: the files parse, agree with each other and with the code they deploy.

promtool (Debian's `prometheus` package, installed by `make test` as root) checks the alert
rules and scrape configuration and runs the alert unit tests in alerts_test.yml.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
sys.path.insert(0, str(DEPLOY))
import audit_dependencies  # noqa: E402
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
    assert config.encryption.enabled and config.encryption.keys, "and data keys"
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
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


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
    assert config.encryption.keys, "a data key kept apart from the gateway-data volume"
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


# --- one image tag --------------------------------------------------------------------------


def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def image_tag() -> str:
    return f"compliance-gateway:{project()['project']['version']}"


def make_dry_run(target: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_one_image_tag_across_make_dockerfile_compose_and_kubernetes() -> None:
    tag = image_tag()
    version = tag.split(":")[1]
    build = f"docker build --build-arg VERSION={version} -t {tag} -f deploy/Dockerfile ."
    assert make_dry_run("image").strip().endswith(build)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"#   {build}\n" in dockerfile, "the documented build command"
    assert f"\nARG VERSION={version}\n" in dockerfile
    assert 'org.opencontainers.image.version="${VERSION}"' in dockerfile
    [compose] = documents(DEPLOY / "docker-compose.yml")
    assert compose["services"]["gateway"]["image"] == tag
    objects = k8s_objects()
    images = {
        (kind, name, container["name"]): container["image"]
        for (kind, name), document in objects.items()
        if kind in ("Deployment", "Job")
        for container in [
            *document["spec"]["template"]["spec"].get("initContainers", []),
            *document["spec"]["template"]["spec"]["containers"],
        ]
    }
    assert len(images) == 3
    assert set(images.values()) == {tag}, images
    [kustomization] = documents(K8S / "kustomization.yaml")
    assert kustomization["images"] == [{"name": tag.split(":")[0], "newTag": version}]


# --- the lock, the Dockerfile's install, the SBOM --------------------------------------------


def locked() -> dict[str, tuple[str, list[str]]]:
    """deploy/requirements.lock as {normalised name: (version, hashes)}."""
    text = (DEPLOY / "requirements.lock").read_text(encoding="utf-8").replace("\\\n", " ")
    entries = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        name, version = requirement.split(";")[0].split("==")
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=sha256:")]
        assert hashes, f"requirements.lock: {name} has no hash"
        assert len(hashes) == len(options), f"requirements.lock: {name}: {options}"
        entries[canonicalize_name(name)] = (version, hashes)
    return entries


def test_lock_pins_every_runtime_dependency_with_hashes_within_constraints() -> None:
    lock = locked()
    declared = [
        *project()["project"]["dependencies"],
        *project()["build-system"]["requires"],
    ]
    for line in declared:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(lock[name][0], prereleases=True), (
            f"requirements.lock pins {name}=={lock[name][0]}, pyproject asks {requirement}"
        )
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            assert lock[canonicalize_name(name)][0] == version.strip(), f"constraints.txt: {line}"
    test_only = {
        canonicalize_name(Requirement(r).name)
        for r in project()["project"]["optional-dependencies"]["test"]
    }
    runtime = {canonicalize_name(Requirement(r).name) for r in project()["project"]["dependencies"]}
    assert not (test_only - runtime) & lock.keys(), "test extras are not in the image"
    build_in = (DEPLOY / "build-backend.in").read_text()
    assert [r for r in build_in.splitlines() if r and not r.startswith("#")] == project()[
        "build-system"
    ]["requires"]


def test_lock_holds_every_library_the_gateway_imports() -> None:
    """A module imported by gateway/ but missing from the lock is an image that cannot start
    (joserfc was only a test extra while auth/oidc.py imported it)."""
    lock = locked()
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for path in (ROOT / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for module in {name.split(".")[0] for name in names}:
                if module in sys.stdlib_module_names or module == "gateway":
                    continue
                distributions = {canonicalize_name(d) for d in providers.get(module, [module])}
                if not distributions & lock.keys():
                    missing[module] = path.relative_to(ROOT)
    assert not missing, f"imported but not locked (add to pyproject, `make lock`): {missing}"


def test_dockerfile_installs_only_the_hashed_lock_then_the_gateway_without_dependencies() -> None:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    installs = [
        command.strip()
        for line in text.splitlines()
        if line.startswith("RUN ")
        for command in line.removeprefix("RUN ").split("&&")
        if command.strip().startswith("pip install")
    ]
    assert installs == [
        "pip install --require-hashes --no-deps -r requirements.lock",
        "pip install --no-deps --no-build-isolation -e .",
    ]
    assert "COPY deploy/requirements.lock ./" in text
    assert "--generate-hashes" in make_dry_run("lock")


def test_sbom_target_runs_a_pinned_cyclonedx_over_the_lock() -> None:
    command = make_dry_run("sbom")
    assert "cyclonedx-py requirements" in command
    assert "-o dist/sbom.cdx.json deploy/requirements.lock" in command
    pins = [
        line.split("==")
        for line in (DEPLOY / "tools-requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert {name for name, _ in pins} == {"cyclonedx-bom", "uv"}
    assert all(re.fullmatch(r"\d+(\.\d+)+", version) for _, version in pins)


def test_make_test_installs_the_pinned_tools_so_the_sbom_test_runs_in_ci() -> None:
    before_pytest = make_dry_run("test").split("-m pytest")[0]
    assert "make --no-print-directory .venv-tools/.installed ||" in before_pytest
    assert "the SBOM test will SKIP" in before_pytest


TOOLS = ROOT / ".venv-tools" / "bin"


@pytest.mark.skipif(
    not (TOOLS / "cyclonedx-py").is_file(),
    reason="cyclonedx-py not in .venv-tools: `make test` installs it there (`make tools`) and "
    "says so loudly when it could not",
)
def test_sbom_lists_every_locked_package_with_its_hashes(tmp_path: Path) -> None:
    output = tmp_path / "sbom.cdx.json"
    subprocess.run(
        [
            TOOLS / "cyclonedx-py",
            "requirements",
            "--pyproject",
            ROOT / "pyproject.toml",
            "--of",
            "JSON",
            "-o",
            output,
            DEPLOY / "requirements.lock",
        ],
        capture_output=True,
        timeout=300,
        check=True,
    )
    sbom = json.loads(output.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "compliance-gateway"
    listed = {
        canonicalize_name(c["name"]): (
            c["version"],
            sorted(h["content"] for r in c["externalReferences"] for h in r.get("hashes", [])),
        )
        for c in sbom["components"]
    }
    lock = locked()
    assert listed == {
        name: (version, sorted(h.removeprefix("sha256:") for h in hashes))
        for name, (version, hashes) in lock.items()
    }


# --- the dependency audit (deploy/audit_dependencies.py) ---------------------------------------


def pip_audit_report(vulns: dict[tuple[str, str], list[tuple[str, list[str], set[str]]]]) -> dict:
    """A report as pip-audit's own JSON formatter writes it (what the script parses)."""
    from packaging.version import Version
    from pip_audit._format import JsonFormat
    from pip_audit._service.interface import (
        ResolvedDependency,
        SkippedDependency,
        VulnerabilityResult,
    )

    result: dict[Any, list[Any]] = {}
    for (name, version), found in vulns.items():
        if version == "not-found":
            dependency = SkippedDependency(
                name=name,
                skip_reason=f"Dependency not found on PyPI and could not be audited: {name} (1.0)",
            )
        else:
            dependency = ResolvedDependency(name=name, version=Version(version))
        result[dependency] = [
            VulnerabilityResult(
                id=vid, description="d", fix_versions=[Version(v) for v in fixed], aliases=aliases
            )
            for vid, fixed, aliases in found
        ]
    return json.loads(JsonFormat(output_desc=True, output_aliases=True).format(result, []))


def test_audit_fails_only_on_a_fixable_finding_nobody_has_dated_and_reasoned(
    tmp_path: Path,
) -> None:
    report = pip_audit_report(
        {
            ("aiohttp", "3.9.0"): [("PYSEC-1", ["3.9.2"], {"CVE-2024-1"})],
            ("jinja2", "3.1.0"): [("GHSA-aaaa", ["3.1.3"], {"CVE-2024-2"})],
            ("lxml", "5.0.0"): [("GHSA-bbbb", [], set())],
            ("six", "1.17.0"): [],
            ("private-lib", "not-found"): [],
        }
    )
    ignore_file = tmp_path / "ignore.txt"
    ignore_file.write_text(
        "# comment\nCVE-2024-2  2026-11-30  the fix breaks autoescape; not reachable here\n"
    )
    ignores = audit_dependencies.read_ignores(ignore_file)
    verdict = audit_dependencies.judge(report, ignores)
    assert verdict.reached
    assert [f.vulnerability for f in verdict.failing] == ["PYSEC-1"]
    assert [(f.vulnerability, i.vulnerability) for f, i in verdict.ignored] == [
        ("GHSA-aaaa", "CVE-2024-2")
    ]
    assert [f.vulnerability for f in verdict.unfixable] == ["GHSA-bbbb"]
    assert verdict.not_audited == ["private-lib"]
    assert not audit_dependencies.judge(
        report, [*ignores, audit_dependencies.Ignore("PYSEC-1", dt.date(2026, 12, 1), "reason")]
    ).failing


def test_audit_of_nothing_is_a_skipped_audit_not_a_clean_one() -> None:
    report = pip_audit_report({("aiohttp", "not-found"): [], ("six", "not-found"): []})
    assert not audit_dependencies.judge(report, []).reached


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("PYSEC-1 2026-12-01", "ignore.txt:2: expected `ID YYYY-MM-DD reason`"),
        ("PYSEC-1 1.12.2026 a reason", "ignore.txt:2: '1.12.2026' is not a YYYY-MM-DD date"),
    ],
)
def test_a_malformed_ignore_entry_is_refused_naming_its_line(
    tmp_path: Path, line: str, error: str
) -> None:
    path = tmp_path / "ignore.txt"
    path.write_text(f"# header\n{line}\n")
    with pytest.raises(audit_dependencies.AuditError, match=re.escape(error)):
        audit_dependencies.read_ignores(path)


def run_audit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DEPLOY / "audit_dependencies.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )


def test_audit_with_the_advisory_service_unreachable_says_so_loudly_and_passes(
    tmp_path: Path,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    proxy = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update(HTTPS_PROXY=proxy, https_proxy=proxy, HTTP_PROXY=proxy, http_proxy=proxy)
    result = run_audit("--cache-dir", str(tmp_path / "cache"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        f"*** pip-audit could not reach PyPI's vulnerability service (pypi.org) for {target}: "
        "vulnerability audit SKIPPED ***"
        for target in ("the installed environment", "requirements.lock")
    ]


def test_audit_fails_the_build_on_a_fixable_finding_and_when_pip_audit_is_broken(
    tmp_path: Path,
) -> None:
    report = pip_audit_report({("aiohttp", "3.9.0"): [("PYSEC-1", ["3.9.2"], set())]})
    fake = tmp_path / "pip-audit"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(report)}\nEOF\nexit 1\n")
    fake.chmod(0o755)
    result = run_audit("--pip-audit", str(fake), "--lock", str(tmp_path / "none.lock"))
    assert result.returncode == 1
    assert (
        "*** VULNERABLE (the installed environment), fix available: aiohttp 3.9.0: PYSEC-1;"
        " fixed in: 3.9.2 ***" in result.stdout.splitlines()
    )
    broken = run_audit("--pip-audit", "/bin/false")
    assert broken.returncode == 2
    assert "dependency audit broken: pip-audit failed (exit 1)" in broken.stderr


def test_make_test_runs_the_audit_and_the_test_extra_installs_pip_audit() -> None:
    assert "deploy/audit_dependencies.py" in make_dry_run("test").split("-m pytest")[0]
    extra = {
        canonicalize_name(Requirement(r).name): Requirement(r)
        for r in project()["project"]["optional-dependencies"]["test"]
    }
    assert str(extra["pip-audit"].specifier).startswith(">=")


# --- Ingress, migrate Job, NetworkPolicy -----------------------------------------------------


def test_ingress_routes_only_the_public_paths_to_the_public_http_port() -> None:
    objects = k8s_objects()
    [ingress] = [doc for (kind, _), doc in objects.items() if kind == "Ingress"]
    public_url = re.search(r'public_url = "([^"]+)"', configmap_toml(objects)).group(1)
    host = public_url.removeprefix("https://")
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == host
    assert ingress["spec"]["tls"][0]["hosts"] == [host]
    paths = rule["http"]["paths"]
    assert sorted((p["path"], p["pathType"]) for p in paths) == [
        ("/u/", "Prefix"),
        ("/webhooks/", "Prefix"),
    ]
    services = {name: doc for (kind, name), doc in objects.items() if kind == "Service"}
    for path in paths:
        backend = path["backend"]["service"]
        service_ports = services[backend["name"]]["spec"]["ports"]
        [port] = [p for p in service_ports if p["name"] == backend["port"]["name"]]
        assert port["targetPort"] == "http"
    ports = {p["name"]: p["containerPort"] for p in gateway_container(objects)["ports"]}
    listen = re.search(r'\[http\]\nlisten = "[^"]*:(\d+)"', configmap_toml(objects)).group(1)
    assert ports["http"] == int(listen), "the Ingress reaches [http] listen, the public one"


def test_migrate_job_runs_migrate_with_the_gateways_image_and_configuration() -> None:
    objects = k8s_objects()
    job = objects["Job", "compliance-gateway-migrate"]["spec"]["template"]
    [container] = job["spec"]["containers"]
    gateway = gateway_container(objects)
    assert container["image"] == gateway["image"]
    assert container["args"] == ["migrate"]
    from gateway.cli.main import build_parser

    assert build_parser().parse_args(container["args"]).command == "migrate"
    assert container["env"] == gateway["env"] and container["envFrom"] == gateway["envFrom"]
    assert job["spec"]["restartPolicy"] == "Never"
    volumes = {v["name"]: v for v in job["spec"]["volumes"]}
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {
        "/etc/gateway/config",
        "/etc/gateway/rules",
        "/etc/gateway/tls",
    }
    assert volumes["config"]["configMap"]["name"] == "compliance-gateway-config"
    deployment_labels = objects["Deployment", "compliance-gateway"]["spec"]["selector"]
    for (kind, _), service in objects.items():
        if kind == "Service":
            selector = service["spec"]["selector"].items()
            assert not selector <= job["metadata"]["labels"].items(), "no traffic to the Job"
            assert selector <= deployment_labels["matchLabels"].items()


def test_network_policy_selects_the_gateway_pods_and_opens_only_what_they_need() -> None:
    objects = k8s_objects()
    policy = objects["NetworkPolicy", "compliance-gateway"]["spec"]
    pod_labels = objects["Deployment", "compliance-gateway"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    container_ports = {p["name"] for p in gateway_container(objects)["ports"]}
    for rule in policy["ingress"]:
        assert rule["from"], "every ingress rule names its sources"
        assert {p["port"] for p in rule["ports"]} <= container_ports
    sources = [json.dumps(rule["from"]) for rule in policy["ingress"]]
    assert any("ingress-nginx" in s for s in sources)
    assert any("prometheus" in s for s in sources)
    egress_ports = sorted(
        (p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]
    )
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (5432, "TCP")]
    migrate = objects["NetworkPolicy", "compliance-gateway-migrate"]["spec"]
    job_labels = objects["Job", "compliance-gateway-migrate"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert migrate["podSelector"]["matchLabels"].items() <= job_labels.items()
    assert "ingress" not in migrate and "Ingress" in migrate["policyTypes"]
