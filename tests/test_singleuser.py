"""Tests of HubForge's notebook side: server_info, the REST endpoint, the
``%hubforge`` magic in a real kernel, the widget and the installed configs."""

import json
import re
import subprocess
import sys

import pytest
from jupyter_client.manager import start_new_kernel
from jupyter_server.auth import Authorizer
from tornado.httpclient import HTTPClientError

from hubforge.singleuser.info import ServerInfo, format_bytes, info_to_html, server_info

RESOURCES = {
    "slug": "cpu-small",
    "display_name": "CPU, small",
    "image": "quay.io/hubforge/base:2026.11",
    "cpu_guarantee": 0.5,
    "cpu_limit": 1.0,
    "mem_guarantee": 1073741824,
    "mem_limit": 2147483648,
    "gpu_count": 0,
    "environment": {"S3_SECRET_KEY": "hunter2-profile-secret", "OMP_NUM_THREADS": "1"},
    "choices": {"image": "2026.11"},
    "node_selector": {"pool": "hunter2-unlisted-key"},
}
HUB_TOKEN = "hunter2-hub-token"

# Every value the notebook side must never show.
SECRETS = ("hunter2-profile-secret", "hunter2-unlisted-key", HUB_TOKEN)


def hub_environ(**overrides):
    environ = {
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_SERVER_NAME": "gpu box",
        "JUPYTERHUB_API_TOKEN": HUB_TOKEN,
        "JUPYTERHUB_API_URL": "http://hub:8081/hub/api",
        "HUBFORGE_PROFILE": "cpu-small",
        "HUBFORGE_RESOURCES": json.dumps(RESOURCES),
    }
    environ.update(overrides)
    return {key: value for key, value in environ.items() if value is not None}


@pytest.fixture
def hub_env(monkeypatch):
    """The environment a HubForge spawner gives a server, in this process."""
    for key in ("CUDA_VISIBLE_DEVICES", "MEM_LIMIT", "CPU_LIMIT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in hub_environ().items():
        monkeypatch.setenv(key, value)


# --- server_info -------------------------------------------------------------


def test_server_info_from_hub_environment():
    info = server_info(hub_environ(CUDA_VISIBLE_DEVICES="0, GPU-8a3f,", MEM_LIMIT="3221225472"))
    assert info["hubforge"] is True
    assert info["message"] == ""
    assert info["user"] == "alice"
    assert info["server_name"] == "gpu box"
    assert info["profile"] == {"slug": "cpu-small", "display_name": "CPU, small"}
    assert info["image"] == "quay.io/hubforge/base:2026.11"
    assert info["resources"] == {
        "cpu": {"guarantee": 0.5, "limit": 1.0},
        # MEM_LIMIT is what the spawner applied, so it wins over the profile.
        "memory": {
            "guarantee": 1073741824,
            "guarantee_human": "1 GiB",
            "limit": 3221225472,
            "limit_human": "3 GiB",
        },
        "gpus": {"count": 0, "visible_devices": ["0", "GPU-8a3f"]},
    }
    assert info["choices"] == {"image": "2026.11"}
    assert info["environment"] == ["OMP_NUM_THREADS", "S3_SECRET_KEY"]
    assert info["version"]
    dumped = json.dumps(info)
    for secret in SECRETS:
        assert secret not in dumped


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "HUBFORGE_RESOURCES is not set"),
        ("{not json", "HUBFORGE_RESOURCES is not valid JSON"),
        ('["a list"]', "HUBFORGE_RESOURCES is not a JSON object"),
    ],
)
def test_server_info_without_usable_resources(raw, reason):
    info = server_info(hub_environ(HUBFORGE_RESOURCES=raw, HUBFORGE_PROFILE=None))
    assert info["hubforge"] is False
    assert info["message"] == f"Not running under HubForge: {reason}."
    assert info["user"] == "alice"
    assert info["profile"] == {"slug": None, "display_name": None}
    assert info["resources"]["memory"]["limit"] is None
    assert info["environment"] == []
    assert "Not running under HubForge" in repr(ServerInfo(info))


def test_server_info_empty_environment():
    info = server_info({})
    assert info["hubforge"] is False
    assert info["user"] is None
    assert info["server_name"] == ""
    assert info["resources"]["gpus"] == {"count": 0, "visible_devices": None}
    assert "(default)" in repr(ServerInfo(info))


