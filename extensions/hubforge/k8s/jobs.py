"""The Kubernetes Job (and its Secret) for one run of a scheduled notebook.

A run executes in the user's environment for the job's profile, so its pod is the
user's server pod for that profile, translated rather than re-described: the builder
asks :func:`~hubforge.k8s.pods.make_user_pod` (KubeSpawner's own code path, offline)
for the server pod and keeps what defines the environment — image, resources, GPU
limits, node selector, tolerations, volumes (the home PVC included) and their mounts,
the security contexts, the profile's environment — then turns the server into a
batch job:

* the container runs ``python -m hubforge.jobs.runner`` (as ``command``, and the
  server's ``args`` are dropped so they are not appended to it) in the home mount;
* no ports, no service-account token, ``restartPolicy: Never``; only the ``notebook``
  container is kept, since a sidecar that never exits would hold the Job open until
  its deadline (init containers complete, so they stay);
* no hub credentials or hub wiring: every ``JUPYTERHUB_*`` and ``JPY_*`` variable of
  the server is removed (``JUPYTERHUB_USER`` excepted, which notebooks read to know
  who they run as). The run's only credential is ``HUBFORGE_RUN_TOKEN``, read from the
  run's Secret by reference, so its value is never in the Job manifest;
* the run's input (``input.json``) is the same Secret's other key, mounted read-only
  at :data:`RUN_DIR`;
* none of KubeSpawner's labels: the hub's pod reflector and Zero to JupyterHub's
  network policies select server pods by ``component: singleuser-server``, and a run
  is not a server. Runs carry ``app.kubernetes.io/managed-by: hubforge``,
  ``hubforge.jobs/run`` and ``hubforge.jobs/user`` (the user name escaped exactly as
  KubeSpawner escapes it for the server pod's ``hub.jupyter.org/username`` label).

The Job has ``backoffLimit: 0`` (the jobs service does the retries, with its own
backoff and history), ``activeDeadlineSeconds`` set to the run's timeout and
``ttlSecondsAfterFinished`` of an hour. A profile or option the user may not use
raises ``tornado.web.HTTPError(400)`` naming the field, exactly as a spawn does.

Example::

    job = await make_run_job(["spawner_profiles"], {"profile": "gpu-1"}, "alice",
                             run_id=17, job_name="nightly", timeout=600,
                             service_url="http://hub:10102/services/jobs/")
    secret = make_run_secret(17, "alice", run_input={...}, token=token)
    # create the Secret, then the Job, in the same namespace
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubespawner.slugs import is_valid_label, safe_slug
from traitlets.config import Config

from .pods import make_user_pod

#: Where the run's Secret (its ``input.json``) is mounted in the run's container.
RUN_DIR = "/var/run/hubforge-run"
#: The file the runner reads its input from.
RUN_INPUT = f"{RUN_DIR}/input.json"
#: Seconds a finished Job (and its pod, with its logs) is kept before Kubernetes deletes it.
TTL_AFTER_FINISHED = 3600
#: The container KubeSpawner names for the server; the one a run keeps.
SERVER_CONTAINER = "notebook"
#: The run's Secret keys.
TOKEN_KEY = "token"
INPUT_KEY = "input.json"

#: The label every run's Job, pod and Secret carries, and its value (network policies
#: and the executor's clean-up select runs by it with :data:`RUN_LABEL`).
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "hubforge")
#: The label holding a run's id.
RUN_LABEL = "hubforge.jobs/run"

_VOLUME = "hubforge-run"
#: Server variables a run keeps although they match a removed prefix.
_KEPT_HUB_ENV = {"JUPYTERHUB_USER"}
_REMOVED_ENV_PREFIXES = ("JUPYTERHUB_", "JPY_")


def run_object_name(run_id: int) -> str:
    """The name of a run's Job and Secret: ``hubforge-run-<run_id>``."""
    return f"hubforge-run-{int(run_id)}"


def user_label(username: str) -> str:
    """``username`` as a label value, escaped as KubeSpawner escapes it for server pods."""
    # KubeSpawner's _build_common_labels, whatever its slug_scheme: one user, one value.
    return safe_slug(username, is_valid=is_valid_label)


def run_labels(run_id: int, username: str) -> dict[str, str]:
    """The labels of a run's Job, pod and Secret (select a user's runs by the last one)."""
    return {
        MANAGED_BY_LABEL[0]: MANAGED_BY_LABEL[1],
        RUN_LABEL: str(int(run_id)),
        "hubforge.jobs/user": user_label(username),
    }


def _keeps_env(entry: Mapping[str, Any]) -> bool:
    name = entry.get("name", "")
    return name in _KEPT_HUB_ENV or not name.startswith(_REMOVED_ENV_PREFIXES)


