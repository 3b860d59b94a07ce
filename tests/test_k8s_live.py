"""Live Kubernetes check (marker ``k8s``): a HubForge server pod really runs.

Runs only when a kubeconfig is present (``KUBECONFIG`` or ``~/.kube/config``); skipped
with the reason otherwise. In a throwaway namespace it creates the home PVC and the
pod the Kubernetes spawner builds for the ``cpu-small`` profile (workshop size), waits
until the pod is Running, then deletes the namespace and everything in it.

The profile's image (``hubforge/cpu:2026.11``) must be pullable by the cluster, e.g.
``kind load docker-image hubforge/cpu:2026.11``; ``HUBFORGE_K8S_TEST_IMAGE`` swaps in
another image, ``HUBFORGE_K8S_TEST_TIMEOUT`` (seconds, default 300) bounds the wait.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest
from traitlets.config import Config

from hubforge.k8s import make_user_pod, make_user_pvc

ROOT = Path(__file__).resolve().parent.parent
PROFILES = [ROOT / "spawner_profiles"]
API_TIMEOUT = 30


def _kubeconfig() -> Path | None:
    candidates = os.environ.get("KUBECONFIG", "").split(os.pathsep) if os.environ.get("KUBECONFIG") else [
        "~/.kube/config"
    ]
    for candidate in candidates:
        path = Path(candidate).expanduser()
        if candidate and path.is_file():
            return path
    return None


KUBECONFIG = _kubeconfig()

pytestmark = [
    pytest.mark.k8s,
    pytest.mark.skipif(
        KUBECONFIG is None,
        reason="no kubeconfig (KUBECONFIG or ~/.kube/config): no Kubernetes cluster to spawn on",
    ),
]


@pytest.fixture
async def core():
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(KUBECONFIG), client_configuration=configuration)
    async with client.ApiClient(configuration) as api_client:
        yield client.CoreV1Api(api_client)


@pytest.fixture
async def namespace(core):
    name = f"hubforge-test-{secrets.token_hex(3)}"
    await asyncio.wait_for(core.create_namespace({"metadata": {"name": name}}), API_TIMEOUT)
    try:
        yield name
    finally:
        await asyncio.wait_for(core.delete_namespace(name), API_TIMEOUT)


async def _wait_running(core, namespace: str, name: str, timeout: float) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        pod = await asyncio.wait_for(core.read_namespaced_pod(name, namespace), API_TIMEOUT)
        if pod.status.phase == "Running":
            return pod
        if pod.status.phase in ("Failed", "Succeeded") or loop.time() > deadline:
            events = await asyncio.wait_for(
                core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}"), API_TIMEOUT
            )
            messages = "; ".join(f"{e.reason}: {e.message}" for e in events.items)
            pytest.fail(f"pod {namespace}/{name} is {pod.status.phase} after {timeout:.0f}s: {messages}")
        await asyncio.sleep(2)


@pytest.mark.timeout(900)
async def test_a_profile_pod_runs_on_the_cluster(core, namespace):
    config = Config()
    config.HubForgeKubeSpawner.namespace = namespace
    options = {"profile": "cpu-small", "size": "mini"}
    pod = await make_user_pod(PROFILES, options, "hubforge-live", config=config)
    pvc = await make_user_pvc(PROFILES, "hubforge-live", config=config)
    (container,) = pod["spec"]["containers"]
    if os.environ.get("HUBFORGE_K8S_TEST_IMAGE"):
        container["image"] = os.environ["HUBFORGE_K8S_TEST_IMAGE"]

    await asyncio.wait_for(core.create_namespaced_persistent_volume_claim(namespace, pvc), API_TIMEOUT)
    await asyncio.wait_for(core.create_namespaced_pod(namespace, pod), API_TIMEOUT)
    timeout = float(os.environ.get("HUBFORGE_K8S_TEST_TIMEOUT", "300"))
    running = await _wait_running(core, namespace, pod["metadata"]["name"], timeout)

    limits = running.spec.containers[0].resources.limits
    assert limits["memory"] in ("1Gi", str(1024**3))
    assert limits["cpu"] in ("500m", "0.5")
    assert running.spec.volumes[0].persistent_volume_claim.claim_name == "claim-hubforge-live"
    await asyncio.wait_for(core.delete_namespaced_pod(pod["metadata"]["name"], namespace), API_TIMEOUT)


@pytest.mark.timeout(900)
async def test_a_jobs_run_executes_as_a_kubernetes_job(core, namespace, tmp_path):
    """The jobs service's Kubernetes executor: a Secret and a Job from the user's server
    pod for the profile, the runner executing the notebook with papermill in the image.
    The service itself is not in the cluster here, so the runner's reports go nowhere;
    the pod's log shows the execution, and the executor deletes the Job and Secret."""
    import json

    import nbformat
    from kubernetes_asyncio import client

    from hubforge.jobs.kubernetes import KubernetesExecutor
    from hubforge.k8s.jobs import run_object_name
    from hubforge.profiles.resolve import ResolvedProfile

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("n = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('live run', n * 7)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    executor = KubernetesExecutor(tmp_path, namespace=namespace, profile_paths=[str(p) for p in PROFILES],
                                  service_url="http://127.0.0.1:9/services/jobs/", api=core.api_client)
    slot = await executor.start_slot("hubforge-live", ResolvedProfile(slug="cpu-small", display_name="CPU"), "python3")
    await slot.send({"command": "run", "run_id": 1, "notebook": json.loads(nbformat.writes(nb)),
                     "parameters": {"n": 6}, "env": {}, "input_path": "live.ipynb", "timeout": 600})
    name = run_object_name(1)
    batch = client.BatchV1Api(core.api_client)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(os.environ.get("HUBFORGE_K8S_TEST_TIMEOUT", "300")) + 120
    while loop.time() < deadline:
        job = await asyncio.wait_for(batch.read_namespaced_job(name, namespace), API_TIMEOUT)
        if job.status.succeeded or job.status.failed:
            break
        await asyncio.sleep(3)
    pods = await core.list_namespaced_pod(namespace, label_selector=f"job-name={name}")
    logs = await core.read_namespaced_pod_log(pods.items[0].metadata.name, namespace)
    assert "live run 42" in logs
    await slot.kill()
    assert "live run 42" in slot.log_path.read_text()
    with pytest.raises(client.ApiException):
        await core.read_namespaced_secret(name, namespace)