def test_server_info_ignores_malformed_fields():
    resources = {
        "slug": 7,
        "cpu_limit": "lots",
        "cpu_guarantee": True,
        "mem_limit": -1,
        "environment": ["not", "a", "dict"],
        "choices": {"image": "2026.11", "nested": {"x": 1}},
    }
    info = server_info({"HUBFORGE_RESOURCES": json.dumps(resources), "CPU_LIMIT": "nan"})
    assert info["hubforge"] is True
    assert info["profile"]["slug"] is None
    assert info["resources"]["cpu"] == {"guarantee": None, "limit": None}
    assert info["resources"]["memory"]["limit"] is None
    assert info["environment"] == []
    assert info["choices"] == {"image": "2026.11"}


def test_gpu_count_falls_back_to_visible_devices():
    resources = json.dumps({"slug": "gpu"})
    assert server_info({"HUBFORGE_RESOURCES": resources, "CUDA_VISIBLE_DEVICES": "2,3"})[
        "resources"
    ]["gpus"] == {"count": 2, "visible_devices": ["2", "3"]}
    assert server_info({"HUBFORGE_RESOURCES": resources, "CUDA_VISIBLE_DEVICES": ""})[
        "resources"
    ]["gpus"] == {"count": 0, "visible_devices": []}


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, None), (512, "512 B"), (1536, "1.5 KiB"), (2147483648, "2 GiB"), (1024**5, "1024 TiB")],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_html_escapes_every_value():
    resources = dict(RESOURCES, display_name="<script>alert(1)</script>")
    resources["choices"] = {"<b>": "<i>"}
    page = info_to_html(server_info({"HUBFORGE_RESOURCES": json.dumps(resources)}))
    assert "<script>" not in page
    assert "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --- REST endpoint -----------------------------------------------------------




async def test_info_endpoint(hub_env, jp_fetch, jp_serverapp):
    response = await jp_fetch("hubforge", "api", "info")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.body.decode()
    assert json.loads(body) == server_info()
    assert json.loads(body)["profile"]["slug"] == "cpu-small"
    for secret in (*SECRETS, jp_serverapp.identity_provider.token):
        assert secret not in body


@pytest.mark.parametrize("authorization", ["token not-the-token", ""])
async def test_info_endpoint_needs_authentication(hub_env, jp_fetch, authorization):
    with pytest.raises(HTTPClientError) as error:
        await jp_fetch("hubforge", "api", "info", headers={"Authorization": authorization})
    assert error.value.code == 403
    body = error.value.response.body.decode()
    assert "cpu-small" not in body
    assert HUB_TOKEN not in body


class DenyHubForgeAuthorizer(Authorizer):
    """Allows everything except the "hubforge" resource."""

    def is_authorized(self, handler, user, action, resource):
        return resource != "hubforge"


async def test_info_endpoint_is_authorized_as_hubforge_resource(
    hub_env, jp_fetch, jp_serverapp, monkeypatch
):
    authorizer = DenyHubForgeAuthorizer(
        parent=jp_serverapp, identity_provider=jp_serverapp.identity_provider
    )
    monkeypatch.setitem(jp_serverapp.web_app.settings, "authorizer", authorizer)
    assert (await jp_fetch("api", "status")).code == 200
    with pytest.raises(HTTPClientError) as error:
        await jp_fetch("hubforge", "api", "info")
    assert error.value.code == 403


# --- %hubforge in a real kernel ----------------------------------------------


def run_in_kernel(code, env):
    """Run code in a fresh kernel from this venv; return (status, outputs)."""
    kernel_manager, client = start_new_kernel(kernel_name="python3", env=env, startup_timeout=60)
    try:
        outputs = []
        reply = client.execute_interactive(code, timeout=30, output_hook=outputs.append)
    finally:
        client.stop_channels()
        kernel_manager.shutdown_kernel(now=True)
    return reply["content"]["status"], outputs


def results(outputs):
    return [
        output["content"]
        for output in outputs
        if output["msg_type"] in ("execute_result", "stream", "error")
    ]


