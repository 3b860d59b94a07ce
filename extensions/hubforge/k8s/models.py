"""The Kubernetes objects that serve one version of a published model.

On Kubernetes the ``models`` service runs in the hub's pod: it authenticates callers,
batches their requests and sends each batch over TCP to the version's *model worker*
(``python -m hubforge.models.worker``). Every served (model, version) is five objects,
all named :func:`model_object_name` and labelled :func:`model_labels`, built here as
plain dicts (no cluster needed; tests validate them against the Kubernetes OpenAPI
schema, and ``kubectl apply`` accepts them as they are):

* a ``Secret`` holding the worker's key, the shared secret every request to the worker
  starts with and the bearer token it fetches its model with. Only the Secret holds
  it: the pod mounts it read-only at :data:`KEY_DIR`;
* a ``Deployment`` of worker pods. A worker starts by downloading the version's
  archive from the service (``--fetch``, the hub's pod on :data:`FETCH_PORT`) into an
  ``emptyDir``, loads it, then listens on the port; the pod is ready when it accepts
  TCP connections. The pods run unprivileged with a read-only root filesystem, no
  service-account token and no service links;
* a ``ClusterIP`` ``Service`` in front of the pods, which the service connects to as
  ``<name>.<namespace>.svc``;
* a ``HorizontalPodAutoscaler`` on CPU utilisation;
* a ``NetworkPolicy``: only the hub's pod may connect to a worker, and a worker may
  reach only the hub's pod (to fetch its model) and DNS.

A worker's pods carry none of Zero to JupyterHub's labels, so none of the chart's
network policies apply to them; their own policy is the one above.

Example::

    for manifest in model_manifests(model="churn", version=3, owner="alice",
                                    namespace="hub", key=key, image="hubforge/cpu:2026.11",
                                    fetch_url="http://hub:10103/services/models/internal/archive"):
        ...  # create in this order (hubforge.models.kubernetes.KubernetesBackend does)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .jobs import MANAGED_BY_LABEL, user_label

#: Where the worker's Secret is mounted, and the file the worker reads its key from.
KEY_DIR = "/etc/hubforge-model"
KEY_FILE = f"{KEY_DIR}/key"
#: The key's entry in the Secret.
SECRET_KEY = "key"
#: Where the worker extracts the model (an ``emptyDir``).
MODEL_DIR = "/tmp/model"
#: The worker's port, in its pod and on its Service.
WORKER_PORT = 8080
#: The port of the hub's pod that workers fetch their model from (the models service's
#: archive endpoint); the only port, besides DNS, their network policy lets them reach.
FETCH_PORT = 10103
#: The container's name in a worker pod.
CONTAINER = "worker"
#: The most seconds a worker may take to fetch and load its model before Kubernetes
#: restarts it (its startup probe).
STARTUP_SECONDS = 300

#: ``app.kubernetes.io/name`` of every model object: with :data:`MANAGED_BY_LABEL`,
#: what the backend's sweep selects.
NAME_LABEL = ("app.kubernetes.io/name", "hubforge-model")
#: The object name (:func:`model_object_name`) as a label: what selectors select by.
#: It is unique per version with a 64-bit hash where names are escaped; the escaped
#: model label (KubeSpawner's escaping) has a 32-bit one, which a user could match with
#: another model name, and then one model's Service would route to another's pods.
INSTANCE_LABEL = "app.kubernetes.io/instance"
MODEL_LABEL = "hubforge.io/model"
VERSION_LABEL = "hubforge.io/model-version"
OWNER_LABEL = "hubforge.io/owner"
#: A label of the pods of one start of a worker (with one key), which the Service
#: selects, so the Service never routes to a pod that holds an earlier key.
REVISION_LABEL = "hubforge.io/revision"

#: The hub's pod, by Zero to JupyterHub's recommended labels (the same selector as the
#: jobs service's network policy values; ``name`` is ``nameOverride`` when that is set).
HUB_POD_SELECTOR = {"matchLabels": {"app.kubernetes.io/name": "jupyterhub", "app.kubernetes.io/component": "hub"}}

_PREFIX = "hubforge-model-"
_MAX_NAME = 63  # a Service's name is a DNS-1035 label
# 64 bits: finding another model name with the same digest is out of reach.
_HASH_DIGITS = 16
_HASHED = re.compile(rf"-[0-9a-f]{{{_HASH_DIGITS}}}$")
_KEY_VOLUME = "key"
_MODEL_VOLUME = "model"
_TMP_VOLUME = "tmp"


def model_object_name(model: str, version: int) -> str:
    """The name of every object of ``model``'s version ``version``: ``hubforge-model-churn-v3``.

    ``_`` becomes ``-``. Names must never be shared between models (one owner's start
    would replace another's worker), so a model name with ``_`` (``a_b`` would otherwise
    be ``a-b``), one that ends like a hash, and one too long for 63 characters get the
    first 16 hex digits of the model name's SHA-256, their model part shortened as
    needed: ``hubforge-model-churn-model-1f0c9a2e5b7d4c11-v3``. Always a DNS-1035 label.
    """
    version = int(version)
    suffix = f"-v{version}"
    name = f"{_PREFIX}{model}{suffix}"
    if "_" not in model and not _HASHED.search(model) and len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(model.encode()).hexdigest()[:_HASH_DIGITS]
    room = _MAX_NAME - len(_PREFIX) - len(suffix) - _HASH_DIGITS - 1
    return f"{_PREFIX}{model.replace('_', '-')[:room]}-{digest}{suffix}"


def _label_value(value: str) -> str:
    # KubeSpawner's escaping (kept if valid, else a readable part and a hash): one
    # value per name, and the owner's is the one their server pod carries.
    return user_label(value)


def model_selector(model: str, version: int) -> dict[str, str]:
    """The labels that select a version's pods (the Deployment's immutable selector)."""
    return {NAME_LABEL[0]: NAME_LABEL[1], INSTANCE_LABEL: model_object_name(model, version)}


def model_labels(model: str, version: int, owner: str) -> dict[str, str]:
    """The labels of every object of a model version, values escaped to be valid labels.

    The model, version and owner labels are for people and ``kubectl``; selectors use
    :func:`model_selector`.
    """
    return {
        **model_selector(model, version),
        MANAGED_BY_LABEL[0]: MANAGED_BY_LABEL[1],
        MODEL_LABEL: _label_value(model),
        VERSION_LABEL: str(int(version)),
        OWNER_LABEL: _label_value(owner),
    }


def _metadata(model: str, version: int, owner: str, namespace: str) -> dict[str, Any]:
    # Label values are escaped; the annotations keep the names as they are.
    return {
        "name": model_object_name(model, version),
        "namespace": namespace,
        "labels": model_labels(model, version, owner),
        "annotations": {MODEL_LABEL: model, OWNER_LABEL: owner},
    }


def make_model_secret(*, model: str, version: int, owner: str, namespace: str, key: str) -> dict[str, Any]:
    """The ``v1`` Secret holding the worker's ``key`` (the only object that contains it).

    Not immutable: starting the version again replaces it with a new key.
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(model, version, owner, namespace),
        "type": "Opaque",
        "stringData": {SECRET_KEY: key},
    }


