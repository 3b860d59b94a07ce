"""Runs as Kubernetes Jobs, reporting back over HTTP (mode ``kubernetes``).

On Kubernetes the jobs service runs in the hub's pod and a run is a ``batch/v1`` Job
built by :func:`hubforge.k8s.jobs.make_run_job` from the user's server pod for the
job's profile. A pod cannot hold a pipe to the service, so the runner
(``python -m hubforge.jobs.runner --input ... --report-url ...``) POSTs each message
(progress, snapshot, done) to ``api/runner/<run>`` with a random per-run token
(:class:`RunnerReportHandler`). The token is in the run's Secret only (the Job refers
to it by name), is compared by its hash, and is forgotten when the run ends.

`RemoteSlot` gives the scheduler the same interface as a local runner's channel: the
Job is created when the run is sent, messages come from the handler through a queue,
and killing the slot deletes the Job (and with it the pod and the Secret) after
copying the pod's log into the run's log. There are no warm runners on Kubernetes:
every run waits for its pod to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tornado import web

from ..kubeclient import api_client
from ..profiles.resolve import ResolvedProfile
from .executors import Executor, Slot

log = logging.getLogger("hubforge.jobs")

#: Seconds between checks that a run's Job has not ended without reporting.
WATCH_SECONDS = 5.0
#: Largest report a runner may POST (an output notebook, JSON-escaped).
MAX_REPORT = 64 * 2**20


@dataclass(eq=False)
class RemoteSlot(Slot):
    """A run executing elsewhere: messages arrive through `deliver`, not a stream."""

    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    executor: object = None
    owner: str = ""
    profile: str = ""
    kernel: str = ""
    run_id: int | None = None

    async def wait_ready(self, timeout: float) -> None:
        """Nothing to wait for: the pod starts when the run is sent."""

    async def send(self, message: dict) -> None:
        self.run_id = int(message["run_id"])
        await self.executor.submit(self, message)

    async def receive(self) -> dict | None:
        return await self.queue.get()

    def deliver(self, message: dict | None) -> None:
        self.queue.put_nowait(message)


class KubernetesExecutor(Executor):
    """Creates a Secret and a Job per run in `namespace` (see the module doc)."""

    def __init__(self, jobs_dir: Path, *, namespace: str = "default", service_url: str = "",
                 profile_paths: list[str] | None = None, spawner_config: dict | None = None, api=None):
        from traitlets.config import Config

        super().__init__(jobs_dir)
        self.namespace = namespace
        self.service_url = service_url
        self.profile_paths = list(profile_paths or [])
        #: The hub's KubeSpawner settings (see hubforge.jobs.hubconfig.spawner_config).
        self.spawner_config = Config(spawner_config or {})
        self._api = api
        #: run id -> (sha256 of its token, slot)
        self.remote: dict[int, tuple[bytes, RemoteSlot]] = {}

    async def api(self):
        """The Kubernetes API client: in-cluster credentials, else the kubeconfig."""
        if self._api is None:
            self._api = await api_client()
        return self._api

    async def start_slot(self, owner: str, profile: ResolvedProfile, kernel: str) -> Slot:
        number, log_path = self.new_log()
        slot = RemoteSlot(key=(owner, profile.slug, kernel), number=number, reader=None, writer=None,
                          log_path=log_path, kill_hook=None, executor=self, owner=owner,
                          profile=profile.slug, kernel=kernel)
        slot.kill_hook = lambda: self._delete(slot)
        return self.track(slot)

    async def submit(self, slot: RemoteSlot, command: dict) -> None:
        """Create the run's Job and its Secret (owned by the Job)."""
        from kubernetes_asyncio import client

        from ..k8s.jobs import make_run_job, make_run_secret

        token = secrets.token_urlsafe(32)
        self.remote[slot.run_id] = (hashlib.sha256(token.encode()).digest(), slot)
        notebook = json.loads(json.dumps(command["notebook"]))
        for cell in notebook.get("cells", []):  # a Secret holds 1 MiB: inputs only
            if cell.get("cell_type") == "code":
                cell["outputs"], cell["execution_count"] = [], None
        run_input = {**command, "notebook": notebook, "kernel": slot.kernel, "cwd": None}
        from ..profiles import load_profiles

        # Access to the profile was checked with the owner's groups when the job was saved.
        profile = load_profiles(self.profile_paths).get(slot.profile)
        groups = (profile.allowed_groups or ()) if profile is not None else ()
        config = self.spawner_config.copy()
        config.HubForgeKubeSpawner.namespace = self.namespace
        job = await make_run_job(self.profile_paths, {"profile": slot.profile}, slot.owner, run_id=slot.run_id,
                                 job_name=str(command.get("input_path") or ""), service_url=self.service_url,
                                 timeout=int(command.get("timeout") or 3600), namespace=self.namespace,
                                 groups=groups, config=config)
        api = await self.api()
        created = await client.BatchV1Api(api).create_namespaced_job(self.namespace, job)
        secret = make_run_secret(slot.run_id, slot.owner, run_input=run_input, token=token,
                                 namespace=self.namespace, job_uid=created.metadata.uid)
        await client.CoreV1Api(api).create_namespaced_secret(self.namespace, secret)
        slot.tasks.append(asyncio.create_task(self._watch(slot)))
        log.info("run %s: created Job %s in %s", slot.run_id, job["metadata"]["name"], self.namespace)

    async def _watch(self, slot: RemoteSlot) -> None:
        """End the run (receive() -> None) if its Job fails without reporting."""
        from kubernetes_asyncio import client

        from ..k8s.jobs import run_object_name

        batch = client.BatchV1Api(await self.api())
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                job = await batch.read_namespaced_job(run_object_name(slot.run_id), self.namespace)
            except client.ApiException as e:
                if e.status == 404:
                    slot.deliver(None)
                    return
                continue
            if job.status and (job.status.failed or job.status.succeeded):
                await asyncio.sleep(WATCH_SECONDS)  # a last report may still be on its way
                slot.deliver(None)
                return

    def check(self, run_id: int, token: str) -> bool:
        """Whether `token` is the token of run `run_id`, executing here now."""
        entry = self.remote.get(run_id)
        return entry is not None and hmac.compare_digest(entry[0], hashlib.sha256(token.encode()).digest())

    def deliver(self, run_id: int, token: str, message) -> bool:
        """A runner's report: True if the token is the run's, and the message queued."""
        entry = self.remote.get(run_id)
        if entry is None or not hmac.compare_digest(entry[0], hashlib.sha256(token.encode()).digest()):
            return False
        entry[1].deliver(message)
        return True

    async def _delete(self, slot: RemoteSlot) -> None:
        """Keep the pod's log with the run, then delete the Job, its pod and its Secret."""
        from kubernetes_asyncio import client

        from ..k8s.jobs import run_object_name

        if slot.run_id is None:
            return
        self.remote.pop(slot.run_id, None)
        api = await self.api()
        core = client.CoreV1Api(api)
        name = run_object_name(slot.run_id)
        with contextlib.suppress(Exception):
            pods = await core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}")
            for pod in pods.items:
                text = await core.read_namespaced_pod_log(pod.metadata.name, self.namespace)
                with open(slot.log_path, "a", encoding="utf-8") as f:
                    f.write(text)
        with contextlib.suppress(client.ApiException):
            await client.BatchV1Api(api).delete_namespaced_job(name, self.namespace, propagation_policy="Background")
        with contextlib.suppress(client.ApiException):
            await core.delete_namespaced_secret(name, self.namespace)

    async def sweep(self) -> None:
        """Delete the Jobs of runs a previous service process left (the runs are failed
        or retried by the scheduler's recovery)."""
        from kubernetes_asyncio import client

        try:
            batch = client.BatchV1Api(await self.api())
            jobs = await batch.list_namespaced_job(self.namespace, label_selector="app.kubernetes.io/managed-by=hubforge")
        except Exception as e:  # no cluster reachable: nothing to sweep, runs will fail with the reason
            log.warning("cannot list run Jobs in %s: %s", self.namespace, e)
            return
        for job in jobs.items:
            if not (job.status and (job.status.succeeded or job.status.failed)):
                with contextlib.suppress(client.ApiException):
                    await batch.delete_namespaced_job(job.metadata.name, self.namespace, propagation_policy="Background")


class RunnerReportHandler(web.RequestHandler):
    """``POST api/runner/<run>``: a remote runner's message, with its run's bearer token.

    Not hub-authenticated: a run has no hub token. 403 for a wrong or missing token, 404
    for a run that is not executing remotely here (finished, or another copy's).
    """

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated, never cookie-authenticated: no XSRF to check."""

    def post(self, run_id: str) -> None:
        executor = self.settings.get("remote_executor")
        auth = self.request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        # The token first, and one answer for an unknown run and a wrong token: nothing
        # is parsed for, or told to, a caller without the run's token.
        if executor is None or not token or not executor.check(int(run_id), token):
            raise web.HTTPError(403)
        if len(self.request.body) > MAX_REPORT:
            raise web.HTTPError(413)
        try:
            message = json.loads(self.request.body or b"null")
        except (ValueError, RecursionError):
            raise web.HTTPError(400) from None
        executor.deliver(int(run_id), token, message)
        self.set_status(204)
        self.finish()
