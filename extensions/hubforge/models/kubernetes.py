"""Model workers as Kubernetes Deployments (mode ``kubernetes``).

On Kubernetes the models service runs in the hub's pod, and each served version's
worker is the five objects of :func:`hubforge.k8s.models.model_manifests` (Secret,
Deployment, Service, HorizontalPodAutoscaler, NetworkPolicy) in the hub's namespace.
:class:`KubernetesBackend` creates them (replacing any left from an earlier start),
waits for a ready pod and hands the service the worker's Service address; stopping
deletes them. Like the local and container backends (:mod:`hubforge.models.backends`),
it has ``start``, ``stop`` and ``close``, plus ``sweep`` for objects a previous service
process left behind.

Every start gets a new key and a new *revision* label on its pods, which the Service
selects: a pod of an earlier start (which holds the earlier key) never receives the
service's connections, and a start that replaces a running version rolls its pods over.

The hub's service account needs, in the namespace: ``secrets``, ``services``,
``deployments`` (apps), ``horizontalpodautoscalers`` (autoscaling) and
``networkpolicies`` (networking.k8s.io): create, get, list, update, delete; ``pods``:
get, list; ``pods/log``: get (to tell the owner why a worker did not start).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import secrets
import socket
from typing import Any

from ..k8s.models import (
    CONTAINER,
    MANAGED_BY_LABEL,
    NAME_LABEL,
    REVISION_LABEL,
    WORKER_PORT,
    model_manifests,
    model_object_name,
    model_selector,
)
from ..kubeclient import api_client

#: Seconds any one call to the Kubernetes API may take.
API_TIMEOUT = 30
#: Seconds between checks of a starting worker's pods.
POLL_SECONDS = 2
#: Waiting reasons that will not go away by waiting: the start fails at once.
FATAL_REASONS = {"ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError"}
#: Restarts after which a crash-looping worker is failed (the first crash may be a
#: network policy that was not yet in force when the pod fetched its model).
FATAL_RESTARTS = 2
#: Keys of ``resources`` (the Deployment builder's arguments of the same names).
RESOURCE_KEYS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")
_ERROR_LINE = re.compile(r"^\w+(\.\w+)*(Error|Exception)\b")


class KubernetesBackend:
    """Starts and stops model workers as Kubernetes objects in ``namespace``.

    ``image`` is the workers' image when a version names none (``spec.image``).
    ``replicas`` is each Deployment's initial size, ``min_replicas``/``max_replicas``
    its autoscaler's bounds; ``resources`` sets any of ``cpu_request``, ``cpu_limit``,
    ``memory_request``, ``memory_limit`` (Kubernetes quantities, defaults ``250m``,
    ``2``, ``512Mi``, ``2Gi``). ``api_client`` is a ``kubernetes_asyncio`` ApiClient;
    by default one is made from the in-cluster credentials, else the kubeconfig.
    ``load_timeout`` bounds the wait for a ready pod, in seconds.
    """

    def __init__(self, *, namespace: str, image: str, log: logging.Logger | None = None, replicas: int = 1,
                 min_replicas: int = 1, max_replicas: int = 4, resources: dict | None = None, api_client=None,
                 load_timeout: float = 300):
        unknown = set(resources or {}) - set(RESOURCE_KEYS)
        if unknown:
            raise ValueError(f"resources: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(RESOURCE_KEYS)}")
        self.namespace = namespace
        self.image = image
        self.log = log or logging.getLogger("hubforge.models")
        self.replicas = replicas
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.resources = dict(resources or {})
        self.load_timeout = load_timeout
        self._api = api_client
        self._own_api = api_client is None

    async def api(self):
        """The Kubernetes API client: in-cluster credentials, else the kubeconfig."""
        if self._api is None:
            self._api = await api_client()
        return self._api

    async def _kinds(self) -> dict[str, Any]:
        """kind -> its API object and the method name suffix of that kind."""
        from kubernetes_asyncio import client

        api = await self.api()
        core = client.CoreV1Api(api)
        return {
            "Secret": (core, "secret"),
            "Deployment": (client.AppsV1Api(api), "deployment"),
            "Service": (core, "service"),
            "HorizontalPodAutoscaler": (client.AutoscalingV2Api(api), "horizontal_pod_autoscaler"),
            "NetworkPolicy": (client.NetworkingV1Api(api), "network_policy"),
        }

    async def _call(self, api, verb: str, suffix: str, *args, **kwargs):
        method = getattr(api, f"{verb}_namespaced_{suffix}")
        return await asyncio.wait_for(method(*args, **kwargs), API_TIMEOUT)

    # -- start ------------------------------------------------------------------------
    async def start(self, spec) -> tuple[str, int, str]:
        """Create (or replace) the objects of ``spec``'s version and wait for a ready pod.

        ``spec`` has ``model``, ``version``, ``owner``, ``key``, ``fetch_url`` and
        ``image`` (None: the backend's). Returns ``(host, port, name)``: the Service's
        address in the cluster and the objects' name, the handle :meth:`stop` takes.
        Raises ``RuntimeError`` with the reason (the pod's last waiting or terminated
        state, the error line of its log) if no pod is ready within ``load_timeout``
        seconds, or sooner when the pod cannot start; the objects are then deleted.
        """
        name = model_object_name(spec.model, spec.version)
        revision = secrets.token_hex(4)
        manifests = model_manifests(
            model=spec.model, version=spec.version, owner=spec.owner, namespace=self.namespace, key=spec.key,
            image=spec.image or self.image, fetch_url=spec.fetch_url, revision=revision,
            replicas=self.replicas, min_replicas=self.min_replicas, max_replicas=self.max_replicas,
            **self.resources,
        )
        what = f"model {spec.model} version {spec.version}"
        try:
            kinds = await self._kinds()
            for manifest in manifests:
                await self._apply(kinds, manifest)
            self.log.info("%s: created %s in %s, waiting for a ready pod", what, name, self.namespace)
            selector = {**model_selector(spec.model, spec.version), REVISION_LABEL: revision}
            await self._wait_ready(kinds["Secret"][0], selector)
        except BaseException as e:
            with contextlib.suppress(Exception):
                await self.stop(name)
            if isinstance(e, TimeoutError):
                raise RuntimeError(f"the Kubernetes API did not answer within {API_TIMEOUT} s") from None
            if _is_api_error(e):
                raise RuntimeError(f"Kubernetes refused the model's objects: {_api_message(e)}") from None
            raise
        return f"{name}.{self.namespace}.svc", WORKER_PORT, name

    async def endpoints(self, host: str, port: int) -> list[tuple[str, int]]:
        """Where a version's workers listen now: the addresses of its ready pods, which is
        what the name of its headless Service resolves to (``host``, as :meth:`start`
        returned it). Empty if the name does not resolve at the moment (logged)."""
        loop = asyncio.get_running_loop()
        try:
            found = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), API_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            self.log.warning("cannot resolve %s: %s", host, e)
            return []
        return sorted({(address[4][0], port) for address in found})

    async def _apply(self, kinds: dict, manifest: dict) -> None:
        """Create ``manifest``; if it exists (409), replace it with ``manifest``."""
        from kubernetes_asyncio.client import ApiException

        api, suffix = kinds[manifest["kind"]]
        name = manifest["metadata"]["name"]
        try:
            await self._call(api, "create", suffix, self.namespace, manifest)
            return
        except ApiException as e:
            if e.status != 409:
                raise
        existing = await self._call(api, "read", suffix, name, self.namespace)
        body = copy.deepcopy(manifest)
        body["metadata"]["resourceVersion"] = existing.metadata.resource_version
        if manifest["kind"] == "Service":
            # A Service's cluster IP is immutable: a replacement must restate it.
            body["spec"]["clusterIP"] = existing.spec.cluster_ip
            if existing.spec.cluster_ips:
                body["spec"]["clusterIPs"] = existing.spec.cluster_ips
        await self._call(api, "replace", suffix, name, self.namespace, body)
        self.log.info("replaced %s %s in %s", manifest["kind"], name, self.namespace)

    async def _wait_ready(self, core, selector: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.load_timeout
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        while True:
            pods = await asyncio.wait_for(
                core.list_namespaced_pod(self.namespace, label_selector=label_selector), API_TIMEOUT)
            live = [p for p in pods.items if p.metadata.deletion_timestamp is None]
            if any(_is_ready(p) for p in live):
                return
            reason, fatal = await self._reason(core, live)
            if fatal:
                raise RuntimeError(f"the model's pod cannot start: {reason}")
            if loop.time() > deadline:
                raise RuntimeError(f"the model's pod was not ready within {self.load_timeout:g} s"
                                   + (f": {reason}" if reason else ""))
            await asyncio.sleep(POLL_SECONDS)

    async def _reason(self, core, pods: list) -> tuple[str, bool]:
        """Why ``pods`` are not ready, for the model's owner, and whether waiting is futile."""
        for pod in pods:
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.status == "False":
                    return f"{condition.reason}: {condition.message}", False
            for status in pod.status.container_statuses or []:
                waiting = status.state.waiting if status.state else None
                terminated = (status.state.terminated if status.state else None) or (
                    status.last_state.terminated if status.last_state else None)
                parts = []
                if waiting and waiting.reason and waiting.reason not in ("ContainerCreating", "PodInitializing"):
                    parts.append(waiting.reason + (f" ({waiting.message})" if waiting.message
                                                   and waiting.reason in FATAL_REASONS else ""))
                if terminated:
                    parts.append(f"exit code {terminated.exit_code}" + (
                        f" ({terminated.reason})" if terminated.reason not in (None, "Error") else ""))
                    error = await self._log_error(core, pod.metadata.name, previous=waiting is not None)
                    if error:
                        parts.append(error)
                if parts:
                    reason = waiting.reason if waiting else ""
                    fatal = reason in FATAL_REASONS or (
                        reason == "CrashLoopBackOff" and (status.restart_count or 0) >= FATAL_RESTARTS)
                    return ", ".join(parts), fatal
        return "", False

    async def _log_error(self, core, pod: str, *, previous: bool) -> str:
        """The last error line of a worker's log (its exception), if any."""
        try:
            text = await asyncio.wait_for(core.read_namespaced_pod_log(
                pod, self.namespace, container=CONTAINER, previous=previous, tail_lines=50), API_TIMEOUT)
        except Exception:  # no log (yet), or no right to read it: the state alone says enough
            return ""
        lines = [line.strip() for line in str(text).splitlines() if line.strip()]
        errors = [line for line in lines if _ERROR_LINE.match(line)]
        return (errors[-1] if errors else lines[-1] if lines else "")[:500]

    # -- stop -------------------------------------------------------------------------
    async def stop(self, handle) -> None:
        """Delete every object of a version; ``handle`` is :meth:`start`'s name, or a spec.

        Objects already gone are fine. The NetworkPolicy goes last, so the pods are
        never without it while they run (they stop in the background).
        """
        from kubernetes_asyncio.client import ApiException

        name = handle if isinstance(handle, str) else model_object_name(handle.model, handle.version)
        kinds = await self._kinds()
        for kind in ("Service", "HorizontalPodAutoscaler", "Deployment", "Secret", "NetworkPolicy"):
            api, suffix = kinds[kind]
            try:
                await self._call(api, "delete", suffix, name, self.namespace, propagation_policy="Background")
            except ApiException as e:
                if e.status != 404:
                    raise
        self.log.info("deleted the objects of %s in %s", name, self.namespace)

    async def sweep(self, keep: set[str]) -> list[str]:
        """Delete the model objects in the namespace whose name is not in ``keep``.

        For what a previous service process left (its workers hold keys this process
        does not know). Selects by :data:`~hubforge.k8s.models.NAME_LABEL` and
        ``app.kubernetes.io/managed-by: hubforge``; returns the names removed, sorted.
        """
        from kubernetes_asyncio.client import ApiException

        selector = f"{NAME_LABEL[0]}={NAME_LABEL[1]},{MANAGED_BY_LABEL[0]}={MANAGED_BY_LABEL[1]}"
        kinds = await self._kinds()
        found: set[str] = set()
        for kind, (api, suffix) in kinds.items():
            try:
                listed = await self._call(api, "list", suffix, self.namespace, label_selector=selector)
            except (ApiException, TimeoutError) as e:
                self.log.warning("cannot list model %ss in %s: %s", kind, self.namespace, _api_message(e))
                continue
            found.update(item.metadata.name for item in listed.items)
        removed = sorted(found - set(keep))
        for name in removed:
            try:
                await self.stop(name)
            except (ApiException, TimeoutError) as e:
                self.log.warning("cannot delete the objects of %s in %s: %s", name, self.namespace, _api_message(e))
        return removed

    async def close(self) -> None:
        """Delete every worker (the service is stopping; a new one starts them with new keys)."""
        try:
            await self.sweep(set())
        finally:
            if self._own_api and self._api is not None:
                await self._api.close()
                self._api = None


def _is_ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _is_api_error(e: BaseException) -> bool:
    from kubernetes_asyncio.client import ApiException

    return isinstance(e, ApiException)


def _api_message(e: BaseException) -> str:
    """An API error's own message (``secrets is forbidden: ...``), else its status."""
    if isinstance(e, TimeoutError):
        return f"no answer within {API_TIMEOUT} s"
    try:
        return str(json.loads(e.body)["message"])
    except Exception:
        return f"{getattr(e, 'status', '')} {getattr(e, 'reason', '') or e}".strip()
