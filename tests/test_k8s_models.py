"""The Kubernetes objects of a served model version, without a cluster.

Every manifest is compared as a dict and validated against the Kubernetes OpenAPI
schema with kubernetes-validate (strict: unknown fields fail).
"""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest

from hubforge.k8s.models import (
    FETCH_PORT,
    HUB_POD_SELECTOR,
    KEY_FILE,
    make_model_deployment,
    make_model_hpa,
    make_model_network_policy,
    make_model_secret,
    make_model_service,
    model_labels,
    model_manifests,
    model_object_name,
)

K8S_VERSION = "1.33"
KEY = "model-key-5d0c3f9b21a84e7f"
FETCH_URL = "http://hub:10103/services/models/internal/archive"
IMAGE = "hubforge/cpu:2026.11"
#: Kubernetes' DNS-1035 label: what a Service's name must be.
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
COMMON = {"model": "churn", "version": 3, "owner": "alice", "namespace": "hub"}
LABELS = {
    "app.kubernetes.io/name": "hubforge-model",
    "app.kubernetes.io/instance": "hubforge-model-churn-v3",
    "app.kubernetes.io/managed-by": "hubforge",
    "hubforge.io/model": "churn",
    "hubforge.io/model-version": "3",
    "hubforge.io/owner": "alice",
}
SELECTOR = {"app.kubernetes.io/name": "hubforge-model", "app.kubernetes.io/instance": "hubforge-model-churn-v3"}
LONG = "m" + "x" * 61 + "_"  # 63 characters, the longest model name


def _manifests(**kw):
    return model_manifests(**{**COMMON, "key": KEY, "image": IMAGE, "fetch_url": FETCH_URL, **kw})


def _deployment(**kw):
    return make_model_deployment(**{**COMMON, "image": IMAGE, "fetch_url": FETCH_URL, **kw})


@pytest.mark.parametrize("model", ["churn", "a", "churn-model", "churn_model", "x-", "9_", LONG, "a" * 63])
@pytest.mark.parametrize("version", [1, 3, 1234567])
def test_object_names_are_dns_labels_of_at_most_63(model, version):
    name = model_object_name(model, version)
    assert len(name) <= 63 and DNS_1035.match(name), name
    assert name.endswith(f"-v{version}")


def test_object_names_read_as_the_model_and_differ_between_models():
    assert model_object_name("churn", 3) == "hubforge-model-churn-v3"
    assert model_object_name("a-v1", 2) == "hubforge-model-a-v1-v2"
    # "_" reads as "-", and a hash keeps "a_b" apart from "a-b".
    hashed = model_object_name("churn_model", 3)
    assert re.fullmatch(r"hubforge-model-churn-model-[0-9a-f]{16}-v3", hashed)
    # A model named like the hashed name does not take it: its own name is hashed too.
    lookalike = hashed.removeprefix("hubforge-model-").removesuffix("-v3")
    assert model_object_name(lookalike, 3) != hashed
    models = ["a_b", "a-b", LONG, LONG[:-1] + "-", "a" * 63, "a" * 62 + "b", lookalike, "churn_model", "churn-model"]
    assert len({model_object_name(m, 1) for m in models}) == len(models)
    assert model_object_name(LONG, 1) != model_object_name(LONG, 2)


def test_selectors_select_by_the_object_name():
    # Escaped model labels carry a short hash; the object name's is 64 bits.
    for model in ["x-", "churn_model", LONG]:
        name = model_object_name(model, 1)
        manifests = _manifests(model=model, version=1)
        assert manifests[1]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == name
        assert manifests[2]["spec"]["selector"]["app.kubernetes.io/instance"] == name
        assert manifests[4]["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == name


@pytest.mark.parametrize("model,owner", [("churn", "alice"), ("x-", "bob_"), (LONG, "Carol@example.org"),
                                         ("9_", "a" * 80)])
def test_labels_are_valid_label_values(model, owner):
    labels = model_labels(model, 7, owner)
    assert set(labels) == set(LABELS)
    for value in labels.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert labels["hubforge.io/model-version"] == "7"
    # Names that are valid label values stay as they are.
    assert model_labels("churn", 3, "alice") == LABELS


def test_the_secret_holds_the_key():
    secret = make_model_secret(**COMMON, key=KEY)
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hubforge-model-churn-v3", "namespace": "hub", "labels": LABELS,
                     "annotations": {"hubforge.io/model": "churn", "hubforge.io/owner": "alice"}},
        "type": "Opaque",
        "stringData": {"key": KEY},
    }


