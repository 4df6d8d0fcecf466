"""Tests of the pitstop Helm chart with the real Helm engine.

Helm v4 runs in-process through helm-python-sdk (the Go Helm SDK behind a C ABI, no `helm`
binary, no network): it lints the chart, validates values against values.schema.json and
renders the templates exactly as `helm install` would. Every rendered object is then checked
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail) and
against the expectations below: security context, probes, RBAC rules, arguments.

Run: .venv/bin/python -m pytest -q charts/tests   (or `make test-chart`)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

CHARTS = Path(__file__).resolve().parents[1]
CHART_DIR = CHARTS / "pitstop"
ROOT = CHARTS.parent
ROOT_CRD = ROOT / "crds" / "maintenanceplan.yaml"
CHART_CRD = CHART_DIR / "crds" / "maintenanceplan.yaml"
ROOT_POLICY_CRD = ROOT / "crds" / "maintenancepolicy.yaml"
CHART_POLICY_CRD = CHART_DIR / "crds" / "maintenancepolicy.yaml"
IAM_POLICY = ROOT / "deploy" / "iam-policy.json"
IAM_POLICY_TAGGED = ROOT / "deploy" / "iam-policy-tagged.json"

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), which kubernetes-validate ships:
# the oldest `make e2e-kube` has run against (1.32, from the sources in openshift/microshift release-4.19).
KUBE_VERSION = "1.32"
RELEASE = "pitstop"
NAMESPACE = "pitstop-system"
WATCH_NAMESPACE = "team-a"
IRSA_ROLE = "arn:aws:iam::123456789012:role/pitstop"

# Kinds kubernetes-validate has no schema for; each is checked by hand in its own test.
NOT_IN_KUBERNETES_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

PLAN_RULES = [
    {"apiGroups": ["pitstop.dev"], "resources": ["maintenanceplans"],
     "verbs": ["get", "list", "watch", "patch", "update"]},
    {"apiGroups": ["pitstop.dev"], "resources": ["maintenanceplans/status"],
     "verbs": ["get", "patch", "update"]},
    {"apiGroups": ["pitstop.dev"], "resources": ["maintenanceplans/finalizers"],
     "verbs": ["update"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    # spec.notify: the webhook URL's Secret, by name (get only: no list, no watch).
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
]
POLICY_READER_RULES = [
    {"apiGroups": ["pitstop.dev"], "resources": ["maintenancepolicies"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
]
TENANCY_CLUSTER_ROLES = ["pitstop-plans-edit", "pitstop-plans-view", "pitstop-policy-reader"]
LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    # The global stop: only its ConfigMap, read-only.
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["pitstop-stop"],
     "verbs": ["get", "list", "watch"]},
]

POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# Values sets the chart must render, lint and validate cleanly.
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "watch-namespace": {"watchNamespace": WATCH_NAMESPACE},
    "irsa": {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}}},
    "single-replica": {"replicaCount": 1},
    "service-monitor": {"serviceMonitor": {"enabled": True, "interval": "15s",
                                           "labels": {"release": "prometheus"}}},
    "everything": {
        "image": {"repository": "registry.example.com/pitstop", "tag": "v9.9.9",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "replicaCount": 3,
        "watchNamespace": WATCH_NAMESPACE,
        "pollInterval": "1m30s",
        "logFormat": "text",
        "logLevel": "info,pitstop=debug",
        "aws": {"region": "eu-west-1"},
        "prometheusUrl": "http://prometheus-operated.monitoring:9090",
        "serviceAccount": {"create": True, "name": "pitstop-sa",
                           "annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"memory": "512Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops",
                         "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "pitstop"}}}}]}},
        "podAnnotations": {"example.com/team": "ops"},
        "priorityClassName": "system-cluster-critical",
        "podDisruptionBudget": {"enabled": True, "minAvailable": "50%"},
        "metrics": {"service": {"port": 9090}},
        "serviceMonitor": {"enabled": True, "interval": "1m", "labels": {"release": "prom"}},
        "tenancy": {"defaultPolicy": "unrestricted", "aggregateToDefaultRoles": False},
    },
}

# Values values.schema.json must reject, so a typo fails `helm install` instead of being ignored.
BAD_VALUES: dict[str, dict[str, Any]] = {
    "typo-top-level-key": {"replicaCont": 3},
    "typo-nested-key": {"serviceAccount": {"create": True, "anotations": {}}},
    "typo-in-service-monitor": {"serviceMonitor": {"enable": True}},
    "unknown-default-policy": {"tenancy": {"defaultPolicy": "open"}},
    "replicaCount-as-string": {"replicaCount": "two"},
    "replicaCount-negative": {"replicaCount": -1},
    "logFormat-unknown": {"logFormat": "xml"},
    "pollInterval-not-a-duration": {"pollInterval": "5 seconds"},
    "prometheusUrl-not-a-url": {"prometheusUrl": "prometheus:9090"},
    "annotation-value-not-string": {"serviceAccount": {"annotations": {"a": 1}}},
    "port-out-of-range": {"metrics": {"service": {"port": 70000}}},
    "watchNamespace-invalid": {"watchNamespace": "Team_A"},
    "region-invalid": {"aws": {"region": "Europe"}},
    "pullPolicy-unknown": {"image": {"pullPolicy": "Sometimes"}},
    "minAvailable-bad-percentage": {"podDisruptionBudget": {"minAvailable": "half"}},
    "serviceMonitor-enabled-not-bool": {"serviceMonitor": {"enabled": "yes"}},
}


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Render with the Helm engine and parse every manifest (NOTES.txt excluded)."""
    manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE,
                             is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                assert isinstance(doc, dict), f"{path}: not a mapping: {doc!r}"
                objects.append(doc)
    return objects


