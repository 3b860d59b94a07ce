"""The hub's proxy: traefik by default, configurable-http-proxy on request.

Every other hub test runs through the default (traefik); these check what is specific
to each proxy: the settings that pick it, traefik's entry point passing what
configurable-http-proxy passes, traefik ending with a killed hub, and the
configurable-http-proxy choice still serving the hub and its services.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import bcrypt
import pytest
import requests
import traitlets
from traitlets.config import Config

from hubprocess import ROOT, Browserless, HubProcess, wait_for

ADMIN_PASSWORD = "admins-long-pass-1"


def configured(tmp_path: Path, text: str = "") -> tuple[Config, Path]:
    from hubforge.hub.config import configure
    from hubforge.settings import Settings

    f = tmp_path / "hubforge.yaml"
    data = tmp_path / "data"
    f.write_text(f"data_dir: {data}\nprofiles: [{ROOT / 'spawner_profiles'}]\n"
                 f"bind_url: http://127.0.0.1:9400/x/\n{text}")
    c = Config()
    configure(c, Settings.load(f))
    return c, data


def test_traefik_is_the_default_proxy_and_keeps_its_files_in_the_data_dir(tmp_path):
    c, data = configured(tmp_path)
    assert c.JupyterHub.proxy_class == "hubforge.hub.traefik.HubForgeTraefikProxy"
    assert c.TraefikProxy.static_config_file == str(data / "traefik.toml")
    assert c.TraefikFileProviderProxy.dynamic_config_file == str(data / "traefik-routes.toml")
    assert c.TraefikProxy.traefik_api_url == "http://127.0.0.1:9401"  # the public port + 1
    assert "ConfigurableHTTPProxy" not in c


def test_configurable_http_proxy_can_be_chosen(tmp_path):
    from hubforge.hub.proxy import chp_script

    c, data = configured(tmp_path, "proxy: configurable-http-proxy\nproxy_api_port: 9555\n")
    assert "proxy_class" not in c.JupyterHub  # JupyterHub's default
    assert c.ConfigurableHTTPProxy.command[-1] == str(chp_script())
    assert c.ConfigurableHTTPProxy.api_url == "http://127.0.0.1:9555"
    assert c.ConfigurableHTTPProxy.pid_file == str(data / "proxy.pid")


def test_unknown_proxy_is_refused_naming_the_file_and_value(tmp_path):
    from hubforge.exceptions import SettingsError

    with pytest.raises(SettingsError, match=r"hubforge.yaml.*'proxy': invalid value 'nginx'"):
        configured(tmp_path, "proxy: nginx\n")


def test_traefik_proxy_class_passes_what_the_servers_accept():
    from hubforge.hub.traefik import HubForgeTraefikProxy
    from hubforge.hub.proxy import traefik_binary

    proxy = HubForgeTraefikProxy(public_url="http://127.0.0.1:9400/x/")
    assert proxy.traefik_command == traefik_binary() and os.access(proxy.traefik_command, os.X_OK)
    entry = proxy.extra_static_config["entryPoints"]["http"]
    assert set(entry["http"]["encodedCharacters"].values()) == {True}
    assert len(entry["http"]["encodedCharacters"]) == 7
    assert entry["transport"]["respondingTimeouts"]["readTimeout"] == "0s"
    # a fresh API password each time, never the upstream "not set" path
    assert len(proxy.traefik_api_password) >= 32
    assert proxy.traefik_api_password != HubForgeTraefikProxy(public_url="http://127.0.0.1:1/").traefik_api_password
    # traefik checks the hash on every API call (two per route added): bcrypt's lowest cost
    hashed = proxy.traefik_api_hashed_password.encode()
    assert hashed.startswith(b"$2b$04$") and bcrypt.checkpw(proxy.traefik_api_password.encode(), hashed)


def test_traefik_runs_on_half_the_cores_unless_told_otherwise(monkeypatch):
    from hubforge.hub.traefik import HubForgeTraefikProxy

    half = str(max(1, len(os.sched_getaffinity(0)) // 2))
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    monkeypatch.setenv("HUBFORGE_PROBE", "kept")
    env = HubForgeTraefikProxy().traefik_environment()
    assert env["GOMAXPROCS"] == half and env["HUBFORGE_PROBE"] == "kept"
    monkeypatch.setenv("GOMAXPROCS", "3")  # the hub's environment says so: kept
    assert HubForgeTraefikProxy().traefik_environment()["GOMAXPROCS"] == "3"
    assert HubForgeTraefikProxy(go_max_procs=5).traefik_environment()["GOMAXPROCS"] == "5"
    told = HubForgeTraefikProxy(go_max_procs=5, traefik_env={"GOMAXPROCS": "7"})
    assert told.traefik_environment()["GOMAXPROCS"] == "7"
    with pytest.raises(traitlets.TraitError, match="go_max_procs"):
        HubForgeTraefikProxy(go_max_procs=-1)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _traefik_pids(config_file: Path) -> list[int]:
    pids = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if str(config_file).encode() in argv and _alive(pid):
            pids.append(pid)
    return pids


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no holder
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_traefik_passes_encoded_names_to_a_user_server_and_dies_with_a_killed_hub(tmp_path):
    hub = HubProcess(tmp_path / "hub", local={"isolation": "shared"}, dask={"enabled": False},
                     jobs={"enabled": False}, models={"enabled": False})
    try:
        hub.start()
        static = Path(hub.settings["data_dir"]) / "traefik.toml"
        [traefik] = _traefik_pids(static)
        assert 'readTimeout = "0s"' in static.read_text()
        with open(f"/proc/{traefik}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        expected = os.environ.get("GOMAXPROCS", str(max(1, len(os.sched_getaffinity(0)) // 2)))
        assert f"GOMAXPROCS={expected}".encode() in environ
        Browserless(hub).signup("admin", ADMIN_PASSWORD).raise_for_status()
        token = hub.token("admin")
        r = hub.request("POST", "/users/admin/servers/", token, json={"profile": "cpu-small"})
        assert r.status_code in (201, 202), r.text
        hub.wait_ready("admin", "", token)
        # Each of these percent-encodings gets a 400 from traefik unless it is allowed.
        api = hub.server_url("admin") + "api/contents/"
        auth = {"Authorization": f"token {token}"}
        for name in ("50% off.txt", "a#b.txt", "why?.txt", "semi;colon.txt", "back\\slash.txt"):
            quoted = requests.utils.quote(name, safe="")
            r = requests.put(api + quoted, json={"type": "file", "format": "text", "content": name},
                             headers=auth, timeout=30)
            assert r.status_code == 201, (name, r.status_code, r.text)
            r = requests.get(api + quoted, headers=auth, timeout=30)
            assert r.status_code == 200 and r.json()["content"] == name, (name, r.status_code, r.text)
        r = requests.get(api + "no%2Fsuch%2Fdir", headers=auth, timeout=30)
        assert r.status_code == 404, r.text  # the server's answer, not the proxy's refusal
        hub.request("DELETE", "/users/admin/server", token)
        hub.wait_gone("admin", "", token)

        # A hub killed outright takes its traefik with it: the public port is free again.
        os.kill(hub.proc.pid, signal.SIGKILL)
        hub.proc.wait(10)
        wait_for(lambda: not _traefik_pids(static), 15, what=f"traefik {traefik} to end with the hub")
        wait_for(lambda: _port_free(hub.port), 15, what=f"port {hub.port} to be free")
        # and the hub starts again on the same ports.
        hub.start()
        assert hub.request("GET", "/", token).status_code == 200
    finally:
        hub.stop()
    assert not _traefik_pids(Path(hub.settings["data_dir"]) / "traefik.toml")


@pytest.mark.slow
def test_configurable_http_proxy_serves_the_hub_and_its_services(tmp_path):
    hub = HubProcess(tmp_path / "hub", proxy="configurable-http-proxy", local={"isolation": "shared"},
                     dask={"enabled": False}, jobs={"enabled": False}, models={})
    chp = None
    try:
        hub.start()
        chp = int((Path(hub.settings["data_dir"]) / "proxy.pid").read_text())
        assert "configurable-http-proxy" in Path(f"/proc/{chp}/cmdline").read_text()
        assert not _traefik_pids(Path(hub.settings["data_dir"]) / "traefik.toml")
        Browserless(hub).signup("admin", ADMIN_PASSWORD).raise_for_status()
        token = hub.token("admin")
        r = hub.service_request("GET", "models", "api/models", token)
        assert r.status_code == 200 and r.json()["models"] == [], r.text
        assert hub.service_request("GET", "models", "api/models").status_code in (401, 403)
    finally:
        hub.stop()
    assert chp is not None
    wait_for(lambda: not _alive(chp), 10, what=f"configurable-http-proxy {chp} to end with the hub")