def test_the_key_is_only_in_the_secret():
    manifests = _manifests()
    assert [m["kind"] for m in manifests] == [
        "Secret", "Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy"]
    assert KEY in json.dumps(manifests[0])
    for manifest in manifests[1:]:
        assert KEY not in json.dumps(manifest), manifest["kind"]


def test_every_manifest_is_valid_and_names_the_same_objects():
    for manifest in _manifests(revision="0a1b2c3d", node_selector={"pool": "models"},
                               tolerations=[{"key": "models", "operator": "Exists", "effect": "NoSchedule"}],
                               extra_env={"OMP_NUM_THREADS": "2"}):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        assert manifest["metadata"]["name"] == "hubforge-model-churn-v3"
        assert manifest["metadata"]["namespace"] == "hub"
        assert manifest["metadata"]["labels"] == LABELS


def test_manifests_of_long_and_odd_names_are_valid():
    for manifest in _manifests(model=LONG, owner="Carol@example.org", version=1234567):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        assert manifest["metadata"]["annotations"] == {"hubforge.io/model": LONG,
                                                       "hubforge.io/owner": "Carol@example.org"}


def test_the_schema_check_can_fail():
    deployment = _deployment()
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["tcpSocket"]["portt"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_the_deployment_runs_the_worker_unprivileged():
    deployment = _deployment()
    assert deployment["apiVersion"] == "apps/v1" and deployment["kind"] == "Deployment"
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["selector"] == {"matchLabels": SELECTOR}
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["template"]["metadata"]["labels"] == LABELS
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert "nodeSelector" not in pod and "tolerations" not in pod
    (container,) = pod["containers"]
    assert container["image"] == IMAGE and container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == [
        "python", "-m", "hubforge.models.worker", "--model-dir", "/tmp/model", "--fetch", FETCH_URL,
        "--listen", "0.0.0.0:8080", "--key-file", "/etc/hubforge-model/key",
    ]
    assert KEY_FILE == "/etc/hubforge-model/key"
    assert "args" not in container
    assert container["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"},
                                      "limits": {"cpu": "2", "memory": "2Gi"}}
    assert container["ports"] == [{"name": "model", "containerPort": 8080, "protocol": "TCP"}]
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "HUBFORGE_MODEL": "churn@v3", "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
    # The key is mounted read-only from the Secret; the model and /tmp are emptyDirs.
    assert container["volumeMounts"] == [
        {"name": "key", "mountPath": "/etc/hubforge-model", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "model", "mountPath": "/tmp/model"},
    ]
    assert pod["volumes"] == [
        {"name": "key", "secret": {"secretName": "hubforge-model-churn-v3", "defaultMode": 0o440,
                                   "items": [{"key": "key", "path": "key"}]}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "model", "emptyDir": {}},
    ]


def test_the_pod_is_ready_when_the_port_accepts_and_may_take_minutes_to_load():
    (container,) = _deployment(port=9000)["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"] == {"tcpSocket": {"port": "model"}, "periodSeconds": 5,
                                           "failureThreshold": 3, "timeoutSeconds": 2}
    startup = container["startupProbe"]
    assert startup["tcpSocket"] == {"port": "model"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert container["ports"][0]["containerPort"] == 9000
    assert "--listen" in container["command"] and "0.0.0.0:9000" in container["command"]


def test_deployment_options_are_applied():
    toleration = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    deployment = _deployment(replicas=2, cpu_request="1", cpu_limit="4", memory_request="1Gi", memory_limit="8Gi",
                             image_pull_policy="Always", uid=1001, gid=1001, node_selector={"pool": "models"},
                             tolerations=[toleration], extra_env={"OMP_NUM_THREADS": 4}, revision="beef")
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "models"} and pod["tolerations"] == [toleration]
    assert pod["securityContext"]["runAsUser"] == 1001 and pod["securityContext"]["fsGroup"] == 1001
    (container,) = pod["containers"]
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"},
                                      "limits": {"cpu": "4", "memory": "8Gi"}}
    assert {"name": "OMP_NUM_THREADS", "value": "4"} in container["env"]
    # A revision labels the pods but not the (immutable) selector.
    assert spec["template"]["metadata"]["labels"] == {**LABELS, "hubforge.io/revision": "beef"}
    assert spec["selector"] == {"matchLabels": SELECTOR}