def notes(chart: helm.Chart, values: dict[str, Any] | None = None) -> str:
    manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    return manifests[f"{RELEASE}/templates/NOTES.txt"]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def kinds(objects: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return sorted((o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
                  for o in objects)


def assert_no_wildcards(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(field, []), f"wildcard in {field}: {rule}"


# ----------------------------------------------------------------------------- the engine


def test_helm_engine_is_the_real_one():
    # Helm v4 from the wheel's bundled libhelm_c, not a stand-in.
    assert helm.helm_sdk_version().startswith("v4."), helm.helm_sdk_version()
    assert Path(helm.library_path).is_file()


def test_chart_metadata(chart):
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "pitstop"
    assert meta["version"] == "0.1.0"
    assert meta["appVersion"] == "0.1.0"
    assert meta["kubeVersion"] == ">=1.32.0-0"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_is_clean(scenario):
    report = helm.lint(CHART_DIR, SCENARIOS[scenario], strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBE_VERSION}.0")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 1 is "info"; the only one allowed is the missing icon (there is none to link).
    findings = [m for m in report["messages"]
                if not (m["severity"] == 1 and m["error"] == "icon is recommended")]
    assert findings == []


def test_lint_reports_a_schema_violation():
    # The lint above can fail: the same call flags values the schema rejects.
    report = helm.lint(CHART_DIR, {"replicaCont": 3}, strict=True,
                       kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"], report
    assert any("replicaCont" in e for e in report["errors"])


# ----------------------------------------------------------------------------- Kubernetes schemas


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_objects_match_kubernetes_schemas(chart, scenario):
    objects = render(chart, SCENARIOS[scenario])
    assert objects
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in NOT_IN_KUBERNETES_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {err.message}")


def test_kubernetes_validation_can_fail():
    # The check above is not vacuous: a misspelt field in a Deployment is rejected.
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "i",
                                                          "readinesProbe": {}}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)


def test_default_objects(chart):
    objects = render(chart)
    assert kinds(objects) == sorted([
        ("ClusterRole", "pitstop", None),
        ("ClusterRole", "pitstop-plans-edit", None),
        ("ClusterRole", "pitstop-plans-view", None),
        ("ClusterRole", "pitstop-policy-reader", None),
        ("ClusterRoleBinding", "pitstop", None),
        ("ClusterRoleBinding", "pitstop-policy-reader", None),
        ("ConfigMap", "pitstop-stop", NAMESPACE),
        ("Deployment", "pitstop", NAMESPACE),
        ("PodDisruptionBudget", "pitstop", NAMESPACE),
        ("Role", "pitstop-leases", NAMESPACE),
        ("RoleBinding", "pitstop-leases", NAMESPACE),
        ("Service", "pitstop-metrics", NAMESPACE),
        ("ServiceAccount", "pitstop", NAMESPACE),
    ])


# ----------------------------------------------------------------------------- Deployment


def test_security_context(chart):
    objects = render(chart)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == POD_SECURITY_CONTEXT
    assert pod["automountServiceAccountToken"] is True
    assert container(objects)["securityContext"] == CONTAINER_SECURITY_CONTEXT


def test_probes_use_the_named_http_port(chart):
    objects = render(chart)
    c = container(objects)
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # The server listens on the port the container exposes.
    assert "--http-addr=0.0.0.0:8080" in c["args"]


def test_default_args_and_env(chart):
    objects = render(chart)
    c = container(objects)
    assert c["image"] == "ghcr.io/pitstop-dev/pitstop:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == [
        "controller",
        "--poll-interval=5s",
        "--log-format=json",
        "--http-addr=0.0.0.0:8080",
        "--leader-election",
        "--lease-name=pitstop-controller",
        "--default-policy=restricted",
        "--stop-configmap=pitstop-stop",
    ]
    assert c["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "RUST_LOG", "value": "info"},
    ]
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"},
                              "limits": {"memory": "256Mi"}}
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "pitstop"
    for absent in ("nodeSelector", "tolerations", "affinity", "priorityClassName",
                   "imagePullSecrets"):
        assert absent not in pod


