"""The models service's part of the hub configuration.

:func:`configure_models_service` adds the ``models`` hub-managed service from the
``models:`` settings, declares its custom scopes and grants them, least privilege:

* ``custom:hubforge:models:read`` (see your models), ``:write`` (publish, alias, canary,
  share, delete; implies read) and ``:invoke`` (call the models you own or that are
  shared with you) go to the ``user`` role, with ``access:services!service=models``
  and ``read:services!service=models``; the ``server`` role gets the same, so a notebook
  publishes and calls models with its server's token.
* ``custom:hubforge:models:invoke:<name>`` is declared for each model named in
  ``models.invoke_scopes``: admins grant it in ``load_roles`` to let a group or a
  service call that model without sharing the owner's account.
* Browser sessions on the Models page get read and write (the OAuth client's scopes).
* The service itself needs no role: the hub tells it who calls when it checks a token.

On Kubernetes the service listens on port :data:`KUBERNETES_PORT` of the hub's pod,
where model pods download their model (their NetworkPolicy allows exactly that).
"""

from __future__ import annotations

import json
import os
import sys

from ..services import add_custom_scopes, free_port, grant_scopes, kubernetes_address, kubernetes_service_url
from .settings import INVOKE_SCOPE, READ_SCOPE, WRITE_SCOPE, ModelsSettings

SERVICE_NAME = "models"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
CUSTOM_SCOPES = {
    READ_SCOPE: {"description": "See your published models, their versions, aliases and metrics."},
    WRITE_SCOPE: {"description": "Publish, promote, roll back, share and delete your models.",
                  "subscopes": [READ_SCOPE]},
    INVOKE_SCOPE: {"description": "Call the models you own or that are shared with you."},
}
USER_SCOPES = [READ_SCOPE, WRITE_SCOPE, INVOKE_SCOPE, ACCESS_SCOPE, f"read:services!service={SERVICE_NAME}"]
KUBERNETES_PORT = 10103


def service_config(settings, models: ModelsSettings, base_url: str = "/") -> dict:
    """The service's configuration (JSON-able), from the platform settings."""
    from ..dask.hubconfig import isolation_for

    data_dir = settings.resolve_path(settings.data_dir)
    config = {
        "settings": {k: v for k, v in models.to_json().items() if k not in ("db_url", "source")},
        "models_dir": str(data_dir / "models"),
        "mode": settings.mode,
        # Where users reach the hub: the endpoint URLs the API and the widget show.
        "public_url": _public_url(settings, base_url),
    }
    if settings.mode == "local":
        local = dict(settings.local or {})
        config["local"] = {
            "isolation": isolation_for(settings),
            "system_user_prefix": local.get("system_user_prefix", "hf-"),
            "home_root": local.get("home_root", "/home"),
            "shared_home_root": str(data_dir / "homes"),
        }
    elif settings.mode in ("containers", "kubernetes"):
        image = models.container_image or _profile_image(settings)
        if settings.mode == "containers":
            from ..podman import podman_env

            engine = (settings.containers or {}).get("engine", "auto")
            config["containers"] = {"engine": "docker" if engine == "docker" else "podman", "image": image}
            if config["containers"]["engine"] == "podman":
                config["containers"]["environ"] = podman_env(base={"PATH": os.environ.get("PATH", os.defpath)})
        else:
            config["kubernetes"] = {
                "namespace": os.environ.get("POD_NAMESPACE") or "default",
                "image": image,
                "max_replicas": models.kubernetes_max_replicas,
            }
            config["fetch_url"] = kubernetes_service_url(SERVICE_NAME, KUBERNETES_PORT, base_url)
    return config


def _public_url(settings, base_url: str) -> str:
    """The hub's public origin (``scheme://host:port``); 127.0.0.1 for an all-interfaces bind."""
    from urllib.parse import urlparse

    if settings.mode == "kubernetes":
        return ""  # the chart's ingress decides; the API then gives paths only
    u = urlparse(settings.bind_url)
    host = "127.0.0.1" if u.hostname in ("0.0.0.0", "", None) else u.hostname
    return f"{u.scheme}://{host}:{u.port or 80}"


def _profile_image(settings) -> str:
    """The image of the first profile without a GPU (where models were most likely made)."""
    from ..helm.values import profile_images
    from ..profiles import load_profiles

    profiles = load_profiles([str(settings.resolve_path(p)) for p in settings.profiles]).profiles
    cpu = profile_images(p for p in profiles if getattr(p, "gpu", None) is None)
    images = cpu or profile_images(profiles)
    return images[0] if images else "localhost/hubforge/cpu:latest"


def configure_models_service(c, settings, services: list, roles: list) -> None:
    """Add the ``models`` service to `services`, its scopes to `roles` and to `c`."""
    models = ModelsSettings.from_settings(settings)
    if not models.enabled:
        return
    base_url = c.JupyterHub.get("base_url") or "/"
    config = service_config(settings, models, base_url)
    environment = {"HUBFORGE_MODELS_CONFIG": json.dumps(config)}
    if models.db_url:
        environment["HUBFORGE_MODELS_DB_URL"] = models.db_url
    if settings.mode == "kubernetes":
        url, environment["HUBFORGE_MODELS_BIND"] = kubernetes_address(KUBERNETES_PORT)
        environment.update({k: os.environ[k] for k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
                                                        "HUBFORGE_MODELS_DB_URL") if os.environ.get(k)})
    else:
        url = f"http://127.0.0.1:{free_port()}"
    services.append({
        "name": SERVICE_NAME,
        "url": url,
        "command": [sys.executable, "-m", "hubforge.models"],
        "environment": environment,
        "oauth_client_allowed_scopes": [READ_SCOPE, WRITE_SCOPE],
        "oauth_no_confirm": True,
        "display": True,
        "info": {"description": "Published models and their endpoints", "api": "api/models"},
    })
    scopes = dict(CUSTOM_SCOPES)
    for name in models.invoke_scopes:
        scopes[f"{INVOKE_SCOPE}:{name}"] = {"description": f"Call the model {name}."}
    add_custom_scopes(c, scopes)
    grant_scopes(roles, "user", ["self", *USER_SCOPES])
    grant_scopes(roles, "server", USER_SCOPES)
