"""Shared fixtures: a real HubForge hub with its proxy, under a hostile base URL."""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile

import pytest

from hubprocess import ROOT, HubProcess

# A real jupyter-server for the single-user tests (jp_serverapp, jp_fetch).
pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
async def jp_asyncio_loop():
    # pytest-asyncio (asyncio_mode = auto) runs async tests on its own loop; hand that
    # loop to pytest-jupyter so the server it starts and the test awaiting it share it.
    return asyncio.get_running_loop()


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"hubforge.singleuser": True}}}


@pytest.fixture
def jp_base_url():
    # A hostile prefix: the handler patterns must be joined, not concatenated.
    return "/@/space%20word/"


ADMIN_PASSWORD = "correct-horse-battery-9"
# Unique per test session, so that two sessions on one machine never share (or remove)
# each other's system users.
TEST_PREFIX = f"hft{secrets.token_hex(2)}-"


def _remove_system_users(prefix: str) -> None:
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix):
            subprocess.run(["userdel", "--remove", entry.pw_name], capture_output=True, timeout=30)


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """One hub for the session: system-users isolation as root, two fake GPUs (ids 0,1)."""
    # Homes must be reachable by the system users, so not under pytest's 0700 tmp dir.
    homes = tempfile.mkdtemp(prefix="hubforge-homes-")
    os.chmod(homes, 0o755)
    hub = HubProcess(
        tmp_path_factory.mktemp("hub"),
        gpus="0,1",
        profiles=[str(ROOT / "spawner_profiles"), str(ROOT / "tests" / "data" / "hub-profiles")],
        local={"system_user_prefix": TEST_PREFIX, "home_root": homes},
        # The gateway checks the hub for stopped servers every 2 s (default 15 s).
        dask={"reconcile_period": 2},
        # Watched paths are checked every second (default 10 s).
        jobs={"watch_interval": 1},
    )
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()
        if os.geteuid() == 0:
            _remove_system_users(TEST_PREFIX)
        shutil.rmtree(homes, ignore_errors=True)


@pytest.fixture(scope="session")
def admin_token(hub):
    from hubprocess import Browserless

    b = Browserless(hub)
    r = b.signup("admin", ADMIN_PASSWORD)
    assert r.status_code == 200, r.text
    return hub.token("admin")


@pytest.fixture(scope="session")
def dask_user(hub, admin_token):
    """A hub user with a running server (so a system account) and gateway client settings.

    Yields ``{"name", "token", "gateway_kwargs"}``: ``gateway_kwargs`` make
    `hubforge.dask` and `dask_gateway.Gateway` talk to the session hub's ``dask-gateway``
    service from the test process, as this user. Their clusters are stopped at the end.
    """
    from dask_gateway.auth import JupyterHubAuth

    name = "dasker"
    token = hub.make_user(admin_token, name)
    r = hub.request("POST", f"/users/{name}/server", token, json={"profile": "cpu-small"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready(name, "", token)
    info = hub.request("GET", "/services/dask-gateway", token).json()["info"]
    kwargs = {
        "address": info["address"],
        "proxy_address": info["proxy_address"],
        "auth": JupyterHubAuth(api_token=token),
    }
    yield {"name": name, "token": token, "gateway_kwargs": kwargs}
    import hubforge.dask as hd

    hd.shutdown(all=True, gateway_kwargs=kwargs)


@pytest.fixture
def shell(tmp_path, monkeypatch):
    """A real IPython shell with its own profile directory and no history database."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    ip = InteractiveShell.instance(config=Config({"HistoryManager": {"enabled": False}}))
    yield ip
    InteractiveShell.clear_instance()
