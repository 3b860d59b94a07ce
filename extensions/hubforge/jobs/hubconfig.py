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
"""

from __future__ import annotations

import json
import os
import sys

from ..services import add_custom_scopes, free_port, grant_scopes
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


def service_config(settings, jobs: JobsSettings, profile_paths: list[str]) -> dict:
    """The service's configuration (JSON-able), from the platform settings."""
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
    return config


def configure_jobs_service(c, settings, services: list, roles: list) -> None:
    """Add the ``jobs`` service to `services`, its scopes to `roles` and to `c`."""
    jobs = JobsSettings.from_settings(settings)
    if not jobs.enabled or settings.mode == "kubernetes":
        return
    profile_paths = [str(settings.resolve_path(p)) for p in settings.profiles]
    environment = {"HUBFORGE_JOBS_CONFIG": json.dumps(service_config(settings, jobs, profile_paths))}
    if jobs.db_url:
        environment["HUBFORGE_JOBS_DB_URL"] = jobs.db_url
    services.append({
        "name": SERVICE_NAME,
        "url": f"http://127.0.0.1:{free_port()}",
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