def test_every_value_reaches_the_deployment(chart):
    values = SCENARIOS["everything"]
    objects = render(chart, values)
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(objects)
    assert deployment["spec"]["replicas"] == 3
    assert c["image"] == "registry.example.com/pitstop:v9.9.9"
    assert c["imagePullPolicy"] == "Always"
    assert c["args"] == [
        "controller",
        "--poll-interval=1m30s",
        "--log-format=text",
        "--http-addr=0.0.0.0:8080",
        "--leader-election",
        "--lease-name=pitstop-controller",
        "--default-policy=unrestricted",
        "--stop-configmap=pitstop-stop",
        f"--namespace={WATCH_NAMESPACE}",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["RUST_LOG"] == {"name": "RUST_LOG", "value": "info,pitstop=debug"}
    assert env["AWS_REGION"] == {"name": "AWS_REGION", "value": "eu-west-1"}
    assert env["PITSTOP_PROMETHEUS_URL"] == {"name": "PITSTOP_PROMETHEUS_URL",
                                             "value": "http://prometheus-operated.monitoring:9090"}
    assert c["resources"] == values["resources"]
    assert pod["serviceAccountName"] == "pitstop-sa"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert deployment["spec"]["template"]["metadata"]["annotations"] == values["podAnnotations"]
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == "50%"
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090,
                                         "targetPort": "http", "protocol": "TCP"}]


def test_selectors_match_pod_labels(chart):
    objects = render(chart)
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [deployment["spec"]["selector"]["matchLabels"],
                 one(objects, "Service")["spec"]["selector"],
                 one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]]
    for selector in selectors:
        assert selector
        assert selector.items() <= pod_labels.items()


def test_service_targets_the_named_port(chart):
    objects = render(chart)
    service = one(objects, "Service", "pitstop-metrics")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080,
                                         "targetPort": "http", "protocol": "TCP"}]
    names = {p["name"] for p in container(objects)["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in names


def test_image_tag_defaults_to_app_version(chart):
    assert container(render(chart))["image"].endswith(":" + chart.metadata["appVersion"])
    tagged = render(chart, {"image": {"tag": "sha-abc123"}})
    assert container(tagged)["image"] == "ghcr.io/pitstop-dev/pitstop:sha-abc123"


# ----------------------------------------------------------------------------- RBAC


def test_rbac_cluster_wide_by_default(chart):
    objects = render(chart)
    cluster_role = one(objects, "ClusterRole", "pitstop")
    assert cluster_role["rules"] == PLAN_RULES
    assert_no_wildcards(cluster_role["rules"])
    binding = one(objects, "ClusterRoleBinding", "pitstop")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "pitstop"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pitstop",
                                    "namespace": NAMESPACE}]
    # Plans are not reachable through a namespaced Role when watching everything.
    roles = by_kind(objects, "Role")
    assert [r["metadata"]["name"] for r in roles] == ["pitstop-leases"]


