"""Run a real HubForge hub (JupyterHub and its proxy) for tests and benchmarks.

`HubProcess` writes a settings file, starts ``jupyterhub`` with HubForge's own
``hub_config/jupyterhub_config.py`` in a subprocess, waits until the hub answers through
the proxy, and offers small helpers for the REST API and the browser-style login flow.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import requests
import yaml

from hubforge.services import free_port

ROOT = Path(__file__).resolve().parents[1]
HUB_CONFIG = ROOT / "hub_config" / "jupyterhub_config.py"
VENV_BIN = Path(sys.executable).parent
#: The hostile base URL JupyterHub's own tests use: '@', a space and a percent sign.
HOSTILE_PREFIX = "/@/space%20word/"


class ProcessExited(RuntimeError):
    """The process we were waiting on has exited: waiting longer cannot help."""


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as e:  # the thing we wait for may not answer yet
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last error: {last_exc!r}")


class HubProcess:
    def __init__(self, workdir: Path, prefix: str = HOSTILE_PREFIX, env: dict | None = None, **settings):
        self.workdir = Path(workdir)
        self.extra_env = dict(env or {})  # added to the hub's environment (e.g. secrets)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.prefix = prefix
        self.settings = {
            "bind_url": f"http://127.0.0.1:{self.port}{prefix}",
            "hub_bind_url": f"http://127.0.0.1:{free_port()}/",
            "proxy_api_port": free_port(),
            "data_dir": str(self.workdir / "data"),
            "profiles": [str(ROOT / "spawner_profiles")],
            "admin_users": ["admin"],
            "idle_timeout": 0,
            "start_timeout": 60,
        }
        self.settings.update(settings)
        self.settings_file = self.workdir / "hubforge.yaml"
        self.settings_file.write_text(yaml.safe_dump(self.settings))
        self.log_path = self.workdir / "hub.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Public URL with the prefix, e.g. http://127.0.0.1:PORT/@/space%20word/."""
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def api(self) -> str:
        return self.url + "hub/api"

    def env(self) -> dict:
        env = dict(os.environ)
        env["HUBFORGE_SETTINGS"] = str(self.settings_file)
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env.update(self.extra_env)
        return env

    @property
    def proxy(self) -> str:
        """Which proxy this hub runs (settings `proxy`)."""
        return self.settings.get("proxy", "traefik")

    def command(self) -> list[str]:
        return [str(VENV_BIN / "jupyterhub"), "-f", str(HUB_CONFIG)]

    def start(self, timeout: float = 60) -> "HubProcess":
        from hubforge.hub.proxy import ensure_proxy

        ensure_proxy(self.proxy, quiet=True)
        self._log = open(self.log_path, "ab")
        self._log_offset = self._log.tell()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir, env=self.env(), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._up, timeout, what=f"hub at {self.url} (log: {self.log_path})")
        return self

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise ProcessExited(f"hub exited with {self.proc.returncode}; log:\n{self.log()}")
        if requests.get(self.api + "/", timeout=2).status_code != 200:
            return False
        # The API answers before the hub has added its services' routes and installed its
        # SIGTERM handler; a hub stopped before then would leave its proxy behind.
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return b"JupyterHub is now running" in f.read()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    # --- helpers ------------------------------------------------------------------------

    def token(self, name: str) -> str:
        """A token for `name` from the ``hubforge token`` command (the admin's path)."""
        out = subprocess.run(
            [str(VENV_BIN / "hubforge"), "--settings", str(self.settings_file), "token", name],
            capture_output=True, text=True, env=self.env(), timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def request(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"token {token}"
        kw.setdefault("timeout", 30)
        return requests.request(method, self.api + path, headers=headers, **kw)

    def service_request(self, method: str, service: str, path: str, token: str | None = None, **kw) -> requests.Response:
        """A request to a hub service through the proxy: ``services/<service>/<path>``."""
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"token {token}"
        kw.setdefault("timeout", 30)
        return requests.request(method, f"{self.url}services/{service}/{path}", headers=headers, **kw)

    def make_user(self, admin_token: str, name: str, groups=(), exist_ok: bool = True) -> str:
        """Create hub user `name` (in `groups`) through the REST API; return a token for them."""
        r = self.request("POST", f"/users/{name}", admin_token)
        assert r.status_code in ((201, 409) if exist_ok else (201,)), r.text
        for group in groups:
            self.request("POST", f"/groups/{group}", admin_token)
            r = self.request("POST", f"/groups/{group}/users", admin_token, json={"users": [name]})
            assert r.status_code == 200, r.text
        r = self.request("POST", f"/users/{name}/tokens", admin_token, json={"note": "test"})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    def server_url(self, user: str, server: str = "") -> str:
        return f"{self.url}user/{quote(user)}/" + (f"{quote(server)}/" if server else "")

    def wait_ready(self, user: str, server: str, token: str, timeout: float = 90) -> dict:
        def ready():
            r = self.request("GET", f"/users/{user}", token)
            s = r.json().get("servers", {}).get(server)
            return s if s and s.get("ready") else None

        return wait_for(ready, timeout, what=f"server {user}:{server} ready")

    def wait_gone(self, user: str, server: str, token: str, timeout: float = 60):
        def gone():
            r = self.request("GET", f"/users/{user}", token)
            return server not in r.json().get("servers", {})

        return wait_for(gone, timeout, what=f"server {user}:{server} stopped")


class Browserless:
    """The browser-style flow over HTTP: sign-up and login forms with the _xsrf token."""

    def __init__(self, hub: HubProcess):
        self.hub = hub
        self.s = requests.Session()

    def _xsrf(self, path: str) -> str:
        r = self.s.get(self.hub.url + path, timeout=30)
        r.raise_for_status()
        m = re.search(r'name="_xsrf" value="([^"]+)"', r.text)
        return m.group(1) if m else self.s.cookies.get("_xsrf", "")

    def signup(self, username: str, password: str) -> requests.Response:
        xsrf = self._xsrf("hub/signup")
        return self.s.post(self.hub.url + "hub/signup", timeout=30, data={
            "_xsrf": xsrf, "username": username, "signup_password": password,
            "signup_password_confirmation": password,
        })

    def login(self, username: str, password: str) -> requests.Response:
        xsrf = self._xsrf("hub/login")
        return self.s.post(self.hub.url + "hub/login", timeout=30, allow_redirects=True, data={
            "_xsrf": xsrf, "username": username, "password": password,
        })

    def get(self, path: str, **kw) -> requests.Response:
        return self.s.get(self.hub.url + path, timeout=30, **kw)


def listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a listening TCP socket on `port`, from /proc/net."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                if width == 8:
                    found.add(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
                else:
                    found.add(f"[{addr}]")
    return found


def service_port(environ: dict) -> int:
    """The port a single-user server was told to listen on (JUPYTERHUB_SERVICE_URL)."""
    from urllib.parse import urlparse

    return urlparse(environ["JUPYTERHUB_SERVICE_URL"]).port
