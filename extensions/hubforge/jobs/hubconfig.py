"""The jobs service's part of the hub configuration.

:func:`configure_jobs_service` adds the ``jobs`` hub-managed service from the ``jobs:``
settings, declares its custom scopes and grants them, least privilege:

* ``custom:hubforge:jobs:read`` lists jobs, runs, outputs and logs;
  ``custom:hubforge:jobs:write`` creates, changes, runs, cancels and deletes, and
  implies ``read``. Whose jobs is the service's business: the caller's own (admins: all).
* The ``user`` role gets both, ``access:services!service=jobs`` and
  ``read:services!service=jobs`` (to find its URL); so does the ``server`` role, so a
  notebook can schedule itself with its server's token.
* Browser sessions on the Jobs page (the service's OAuth cookie) get read and write:
  the page pauses, runs and deletes, with JupyterHub's XSRF protection on every change.
* The service itself needs no role: the hub tells it the caller's name, groups and admin
  flag when it checks a token; runs need no hub token at all.

In mode ``kubernetes`` (the hub pod of the Zero to JupyterHub chart, configured by
``hub.extraConfig``, see :mod:`hubforge.helm.values`) the service runs in the hub's pod
and each run is a Job in the hub's namespace. Its port is fixed, :data:`KUBERNETES_PORT`,
because pods elsewhere reach it through the chart's ``hub`` Service (which the generated
values extend with that port): run pods report to ``http://hub:10102<base_url>services/jobs/``.
The service listens on all the pod's interfaces (:data:`BIND_ENV`); the URL the hub
knows it by is the pod's own IP, not the Service (see
:func:`hubforge.services.kubernetes_address`).
"""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import urlparse

from ..services import add_custom_scopes, free_port, grant_scopes, kubernetes_address
from ..services import kubernetes_service_url as _service_url_in_cluster
from .service import READ_SCOPE, WRITE_SCOPE
from .settings import JobsSettings

SERVICE_NAME = "jobs"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
CUSTOM_SCOPES = {
    READ_SCOPE: {"description": "See your scheduled notebook jobs, their runs, outputs and logs."},
    WRITE_SCOPE: {
        "description": "Create, change, run, cancel and delete your scheduled notebook jobs.",
        "subscopes": [READ_SCOPE],
    },
}
USER_SCOPES = [READ_SCOPE, WRITE_SCOPE, ACCESS_SCOPE, f"read:services!service={SERVICE_NAME}"]

#: The service's port in the hub's pod on Kubernetes (exposed by the hub's Service).
KUBERNETES_PORT = 10102
#: ``host:port`` the service listens on when set (``hubforge.jobs.service``).
BIND_ENV = "HUBFORGE_JOBS_BIND"
#: The hub pod's namespace; Zero to JupyterHub sets it on the hub.
NAMESPACE_ENV = "POD_NAMESPACE"
#: The hub's variables the service needs on Kubernetes: the in-cluster API address
#: (a hub-managed service gets only the variables it is given), and the jobs database's
#: URL when the site values set it from a Secret (``hub.extraEnv``).
KUBERNETES_PASSED_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "HUBFORGE_JOBS_DB_URL")


def kubernetes_service_url(base_url: str = "/") -> str:
    """The service's base URL for run pods: ``http://hub:10102<base_url>services/jobs/``."""
    return _service_url_in_cluster(SERVICE_NAME, KUBERNETES_PORT, base_url)


def _hub_base_url(c, settings) -> str:
    # The chart sets c.JupyterHub.base_url (hub.baseUrl); HubForge's own hub config sets
    # bind_url, whose path JupyterHub takes as the base URL.
    return c.JupyterHub.get("base_url") or urlparse(settings.bind_url).path or "/"


