"""Which container engine to use, and the podman configuration HubForge runs it with.

Shared by everything that runs podman or Docker: ``hubforge images`` (building the
standard images) and the container spawner (podman's Docker-compatible service).

- `container_engine` answers ``"podman"``, ``"docker"`` or None: podman when it is
  installed (preferred: no daemon, rootless-capable), else Docker's CLI.
- `podman_env` is the environment to run podman with: ``CONTAINERS_CONF`` points at
  HubForge's ``containers.conf``, written on first use by `ensure_podman_conf`. A
  ``CONTAINERS_CONF`` already set by the administrator is left alone.

Where the file lives (`default_podman_conf`): ``/etc/hubforge/containers.conf`` when
an administrator has put one there, else ``containers.conf`` in the default data
directory (``.hubforge/`` in the checkout). It says:

- ``default_ulimits = []``: podman's built-in default raises every container's
  open-files limit (``nofile``) to 1048576, which fails with "error setting rlimit"
  wherever podman itself runs under a lower hard limit (nested or sandboxed hosts).
  With none set, containers inherit podman's own limits.
- ``runtime = "runc"`` when runc is installed: Debian's podman otherwise picks crun
  where both exist, and runc is the runtime HubForge is tested with.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from .settings import REPO_ROOT

#: An administrator's file; used instead of the data directory's when present.
SYSTEM_PODMAN_CONF = Path("/etc/hubforge/containers.conf")

# podman looks for runtimes in its own list of directories, not only on PATH.
_RUNC_PATHS = ("/usr/bin/runc", "/usr/sbin/runc", "/usr/local/bin/runc", "/usr/local/sbin/runc")


def container_engine() -> str | None:
    """The engine to use: ``"podman"`` if installed, else ``"docker"``, else None.

    Only the command-line tools are looked for; whether Docker's daemon answers is
    found out when it is first used.
    """
    for engine in ("podman", "docker"):
        if shutil.which(engine):
            return engine
    return None


def _runc_installed() -> bool:
    return bool(shutil.which("runc")) or any(os.access(p, os.X_OK) for p in _RUNC_PATHS)


def podman_conf_text(runtime: str | None = None) -> str:
    """The ``containers.conf`` HubForge writes (see the module docstring for why).

    ``runtime`` is the OCI runtime to name, or None for podman's own choice.
    """
    text = "# Written by HubForge (hubforge/podman.py); edit freely, it is not rewritten.\n"
    text += "[containers]\ndefault_ulimits = []\n"
    if runtime:
        text += f'\n[engine]\nruntime = "{runtime}"\n'
    return text


def default_podman_conf() -> Path:
    """``/etc/hubforge/containers.conf`` if it exists, else ``.hubforge/containers.conf``."""
    if SYSTEM_PODMAN_CONF.is_file():
        return SYSTEM_PODMAN_CONF
    return REPO_ROOT / ".hubforge" / "containers.conf"


def ensure_podman_conf(path: str | os.PathLike | None = None) -> Path:
    """Write HubForge's ``containers.conf`` at ``path`` unless a file is there already.

    An existing file is never overwritten, so an administrator's edits stay. The
    directory is created (mode 0700, like the data directory) when missing. Returns
    the path. Default: `default_podman_conf`.
    """
    conf = Path(path) if path is not None else default_podman_conf()
    if not conf.exists():
        conf.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = conf.with_name(conf.name + ".tmp")
        tmp.write_text(podman_conf_text("runc" if _runc_installed() else None))
        tmp.replace(conf)
    return conf


def podman_env(
    conf: str | os.PathLike | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment to run podman with: ``base`` (default ``os.environ``) plus
    ``CONTAINERS_CONF``.

    ``conf`` names the file (written if missing); without it, a ``CONTAINERS_CONF``
    already in ``base`` wins, else `default_podman_conf` is used.
    """
    env = dict(os.environ if base is None else base)
    if conf is None and env.get("CONTAINERS_CONF"):
        return env
    env["CONTAINERS_CONF"] = str(ensure_podman_conf(conf))
    return env
