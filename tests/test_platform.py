"""The platform around the hub: settings, the hubforge command, start-up checks, culler."""

from __future__ import annotations

import subprocess

import pytest

from hubprocess import ROOT, VENV_BIN, HubProcess

HUBFORGE = str(VENV_BIN / "hubforge")


def run(*args, **kw):
    return subprocess.run([HUBFORGE, *args], capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize("argv", [[], ["up"], ["profiles"], ["profiles", "check"], ["token"],
                                  ["config-reference"]])
def test_every_command_has_help(argv):
    out = run(*argv, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: hubforge")


def test_profiles_check_reports_file_and_line(tmp_path):
    assert run("profiles", "check", str(ROOT / "spawner_profiles")).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles:\n  - slug: Bad Slug\n    display_name: x\n    cpu: {limit: lots}\n")
    out = run("profiles", "check", str(bad))
    assert out.returncode == 1
    assert f"{bad}:2:" in out.stdout and "slug" in out.stdout
    assert f"{bad}:4:" in out.stdout and "cpu.limit" in out.stdout


def test_settings_reject_unknown_key_naming_file(tmp_path):
    from hubforge.exceptions import SettingsError
    from hubforge.settings import Settings

    f = tmp_path / "hubforge.yaml"
    f.write_text("mode: local\nidle_timout: 5\n")
    with pytest.raises(SettingsError, match=r"hubforge.yaml: unknown setting 'idle_timout'"):
        Settings.load(f)
    f.write_text("idle_timeout: soon\n")
    with pytest.raises(SettingsError, match=r"'idle_timeout': invalid value 'soon'"):
        Settings.load(f)
    f.write_text("mode: kubernetes-please\n")
    with pytest.raises(SettingsError, match="mode"):
        Settings.load(f)


def test_spawner_sections_refuse_unknown_options(tmp_path):
    from traitlets.config import Config

    from hubforge.exceptions import SettingsError
    from hubforge.hub.config import configure
    from hubforge.settings import Settings

    f = tmp_path / "hubforge.yaml"
    f.write_text(f"data_dir: {tmp_path / 'data'}\nprofiles: [{ROOT / 'spawner_profiles'}]\n"
                 "local: {isolation: shared, isolaton: users}\n")
    with pytest.raises(SettingsError, match=r"local.isolaton: unknown option"):
        configure(Config(), Settings.load(f))
    f.write_text(f"data_dir: {tmp_path / 'data'}\nprofiles: [{ROOT / 'spawner_profiles'}]\n"
                 "local: {isolation: shared}\n")
    c = Config()
    configure(c, Settings.load(f))
    assert c.LocalSpawner.isolation == "shared"
    assert c.JupyterHub.spawner_class == "hubforge.spawners.local.LocalSpawner"


def test_the_proxy_its_api_and_the_hub_need_their_own_ports(tmp_path):
    from traitlets.config import Config

    from hubforge.exceptions import SettingsError
    from hubforge.hub.config import configure
    from hubforge.settings import Settings

    f = tmp_path / "hubforge.yaml"
    base = f"data_dir: {tmp_path / 'data'}\nprofiles: [{ROOT / 'spawner_profiles'}]\n"
    # 8080 + 1 is the hub's default port: the trap a user walks into.
    f.write_text(base + "bind_url: http://127.0.0.1:8080/\n")
    with pytest.raises(SettingsError, match=r"hubforge.yaml: proxy_api_port: port 8081 \(0 means the public "
                       r"port \+ 1\) is also hub_bind_url's port"):
        configure(Config(), Settings.load(f))
    f.write_text(base + "bind_url: http://127.0.0.1:8080/\nproxy_api_port: 8080\n")
    with pytest.raises(SettingsError, match=r"proxy_api_port: port 8080 is also bind_url's port"):
        configure(Config(), Settings.load(f))
    f.write_text(base + "bind_url: http://127.0.0.1:8080/\nproxy_api_port: 8090\n")
    c = Config()
    configure(c, Settings.load(f))
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8080/"


def test_free_port_never_hands_out_a_port_twice(tmp_path, monkeypatch):
    import hubforge.services as services
    from traitlets.config import Config

    from hubforge.hub.config import configure
    from hubforge.settings import Settings

    monkeypatch.setattr(services, "_taken_ports", set())
    # The kernel's own choice: a few hundred probes repeat a port more often than not.
    ports = [services.free_port() for _ in range(400)]
    assert len(set(ports)) == len(ports)

    # A port the kernel offers again, or one the hub's settings name, is skipped.
    f = tmp_path / "hubforge.yaml"
    f.write_text(f"data_dir: {tmp_path / 'data'}\nprofiles: [{ROOT / 'spawner_profiles'}]\n")
    configure(Config(), Settings.load(f))  # reserves 8000, 8081 and the API's 8001
    offered = iter([2001, 2001, 2002, 8001, 8081, 8000, 2003])  # below the kernel's range
    monkeypatch.setattr(services, "_unbound_port", lambda: next(offered))
    assert [services.free_port() for _ in range(3)] == [2001, 2002, 2003]


def test_relative_paths_are_relative_to_the_settings_file(tmp_path):
    from hubforge.settings import Settings

    f = tmp_path / "conf" / "hubforge.yaml"
    f.parent.mkdir()
    f.write_text("data_dir: ../state\nprofiles: [profiles]\n")
    s = Settings.load(f)
    assert s.resolve_path(s.data_dir) == (tmp_path / "state").resolve()
    assert s.resolve_path(s.profiles[0]) == (tmp_path / "conf" / "profiles").resolve()


def test_configuration_reference_is_up_to_date():
    out = run("config-reference")
    assert out.returncode == 0, out.stderr
    doc = ROOT / "docs" / "configuration.md"
    assert doc.read_text() == out.stdout, "docs/configuration.md is stale: run `hubforge config-reference > docs/configuration.md`"


@pytest.mark.slow
def test_hub_refuses_to_start_on_invalid_profiles(tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "team.yaml").write_text("profiles:\n  - slug: ok\n    display_name: OK\n    memory: {limit: 2X}\n")
    hub = HubProcess(tmp_path / "hub", profiles=[str(profiles)])
    with pytest.raises(RuntimeError) as e:
        hub.start(timeout=60)
    assert "exited with 2" in str(e.value)
    assert f"{profiles / 'team.yaml'}:4:" in hub.log()
    assert "memory.limit" in hub.log()


@pytest.mark.slow
def test_idle_culler_stops_idle_servers(tmp_path):
    hub = HubProcess(tmp_path / "hub", idle_timeout=6, cull_every=2, local={"isolation": "shared"})
    try:
        hub.start()
        from hubprocess import Browserless

        Browserless(hub).signup("admin", "admins-long-pass-1")
        token = hub.token("admin")
        services = hub.request("GET", "/services", token).json()
        assert "idle-culler" in services
        r = hub.request("POST", "/users/admin/servers/", token, json={"profile": "cpu-small"})
        assert r.status_code in (201, 202), r.text
        hub.wait_ready("admin", "", token)
        # Nobody uses the server: the culler must stop it on its own.
        hub.wait_gone("admin", "", token, timeout=90)
        assert "Culling server" in hub.log() or "culling" in hub.log().lower()
    finally:
        hub.stop()