def test_the_service_selects_the_versions_pods():
    service = make_model_service(**COMMON)
    kubernetes_validate.validate(service, K8S_VERSION, strict=True)
    assert service["spec"] == {
        "type": "ClusterIP",
        "clusterIP": "None",  # headless: its name resolves to every ready pod
        "selector": SELECTOR,
        "ports": [{"name": "model", "port": 8080, "targetPort": "model", "protocol": "TCP"}],
    }
    revised = make_model_service(**COMMON, revision="beef")
    assert revised["spec"]["selector"] == {**SELECTOR, "hubforge.io/revision": "beef"}
    # The Service's selector matches the pod template's labels of the same revision.
    pod_labels = _deployment(revision="beef")["spec"]["template"]["metadata"]["labels"]
    assert revised["spec"]["selector"].items() <= pod_labels.items()


async def test_a_versions_workers_are_what_its_service_name_resolves_to():
    """The backend lists a version's workers by resolving its headless Service's name (in
    a cluster: one address per ready pod); here a name /etc/hosts resolves."""
    from hubforge.models.kubernetes import KubernetesBackend

    backend = KubernetesBackend(namespace="hubforge", image="unused", api_client=object())
    found = await backend.endpoints("localhost", 8080)
    assert ("127.0.0.1", 8080) in found and all(port == 8080 for _, port in found)


def test_the_autoscaler_scales_the_deployment_within_bounds():
    hpa = make_model_hpa(**COMMON, min_replicas=2, max_replicas=6, cpu_utilization=60)
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hubforge-model-churn-v3"},
        "minReplicas": 2,
        "maxReplicas": 6,
        "metrics": [{"type": "Resource",
                     "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}],
    }
    assert make_model_hpa(**COMMON)["spec"]["minReplicas"] == 1
    assert make_model_hpa(**COMMON)["spec"]["maxReplicas"] == 4


@pytest.mark.parametrize("bounds", [{"min_replicas": 0}, {"min_replicas": 3, "max_replicas": 2},
                                    {"cpu_utilization": 0}])
def test_the_autoscaler_refuses_bounds_that_make_no_sense(bounds):
    with pytest.raises(ValueError):
        make_model_hpa(**COMMON, **bounds)


def test_only_the_hub_reaches_a_worker_and_a_worker_only_the_hub_and_dns():
    policy = make_model_network_policy(**COMMON)
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    assert HUB_POD_SELECTOR == {"matchLabels": {"app.kubernetes.io/name": "jupyterhub",
                                                "app.kubernetes.io/component": "hub"}}
    assert FETCH_PORT == 10103
    assert policy["spec"] == {
        "podSelector": {"matchLabels": SELECTOR},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": HUB_POD_SELECTOR}], "ports": [{"port": 8080, "protocol": "TCP"}]}],
        "egress": [
            {"to": [{"podSelector": HUB_POD_SELECTOR}], "ports": [{"port": 10103, "protocol": "TCP"}]},
            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        ],
    }
    assert make_model_network_policy(**COMMON, port=9000)["spec"]["ingress"][0]["ports"] == [
        {"port": 9000, "protocol": "TCP"}]


def test_model_manifests_passes_options_through():
    _, deployment, service, hpa, policy = _manifests(port=9000, replicas=2, max_replicas=8, cpu_limit="3",
                                                     revision="beef")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "3"
    assert service["spec"]["ports"][0]["port"] == 9000
    assert service["spec"]["selector"]["hubforge.io/revision"] == "beef"
    assert hpa["spec"]["maxReplicas"] == 8
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 9000, "protocol": "TCP"}]
