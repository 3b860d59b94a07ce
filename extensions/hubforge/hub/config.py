"""Build the hub's JupyterHub configuration from the platform settings.

``hub_config/jupyterhub_config.py`` is two lines: load :class:`~hubforge.settings.Settings`
and call :func:`configure`. Everything the platform decides about JupyterHub lives here,
so the settings file stays small and the mapping is tested in one place.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from ..dask.hubconfig import configure_dask_service
from ..data.hubconfig import configure_data_service
from ..jobs.hubconfig import configure_jobs_service
from ..models.hubconfig import configure_models_service
from ..exceptions import SettingsError
from ..profiles import load_profiles
from ..services import reserve_ports
from ..settings import Settings
from .proxy import configure_proxy

#: Scopes the idle culler needs, and no more (as in jupyterhub-idle-culler's README).
IDLE_CULLER_SCOPES = [
    "list:users",
    "read:users:activity",
    "read:servers",
    "delete:servers",
]


SPAWNER_CLASSES = {
    "local": "hubforge.spawners.local.LocalSpawner",
    "containers": "hubforge.spawners.containers.ContainerSpawner",
    "kubernetes": "hubforge.spawners.kubernetes.HubForgeKubeSpawner",
}


def configure(c, settings: Settings) -> None:
    """Apply `settings` to the JupyterHub config object `c`.

    Validates the spawner profiles first: an invalid file raises ProfileFileError, and
    the hub does not start.
    """
    profile_paths = [str(settings.resolve_path(p)) for p in settings.profiles]
    load_profiles(profile_paths)

    data_dir = settings.resolve_path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)

    c.JupyterHub.bind_url = settings.bind_url
    c.JupyterHub.hub_bind_url = settings.hub_bind_url
    c.JupyterHub.db_url = settings.db_url or f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(data_dir / "jupyterhub.pid")
    api_port = hub_ports(settings)["proxy_api_port"]
    configure_proxy(c, settings.proxy, data_dir, api_port)

    configure_auth(c, settings)
    configure_services(c, settings)
    configure_spawner(c, settings, profile_paths, data_dir)


def hub_ports(settings: Settings) -> dict[str, int]:
    """The loopback ports the hub's own processes listen on, by setting, checked distinct.

    Reserves them (:func:`~hubforge.services.reserve_ports`) so that the ports picked for
    the hub's services later in the configuration are never one of them.
    """
    bind = urlparse(settings.bind_url)
    public = bind.port or (443 if bind.scheme == "https" else 80)
    ports = {
        "bind_url": public,
        "hub_bind_url": urlparse(settings.hub_bind_url).port or 80,
        "proxy_api_port": settings.proxy_api_port or public + 1,
    }
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            hint = " (0 means the public port + 1)" if name == "proxy_api_port" and not settings.proxy_api_port else ""
            raise SettingsError(
                f"{settings.source or 'settings'}: {name}: port {port}{hint} is also {seen[port]}'s port; "
                "the proxy, its API and the hub each need their own"
            )
        seen[port] = name
    reserve_ports(*ports.values())
    return ports


def configure_auth(c, settings: Settings) -> None:
    """NativeAuthenticator: sign-up with bcrypt-hashed passwords and admin approval."""
    import nativeauthenticator

    c.JupyterHub.authenticator_class = "nativeauthenticator.NativeAuthenticator"
    c.JupyterHub.template_paths = [str(Path(nativeauthenticator.__file__).parent / "templates")]
    c.Authenticator.admin_users = set(settings.admin_users)
    # NativeAuthenticator only lets authorized (approved) sign-ups log in, so the hub
    # itself need not keep a second allow list.
    c.Authenticator.allow_all = True
    c.NativeAuthenticator.open_signup = settings.open_signup
    c.NativeAuthenticator.minimum_password_length = 8
    c.NativeAuthenticator.check_common_password = True
    c.NativeAuthenticator.allowed_failed_logins = 10
    c.NativeAuthenticator.seconds_before_next_try = 60


def configure_spawner(c, settings: Settings, profile_paths: list[str], data_dir: Path) -> None:
    c.JupyterHub.spawner_class = SPAWNER_CLASSES[settings.mode]
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = settings.named_server_limit
    c.Spawner.start_timeout = settings.start_timeout
    c.Spawner.http_timeout = settings.start_timeout
    c.Spawner.default_url = "/lab"
    if settings.mode == "local":
        from ..spawners.local import LocalSpawner

        c.LocalSpawner.shared_home_root = str(data_dir / "homes")
        apply_section(c.LocalSpawner, LocalSpawner, settings.local, settings, "local")
        c.LocalSpawner.profile_paths = profile_paths
        c.LocalSpawner.gpus = settings.gpus
    elif settings.mode == "containers":
        configure_containers(c, settings, profile_paths, data_dir)
    elif settings.mode == "kubernetes":
        from ..spawners.kubernetes import HubForgeKubeSpawner

        apply_section(c.HubForgeKubeSpawner, HubForgeKubeSpawner, settings.kubernetes, settings, "kubernetes")
        c.HubForgeKubeSpawner.profile_paths = profile_paths


def configure_containers(c, settings: Settings, profile_paths: list[str], data_dir: Path) -> None:
    """Container mode: DockerSpawner on Docker, or on podman's socket run by the hub."""
    from ..podman import container_engine, podman_env
    from ..spawners.containers import ContainerSpawner, docker_url_for

    options = dict(settings.containers)
    engine = options.pop("engine", "auto")
    if engine == "auto":
        engine = container_engine()
    if engine not in ("podman", "docker"):
        raise SettingsError(
            f"{settings.source}: mode containers needs podman or Docker, and neither was found "
            "(apt-get install podman runc)"
        )
    apply_section(c.ContainerSpawner, ContainerSpawner, options, settings, "containers")
    c.ContainerSpawner.engine = engine
    c.ContainerSpawner.profile_paths = profile_paths
    c.ContainerSpawner.gpus = settings.gpus
    url = docker_url_for(engine, str(data_dir))
    c.ContainerSpawner.client_kwargs = {"base_url": url}
    if engine == "podman" and not os.environ.get("DOCKER_HOST"):
        c.JupyterHub.services.append({
            "name": "podman",
            "command": ["podman", "system", "service", "--time=0", url],
            "environment": podman_env(),
        })