@pytest.mark.parametrize(
    "user_config",
    [
        None,
        # The usual way users load extensions must not drop ours.
        "c.InteractiveShellApp.extensions = ['autoreload']",
    ],
)
def test_magic_loaded_by_default_in_kernel(tmp_path, monkeypatch, user_config):
    # Connection files go to a scratch runtime dir, not the real HOME.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    ipython_dir = tmp_path / "ipython"
    if user_config:
        (ipython_dir / "profile_default").mkdir(parents=True)
        (ipython_dir / "profile_default" / "ipython_kernel_config.py").write_text(user_config)
    env = dict(
        hub_environ(),
        PATH=sys.exec_prefix + "/bin",
        HOME=str(tmp_path),
        IPYTHONDIR=str(ipython_dir),
        CUDA_VISIBLE_DEVICES="1",
    )
    # No %load_ext: the installed ipython_config.json must have loaded it.
    code = (
        "import json\n"
        "info = %hubforge --json\n"
        "print(json.dumps(info))\n"
        "print(sorted(get_ipython().extension_manager.loaded))"
    )
    status, outputs = run_in_kernel(code, env)
    assert status == "ok", results(outputs)
    text = "".join(content.get("text", "") for content in results(outputs))
    info_line, loaded_line = text.splitlines()
    info = json.loads(info_line)
    assert info["profile"]["slug"] == "cpu-small"
    assert info["user"] == "alice"
    assert info["resources"]["gpus"]["visible_devices"] == ["1"]
    assert "hubforge.singleuser" in loaded_line
    if user_config:
        assert "autoreload" in loaded_line
    for secret in SECRETS:
        assert secret not in text


# --- magic and extension in this process -------------------------------------


def test_magic_reprs_and_unload(hub_env, shell):
    shell.run_line_magic("load_ext", "hubforge.singleuser")
    shown = shell.run_line_magic("hubforge", "")
    assert isinstance(shown, ServerInfo)
    assert "CPU, small (cpu-small)" in repr(shown)
    assert "<table>" in shown._repr_html_()
    assert shell.run_line_magic("hubforge", "--json") == server_info()
    assert "--json" in shell.find_line_magic("hubforge").__doc__
    shell.run_line_magic("unload_ext", "hubforge.singleuser")
    assert shell.find_line_magic("hubforge") is None


# --- widget --------------------------------------------------------------------


def test_widget_refresh_shows_new_info(hub_env, monkeypatch):
    from hubforge.widgets import ServerInfoWidget

    controller = ServerInfoWidget()
    box = controller.widget()
    panel, buttons, output = box.children
    assert "CPU, small (cpu-small)" in panel.value

    changed = dict(RESOURCES, slug="gpu-large", display_name="GPU <large>")
    monkeypatch.setenv("HUBFORGE_PROFILE", "gpu-large")
    monkeypatch.setenv("HUBFORGE_RESOURCES", json.dumps(changed))
    buttons.children[0].click()

    assert "GPU &lt;large&gt; (gpu-large)" in panel.value
    assert controller.info["profile"]["slug"] == "gpu-large"
    assert output.outputs == ()
    for secret in SECRETS:
        assert secret not in panel.value


def test_widget_refresh_failure_lands_in_output(hub_env, monkeypatch):
    from hubforge.singleuser import widgets

    controller = widgets.ServerInfoWidget()
    panel, buttons, output = controller.widget().children
    before = panel.value

    def broken(environ=None):
        raise RuntimeError("<cgroup unreadable>")

    monkeypatch.setattr(widgets, "server_info", broken)
    buttons.children[0].click()

    assert panel.value == before
    assert output.outputs[0]["name"] == "stderr"
    assert "Refresh failed: RuntimeError: <cgroup unreadable>" in output.outputs[0]["text"]


def test_widget_falls_back_to_html_without_ipywidgets(hub_env, monkeypatch):
    from hubforge.widgets import ServerInfoWidget

    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    controller = ServerInfoWidget()
    assert controller.widget() is None
    bundle = controller._repr_mimebundle_()
    assert "CPU, small (cpu-small)" in bundle["text/html"]
    assert "cpu-small" in bundle["text/plain"]


# --- installed configs ---------------------------------------------------------


def test_server_extension_enabled_by_installed_config(tmp_path):
    env = {
        "PATH": sys.exec_prefix + "/bin",
        "HOME": str(tmp_path),
        # Keep a user-level config from hiding what the package installs.
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert re.search(r"^\s*hubforge\.singleuser\s+enabled\s*$", text, re.MULTILINE), text
    assert re.search(r"^\s*hubforge\.singleuser\s+.*\bOK\s*$", text, re.MULTILINE), text


def test_info_module_reads_only_listed_variables():
    read = set()

    class Recording(dict):
        def get(self, key, default=None):
            read.add(key)
            return super().get(key, default)

        def __getitem__(self, key):
            read.add(key)
            return super().__getitem__(key)

    server_info(Recording(hub_environ()))
    assert read <= {
        "JUPYTERHUB_USER",
        "JUPYTERHUB_SERVER_NAME",
        "HUBFORGE_PROFILE",
        "HUBFORGE_RESOURCES",
        "CUDA_VISIBLE_DEVICES",
        "MEM_LIMIT",
        "CPU_LIMIT",
    }