def test_rbac_secrets_get_only_for_notifications_and_can_be_turned_off(chart):
    for scenario, kind in (("defaults", "ClusterRole"), ("watch-namespace", "Role")):
        objects = render(chart, SCENARIOS[scenario])
        secret_rules = [r for obj in by_kind(objects, "Role") + by_kind(objects, "ClusterRole")
                        for r in obj["rules"] if "secrets" in r["resources"]]
        # Only the plan rules read Secrets, and only by name: never list or watch.
        assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
        assert secret_rules[0] in one(objects, kind, "pitstop")["rules"]
        off = render(chart, {**SCENARIOS[scenario], "notifications": {"readSecrets": False}})
        assert one(off, kind, "pitstop")["rules"] == PLAN_RULES[:-1]
        assert all("secrets" not in r["resources"]
                   for obj in by_kind(off, "Role") + by_kind(off, "ClusterRole")
                   for r in obj["rules"])


def test_rbac_leases_only_in_release_namespace(chart):
    for scenario in ("defaults", "watch-namespace"):
        objects = render(chart, SCENARIOS[scenario])
        role = one(objects, "Role", "pitstop-leases")
        assert role["metadata"]["namespace"] == NAMESPACE
        assert role["rules"] == LEASE_RULES
        assert_no_wildcards(role["rules"])
        binding = one(objects, "RoleBinding", "pitstop-leases")
        assert binding["metadata"]["namespace"] == NAMESPACE
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                      "kind": "Role", "name": "pitstop-leases"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pitstop",
                                        "namespace": NAMESPACE}]
        # Leases appear in no other rule anywhere.
        for obj in by_kind(objects, "Role") + by_kind(objects, "ClusterRole"):
            if obj is not role:
                assert all("leases" not in r["resources"] for r in obj["rules"])


def test_rbac_watch_namespace_uses_a_role(chart):
    objects = render(chart, SCENARIOS["watch-namespace"])
    # Cluster-wide only: reading policies and namespaces, and the tenants' aggregated roles.
    assert sorted(r["metadata"]["name"] for r in by_kind(objects, "ClusterRole")) == TENANCY_CLUSTER_ROLES
    assert [b["metadata"]["name"] for b in by_kind(objects, "ClusterRoleBinding")] == [
        "pitstop-policy-reader"]
    role = one(objects, "Role", "pitstop")
    assert role["metadata"]["namespace"] == WATCH_NAMESPACE
    assert role["rules"] == PLAN_RULES
    binding = one(objects, "RoleBinding", "pitstop")
    assert binding["metadata"]["namespace"] == WATCH_NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "Role", "name": "pitstop"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pitstop",
                                    "namespace": NAMESPACE}]
    assert f"--namespace={WATCH_NAMESPACE}" in container(objects)["args"]


def test_rbac_watch_namespace_equal_to_release_namespace(chart):
    # Both Roles then live in one namespace; their names must not collide.
    objects = render(chart, {"watchNamespace": NAMESPACE})
    names = sorted((r["metadata"]["namespace"], r["metadata"]["name"])
                   for r in by_kind(objects, "Role"))
    assert names == [(NAMESPACE, "pitstop"), (NAMESPACE, "pitstop-leases")]


def test_rbac_controller_reads_policies_and_namespaces_only(chart):
    for scenario in ("defaults", "watch-namespace"):
        objects = render(chart, SCENARIOS[scenario])
        reader = one(objects, "ClusterRole", "pitstop-policy-reader")
        assert reader["rules"] == POLICY_READER_RULES
        binding = one(objects, "ClusterRoleBinding", "pitstop-policy-reader")
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                      "kind": "ClusterRole", "name": "pitstop-policy-reader"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pitstop",
                                        "namespace": NAMESPACE}]


def test_rbac_tenants_get_plans_through_aggregation_but_never_policies(chart):
    objects = render(chart)
    edit = one(objects, "ClusterRole", "pitstop-plans-edit")
    labels = edit["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert edit["rules"] == [{"apiGroups": ["pitstop.dev"], "resources": ["maintenanceplans"],
                              "verbs": ["get", "list", "watch", "create", "update", "patch",
                                        "delete", "deletecollection"]}]
    view = one(objects, "ClusterRole", "pitstop-plans-view")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert all(v in ("get", "list", "watch") for r in view["rules"] for v in r["verbs"])
    # No role the chart aggregates into tenants' roles names policies (or plans' status writes).
    for role in by_kind(objects, "ClusterRole"):
        aggregated = any(k.startswith("rbac.authorization.k8s.io/aggregate-to-")
                         for k in role["metadata"]["labels"])
        if aggregated:
            resources = {res for r in role["rules"] for res in r["resources"]}
            assert "maintenancepolicies" not in resources, role
    off = render(chart, {"tenancy": {"aggregateToDefaultRoles": False}})
    assert [r["metadata"]["name"] for r in by_kind(off, "ClusterRole")
            if r["metadata"]["name"] != "pitstop"] == ["pitstop-policy-reader"]


