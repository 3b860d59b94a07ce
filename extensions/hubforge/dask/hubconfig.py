"""The Dask gateway's part of the hub configuration.

:func:`configure_dask_service` adds the ``dask-gateway`` hub-managed service (in modes
`local` and `containers`; on Kubernetes the dask-gateway Helm chart runs it, values from
``hubforge helm-values``), writes the gateway's configuration from the ``dask:``
settings, and tells every user server where the gateway is. Scopes, least privilege:

* users, and their servers' tokens, get ``access:services!service=dask-gateway`` (the
  gateway refuses tokens without it) and ``read:services!service=dask-gateway``;
  which clusters a user may touch is the gateway's business (their own; admins all);
* the service itself gets ``read:users:name`` and ``read:servers`` (and
  ``list:users``) to notice deleted users and stopped servers, nothing more.

User servers get dask-gateway's client settings as environment variables
(``DASK_GATEWAY__ADDRESS`` through the hub's proxy, ``DASK_GATEWAY__PROXY_ADDRESS`` for
the schedulers' TLS connections, ``DASK_GATEWAY__AUTH__TYPE=jupyterhub``), so plain
``dask_gateway.Gateway()`` works too, and ``DASK_GATEWAY__CLUSTER__OPTIONS`` records the
server as the origin of the clusters it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from ..services import free_port, grant_scopes
from .settings import DaskSettings

SERVICE_NAME = "dask-gateway"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
USER_SCOPES = [ACCESS_SCOPE, f"read:services!service={SERVICE_NAME}"]
SERVICE_SCOPES = ["list:users", "read:users:name", "read:servers"]


def origin_options(spawner) -> str:
    """``DASK_GATEWAY__CLUSTER__OPTIONS`` for a server: its clusters record it as origin,
    and in mode `containers` run the server's own image."""
    options = {"origin": f"server:{spawner.name}"}
    image = getattr(getattr(spawner, "resolved", None), "image", None)
    if image and type(spawner).__name__ == "ContainerSpawner":
        options["image"] = image
    return repr(options)


def isolation_for(settings) -> str:
    """How the gateway runs clusters: as users' system accounts when it can, like servers."""
    wanted = (settings.local or {}).get("isolation", "auto")
    if os.geteuid() == 0 and wanted in ("auto", "system-users"):
        return "system-users"
    return "shared"


def gateway_config(settings, dask: DaskSettings, *, data_dir: Path, ports: dict[str, int],
                   images: list[str] | None = None) -> dict:
    """The gateway's traitlets configuration (JSON-able), from the platform settings.

    `ports` holds ``api`` (dask-gateway's private API), ``http`` and ``tcp`` (its proxy);
    `images` the profiles' images (mode `containers`: what clusters may run, the first
    the default). A pure function, tested directly.
    """
    dask_bin = Path(sys.executable).with_name("dask")
    dask_cmd = [str(dask_bin)] if dask_bin.exists() else [sys.executable, "-m", "dask"]
    tag = hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]
    local = settings.local or {}
    config = {
        "HubForgeGateway": {
            "address": f"127.0.0.1:{ports['api']}",
            "reconcile_period": dask.reconcile_period,
            "stop_with_server": dask.stop_with_server,
        },
        "Proxy": {
            "address": f"127.0.0.1:{ports['http']}",
            "tcp_address": f"127.0.0.1:{ports['tcp']}",
        },
        "HubForgeLocalBackend": {
            "isolation": isolation_for(settings),
            "system_user_prefix": local.get("system_user_prefix", "hf-"),
            "dask_settings": dict(settings.dask or {}),
            "settings_source": settings.source or "hubforge.yaml",
            "cgroup_prefix": f"dask-{tag}",
            "worker_start_timeout": dask.worker_start_timeout,
            # The scheduler reports its workers this often (dask-gateway's default 15 s);
            # list_clusters' worker counts are at most this old.
            "cluster_heartbeat_period": 5,
            "cluster_start_timeout": dask.worker_start_timeout,
        },
        "HubForgeClusterConfig": {
            "scheduler_cmd": dask_cmd + ["scheduler"],
            "worker_cmd": dask_cmd + ["worker"],
        },
        "HubForgeAuthenticator": {"jupyterhub_service_name": SERVICE_NAME},
    }
    if settings.mode == "containers":
        config["HubForgeGateway"]["backend_class"] = "hubforge.dask.backend.HubForgeContainerBackend"
        containers = settings.containers or {}
        config["HubForgeContainerBackend"] = {
            "images": images or [],
            "engine_command": "podman" if containers.get("engine", "auto") in ("auto", "podman") else "docker",
            "gateway_tag": tag,
            "isolation": "shared",
            "cgroup_prefix": "",
        }
        if containers.get("home_volume_template"):
            config["HubForgeContainerBackend"]["home_volume_template"] = containers["home_volume_template"]
    return config


def configure_dask_service(c, settings, services: list, roles: list) -> None:
    """Add the ``dask-gateway`` service, its roles and the servers' client settings."""
    from ..hub.config import public_url

    dask = DaskSettings.from_settings(settings)
    if not dask.enabled or settings.mode == "kubernetes":
        return
    data_dir = settings.resolve_path(settings.data_dir)
    base = urlparse(settings.bind_url).path or "/"
    prefix = f"{base}services/{SERVICE_NAME}/"
    ports = {"front": free_port(), "api": free_port(), "http": free_port(), "tcp": free_port()}
    images = None
    if settings.mode == "containers":
        from ..helm.values import profile_images
        from ..profiles import load_profiles

        images = profile_images(load_profiles([str(settings.resolve_path(p)) for p in settings.profiles]).profiles)
    config = gateway_config(settings, dask, data_dir=data_dir, ports=ports, images=images)
    services.append({
        "name": SERVICE_NAME,
        "url": f"http://127.0.0.1:{ports['front']}",
        "command": [sys.executable, "-m", "hubforge.dask"],
        # Passed whole in the environment, not in a file: every process that loads the
        # hub configuration (``hubforge token`` too) draws its own ports, and only the
        # hub's must reach the gateway it starts.
        "environment": {"HUBFORGE_DASK_CONFIG": json.dumps(config)},
        "oauth_no_confirm": True,
        "display": True,
        # Public to users (read:services): what a client outside a server needs.
        "info": {
            "description": "Dask clusters and their dashboards",
            "address": f"{public_url(settings)}services/{SERVICE_NAME}",
            "proxy_address": f"gateway://127.0.0.1:{ports['tcp']}",
        },
    })
    roles.append({"name": SERVICE_NAME, "scopes": SERVICE_SCOPES, "services": [SERVICE_NAME]})
    grant_scopes(roles, "user", ["self", *USER_SCOPES])
    grant_scopes(roles, "server", USER_SCOPES)

    env = dict(c.Spawner.environment) if "environment" in c.Spawner else {}
    env.update({
        "DASK_GATEWAY__ADDRESS": f"{public_url(settings)}services/{SERVICE_NAME}",
        "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://127.0.0.1:{ports['tcp']}",
        "DASK_GATEWAY__PUBLIC_ADDRESS": prefix.rstrip("/"),
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        "DASK_GATEWAY__CLUSTER__OPTIONS": origin_options,
    })
    c.Spawner.environment = env
