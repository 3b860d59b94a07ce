"""The user pod and home PVC, built exactly as the Kubernetes spawner builds them.

Rather than re-implementing KubeSpawner's trait-to-manifest mapping (hundreds of
lines, and the place where a copy would drift), the builders run the real code path
on a spawner that is not connected to any cluster:

1. :func:`offline_spawner` makes a ``HubForgeKubeSpawner`` for a user (name, groups,
   server name) with an in-memory hub, skipping the cluster-credentials lookup and API
   client that ``KubeSpawner.__init__`` sets up; nothing here talks to a cluster.
2. JupyterHub's ``apply_group_overrides`` and ``apply_user_options`` hooks and the
   spawner's ``load_user_options`` validate the options (``HTTPError(400)`` naming
   the field, as a REST spawn gets) and apply the profile through KubeSpawner's
   ``profile_list`` machinery.
3. ``get_pod_manifest`` / ``get_pvc_manifest`` (kubespawner's ``objects.make_pod`` and
   ``make_pvc``) build the objects, and :func:`to_json` serialises them with the
   Kubernetes client's own serialiser.

Example::

    pod = await make_user_pod(["spawner_profiles"], {"profile": "gpu-1"}, "alice")
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]  # "1"
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kubespawner.spawner
from jupyterhub.objects import Hub
from kubernetes_asyncio.client import ApiClient
from traitlets.config import Config

from ..spawners.kubernetes import HubForgeKubeSpawner


@dataclass
class _Group:
    name: str


@dataclass
class _User:
    """What KubeSpawner and JupyterHub's ``Spawner`` read from a hub user."""

    name: str
    groups: list[_Group]
    id: int = 1
    server: None = None

    @property
    def escaped_name(self) -> str:
        return self.name

    @property
    def url(self) -> str:
        return f"/user/{self.name}/"


@dataclass
class _OrmSpawner:
    """The database record a spawner reads its server name from."""

    name: str
    server: None = None
    state: dict = field(default_factory=dict)
    user_options: dict = field(default_factory=dict)


def offline_spawner(
    profile_paths: Sequence[str | os.PathLike],
    username: str = "jovyan",
    groups: Iterable[str] = (),
    server_name: str = "",
    config: Config | None = None,
) -> HubForgeKubeSpawner:
    """A ``HubForgeKubeSpawner`` for ``username`` that is connected to no cluster.

    ``config`` is applied as JupyterHub would (e.g. ``c.HubForgeKubeSpawner.namespace``).
    The spawner's ``api`` is None: building manifests works, starting does not.
    """
    config = copy.deepcopy(config) if config is not None else Config()
    config.HubForgeKubeSpawner.profile_paths = [str(p) for p in profile_paths]
    # KubeSpawner.__init__ loads cluster credentials and makes an API client; neither
    # is needed to build a manifest, and with no kubeconfig the first one fails.
    saved = kubespawner.spawner.load_config, kubespawner.spawner.shared_client
    kubespawner.spawner.load_config = lambda **kwargs: None
    kubespawner.spawner.shared_client = lambda *args, **kwargs: None
    try:
        return HubForgeKubeSpawner(
            user=_User(username, [_Group(g) for g in groups]),
            orm_spawner=_OrmSpawner(server_name),
            hub=Hub(ip="hub", port=8081, base_url="/hub/"),
            config=config,
        )
    finally:
        kubespawner.spawner.load_config, kubespawner.spawner.shared_client = saved


async def to_json(obj: Any) -> Any:
    """A kubernetes client model (``V1Pod``...) as the JSON the API server receives."""
    # The client only serialises here; it sends nothing, but owns an HTTP session to close.
    async with ApiClient() as api:
        return api.sanitize_for_serialization(obj)


async def make_user_pod(
    profile_paths: Sequence[str | os.PathLike],
    user_options: Mapping[str, Any] | None = None,
    username: str = "jovyan",
    groups: Iterable[str] = (),
    server_name: str = "",
    config: Config | None = None,
) -> dict[str, Any]:
    """The pod manifest the Kubernetes spawner would create, as a dict.

    ``user_options`` has the REST API's shape (``{"profile": "gpu-1", "image":
    "2026.08"}``). Raises ``tornado.web.HTTPError(400)`` naming the field for options
    the user may not use, exactly as a spawn does.
    """
    spawner = offline_spawner(profile_paths, username, groups, server_name, config)
    spawner.user_options = dict(user_options or {})
    # JupyterHub's order for a spawn, up to the point where KubeSpawner would call the API.
    await spawner.apply_group_overrides()
    await spawner._run_apply_user_options(spawner.user_options)
    await spawner.load_user_options()
    return await to_json(await spawner.get_pod_manifest())


async def make_user_pvc(
    profile_paths: Sequence[str | os.PathLike],
    username: str = "jovyan",
    server_name: str = "",
    config: Config | None = None,
) -> dict[str, Any]:
    """The home PVC manifest the Kubernetes spawner would create for ``username``."""
    spawner = offline_spawner(profile_paths, username, (), server_name, config)
    return await to_json(spawner.get_pvc_manifest())
