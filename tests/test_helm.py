"""The Helm chart renders, lints and validates offline, and keeps its promises.

Renders `helm/clearout-gateway` with Helm's own library (helm-python-sdk, no
helm binary, no cluster) for the default values and for every
`ci/*-values.yaml`, lints it strictly, and validates each manifest against the
Kubernetes OpenAPI schemas bundled with kubernetes-validate. The chart's
values.schema.json is applied by Helm's own render (as `helm install` does);
the tests show it refuses mistyped keys, wrong types and unknown choices, and
that it declares every key of values.yaml. Custom resources
(ServiceMonitor, PrometheusRule) have no bundled schema; their structure is
asserted here instead. The behaviour tests pin what operators rely on: a
locked-down pod, probes on the contract's paths, pods that roll on config
change, tokens that only ever travel as mounted Secret files, and a
termination grace period long enough for the gateway's drain.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk (dev dependency) is not installed"
)
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (dev dependency) is not installed"
)
from helm_python import _native  # noqa: E402 - only importable once the skip above passed

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "clearout-gateway"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SCHEMA = CHART / "values.schema.json"
RELEASE = "gw"
NAMESPACE = "email"
FULLNAME = f"{RELEASE}-clearout-gateway"
KUBE_VERSION = "1.33.0"

SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
PROMETHEUS_RULE_API = "monitoring.coreos.com/v1/PrometheusRule"
MONITORING_APIS = (SERVICE_MONITOR_API, PROMETHEUS_RULE_API)
# Kinds served by CRDs: kubernetes-validate bundles no schema for them.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}

STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)

# Every key the settings ConfigMap may carry: the gateway's documented names.
SETTINGS_KEYS = {
    "GATEWAY_UPSTREAM_URL",
    "GATEWAY_SANDBOX",
    "GATEWAY_LOG_FORMAT",
    "GATEWAY_UPSTREAM_RPM",
    "GATEWAY_QUOTA_ON_STORE_ERROR",
    "GATEWAY_CACHE_SCOPE",
    "GATEWAY_CACHE_TTL_FOUND_SECONDS",
    "GATEWAY_CACHE_TTL_NOT_FOUND_SECONDS",
    "GATEWAY_CREDITS_POLL_SECONDS",
    "GATEWAY_MAX_BULK_BYTES",
    "GATEWAY_DRAIN_DELAY_SECONDS",
    "GATEWAY_SHUTDOWN_GRACE_SECONDS",
    "GATEWAY_REDIS_URL",
    "GATEWAY_REDIS_MODE",
    "GATEWAY_REDIS_SENTINELS",
    "GATEWAY_REDIS_SENTINEL_MASTER",
}

VALUE_SETS = [pytest.param(None, id="default")] + [
    pytest.param(path, id=path.name) for path in CI_VALUES
]


# --- rendering helpers -------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterable[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def load_values(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(values, dict), f"{path.name} must be a mapping"
    return values


def render(
    chart: Any, values: dict[str, Any] | None = None, *, api_versions: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Render like `helm template` and return the manifests, NOTES excluded.

    `Chart.render()` in helm-python-sdk 0.2.2 does not forward `kube_version`
    or `api_versions`, although the library's render options accept both;
    the capability-gated templates need them, so the same native call is made
    with the full options.
    """
    opts = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "is_install": True,
        "kube_version": f"v{KUBE_VERSION}",
        "api_versions": list(api_versions),
    }
    rendered: dict[str, str] = json.loads(
        _native.call_string("helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts))
    )
    docs: list[dict[str, Any]] = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                assert isinstance(doc, dict), f"{template} rendered a non-object"
                docs.append(doc)
    return docs


def notes(chart: Any, values: dict[str, Any] | None = None) -> str:
    rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    return str(rendered[f"{CHART.name}/templates/NOTES.txt"])


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def settings_configmap(docs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = one(docs, "ConfigMap", FULLNAME)["data"]
    return data


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(docs)["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def env(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(docs).get("env", [])}


def volume(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [v for v in pod_spec(docs)["volumes"] if v["name"] == name]
    assert len(found) == 1, f"expected volume {name}"
    volume_spec: dict[str, Any] = found[0]
    return volume_spec


def mount_path(docs: list[dict[str, Any]], volume_name: str) -> str:
    mounts = [m for m in container(docs)["volumeMounts"] if m["name"] == volume_name]
    assert len(mounts) == 1, f"expected one mount of {volume_name}"
    path: str = mounts[0]["mountPath"]
    return path


def credential_files(docs: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """Mounted credential file path -> (Secret name, key) of the projected volume."""
    credentials = volume(docs, "credentials")["projected"]
    directory = mount_path(docs, "credentials")
    return {
        f"{directory}/{item['path']}": (source["secret"]["name"], item["key"])
        for source in credentials["sources"]
        for item in source["secret"]["items"]
    }


def checksum(docs: list[dict[str, Any]]) -> str:
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    value: str = annotations["checksum/config"]
    return value


# --- structure of the custom resources ---------------------------------------


def assert_service_monitor(monitor: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    service = one(docs, "Service")
    service_labels = service["metadata"]["labels"]
    selector = spec["selector"]["matchLabels"]
    assert selector, "a ServiceMonitor without a selector would scrape every Service"
    assert selector.items() <= service_labels.items(), "selector does not match the Service"
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert spec["endpoints"], "no endpoints to scrape"
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        assert str(endpoint["interval"]).endswith("s")


def assert_prometheus_rule(rule: dict[str, Any]) -> None:
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    assert isinstance(groups, list) and groups, "PrometheusRule without groups"
    names = [group["name"] for group in groups]
    assert len(names) == len(set(names)), f"duplicate group names: {names}"
    for group in groups:
        assert isinstance(group["name"], str) and group["name"]
        assert isinstance(group["rules"], list) and group["rules"], f"{group['name']}: no rules"
        for item in group["rules"]:
            assert ("alert" in item) != ("record" in item), f"alert xor record: {item}"
            assert isinstance(item["expr"], str | int) and str(item["expr"]).strip()
            for field in ("labels", "annotations"):
                for key, value in (item.get(field) or {}).items():
                    assert isinstance(key, str) and isinstance(value, str), (field, key, value)


def validate(doc: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    kind = doc["kind"]
    if kind == "ServiceMonitor":
        assert_service_monitor(doc, docs)
        return
    if kind == "PrometheusRule":
        assert_prometheus_rule(doc)
        return
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        pytest.fail(f"{kind}/{doc['metadata']['name']}: {where}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(exc.message)


# --- every values set: lint, render, validate --------------------------------


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_lint_is_clean(values_file: Path | None) -> None:
    """`helm lint --strict` finds no warning or error for the values set."""
    report = helm.lint(
        CHART, load_values(values_file), strict=True, kube_version=f"v{KUBE_VERSION}"
    )
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_manifests_are_valid(chart: Any, values_file: Path | None) -> None:
    """Each rendered object passes the Kubernetes schema (strict), or our CRD checks."""
    docs = render(chart, load_values(values_file), api_versions=MONITORING_APIS)
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= kinds
    for doc in docs:
        validate(doc, docs)


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_objects_carry_standard_labels_and_namespace(chart: Any, values_file: Path | None) -> None:
    """Every object is namespaced to the release and labelled app.kubernetes.io/*."""
    docs = render(chart, load_values(values_file), api_versions=MONITORING_APIS)
    for doc in docs:
        meta = doc["metadata"]
        assert meta["namespace"] == NAMESPACE, doc["kind"]
        missing = [label for label in STANDARD_LABELS if label not in meta["labels"]]
        assert missing == [], f"{doc['kind']} lacks {missing}"
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_settings_configmap_holds_only_settings(chart: Any, values_file: Path | None) -> None:
    """The envFrom ConfigMap has only known GATEWAY_* keys, as plain decimal strings."""
    data = settings_configmap(render(chart, load_values(values_file)))
    assert set(data) <= SETTINGS_KEYS, set(data) - SETTINGS_KEYS
    for key, value in data.items():
        assert isinstance(value, str), key
        assert "e+" not in value, f"{key}={value}: a number rendered in float notation"


def test_every_documented_feature_has_a_ci_values_file() -> None:
    """One ci/<feature>-values.yaml per optional feature of the chart."""
    names = {path.name.removesuffix("-values.yaml") for path in CI_VALUES}
    assert set(FEATURE_CHECKS) <= names


# --- what each ci/<feature>-values.yaml turns on -----------------------------


def check_hpa(docs: list[dict[str, Any]]) -> None:
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    cpu = [m for m in hpa["spec"]["metrics"] if m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization"
    # The HPA owns the replica count; a fixed one would fight it on every upgrade.
    assert "replicas" not in one(docs, "Deployment")["spec"]
    # Two or more pods at all times: the disruption budget comes with it.
    assert of_kind(docs, "PodDisruptionBudget")


def check_pdb(docs: list[dict[str, Any]]) -> None:
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 2
    assert "maxUnavailable" not in pdb["spec"]
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector


def check_servicemonitor(docs: list[dict[str, Any]]) -> None:
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]


def check_prometheusrule(docs: list[dict[str, Any]]) -> None:
    rule = one(docs, "PrometheusRule")
    source = yaml.safe_load((CHART / "files" / "prometheus-rules.yml").read_text("utf-8"))
    assert rule["spec"]["groups"] == source["groups"], "groups must be the rules file's, unchanged"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def check_networkpolicy(docs: list[dict[str, Any]]) -> None:
    policy = one(docs, "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["podSelector"]["matchLabels"] == selector
    ingress_ports = {
        p["port"]: rule.get("from") for rule in policy["ingress"] for p in rule["ports"]
    }
    assert ingress_ports["http"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}
    ]
    assert ingress_ports["metrics"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (6379, "TCP"), (443, "TCP")} <= egress


def check_existing_secret(docs: list[dict[str, Any]]) -> None:
    assert of_kind(docs, "Secret") == [], "existing Secrets must not be duplicated by the chart"
    sources = volume(docs, "credentials")["projected"]["sources"]
    refs = {(s["secret"]["name"], s["secret"]["items"][0]["key"]) for s in sources}
    assert refs == {
        ("clearout-credentials", "api-token"),
        ("gateway-admin", "token"),
        ("gateway-redis", "redis-url"),
    }
    # The Redis URL (password included) is a mounted file, like the tokens.
    variables = env(docs)
    redis_file = variables["GATEWAY_REDIS_URL_FILE"]["value"]
    assert credential_files(docs)[redis_file] == ("gateway-redis", "redis-url")
    assert "GATEWAY_REDIS_URL" not in variables
    assert "GATEWAY_REDIS_URL" not in settings_configmap(docs)
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" not in annotations


def check_sandbox(docs: list[dict[str, Any]]) -> None:
    assert settings_configmap(docs)["GATEWAY_SANDBOX"] == "1"
    assert of_kind(docs, "Secret") == []
    assert "CLEAROUT_API_TOKEN_FILE" not in env(docs)
    assert all(v["name"] != "credentials" for v in pod_spec(docs)["volumes"])


def check_separate_metrics_port(docs: list[dict[str, Any]]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert ports == {"http": 8080, "metrics": 9091}
    assert env(docs)["GATEWAY_METRICS_PORT"]["value"] == "9091"
    service_ports = {p["name"]: p for p in one(docs, "Service")["spec"]["ports"]}
    assert service_ports["metrics"]["port"] == 9091
    assert service_ports["metrics"]["targetPort"] == "metrics"


def check_redis_sentinel(docs: list[dict[str, Any]]) -> None:
    data = settings_configmap(docs)
    assert data["GATEWAY_REDIS_MODE"] == "sentinel"
    assert data["GATEWAY_REDIS_SENTINEL_MASTER"] == "mymaster"
    sentinels = data["GATEWAY_REDIS_SENTINELS"].split(",")
    assert len(sentinels) == 3 and all(s.endswith(":26379") for s in sentinels)
    redis_file = env(docs)["GATEWAY_REDIS_URL_FILE"]["value"]
    assert credential_files(docs)[redis_file] == ("gateway-redis", "redis-url")
    assert of_kind(docs, "PodDisruptionBudget"), "two replicas get a PDB by default"
    egress = one(docs, "NetworkPolicy")["spec"]["egress"]
    assert 26379 in {p["port"] for rule in egress for p in rule["ports"]}


def check_image_digest(docs: list[dict[str, Any]]) -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    image = container(docs)["image"]
    assert image == f"registry.example.com/platform/clearout-gateway@{digest}"
    # The tag still labels the objects; the digest alone picks the image.
    assert one(docs, "Deployment")["metadata"]["labels"]["app.kubernetes.io/version"] == "0.1.0"


FEATURE_CHECKS = {
    "hpa": check_hpa,
    "pdb": check_pdb,
    "servicemonitor": check_servicemonitor,
    "prometheusrule": check_prometheusrule,
    "networkpolicy": check_networkpolicy,
    "existing-secret": check_existing_secret,
    "sandbox": check_sandbox,
    "separate-metrics-port": check_separate_metrics_port,
    "redis-sentinel": check_redis_sentinel,
    "image-digest": check_image_digest,
}


@pytest.mark.parametrize("feature", sorted(FEATURE_CHECKS))
def test_ci_values_turn_their_feature_on(chart: Any, feature: str) -> None:
    """Each ci/<feature>-values.yaml renders the objects and settings it is named for."""
    values = load_values(CHART / "ci" / f"{feature}-values.yaml")
    FEATURE_CHECKS[feature](render(chart, values, api_versions=MONITORING_APIS))


def test_optional_objects_are_off_by_default(chart: Any) -> None:
    """Defaults: no HPA, PDB, NetworkPolicy, monitoring objects or Secret."""
    kinds = {doc["kind"] for doc in render(chart, api_versions=MONITORING_APIS)}
    assert kinds == {"ConfigMap", "Deployment", "Service", "ServiceAccount"}


@pytest.mark.parametrize(
    ("feature", "kind", "capability"),
    [
        ("servicemonitor", "ServiceMonitor", SERVICE_MONITOR_API),
        ("prometheusrule", "PrometheusRule", PROMETHEUS_RULE_API),
    ],
)
def test_monitoring_objects_need_their_crd(
    chart: Any, feature: str, kind: str, capability: str
) -> None:
    """Enabled but without the CRD served, the object is skipped (and NOTES say so)."""
    values = load_values(CHART / "ci" / f"{feature}-values.yaml")
    assert len(of_kind(render(chart, values, api_versions=[capability]), kind)) == 1
    assert of_kind(render(chart, values), kind) == []
    # The group/version alone is not the kind: the gate must name the resource.
    assert of_kind(render(chart, values, api_versions=["monitoring.coreos.com/v1"]), kind) == []
    assert f"does not serve\nmonitoring.coreos.com/v1 {kind}" in notes(chart, values)


# --- behaviour ---------------------------------------------------------------


def test_pod_and_container_are_locked_down(chart: Any) -> None:
    """Non-root 10001, read-only root, no escalation, no capabilities, RuntimeDefault seccomp."""
    docs = render(chart)
    pod = pod_spec(docs)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container(docs)["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == 10001
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec(docs)["automountServiceAccountToken"] is False
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False


def test_probes_use_contract_paths_on_named_port(chart: Any) -> None:
    """Liveness GET /healthz, readiness GET /readyz, both on the `http` port (8080)."""
    docs = render(chart)
    gateway = container(docs)
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in gateway["ports"]
    assert env(docs)["GATEWAY_PORT"]["value"] == "8080"
    assert gateway["args"] == ["serve"]


def test_image_is_pulled_always_by_default(chart: Any) -> None:
    """pullPolicy Always: a node's cached private image is never used without credentials."""
    assert container(render(chart))["imagePullPolicy"] == "Always"
    local = render(chart, {"image": {"pullPolicy": "IfNotPresent"}})
    assert container(local)["imagePullPolicy"] == "IfNotPresent"


def test_image_tag_defaults_to_app_version(chart: Any) -> None:
    """Without image.tag the image is <repository>:<appVersion>."""
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text("utf-8"))["appVersion"]
    assert container(render(chart))["image"] == f"clearout-gateway:{app_version}"
    pinned = render(chart, {"image": {"repository": "r/gw", "tag": "9.9.9"}})
    assert container(pinned)["image"] == "r/gw:9.9.9"


def test_service_fronts_the_http_port(chart: Any) -> None:
    """ClusterIP Service, port 80 to the named `http` container port."""
    service = one(render(chart), "Service")["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]


TEAMS = [{"name": "growth", "key_sha256": ["ab" * 32], "quota": {"credits_per_day": 500}}]


def test_checksum_rolls_pods_on_config_change(chart: Any) -> None:
    """checksum/config is stable, and changes with the teams list or a setting."""
    base = checksum(render(chart, {"teams": TEAMS}))
    assert base == checksum(render(chart, {"teams": TEAMS}))
    assert len(base) == 64
    rotated = [{**TEAMS[0], "key_sha256": ["ab" * 32, "cd" * 32]}]
    assert checksum(render(chart, {"teams": rotated})) != base
    assert checksum(render(chart, {"teams": TEAMS, "config": {"logFormat": "console"}})) != base
    # Values that do not reach the ConfigMaps leave the pods alone.
    assert checksum(render(chart, {"teams": TEAMS, "podAnnotations": {"a": "b"}})) == base


def test_checksum_secret_follows_chart_created_secret(chart: Any) -> None:
    """A token set inline rolls the pods when it changes (checksum/secret)."""

    def secret_sum(token: str) -> str:
        docs = render(chart, {"upstream": {"token": token}})
        annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/secret"]
        return value

    assert secret_sum("token-one") != secret_sum("token-two")


def test_teams_file_is_mounted_where_the_gateway_looks(chart: Any) -> None:
    """GATEWAY_TEAMS_FILE names the mounted ConfigMap file, whose YAML is the teams value."""
    docs = render(chart, {"teams": TEAMS})
    teams_file = env(docs)["GATEWAY_TEAMS_FILE"]["value"]
    teams_volume = volume(docs, "teams")["configMap"]
    assert teams_file == f"{mount_path(docs, 'teams')}/{teams_volume['items'][0]['path']}"
    mounted = one(docs, "ConfigMap", teams_volume["name"])["data"][teams_volume["items"][0]["key"]]
    assert yaml.safe_load(mounted) == {"teams": TEAMS}
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["teams"]["readOnly"] is True
    # The teams file must not leak into the environment through envFrom.
    assert "teams.yaml" not in settings_configmap(docs)


UPSTREAM_TOKEN = "upstream-token-3f1d9c0e"  # a marker to search for, not a real token
ADMIN_TOKEN = "admin-token-77b2a4e1"


def test_tokens_only_travel_as_secret_files(chart: Any) -> None:
    """Inline tokens land in the Secret only and reach the pod as mounted files."""
    docs = render(chart, {"upstream": {"token": UPSTREAM_TOKEN}, "admin": {"token": ADMIN_TOKEN}})
    secret = one(docs, "Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"upstream-token": UPSTREAM_TOKEN, "admin-token": ADMIN_TOKEN}

    others = [doc for doc in docs if doc["kind"] != "Secret"]
    text = yaml.safe_dump_all(others)
    for token in (UPSTREAM_TOKEN, ADMIN_TOKEN):
        assert token not in text
        assert base64.b64encode(token.encode()).decode() not in text

    variables = env(docs)
    # The gateway refuses KEY and KEY_FILE together; only the file form is used.
    assert "CLEAROUT_API_TOKEN" not in variables
    assert "GATEWAY_ADMIN_TOKEN" not in variables
    for item in variables.values():
        assert "secretKeyRef" not in item.get("valueFrom", {}), (
            f"{item['name']} carries a secret as an environment value"
        )

    credentials = volume(docs, "credentials")["projected"]
    files = credential_files(docs)
    assert files[variables["CLEAROUT_API_TOKEN_FILE"]["value"]] == (
        secret["metadata"]["name"],
        "upstream-token",
    )
    assert files[variables["GATEWAY_ADMIN_TOKEN_FILE"]["value"]] == (
        secret["metadata"]["name"],
        "admin-token",
    )
    assert credentials["defaultMode"] & 0o007 == 0, "token files must not be world-readable"


def test_no_admin_token_means_no_admin_file(chart: Any) -> None:
    """Admin routes stay disabled unless an admin token is configured."""
    docs = render(chart, {"upstream": {"existingSecret": "up"}})
    assert "GATEWAY_ADMIN_TOKEN_FILE" not in env(docs)
    assert of_kind(docs, "Secret") == []


@pytest.mark.parametrize(("drain", "grace"), [(5, 30), (12, 60), (2.5, 10)])
def test_termination_grace_covers_drain_and_shutdown(
    chart: Any, drain: float, grace: float
) -> None:
    """terminationGracePeriodSeconds = drainDelaySeconds + shutdownGraceSeconds + 5 (rounded up)."""
    values = {"config": {"drainDelaySeconds": drain, "shutdownGraceSeconds": grace}}
    docs = render(chart, values)
    expected = math.ceil(drain) + math.ceil(grace) + 5
    assert pod_spec(docs)["terminationGracePeriodSeconds"] == expected
    data = settings_configmap(docs)
    assert float(data["GATEWAY_DRAIN_DELAY_SECONDS"]) == drain
    assert float(data["GATEWAY_SHUTDOWN_GRACE_SECONDS"]) == grace


def test_default_termination_grace(chart: Any) -> None:
    """With the gateway's defaults (5 s drain, 30 s grace) pods get 40 s."""
    assert pod_spec(render(chart))["terminationGracePeriodSeconds"] == 40


def test_tmp_is_a_bounded_empty_dir_for_the_spool(chart: Any) -> None:
    """/tmp is an emptyDir (1Gi by default) and GATEWAY_SPOOL_DIR points at it."""
    docs = render(chart)
    assert mount_path(docs, "tmp") == "/tmp"
    assert volume(docs, "tmp")["emptyDir"] == {"sizeLimit": "1Gi"}
    assert env(docs)["GATEWAY_SPOOL_DIR"]["value"] == "/tmp"
    sized = render(chart, {"spool": {"sizeLimit": "4Gi", "medium": "Memory"}})
    assert volume(sized, "tmp")["emptyDir"] == {"sizeLimit": "4Gi", "medium": "Memory"}


def test_replicas_spread_over_hosts_and_zones(chart: Any) -> None:
    """Topology spread by hostname and zone, ScheduleAnyway, selecting the gateway's pods."""
    docs = render(chart)
    constraints = pod_spec(docs)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for constraint in constraints:
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    hard = render(chart, {"topologySpread": {"whenUnsatisfiable": "DoNotSchedule"}})
    assert {c["whenUnsatisfiable"] for c in pod_spec(hard)["topologySpreadConstraints"]} == {
        "DoNotSchedule"
    }


def test_redis_url_secret_keeps_password_out_of_configmap(chart: Any) -> None:
    """A plain redis.url goes to the ConfigMap; redis.existingSecret is a mounted file."""
    plain = render(chart, {"redis": {"url": "redis://cache:6379/0"}})
    assert settings_configmap(plain)["GATEWAY_REDIS_URL"] == "redis://cache:6379/0"
    assert "GATEWAY_REDIS_URL" not in env(plain)
    assert "GATEWAY_REDIS_URL_FILE" not in env(plain)
    assert all(v["name"] != "credentials" for v in pod_spec(plain)["volumes"])

    # A Redis Secret alone (sandbox: no token) still gets the credentials volume.
    secret = render(chart, {"sandbox": {"enabled": True}, "redis": {"existingSecret": "r"}})
    path = env(secret)["GATEWAY_REDIS_URL_FILE"]["value"]
    assert credential_files(secret) == {path: ("r", "redis-url")}
    assert "GATEWAY_REDIS_URL" not in settings_configmap(secret)
    assert "GATEWAY_REDIS_URL" not in env(secret)
    keyed = render(chart, {"redis": {"existingSecret": "r", "existingSecretKey": "url"}})
    assert set(credential_files(keyed).values()) == {("r", "url")}
    with pytest.raises(helm.HelmError, match=r"only one of redis\.url and redis\.existingSecret"):
        render(chart, {"redis": {"url": "redis://cache:6379/0", "existingSecret": "s"}})


def test_sandbox_flag_reaches_the_gateway(chart: Any) -> None:
    """sandbox.enabled sets GATEWAY_SANDBOX=1; it is 0 otherwise."""
    assert settings_configmap(render(chart))["GATEWAY_SANDBOX"] == "0"
    assert settings_configmap(render(chart, {"sandbox": {"enabled": True}}))["GATEWAY_SANDBOX"] == (
        "1"
    )


def test_optional_settings_are_omitted_until_set(chart: Any) -> None:
    """GATEWAY_UPSTREAM_RPM only appears when upstreamRpm is set, as an integer."""
    assert "GATEWAY_UPSTREAM_RPM" not in settings_configmap(render(chart))
    data = settings_configmap(render(chart, {"config": {"upstreamRpm": 600}}))
    assert data["GATEWAY_UPSTREAM_RPM"] == "600"


def test_extra_env_is_appended(chart: Any) -> None:
    """extraEnv entries reach the container unchanged."""
    extra = {"name": "GATEWAY_UPSTREAM_TIMEOUT_SECONDS", "value": "45"}
    assert env(render(chart, {"extraEnv": [extra]}))[extra["name"]] == extra


def test_more_than_one_replica_requires_redis(chart: Any) -> None:
    """Several replicas without Redis would each keep their own quotas: refuse to render."""
    with pytest.raises(helm.HelmError, match="needs Redis"):
        render(chart, {"replicaCount": 2})
    with pytest.raises(helm.HelmError, match="needs Redis"):
        render(chart, {"autoscaling": {"enabled": True}})
    docs = render(chart, {"replicaCount": 2, "redis": {"url": "redis://cache:6379/0"}})
    assert one(docs, "Deployment")["spec"]["replicas"] == 2


def test_pdb_default_follows_replica_count(chart: Any) -> None:
    """PDB: off for one replica, on for more, and an explicit value wins."""
    redis = {"url": "redis://cache:6379/0"}
    assert of_kind(render(chart), "PodDisruptionBudget") == []
    assert of_kind(render(chart, {"replicaCount": 3, "redis": redis}), "PodDisruptionBudget")
    forced_off = {"replicaCount": 3, "redis": redis, "podDisruptionBudget": {"enabled": False}}
    assert of_kind(render(chart, forced_off), "PodDisruptionBudget") == []
    forced_on = render(chart, {"podDisruptionBudget": {"enabled": True}})
    assert one(forced_on, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_notes_warn_when_gateway_cannot_start(chart: Any) -> None:
    """Without a token or sandbox the NOTES say the gateway will refuse to start."""
    assert "no upstream token is configured" in notes(chart)
    assert "no upstream token" not in notes(chart, {"upstream": {"existingSecret": "up"}})
    assert "SANDBOX MODE" in notes(chart, {"sandbox": {"enabled": True}})


# --- values.schema.json ---------------------------------------------------------


def values_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return loaded


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing for plain values: maps merge key by key, the rest replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def test_schema_is_draft7_and_accepts_every_values_set() -> None:
    """A valid draft-07 schema (what Helm reads) that the defaults and every ci file pass."""
    schema = values_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    for path in [None, *CI_VALUES]:
        values = merged(defaults, load_values(path))
        errors = [
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(values)
        ]
        assert errors == [], f"{path.name if path else 'values.yaml'}: {errors}"


def schema_node(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].removeprefix("#/definitions/")]
    return node


def undeclared_keys(
    schema: dict[str, Any], node: dict[str, Any], value: Any, where: str
) -> Iterable[str]:
    node = schema_node(schema, node)
    if not isinstance(value, dict) or "properties" not in node:
        return  # a scalar, a list, or a map passed through to Kubernetes as written
    for key, item in value.items():
        if key not in node["properties"]:
            yield f"{where}{key}"
        else:
            yield from undeclared_keys(schema, node["properties"][key], item, f"{where}{key}.")


def test_schema_declares_every_key_of_values_yaml() -> None:
    """Each key of values.yaml has a declaration (its type, enum or shape) in the schema."""
    schema = values_schema()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert list(undeclared_keys(schema, schema, defaults, "")) == []
    assert set(schema["properties"]) - {"global"} == set(defaults), "schema declares no extra key"


REFUSED_VALUES = [
    pytest.param({"replicas": 2}, "replicas", id="mistyped-top-level-key"),
    pytest.param({"config": {"logformat": "console"}}, "logformat", id="mistyped-setting"),
    pytest.param({"redis": {"existingSecretName": "r"}}, "existingSecretName", id="mistyped-redis"),
    pytest.param(
        {"teams": [{"name": "growth", "key_sha256": ["ab" * 32], "quotas": {}}]},
        "quotas",
        id="mistyped-team-key",
    ),
    pytest.param(
        {"livenessProbe": {"httpGet": {"path": "/"}}}, "httpGet", id="probe-path-is-fixed"
    ),
    pytest.param({"replicaCount": "2"}, "replicaCount", id="string-for-integer"),
    pytest.param({"sandbox": {"enabled": "yes"}}, "enabled", id="string-for-boolean"),
    pytest.param({"config": {"drainDelaySeconds": -1}}, "drainDelaySeconds", id="negative"),
    pytest.param({"config": {"upstreamRpm": 0}}, "upstreamRpm", id="zero-rpm"),
    pytest.param({"config": {"logFormat": "text"}}, "logFormat", id="log-format-choice"),
    pytest.param({"redis": {"mode": "replication"}}, "mode", id="redis-mode-choice"),
    pytest.param({"image": {"pullPolicy": "always"}}, "pullPolicy", id="pull-policy-choice"),
    pytest.param({"image": {"digest": "1234"}}, "digest", id="digest-shape"),
    pytest.param(
        {"teams": [{"name": "Growth Team", "key_sha256": ["ab" * 32]}]}, "name", id="team-name"
    ),
    pytest.param({"teams": [{"name": "growth", "key_sha256": ["ab"]}]}, "key_sha256", id="digest"),
    pytest.param({"redis": {"sentinels": ["cache-redis"]}}, "sentinels", id="sentinel-no-port"),
    pytest.param({"resources": {"limits": {"memory": "lots"}}}, "memory", id="quantity"),
]


@pytest.mark.parametrize(("values", "key"), REFUSED_VALUES)
def test_schema_refuses_bad_values(chart: Any, values: dict[str, Any], key: str) -> None:
    """Helm refuses to render (and lint fails) for a mistyped key, a wrong type or choice."""
    with pytest.raises(helm.HelmError, match="schema") as refused:
        render(chart, values)
    assert key in str(refused.value)
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert any(key in error for error in report["errors"]), report["errors"]


ACCEPTED_VALUES = [
    pytest.param({"config": {"upstreamRpm": 600, "drainDelaySeconds": 2.5}}, id="numbers"),
    pytest.param({"teams": [{"name": "g", "key_sha256": "AB" * 32}]}, id="one-digest-string"),
    pytest.param(
        {
            "teams": [
                {"name": "g", "key_sha256": ["ab" * 32], "quota": {"requests_per_second": 0.5}}
            ]
        },
        id="fractional-rate",
    ),
    pytest.param({"podDisruptionBudget": {"enabled": True, "minAvailable": "50%"}}, id="percent"),
    pytest.param({"resources": {"limits": {"cpu": 2, "memory": "1Gi"}}}, id="quantities"),
    pytest.param({"global": {"imageRegistry": "registry.example.com"}}, id="parent-globals"),
    pytest.param({"affinity": {"nodeAffinity": {}}, "tolerations": [{"key": "k"}]}, id="k8s"),
]


@pytest.mark.parametrize("values", ACCEPTED_VALUES)
def test_schema_accepts_valid_values(chart: Any, values: dict[str, Any]) -> None:
    """Values in every form values.yaml documents render."""
    assert one(render(chart, values), "Deployment")
