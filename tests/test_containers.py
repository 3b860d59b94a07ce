"""The container backend against real podman: spawn, proxy, persistent home, clean stop.

Uses HubForge's CPU image, built (once, then reused while its content hash matches)
from a locally bootstrapped Debian base, since no image registry is reachable here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import requests

from hubprocess import Browserless, HubProcess, listening_addresses, service_port

pytestmark = [pytest.mark.slow, pytest.mark.containers]

needs_podman = pytest.mark.skipif(
    shutil.which("podman") is None or os.geteuid() != 0,
    reason="needs podman (apt-get install podman runc) and root",
)


def podman(*args: str) -> subprocess.CompletedProcess:
    from hubforge.podman import podman_env

    env = dict(os.environ)
    env.update(podman_env())
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="session")
def cpu_image():
    from hubforge.images import get_image
    from hubforge.images.base import LOCAL_BASE_IMAGE, build_base
    from hubforge.images.build import build_image

    build_base(engine="podman")
    return build_image("cpu", engine="podman", base_image=LOCAL_BASE_IMAGE).tag or get_image("cpu").tag()


@pytest.fixture(scope="module")
def chub(tmp_path_factory, cpu_image):
    hub = HubProcess(
        tmp_path_factory.mktemp("chub"),
        mode="containers",
        gpus="none",
        containers={"engine": "podman", "pull_policy": "never", "remove_home_on_user_delete": True},
    )
    try:
        hub.start()
        Browserless(hub).signup("admin", "containers-admin-pass-1")
        hub.admin = hub.token("admin")
        yield hub
    finally:
        hub.stop()
        for line in podman("ps", "-a", "--format", "{{.Names}}").stdout.split():
            if line.startswith("hubforge-ctest"):
                podman("rm", "-f", line)
        for line in podman("volume", "ls", "--format", "{{.Name}}").stdout.split():
            if line.startswith("hubforge-home-ctest"):
                podman("volume", "rm", "-f", line)


def containers_named(prefix: str) -> list[str]:
    out = podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
    return [n for n in out if n.startswith(prefix)]


@needs_podman
def test_spawn_restart_keeps_home_and_stop_leaves_no_container(chub):
    token = chub.make_user(chub.admin, "ctest1")
    auth = {"Authorization": f"token {token}"}
    r = chub.request("POST", "/users/ctest1/servers/", token, json={"profile": "cpu-small"})
    assert r.status_code in (201, 202), r.text
    chub.wait_ready("ctest1", "", token)
    base = chub.server_url("ctest1")
    info = requests.get(base + "hubforge/api/info", headers=auth, timeout=30).json()
    assert info["profile"]["slug"] == "cpu-small" and info["image"] == cpu_image_tag()
    [name] = containers_named("hubforge-ctest1")
    inspect = json.loads(podman("inspect", name).stdout)[0]
    assert inspect["HostConfig"]["Memory"] == info["resources"]["memory"]["limit"]
    assert inspect["HostConfig"]["NetworkMode"] == "host"
    environ = dict(kv.split("=", 1) for kv in inspect["Config"]["Env"])
    assert listening_addresses(service_port(environ)) == {"127.0.0.1"}, "ports bind to 127.0.0.1 only"
    r = requests.put(base + "api/contents/kept.txt", headers=auth, timeout=30,
                     json={"type": "file", "format": "text", "content": "still here"})
    assert r.status_code in (200, 201), r.text

    assert chub.request("DELETE", "/users/ctest1/server", token).status_code in (202, 204)
    chub.wait_gone("ctest1", "", token)
    assert containers_named("hubforge-ctest1") == [], "stopping must remove the container"

    r = chub.request("POST", "/users/ctest1/servers/", token, json={"profile": "cpu-small"})
    assert r.status_code in (201, 202), r.text
    chub.wait_ready("ctest1", "", token)
    r = requests.get(base + "api/contents/kept.txt", headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["content"] == "still here"
    assert chub.request("DELETE", "/users/ctest1/server", token).status_code in (202, 204)
    chub.wait_gone("ctest1", "", token)
    assert containers_named("hubforge-ctest1") == []

    # The admin deletes the user: with remove_home_on_user_delete the volume goes too.
    assert "hubforge-home-ctest1" in podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert chub.request("DELETE", "/users/ctest1", chub.admin).status_code == 204
    assert "hubforge-home-ctest1" not in podman("volume", "ls", "--format", "{{.Name}}").stdout.split()


@needs_podman
def test_missing_image_fails_fast_naming_it(chub):
    token = chub.make_user(chub.admin, "ctest2")
    r = chub.request("POST", "/users/ctest2/servers/", token,
                     json={"profile": "cpu-small", "image--unlisted-choice": "hubforge/cpu:1999.01"})
    # A 400 answer (not 202 "pending") means the spawn failed within JupyterHub's
    # slow_spawn_timeout (10 s), not after the start timeout.
    assert r.status_code == 400, r.text
    assert "hubforge/cpu:1999.01" in r.json()["message"]
    assert containers_named("hubforge-ctest2") == []


def cpu_image_tag() -> str:
    from hubforge.images import get_image

    return get_image("cpu").tag()