@pytest.mark.timeout(300)
async def test_model_objects_are_created_swept_and_stopped(core, namespace):
    """The five objects of a served model version exist once applied; the models
    service's Kubernetes backend sweeps those it is not told to keep and deletes the
    rest on stop. No pod needs to start: the image is never pulled for this check."""
    from kubernetes_asyncio import client

    from hubforge.k8s.models import model_manifests, model_object_name
    from hubforge.models.kubernetes import KubernetesBackend

    api = core.api_client
    readers = {
        "Secret": core.read_namespaced_secret,
        "Deployment": client.AppsV1Api(api).read_namespaced_deployment,
        "Service": core.read_namespaced_service,
        "HorizontalPodAutoscaler": client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler,
        "NetworkPolicy": client.NetworkingV1Api(api).read_namespaced_network_policy,
    }
    creators = {
        "Secret": core.create_namespaced_secret,
        "Deployment": client.AppsV1Api(api).create_namespaced_deployment,
        "Service": core.create_namespaced_service,
        "HorizontalPodAutoscaler": client.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler,
        "NetworkPolicy": client.NetworkingV1Api(api).create_namespaced_network_policy,
    }
    for version in (1, 2):
        for manifest in model_manifests(model="live_model", version=version, owner="hubforge-live",
                                        namespace=namespace, key=secrets.token_urlsafe(32),
                                        image="registry.invalid/hubforge-model:none",
                                        fetch_url="http://hub:10103/services/models/internal/archive"):
            await asyncio.wait_for(creators[manifest["kind"]](namespace, manifest), API_TIMEOUT)
    v1, v2 = model_object_name("live_model", 1), model_object_name("live_model", 2)
    for kind, read in readers.items():
        found = await asyncio.wait_for(read(v1, namespace), API_TIMEOUT)
        assert found.metadata.labels["app.kubernetes.io/managed-by"] == "hubforge", kind

    backend = KubernetesBackend(namespace=namespace, image="unused", api_client=api)
    assert await backend.sweep({v1}) == [v2]
    for kind, read in readers.items():
        with pytest.raises(client.ApiException) as gone:
            await asyncio.wait_for(read(v2, namespace), API_TIMEOUT)
        assert gone.value.status == 404, kind
        await asyncio.wait_for(read(v1, namespace), API_TIMEOUT)

    await backend.stop(v1)
    await backend.stop(v1)  # already gone: nothing to do
    for kind, read in readers.items():
        with pytest.raises(client.ApiException) as gone:
            await asyncio.wait_for(read(v1, namespace), API_TIMEOUT)
        assert gone.value.status == 404, kind