def service_config(settings, jobs: JobsSettings, profile_paths: list[str], base_url: str = "/") -> dict:
    """The service's configuration (JSON-able), from the platform settings.

    In mode ``kubernetes`` its ``kubernetes`` section holds the executor's arguments:
    ``namespace`` (the hub pod's, ``$POD_NAMESPACE``, else ``default``) and
    ``service_url`` (:func:`kubernetes_service_url` of the hub's ``base_url``).
    """
    from ..dask.hubconfig import isolation_for

    data_dir = settings.resolve_path(settings.data_dir)
    config = {
        "settings": {k: v for k, v in jobs.to_json().items() if k != "db_url"},
        "jobs_dir": str(data_dir / "jobs"),
        "profiles": profile_paths,
        "mode": settings.mode,
    }
    if settings.mode == "local":
        local = dict(settings.local or {})
        config["local"] = {
            "isolation": isolation_for(settings),
            "system_user_prefix": local.get("system_user_prefix", "hf-"),
            "home_root": local.get("home_root", "/home"),
            "shared_home_root": str(data_dir / "homes"),
            "use_cgroups": local.get("use_cgroups", True),
        }
    elif settings.mode == "containers":
        containers = dict(settings.containers or {})
        engine = containers.get("engine", "auto")
        config["containers"] = {
            "engine": "docker" if engine == "docker" else "podman",
            "home_volume_template": containers.get("home_volume_template", "hubforge-home-{username}"),
        }
        if config["containers"]["engine"] == "podman":
            from ..podman import podman_env

            # Only what podman needs: the service's own environment holds its hub token.
            config["containers"]["environ"] = podman_env(base={"PATH": os.environ.get("PATH", os.defpath)})
    elif settings.mode == "kubernetes":
        config["kubernetes"] = {
            "namespace": os.environ.get(NAMESPACE_ENV) or "default",
            "service_url": kubernetes_service_url(base_url),
        }
    return config


def spawner_config(c) -> dict:
    """The hub's ``c.KubeSpawner`` / ``c.HubForgeKubeSpawner`` settings that are plain data,
    so a run's pod gets what the chart gives a server's (tolerations of dedicated nodes,
    ``singleuser.extraEnv``, uid and fsGid, pull secrets, the storage settings). Callables
    (hooks, KubeSpawner's ``modify_pod_hook``) cannot cross into the service and are left out."""
    kept: dict[str, dict] = {}
    for section in ("KubeSpawner", "HubForgeKubeSpawner"):
        if section not in c:
            continue
        for key, value in c[section].items():
            if key in ("profile_list", "profile_paths"):  # HubForge's profile files decide
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue
            kept.setdefault(section, {})[key] = value
    return kept


def configure_jobs_service(c, settings, services: list, roles: list) -> None:
    """Add the ``jobs`` service to `services`, its scopes to `roles` and to `c`."""
    jobs = JobsSettings.from_settings(settings)
    if not jobs.enabled:
        return
    profile_paths = [str(settings.resolve_path(p)) for p in settings.profiles]
    config = service_config(settings, jobs, profile_paths, _hub_base_url(c, settings))
    if settings.mode == "kubernetes":
        config["kubernetes"]["spawner_config"] = spawner_config(c)
    environment = {"HUBFORGE_JOBS_CONFIG": json.dumps(config)}
    if jobs.db_url:
        environment["HUBFORGE_JOBS_DB_URL"] = jobs.db_url
    if settings.mode == "kubernetes":
        url, environment[BIND_ENV] = kubernetes_address(KUBERNETES_PORT)
        environment.update({name: os.environ[name] for name in KUBERNETES_PASSED_ENV if os.environ.get(name)})
    else:
        url = f"http://127.0.0.1:{free_port()}"
    services.append({
        "name": SERVICE_NAME,
        "url": url,
        "command": [sys.executable, "-m", "hubforge.jobs"],
        "environment": environment,
        "oauth_client_allowed_scopes": [READ_SCOPE, WRITE_SCOPE],
        "oauth_no_confirm": True,
        "display": True,
        "info": {"description": "Scheduled notebook jobs", "api": "api/jobs", "openapi": "api/openapi.json"},
    })
    add_custom_scopes(c, CUSTOM_SCOPES)
    grant_scopes(roles, "user", ["self", *USER_SCOPES])
    grant_scopes(roles, "server", USER_SCOPES)