def apply_section(section, cls, options: dict, settings: Settings, name: str) -> None:
    """Copy a settings section onto ``c.<Class>``, refusing keys the class doesn't have."""
    known = set(cls.class_traits(config=True))
    for key, value in options.items():
        if key not in known:
            raise SettingsError(
                f"{settings.source}: {name}.{key}: unknown option; known: {', '.join(sorted(known))}"
            )
        setattr(section, key, value)


def configure_services(c, settings: Settings) -> None:
    """Hub-managed services: the idle culler, data connections, the Dask gateway, jobs, models."""
    services = []
    roles = []
    if settings.idle_timeout > 0:
        every = settings.effective_cull_every
        services.append(
            {
                "name": "idle-culler",
                "command": [
                    sys.executable, "-m", "jupyterhub_idle_culler",
                    f"--timeout={settings.idle_timeout}",
                    f"--cull-every={every}",
                ],
            }
        )
        roles.append({"name": "idle-culler", "scopes": IDLE_CULLER_SCOPES, "services": ["idle-culler"]})
    configure_data_service(c, settings, services, roles)
    configure_dask_service(c, settings, services, roles)
    configure_jobs_service(c, settings, services, roles)
    configure_models_service(c, settings, services, roles)
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles


def public_url(settings: Settings) -> str:
    """The URL users open; 127.0.0.1 stands in for an all-interfaces bind."""
    u = urlparse(settings.bind_url)
    host = "127.0.0.1" if u.hostname in ("0.0.0.0", "", None) else u.hostname
    return f"{u.scheme}://{host}:{u.port or 80}{u.path}"