def _tcp_probe(period: int, failures: int) -> dict[str, Any]:
    return {"tcpSocket": {"port": "model"}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 2}


def make_model_deployment(
    *,
    model: str,
    version: int,
    owner: str,
    namespace: str,
    image: str,
    fetch_url: str,
    port: int = WORKER_PORT,
    replicas: int = 1,
    cpu_request: str = "250m",
    cpu_limit: str = "2",
    memory_request: str = "512Mi",
    memory_limit: str = "2Gi",
    image_pull_policy: str = "IfNotPresent",
    uid: int = 1000,
    gid: int = 100,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    extra_env: Mapping[str, str] | None = None,
    revision: str | None = None,
) -> dict[str, Any]:
    """The ``apps/v1`` Deployment of a version's workers.

    Each pod runs ``python -m hubforge.models.worker`` in ``image``: it downloads the
    archive from ``fetch_url`` into :data:`MODEL_DIR` (authenticated with the key of
    :func:`make_model_secret`'s Secret, read from :data:`KEY_FILE`), loads it and
    listens on ``port``. ``uid``/``gid`` are the account it runs as (the notebook
    images' ``jovyan``, 1000:100, by default). The pod is ready when the port accepts
    connections; its startup probe allows :data:`STARTUP_SECONDS` for fetching and
    loading. Updates roll with ``maxUnavailable: 0``. ``extra_env`` adds variables
    (strings). ``revision`` labels the pods of one start (:data:`REVISION_LABEL`): a
    new value rolls the pods over, and :func:`make_model_service` with the same value
    routes only to them.
    """
    labels = model_labels(model, version, owner)
    metadata = _metadata(model, version, owner, namespace)
    pod_labels = dict(labels)
    if revision:
        pod_labels[REVISION_LABEL] = revision
    env = {
        "HUBFORGE_MODEL": f"{model}@v{int(version)}",
        # The root filesystem is read-only: libraries that keep caches in $HOME write to /tmp.
        "HOME": "/tmp",
        "PYTHONUNBUFFERED": "1",
        **dict(extra_env or {}),
    }
    container = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": [
            "python", "-m", "hubforge.models.worker",
            "--model-dir", MODEL_DIR,
            "--fetch", fetch_url,
            "--listen", f"0.0.0.0:{int(port)}",
            "--key-file", KEY_FILE,
        ],
        "env": [{"name": k, "value": str(v)} for k, v in env.items()],
        "ports": [{"name": "model", "containerPort": int(port), "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": cpu_request, "memory": memory_request},
            "limits": {"cpu": cpu_limit, "memory": memory_limit},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": int(uid),
            "runAsGroup": int(gid),
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # The worker listens only once its model is loaded, so a TCP probe is a load check.
        "startupProbe": _tcp_probe(2, STARTUP_SECONDS // 2),
        "readinessProbe": _tcp_probe(5, 3),
        "volumeMounts": [
            {"name": _KEY_VOLUME, "mountPath": KEY_DIR, "readOnly": True},
            {"name": _TMP_VOLUME, "mountPath": "/tmp"},
            {"name": _MODEL_VOLUME, "mountPath": MODEL_DIR},
        ],
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        # Service links would put every Service of the hub's namespace in the worker's env.
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": int(uid),
            "runAsGroup": int(gid),
            "fsGroup": int(gid),
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            # 0440 with fsGroup: readable by the worker's group, the Secret's files being root's.
            {"name": _KEY_VOLUME, "secret": {"secretName": metadata["name"], "defaultMode": 0o440,
                                             "items": [{"key": SECRET_KEY, "path": SECRET_KEY}]}},
            {"name": _TMP_VOLUME, "emptyDir": {}},
            {"name": _MODEL_VOLUME, "emptyDir": {}},
        ],
    }
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["tolerations"] = [dict(t) for t in tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": int(replicas),
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": model_selector(model, version)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": dict(metadata["annotations"])},
                "spec": pod,
            },
        },
    }