def _run_container(server: dict[str, Any], *, run_id: int, job_name: str, report_url: str,
                   secret_name: str, home: str) -> dict[str, Any]:
    container = copy.deepcopy(server)
    container.pop("args", None)
    container.pop("ports", None)
    # A server's lifecycle hooks and probes are about serving HTTP; a run serves nothing.
    for key in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
        container.pop(key, None)
    container["command"] = [
        "python", "-m", "hubforge.jobs.runner", "--input", RUN_INPUT, "--report-url", report_url,
    ]
    container["workingDir"] = home
    env = [e for e in container.get("env", []) if _keeps_env(e)]
    env += [
        {"name": "HUBFORGE_RUN_ID", "value": str(int(run_id))},
        {"name": "HUBFORGE_JOB_NAME", "value": job_name},
        {"name": "HUBFORGE_RUN_TOKEN",
         "valueFrom": {"secretKeyRef": {"name": secret_name, "key": TOKEN_KEY}}},
    ]
    container["env"] = env
    container["volumeMounts"] = [
        *container.get("volumeMounts", []),
        {"name": _VOLUME, "mountPath": RUN_DIR, "readOnly": True},
    ]
    return container


def _home_mount_path(container: Mapping[str, Any], home_volume: str = "home") -> str:
    for mount in container.get("volumeMounts", []):
        if mount.get("name") == home_volume:
            return mount["mountPath"]
    raise ValueError(f"the server pod has no {home_volume!r} volume mount to run the job in")


async def make_run_job(
    profile_paths: Sequence[str | os.PathLike],
    user_options: Mapping[str, Any],
    username: str,
    *,
    run_id: int,
    job_name: str,
    service_url: str,
    timeout: int,
    namespace: str = "default",
    groups: Iterable[str] = (),
    config: Config | None = None,
) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs run ``run_id`` of ``job_name`` for ``username``.

    ``user_options`` is the job's profile choice in the REST API's shape
    (``{"profile": "gpu-1"}``); ``groups`` are the user's hub groups (profiles may be
    limited to some). ``service_url`` is the jobs service's base URL as the cluster's
    pods reach it, ending with ``/``; the runner reports to
    ``<service_url>api/runner/<run_id>``. ``timeout`` (seconds) becomes the Job's
    ``activeDeadlineSeconds``. ``config`` is the hub's spawner configuration
    (``c.KubeSpawner...``), so a run gets the cluster-wide settings a server gets.
    The Job reads :func:`make_run_secret`'s Secret, which must exist in ``namespace``
    before the pod starts (until then the pod waits in ``ContainerCreating``).
    """
    pod = await make_user_pod(profile_paths, user_options, username, groups, config=config)
    spec = pod["spec"]
    (server,) = [c for c in spec["containers"] if c["name"] == SERVER_CONTAINER]
    name = run_object_name(run_id)
    home = _home_mount_path(server)
    if not service_url.endswith("/"):
        service_url += "/"
    report_url = f"{service_url}api/runner/{int(run_id)}"

    spec["containers"] = [
        _run_container(server, run_id=run_id, job_name=job_name, report_url=report_url,
                       secret_name=name, home=home),
    ]
    # Only input.json is mounted: the token reaches the runner once, through its env.
    spec["volumes"] = [
        *spec.get("volumes", []),
        {"name": _VOLUME, "secret": {"secretName": name, "items": [{"key": INPUT_KEY, "path": INPUT_KEY}]}},
    ]
    spec["restartPolicy"] = "Never"
    spec["automountServiceAccountToken"] = False
    if not spec.get("imagePullSecrets"):
        spec.pop("imagePullSecrets", None)

    labels = run_labels(run_id, username)
    # Label values are escaped; the annotations keep the names as the user wrote them.
    annotations = {"hubforge.jobs/username": username, "hubforge.jobs/job-name": job_name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(timeout),
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": spec,
            },
        },
    }


def make_run_secret(
    run_id: int,
    username: str,
    *,
    run_input: Mapping[str, Any],
    token: str,
    namespace: str = "default",
    job_uid: str | None = None,
) -> dict[str, Any]:
    """The ``v1`` Secret a run's Job reads: ``input.json`` (``run_input`` as JSON) and ``token``.

    With ``job_uid`` (the created Job's ``metadata.uid``) the Secret is owned by the
    Job, so Kubernetes deletes it with the Job (``ttlSecondsAfterFinished``). The Secret
    is immutable: a retry is a new run with a new Secret. Kubernetes limits a Secret to
    1 MiB, so ``run_input`` should carry the notebook without its outputs.
    """
    metadata: dict[str, Any] = {
        "name": run_object_name(run_id),
        "namespace": namespace,
        "labels": run_labels(run_id, username),
        "annotations": {"hubforge.jobs/username": username},
    }
    if job_uid:
        metadata["ownerReferences"] = [{
            "apiVersion": "batch/v1", "kind": "Job", "name": run_object_name(run_id),
            "uid": job_uid, "blockOwnerDeletion": False,
        }]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "immutable": True,
        "stringData": {INPUT_KEY: json.dumps(run_input, sort_keys=True), TOKEN_KEY: token},
    }
