"""The container backend: each server is a podman or Docker container.

Built on DockerSpawner, talking to Docker or to podman's Docker-compatible socket
(``podman system service``, run by the hub as a managed service). From the resolved
profile: the image, CPU and memory limits, GPU device requests and the environment; a
named volume per user for ``/home/jovyan`` that outlives the container; host networking
with the server on 127.0.0.1 and a port of its own. Stopping a server removes its
container; deleting a user removes their home volume only when
``remove_home_on_user_delete`` is on.
"""

from __future__ import annotations

import asyncio
import os

import docker.errors
from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port
from tornado import web
from traitlets import Bool, Enum, Integer, Unicode, default

from .base import ProfileSpawnerMixin
from .container_objects import home_volume_name, make_environment, make_host_config, make_volumes


class ContainerSpawner(ProfileSpawnerMixin, DockerSpawner):
    """Runs a user's server in a container built from their profile's image."""

    engine = Enum(
        ["podman", "docker"],
        default_value="podman",
        help="""Which engine serves the Docker API at ``client_kwargs['base_url']``.

        Decides how GPUs are requested (CDI device names for podman, device requests
        for Docker). Set by the hub config from what it detected.
        Example: ``c.ContainerSpawner.engine = "docker"``.
        """,
    ).tag(config=True)

    home_volume_template = Unicode(
        "hubforge-home-{username}",
        help="""Name of each user's home volume; ``{username}`` is escaped for Docker.

        Default ``hubforge-home-{username}``; the volume is mounted at /home/jovyan.
        """,
    ).tag(config=True)

    remove_home_on_user_delete = Bool(
        False,
        help="""Delete a user's home volume when an admin deletes the user.

        Default False: the volume (and the user's files) stays until an admin removes it
        (``podman volume rm hubforge-home-NAME``).
        """,
    ).tag(config=True)

    pull_timeout = Integer(
        300,
        help="""Seconds an image pull may take before the spawn fails (default 300).""",
    ).tag(config=True)

    @default("remove")
    def _default_remove(self):
        return True

    @default("use_internal_ip")
    def _default_use_internal_ip(self):
        return True

    @default("network_name")
    def _default_network_name(self):
        return "host"

    @default("ip")
    def _default_ip(self):
        return "127.0.0.1"

    @default("prefix")
    def _default_prefix(self):
        return "hubforge"

    @default("default_url")
    def _default_default_url(self):
        return "/lab"

    @default("pull_policy")
    def _default_pull_policy(self):
        return "ifnotpresent"

    @default("cmd")
    def _default_cmd(self):
        return ["jupyterhub-singleuser"]

    @property
    def home_volume(self) -> str:
        return home_volume_name(self.user.name, self.home_volume_template)

    async def check_allowed(self, image):
        # DockerSpawner reads user_options["image"] as an image name; in HubForge
        # "image" is a profile option, already resolved and validated.
        return self.resolved.image

    async def get_ip_and_port(self):
        return self.ip, self.port

    def get_env(self):
        env = super().get_env()
        env.update(self.profile_env())
        env.update(make_environment(self.resolved, self.held_gpus))
        return env

    async def start(self):
        self.reset_progress()
        self.resolved = r = self.validated_profile()
        self.emit(f"Profile {r.display_name} ({r.slug})", 10)
        if not r.image:
            raise web.HTTPError(400, f"profile {r.slug} has no image; container mode needs one")
        self.image = r.image
        self.mem_limit = r.mem_limit
        self.cpu_limit = r.cpu_limit
        # Host networking: every server needs its own port on 127.0.0.1.
        self.port = random_port()
        await self._wait_for_engine()
        try:
            gpus = self.acquire_gpus(r)
            self.extra_host_config = make_host_config(r, gpus, self.engine)
            self.volumes = make_volumes(r, self.home_volume)
            await self._ensure_image(r.image)
            self.emit(f"Starting container from {r.image}", 40)
            ip, port = await super().start()
            self.emit(f"Container {self.container_name} started; waiting for JupyterLab", 60)
            await self.wait_listening(ip, port)
            return ip, port
        except BaseException:
            await self._cleanup_failed_start()
            raise

    async def _wait_for_engine(self, timeout: float = 30) -> None:
        """Wait for the engine's socket: the hub starts podman's service with itself."""
        url = self.client_kwargs.get("base_url", "")
        if not url.startswith("unix://"):
            return
        path = url.removeprefix("unix://")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not os.path.exists(path):
            if loop.time() > deadline:
                raise web.HTTPError(503, f"the container engine is not answering at {path}",
                                    reason="Container engine unavailable")
            await asyncio.sleep(0.1)

    async def _ensure_image(self, image: str) -> None:
        """Make sure the image exists, pulling per pull_policy; fail fast naming it."""
        try:
            await asyncio.wait_for(self.pull_image(image), self.pull_timeout)
        except docker.errors.NotFound as e:
            raise web.HTTPError(
                400, f"image {image} is not available: {e.explanation or e}", reason="Image not found"
            ) from None
        except docker.errors.APIError as e:
            raise web.HTTPError(
                502, f"could not pull image {image}: {e.explanation or e}", reason="Image pull failed"
            ) from None
        except asyncio.TimeoutError:
            raise web.HTTPError(
                502, f"pulling image {image} took longer than {self.pull_timeout}s", reason="Image pull timed out"
            ) from None

    async def _cleanup_failed_start(self) -> None:
        self.release_gpus()
        if self.object_id:
            try:
                await self.remove_object()
            except docker.errors.APIError as e:
                self.log.warning("%s: could not remove container %s: %s", self.key, self.object_name, e)
            self.object_id = ""

    async def stop(self, now=False):
        try:
            await super().stop(now=now)
        finally:
            self.release_gpus()

    async def delete_forever(self):
        """Called when an admin deletes the user: drop the home volume if configured."""
        # Every server of the user gets this call; the first one removes the volume.
        if not self.remove_home_on_user_delete:
            return
        try:
            await self.docker("remove_volume", self.home_volume)
        except docker.errors.NotFound:
            return  # another server of the user's removed it first
        self.log.info("%s: removed home volume %s", self.key, self.home_volume)


def docker_url_for(engine: str, data_dir: str) -> str:
    """The Docker API endpoint: ``DOCKER_HOST``, else Docker's socket, else the hub's podman one."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if engine == "docker":
        return "unix:///var/run/docker.sock"
    return f"unix://{os.path.join(data_dir, 'podman.sock')}"