def test_no_namespace_arg_when_watching_everything(chart):
    assert not any(a.startswith("--namespace") for a in container(render(chart))["args"])


# ----------------------------------------------------------------------------- ServiceAccount


def test_irsa_annotation_on_service_account(chart):
    objects = render(chart, SCENARIOS["irsa"])
    sa = one(objects, "ServiceAccount", "pitstop")
    assert sa["metadata"]["namespace"] == NAMESPACE
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": IRSA_ROLE}


def test_service_account_without_annotations_by_default(chart):
    sa = one(render(chart), "ServiceAccount", "pitstop")
    assert "annotations" not in sa["metadata"]


def test_existing_service_account(chart):
    objects = render(chart, {"serviceAccount": {"create": False, "name": "shared"}})
    assert by_kind(objects, "ServiceAccount") == []
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "shared"
    for binding in by_kind(objects, "ClusterRoleBinding") + by_kind(objects, "RoleBinding"):
        assert binding["subjects"][0]["name"] == "shared"


def test_existing_service_account_needs_a_name(chart):
    with pytest.raises(helm.HelmError, match="serviceAccount.name is required"):
        render(chart, {"serviceAccount": {"create": False}})


# ----------------------------------------------------------------------------- PDB, leader election


def test_two_replicas_have_a_pdb_and_leader_election(chart):
    objects = render(chart, {"replicaCount": 2})
    pdb = one(objects, "PodDisruptionBudget", "pitstop")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    args = container(objects)["args"]
    assert "--leader-election" in args
    assert "--lease-name=pitstop-controller" in args


def test_single_replica_has_no_pdb(chart):
    objects = render(chart, SCENARIOS["single-replica"])
    assert by_kind(objects, "PodDisruptionBudget") == []
    assert "--leader-election" in container(objects)["args"]


def test_pdb_can_be_disabled(chart):
    objects = render(chart, {"podDisruptionBudget": {"enabled": False}})
    assert by_kind(objects, "PodDisruptionBudget") == []


def test_lease_name_is_per_release(chart):
    manifests = chart.render({}, name="other", namespace=NAMESPACE)
    deployment = yaml.safe_load(manifests["pitstop/templates/deployment.yaml"])
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--lease-name=other-pitstop-controller" in args


# ----------------------------------------------------------------------------- ServiceMonitor


def test_service_monitor_absent_by_default(chart):
    assert by_kind(render(chart), "ServiceMonitor") == []