def make_model_service(*, model: str, version: int, owner: str, namespace: str, port: int = WORKER_PORT,
                       revision: str | None = None) -> dict[str, Any]:
    """The headless Service of a version's workers, port ``port`` to the pods' ``port``.

    Headless (``clusterIP: None``): its DNS name resolves to the address of every ready
    pod, and the models service keeps a connection to each (`VersionServer.set_endpoints`),
    so the pods the autoscaler adds get batches too. Through a cluster IP, kube-proxy would
    pick one pod for the service's one long-lived connection. With ``revision`` it selects
    only the pods of that start (see :func:`make_model_deployment`).
    """
    selector = model_selector(model, version)
    if revision:
        selector[REVISION_LABEL] = revision
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(model, version, owner, namespace),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": selector,
            "ports": [{"name": "model", "port": int(port), "targetPort": "model", "protocol": "TCP"}],
        },
    }


def make_model_hpa(*, model: str, version: int, owner: str, namespace: str, min_replicas: int = 1,
                   max_replicas: int = 4, cpu_utilization: int = 70) -> dict[str, Any]:
    """The ``autoscaling/v2`` HorizontalPodAutoscaler of a version's Deployment.

    Scales between ``min_replicas`` and ``max_replicas`` pods to keep their CPU use near
    ``cpu_utilization`` percent of their request. ``ValueError`` for bounds that do not
    make sense (fewer than 1, max below min, utilisation below 1).
    """
    if min_replicas < 1 or max_replicas < min_replicas:
        raise ValueError(f"replicas: need 1 <= min_replicas <= max_replicas, got {min_replicas} and {max_replicas}")
    if cpu_utilization < 1:
        raise ValueError(f"cpu_utilization: a percentage of the CPU request, 1 or more, got {cpu_utilization}")
    metadata = _metadata(model, version, owner, namespace)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": metadata["name"]},
            "minReplicas": int(min_replicas),
            "maxReplicas": int(max_replicas),
            "metrics": [{
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                       "averageUtilization": int(cpu_utilization)}},
            }],
        },
    }


