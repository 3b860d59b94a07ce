"""The platform settings file (``hub_config/hubforge.yaml``).

Admins describe the platform once in a small YAML file: the spawn mode, where the
spawner profiles live, who the first admins are, the idle-culler timeout and the
local spawner's isolation. :class:`Settings` is a traitlets ``Configurable``, so every
key is a documented, typed trait (``hubforge config-reference`` prints them all) and can
also be set from ``jupyterhub_config.py`` as ``c.Settings.<key> = ...``; values in the
YAML file win over those defaults, and a key the class does not know is an error that
names the file and the key.

A capability with settings of its own reads them from its section of the same file
(``jobs:``, ``models:``, ``dask:``) through a :class:`SettingsSection` subclass, which
checks them the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from traitlets import Bool, Dict, Enum, Integer, List, Unicode, default, validate
from traitlets.config import Configurable, LoggingConfigurable

from .exceptions import SettingsError

#: The HubForge checkout (hub_config/, spawner_profiles/). ``HUBFORGE_ROOT`` wins, for
#: installs that are not editable (the launcher scripts set it).
REPO_ROOT = Path(os.environ.get("HUBFORGE_ROOT") or Path(__file__).resolve().parents[2])
DEFAULT_SETTINGS_FILE = REPO_ROOT / "hub_config" / "hubforge.yaml"


class Settings(LoggingConfigurable):
    """Platform-wide settings, read from ``hubforge.yaml``."""

    source = Unicode(
        "",
        help="Path of the YAML file these settings were read from (set by `load`).",
    )

    mode = Enum(
        ["local", "containers", "kubernetes"],
        default_value="local",
        help="""How user servers run.

        `local` (the embedded default) runs each server as a local process;
        `containers` runs it in a podman or Docker container from the profile's image;
        `kubernetes` as a pod through KubeSpawner (normally deployed with the z2jh Helm
        chart and ``hubforge helm-values``; see docs/kubernetes.md).
        Example: ``mode: containers``.
        """,
    ).tag(config=True)

    kubernetes = Dict(
        help="""Options of the Kubernetes spawner (mode `kubernetes`), applied as
        ``c.HubForgeKubeSpawner.<key>``, e.g. ``kubernetes: {namespace: hub}``.
        """,
    ).tag(config=True)

    containers = Dict(
        help="""Options of the container spawner (mode `containers`), applied as
        ``c.ContainerSpawner.<key>``; see the "Container spawner" section below. One more
        key, ``engine``, picks ``podman``, ``docker`` or ``auto`` (default: podman if
        installed, else Docker). Example: ``containers: {pull_policy: never}``.
        """,
    ).tag(config=True)

    bind_url = Unicode(
        "http://127.0.0.1:8000/",
        help="""Public URL the proxy listens on, base URL included.

        Default ``http://127.0.0.1:8000/``. Set a path to serve the hub under a prefix,
        e.g. ``http://127.0.0.1:8000/hub-prefix/``.
        """,
    ).tag(config=True)

    hub_bind_url = Unicode(
        "http://127.0.0.1:8081/",
        help="""Where the hub process itself listens (behind the proxy). Default
        ``http://127.0.0.1:8081/``; change it to run two hubs on one machine.""",
    ).tag(config=True)

    proxy = Enum(
        ["traefik", "configurable-http-proxy"],
        default_value="traefik",
        help="""The proxy in front of the hub, its services and every user server.

        `traefik` (default), started by the hub through jupyterhub-traefik-proxy as in
        The Littlest JupyterHub: multi-threaded, and faster on the models benchmark;
        `configurable-http-proxy`, JupyterHub's own default and the proxy of the z2jh
        chart (installed with npm into the environment the first time it is used).
        Kubernetes deployments get the chart's proxy whatever this says.
        Example: ``proxy: configurable-http-proxy``.
        """,
    ).tag(config=True)

    proxy_api_port = Integer(
        0,
        help="""Port of the proxy's REST API on 127.0.0.1. 0 (default): the public port + 1.

        The proxy, its API and the hub (`hub_bind_url`) each need their own port; the hub
        names the clash and does not start otherwise (``bind_url`` on 8080 makes the API's
        default 8081, the hub's: set ``proxy_api_port`` then).""",
    ).tag(config=True)

    named_server_limit = Integer(
        5,
        help="""How many named servers each user may run at once (0: no limit). Default 5.""",
    ).tag(config=True)

    data_dir = Unicode(
        help="""Directory for the hub's state: database, cookie secret, proxy token, logs.

        Relative paths are relative to the settings file. Default: ``.hubforge/`` in the
        repository. Created with mode 0700.
        """,
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self):
        return str(REPO_ROOT / ".hubforge")

    db_url = Unicode(
        "",
        help="""SQLAlchemy URL of the hub database.

        Default: a SQLite file ``jupyterhub.sqlite`` in `data_dir`. For teams use
        PostgreSQL, e.g. ``postgresql://hub:PASSWORD@db/jupyterhub`` (or set the
        ``HUBFORGE_DB_URL`` environment variable so the password stays out of the file).
        """,
    ).tag(config=True)

    profiles = List(
        Unicode(),
        help="""Spawner profile files or directories (every ``*.yaml`` inside).

        Relative paths are relative to the settings file. Default: the repository's
        ``spawner_profiles/``. The hub refuses to start if any file is invalid.
        """,
    ).tag(config=True)

    @default("profiles")
    def _default_profiles(self):
        return [str(REPO_ROOT / "spawner_profiles")]

    admin_users = List(
        Unicode(),
        help="""Hub users who are admins. An admin name can sign up without approval.

        Also settable with ``hubforge up --admin NAME``. Example: ``admin_users: [alice]``.
        """,
    ).tag(config=True)

    open_signup = Bool(
        False,
        help="""Let anyone who signs up log in without an admin's approval.

        Default ``false``: new sign-ups wait until an admin authorizes them at
        ``/hub/authorize``.
        """,
    ).tag(config=True)

    idle_timeout = Integer(
        3600,
        help="""Seconds of inactivity after which jupyterhub-idle-culler stops a server.

        Default 3600 (one hour). 0 disables the culler.
        """,
    ).tag(config=True)

    cull_every = Integer(
        0,
        help="""How often, in seconds, the idle culler checks. 0 (default) means
        idle_timeout / 2, at least 5 seconds.""",
    ).tag(config=True)

    local = Dict(
        help="""Options of the local spawner (mode `local`), applied as
        ``c.LocalSpawner.<key>``; see the "Local spawner" section below, e.g.
        ``local: {isolation: shared}`` or ``local: {system_user_prefix: "jh-"}``.
        """,
    ).tag(config=True)

    gpus = Unicode(
        "auto",
        help="""GPUs the local spawner may hand out.

        ``auto`` (default) asks ``nvidia-smi``; ``none`` disables GPUs; or a comma-separated
        list of device ids, e.g. ``"0,1"``, to use only those.
        """,
    ).tag(config=True)

    data_connections = Unicode(
        "",
        help="""The data-connection catalogue (YAML) served to notebooks by the `data` hub
        service; relative to the settings file. Empty (default): no data service.
        Format: docs/data.md. Example: ``data_connections: data_connections.yaml``.
        """,
    ).tag(config=True)

    data_secrets_file = Unicode(
        "",
        help="""A YAML file of secrets (``name: value``) that connections refer to with
        ``{secret: name}``; keep it mode 0600, owned by the hub's user. Relative to the
        settings file. Empty (default): secrets come from environment variables only.
        """,
    ).tag(config=True)

    dask = Dict(
        help="""Dask through dask-gateway: the ``dask-gateway`` hub service, per-user limits
        and clean-up. Keys: see "Dask gateway" below, e.g.
        ``dask: {idle_timeout: 600, limits: {max_workers: 4}}``. Format and defaults:
        docs/dask.md.""",
    ).tag(config=True)

    jobs = Dict(
        help="""Scheduled notebook jobs: the ``jobs`` hub service (papermill runs, the Jobs
        page, ``hubforge jobs``). Keys: see "Scheduled jobs" below, e.g.
        ``jobs: {max_concurrent_runs_per_user: 4}``. Format and defaults: docs/jobs.md.""",
    ).tag(config=True)

    models = Dict(
        help="""Model publishing and serving: the ``models`` hub service (versions, aliases,
        canaries, served endpoints, the Models page, ``hubforge models``). Keys: see
        "Models" below, e.g. ``models: {max_batch_size: 32}``. Format and defaults:
        docs/models.md.""",
    ).tag(config=True)

    start_timeout = Integer(
        60,
        help="Seconds a user server may take to start before the spawn fails.",
    ).tag(config=True)

    @validate("bind_url")
    def _check_bind_url(self, proposal):
        url = proposal["value"]
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"bind_url must start with http:// or https://, got {url!r}")
        return url if url.endswith("/") else url + "/"

    def resolve_path(self, path: str) -> Path:
        """A path from the settings, made absolute relative to the settings file."""
        p = Path(os.path.expanduser(path))
        if not p.is_absolute() and self.source:
            p = Path(self.source).parent / p
        return p.resolve()

    @property
    def effective_cull_every(self) -> int:
        """Seconds between idle-culler checks: `cull_every`, else half the timeout (>= 5)."""
        return self.cull_every or max(5, self.idle_timeout // 2)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **kwargs) -> "Settings":
        """Read settings from a YAML file (default: ``HUBFORGE_SETTINGS`` or the repo's).

        Raises SettingsError naming the file and key for unknown keys or bad values.
        """
        path = Path(path or os.environ.get("HUBFORGE_SETTINGS") or DEFAULT_SETTINGS_FILE)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise SettingsError(f"{path}: settings file not found") from None
        except yaml.YAMLError as e:
            raise SettingsError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise SettingsError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
        known = {name for name, t in cls.class_traits(config=True).items()}
        for key in data:
            if key not in known:
                raise SettingsError(
                    f"{path}: unknown setting {key!r}; known settings: {', '.join(sorted(known))}"
                )
        settings = cls(source=str(path.resolve()), **kwargs)
        for key, value in data.items():
            try:
                setattr(settings, key, value)
            except Exception as e:  # traitlets raises TraitError with its own wording
                raise SettingsError(f"{path}: setting {key!r}: invalid value {value!r}: {e}") from None
        if os.environ.get("HUBFORGE_DB_URL"):
            settings.db_url = os.environ["HUBFORGE_DB_URL"]
        return settings


class SettingsSection(Configurable):
    """One capability's section of ``hubforge.yaml`` (``jobs:``, ``models:``, ``dask:``).

    A subclass names its `section` and declares each key as a config trait with a
    default and help text (``docs/configuration.md`` is generated from them); validators
    raise SettingsError with a message that starts with `where` (the file and key).
    `from_settings` reads the section from a platform :class:`Settings`: a key the class
    does not have, or a value its trait refuses, is a SettingsError naming the file and
    the key. For example::

        class JobsSettings(SettingsSection):
            section = "jobs"
            max_retries = Integer(5, help="The most retries a job may set. Default 5.").tag(config=True)

        jobs = JobsSettings.from_settings(Settings.load())

    Override `ordered_items` where one key is checked against another.
    """

    #: The section's key in ``hubforge.yaml``, and the attribute of :class:`Settings` that holds it.
    section = ""
    #: The messages for an unknown key and a refused value (``{source}``, ``{section}``,
    #: ``{key}``, ``{known}``; ``{value}`` and ``{error}``).
    unknown_key_message = "{source}: {section}.{key}: unknown setting; known: {known}"
    invalid_value_message = "{source}: {section}.{key}: invalid value {value!r}: {error}"

    source = Unicode("hubforge.yaml", help="Where these settings came from, for messages.")

    def where(self, key: str) -> str:
        """``<file>: <section>.<key>``, the start of a message about that key."""
        return f"{self.source}: {self.section}.{key}"

    @classmethod
    def ordered_items(cls, data: dict) -> list[tuple[str, object]]:
        """The section's ``(key, value)`` pairs in the order they are set (default: as
        written); a subclass may add keys that must always be checked."""
        return list(data.items())

    @classmethod
    def from_settings(cls, settings):
        """The section of a platform `Settings`, checked; SettingsError names bad keys."""
        data = dict(getattr(settings, cls.section, None) or {})
        known = set(cls.class_traits(config=True))
        source = settings.source or "hubforge.yaml"
        for key in data:
            if key not in known:
                raise SettingsError(cls.unknown_key_message.format(
                    source=source, section=cls.section, key=key, known=", ".join(sorted(known))))
        section = cls(source=source)
        for key, value in cls.ordered_items(data):
            try:
                setattr(section, key, value)
            except SettingsError:
                raise
            except Exception as e:  # traitlets raises TraitError with its own wording
                raise SettingsError(cls.invalid_value_message.format(
                    source=source, section=cls.section, key=key, value=value, error=e)) from None
        return section

    def to_json(self) -> dict:
        """The section's values, every key included."""
        return {name: getattr(self, name) for name in self.class_traits(config=True)}