def test_service_monitor(chart):
    objects = render(chart, SCENARIOS["service-monitor"])
    monitor = one(objects, "ServiceMonitor", "pitstop")
    # kubernetes-validate has no schema for this CRD kind: check its shape by hand.
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert set(monitor["spec"]) == {"namespaceSelector", "selector", "endpoints"}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics",
                                             "interval": "15s"}]
    # It selects the metrics Service, by labels, and names one of its ports.
    service = one(objects, "Service", "pitstop-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    for key, value in monitor["metadata"]["labels"].items():
        assert isinstance(key, str) and isinstance(value, str)


# ----------------------------------------------------------------------------- values schema


def test_schema_is_draft_07_and_closed(chart):
    schema = chart.schema
    assert schema is not None
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False


def _schema_node(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        assert ref.startswith("#/definitions/"), ref
        return schema["definitions"][ref.removeprefix("#/definitions/")]
    return node


def test_schema_describes_every_value(chart):
    schema = chart.schema
    assert schema is not None

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        props = node.get("properties")
        if props is None:
            return  # free-form map (annotations, nodeSelector, affinity, resources...)
        for key, value in values.items():
            assert key in props, f"{path}{key} is not in values.schema.json"
            assert "description" in props[key], f"{path}{key} has no description"
            child = _schema_node(schema, props[key])
            if isinstance(value, dict) and child.get("additionalProperties") is False:
                walk(value, child, f"{path}{key}.")

    walk(chart.values, schema, "")
    # ...and the schema describes nothing values.yaml does not set (besides Helm's `global`).
    assert set(schema["properties"]) - {"global"} == set(chart.values)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_schema_accepts_good_values(chart, scenario):
    chart.validate_schema(chart.merge_values(SCENARIOS[scenario]))


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(chart, case):
    values = BAD_VALUES[case]
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(chart.merge_values(values))
    # The render an install performs refuses them too.
    with pytest.raises(helm.HelmValuesError, match="schema"):
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def test_values_yaml_shows_the_irsa_annotation():
    text = (CHART_DIR / "values.yaml").read_text()
    assert re.search(r"#\s*eks\.amazonaws\.com/role-arn: arn:aws:iam::", text)


# ----------------------------------------------------------------------------- CRD


def test_root_crd_exists():
    assert ROOT_CRD.is_file(), f"{ROOT_CRD} is missing: generate it with `make crds`"


def test_chart_crd_is_byte_identical_to_generated_crd():
    for root, copy in ((ROOT_CRD, CHART_CRD), (ROOT_POLICY_CRD, CHART_POLICY_CRD)):
        assert root.is_file(), f"{root} is missing: generate it with `make crds`"
        assert copy.is_file(), f"{copy} is missing: run charts/sync-crd.sh"
        assert copy.read_bytes() == root.read_bytes(), (
            f"charts/pitstop/crds/{copy.name} differs from crds/{root.name}: run charts/sync-crd.sh")


def test_helm_carries_the_policy_crd_cluster_scoped(chart):
    crds = {c["filename"]: c for c in chart.crds}
    policy = crds["pitstop/crds/maintenancepolicy.yaml"]
    assert policy["data"].encode() == ROOT_POLICY_CRD.read_bytes()
    crd = yaml.safe_load(policy["data"])
    assert crd["metadata"]["name"] == "maintenancepolicies.pitstop.dev"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == "MaintenancePolicy"
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)


def test_helm_carries_exactly_the_crds(chart):
    crds = sorted(chart.crds, key=lambda c: c["filename"])
    assert [c["filename"] for c in crds] == ["pitstop/crds/maintenanceplan.yaml",
                                             "pitstop/crds/maintenancepolicy.yaml"]
    assert crds[0]["data"].encode() == ROOT_CRD.read_bytes()
    crd = yaml.safe_load(crds[0]["data"])
    assert crd["metadata"]["name"] == "maintenanceplans.pitstop.dev"
    assert crd["spec"]["group"] == "pitstop.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["plural"] == "maintenanceplans"
    assert crd["spec"]["names"]["kind"] == "MaintenancePlan"
    assert "mp" in crd["spec"]["names"]["shortNames"]  # NOTES.txt says `kubectl get mp`
    assert any("status" in v.get("subresources", {}) for v in crd["spec"]["versions"])
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)


def test_notes_show_a_first_plan(chart):
    crd = yaml.safe_load(ROOT_CRD.read_text())
    served = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
    text = notes(chart)
    assert "kind: MaintenancePlan" in text
    assert any(f"apiVersion: pitstop.dev/{v}" in text for v in served)
    assert "get mp" in text
    assert f"-n {WATCH_NAMESPACE} get mp" in notes(chart, SCENARIOS["watch-namespace"])


# ----------------------------------------------------------------------------- IAM policy

READ_ACTIONS = {
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeTargetGroupAttributes",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTags",
    "ssm:GetCommandInvocation",
    "ssm:ListCommands",
    "ssm:ListCommandInvocations",
    "ssm:CancelCommand",
    "ssm:DescribeInstanceInformation",
    "ssm:DescribeDocument",
    "ec2:DescribeInstances",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "cloudwatch:DescribeAlarms",
}
TARGET_ACTIONS = {"elasticloadbalancing:RegisterTargets",
                  "elasticloadbalancing:DeregisterTargets"}
# spec.autoScaling's writes: resource-level permissions on the group, as AWS allows for them.
AUTO_SCALING_ACTIONS = {"autoscaling:EnterStandby", "autoscaling:ExitStandby", "autoscaling:UpdateAutoScalingGroup",
                        "autoscaling:SuspendProcesses", "autoscaling:ResumeProcesses"}