def make_model_network_policy(*, model: str, version: int, owner: str, namespace: str, port: int = WORKER_PORT,
                              fetch_port: int = FETCH_PORT) -> dict[str, Any]:
    """The ``networking.k8s.io/v1`` NetworkPolicy of a version's pods.

    Ingress: only from the hub's pod (:data:`HUB_POD_SELECTOR`, same namespace), only on
    ``port``. Egress: only to the hub's pod on ``fetch_port`` (TCP), where the worker
    fetches its model, and to DNS (port 53, UDP and TCP, anywhere). Kubelet probes are
    not subject to network policies in the usual CNIs.
    """
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(model, version, owner, namespace),
        "spec": {
            "podSelector": {"matchLabels": model_selector(model, version)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [{"podSelector": HUB_POD_SELECTOR}],
                "ports": [{"port": int(port), "protocol": "TCP"}],
            }],
            "egress": [
                {"to": [{"podSelector": HUB_POD_SELECTOR}], "ports": [{"port": int(fetch_port), "protocol": "TCP"}]},
                {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
            ],
        },
    }


def model_manifests(
    *,
    model: str,
    version: int,
    owner: str,
    namespace: str,
    key: str,
    image: str,
    fetch_url: str,
    port: int = WORKER_PORT,
    min_replicas: int = 1,
    max_replicas: int = 4,
    cpu_utilization: int = 70,
    revision: str | None = None,
    **deployment: Any,
) -> list[dict[str, Any]]:
    """Every object of a served version, in the order to create them: Secret,
    Deployment, Service, HorizontalPodAutoscaler, NetworkPolicy.

    Other keyword arguments (``replicas``, ``cpu_limit``, ``node_selector``...) go to
    :func:`make_model_deployment`.
    """
    common = {"model": model, "version": version, "owner": owner, "namespace": namespace}
    return [
        make_model_secret(**common, key=key),
        make_model_deployment(**common, image=image, fetch_url=fetch_url, port=port, revision=revision,
                              **deployment),
        make_model_service(**common, port=port, revision=revision),
        make_model_hpa(**common, min_replicas=min_replicas, max_replicas=max_replicas,
                       cpu_utilization=cpu_utilization),
        make_model_network_policy(**common, port=port),
    ]