AUTO_SCALING_GROUPS = "arn:aws:autoscaling:*:ACCOUNT_ID:autoScalingGroup:*:autoScalingGroupName/*"
SEND_RESOURCES = {"arn:aws:ssm:*::document/AWS-RunShellScript",
                  "arn:aws:ssm:*:ACCOUNT_ID:document/*",
                  "arn:aws:ec2:*:ACCOUNT_ID:instance/*"}


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def test_iam_policy():
    policy = json.loads(IAM_POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    grants: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource"}
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"wildcard action {action}"
            grants.setdefault(action, set()).update(_as_list(statement["Resource"]))
    assert set(grants) == READ_ACTIONS | TARGET_ACTIONS | AUTO_SCALING_ACTIONS | {"ssm:SendCommand"}
    for action in READ_ACTIONS:
        assert grants[action] == {"*"}, action
    for action in TARGET_ACTIONS:
        assert grants[action] == {"arn:aws:elasticloadbalancing:*:ACCOUNT_ID:targetgroup/*/*"}
    for action in AUTO_SCALING_ACTIONS:
        assert grants[action] == {AUTO_SCALING_GROUPS}, action
    assert grants["ssm:SendCommand"] == SEND_RESOURCES


MANAGED_TAG = "pitstop.dev/managed"


def test_iam_policy_tagged():
    # The same actions as iam-policy.json; every write reaches only resources tagged
    # pitstop.dev/managed=true, with the condition keys AWS documents for these actions.
    plain = json.loads(IAM_POLICY.read_text())
    tagged = json.loads(IAM_POLICY_TAGGED.read_text())
    actions = lambda policy: {a for s in policy["Statement"] for a in _as_list(s["Action"])}
    assert actions(tagged) == actions(plain)
    reads = {a for a in READ_ACTIONS}
    scoped: dict[tuple[str, str], dict[str, Any]] = {}
    for statement in tagged["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"wildcard action {action}"
            for resource in _as_list(statement["Resource"]):
                if action in reads:
                    assert resource == "*" and "Condition" not in statement, statement
                else:
                    scoped[(action, resource)] = statement.get("Condition", {})
    target_group = "arn:aws:elasticloadbalancing:*:ACCOUNT_ID:targetgroup/*/*"
    for action in TARGET_ACTIONS:
        assert scoped.pop((action, target_group)) == {
            "StringEquals": {f"aws:ResourceTag/{MANAGED_TAG}": "true"}}
    for action in AUTO_SCALING_ACTIONS:
        assert scoped.pop((action, AUTO_SCALING_GROUPS)) == {
            "StringEquals": {f"aws:ResourceTag/{MANAGED_TAG}": "true"}}
    ssm_tag = {"StringEquals": {f"ssm:resourceTag/{MANAGED_TAG}": "true"}}
    assert scoped.pop(("ssm:SendCommand", "arn:aws:ec2:*:ACCOUNT_ID:instance/*")) == ssm_tag
    assert scoped.pop(("ssm:SendCommand", "arn:aws:ssm:*:ACCOUNT_ID:document/*")) == ssm_tag
    # AWS-owned documents carry no tags of yours: named one by one, the reboot and patching.
    assert scoped == {("ssm:SendCommand", "arn:aws:ssm:*::document/AWS-RunShellScript"): {},
                      ("ssm:SendCommand", "arn:aws:ssm:*::document/AWS-RunPatchBaseline"): {}}


# ----------------------------------------------------------------------------- image


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms == ["rust:1.95-bookworm", "gcr.io/distroless/cc-debian12:nonroot"]
    assert "cargo build --release --locked -p pitstop" in text
    assert re.search(r"^USER 65532(:65532)?$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["/pitstop"\]$', text, re.M)
    assert re.search(r'^CMD \["controller"\]$', text, re.M)
    # The uid the image runs as is the one the chart's securityContext asks for.
    assert CONTAINER_SECURITY_CONTEXT["runAsUser"] == 65532
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in ("target/", ".venv/", ".work/"):
        assert entry in ignored


# ----------------------------------------------------------------------------- Global stop


def test_global_stop_configmap_is_watched_and_unset_by_default(chart):
    objects = render(chart)
    stop = one(objects, "ConfigMap", "pitstop-stop")
    assert stop["metadata"]["namespace"] == NAMESPACE
    assert "annotations" not in stop["metadata"], "plans run by default"
    assert "--stop-configmap=pitstop-stop" in container(objects)["args"]


def test_global_stop_can_hold_every_plan_from_install(chart):
    objects = render(chart, {"globalStop": {"paused": "change freeze"}})
    stop = one(objects, "ConfigMap", "pitstop-stop")
    assert stop["metadata"]["annotations"] == {"pitstop.dev/paused": "change freeze"}
