"""End-to-end tests of the hub: real JupyterHub, real proxy, real local servers.

The hub runs under the hostile base URL ``/@/space%20word/`` with two fake GPU ids
injected through the settings, so GPU allocation is exercised without a GPU (the
servers never touch CUDA).
"""

from __future__ import annotations

import json
import os
import pwd
import stat
from pathlib import Path

import pytest
import requests

from conftest import ADMIN_PASSWORD, TEST_PREFIX
from hubprocess import Browserless, listening_addresses, service_port, wait_for

pytestmark = pytest.mark.slow
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="system users and cgroups need root")


def spawn(hub, user, server, token, options):
    return hub.request("POST", f"/users/{user}/servers/{server}", token, json=options)


def server_state(hub, admin_token, user, server):
    r = hub.request("GET", f"/users/{user}", admin_token)
    return r.json()["servers"][server].get("state") or {}


def info(hub, user, server, token):
    r = requests.get(hub.server_url(user, server) + "hubforge/api/info",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def stop(hub, user, server, token):
    """Stop a named server and delete it, so it doesn't count against the user's limit."""
    r = hub.request("DELETE", f"/users/{user}/servers/{server}", token, json={"remove": True})
    assert r.status_code in (202, 204), r.text
    hub.wait_gone(user, server, token)


# --- sign-up, login and admin approval --------------------------------------------------


def test_admin_signs_up_and_logs_in(hub, admin_token):
    b = Browserless(hub)
    r = b.login("admin", ADMIN_PASSWORD)
    assert r.status_code == 200
    assert "/hub/spawn" in r.url or "/hub/home" in r.url or "/user/admin" in r.url, r.url
    r = b.login("admin", "wrong-password-123")
    assert "Invalid username or password" in r.text


def test_signup_waits_for_admin_approval(hub, admin_token):
    user = Browserless(hub)
    assert user.signup("carol", "carols-long-pass-77").status_code == 200
    r = user.login("carol", "carols-long-pass-77")
    assert "has not been authorized" in r.text
    admin = Browserless(hub)
    admin.login("admin", ADMIN_PASSWORD)
    assert admin.get("hub/authorize/carol").status_code == 200
    r = user.login("carol", "carols-long-pass-77")
    assert "has not been authorized" not in r.text
    assert user.get("hub/home").status_code == 200


def test_signup_rejects_weak_password(hub):
    r = Browserless(hub).signup("dave", "short")
    assert "password" in r.text.lower()
    assert Browserless(hub).login("dave", "short").url.endswith("hub/login")


# --- the spawn page ---------------------------------------------------------------------


def test_spawn_page_lists_only_allowed_profiles(hub, admin_token):
    hub.make_user(admin_token, "erin")
    b = Browserless(hub)
    b.signup("erin", "erins-long-pass-42")
    admin = Browserless(hub)
    admin.login("admin", ADMIN_PASSWORD)
    admin.get("hub/authorize/erin")
    b.login("erin", "erins-long-pass-42")
    page = b.get("hub/spawn/erin/named").text
    assert 'id="profile-cpu-small"' in page and 'id="profile-gpu-1"' in page
    assert 'id="profile-cpu-xlarge"' not in page
    hub.make_user(admin_token, "erin", groups=["power-users"])
    assert 'id="profile-cpu-xlarge"' in b.get("hub/spawn/erin/named").text


# --- spawning through the REST API ------------------------------------------------------


@pytest.fixture(scope="module")
def alice(hub, admin_token):
    return hub.make_user(admin_token, "alice")


def test_rest_spawn_with_options_applies_profile(hub, admin_token, alice):
    r = spawn(hub, "alice", "big", alice, {"profile": "cpu-large", "image": "2026.08"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", "big", alice)
    got = info(hub, "alice", "big", alice)
    assert got["profile"]["slug"] == "cpu-large"
    assert got["choices"]["image"] == "2026.08"
    state = server_state(hub, admin_token, "alice", "big")
    pid = state["pid"]
    assert Path(f"/proc/{pid}").exists()
    if os.geteuid() == 0:
        status = Path(f"/proc/{pid}/status").read_text()
        uid = int(status.split("Uid:")[1].split()[0])
        pw = pwd.getpwuid(uid)
        assert pw.pw_name == f"{TEST_PREFIX}alice"
        home = os.stat(pw.pw_dir)
        assert stat.S_IMODE(home.st_mode) == 0o700 and home.st_uid == uid
        assert state["cgroups"], "limits not applied"
        mem = Path(state["cgroups"][0])
        limit_file = mem / ("memory.max" if (mem / "memory.max").exists() else "memory.limit_in_bytes")
        assert int(limit_file.read_text()) == state["profile"]["mem_limit"]
        assert str(pid) in (mem / "cgroup.procs").read_text().split()
        environ = dict(
            kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv
        )
        assert listening_addresses(service_port(environ)) == {"127.0.0.1"}, "servers listen on loopback only"
    stop(hub, "alice", "big", alice)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    for group in state.get("cgroups", []):
        assert not Path(group).exists()


def test_progress_events_describe_the_spawn(hub, alice):
    import threading

    # Read the progress stream while the spawn request is still in flight.
    posted = []
    t = threading.Thread(target=lambda: posted.append(spawn(hub, "alice", "prog", alice, {"profile": "cpu-small"})))
    t.start()

    def stream():
        r = hub.request("GET", "/users/alice/servers/prog/progress", alice, stream=True, timeout=90)
        return r if r.status_code == 200 else None

    r = wait_for(stream, 30, interval=0.05, what="progress stream")
    messages = []
    for line in r.iter_lines(decode_unicode=True):
        if line.startswith("data:"):
            event = json.loads(line[5:])
            messages.append(event.get("message", ""))
            if event.get("ready") or event.get("failed"):
                break
    assert any("cpu-small" in m for m in messages), messages
    assert any("Started JupyterLab" in m for m in messages), messages
    t.join(60)
    assert posted and posted[0].status_code in (201, 202), posted
    stop(hub, "alice", "prog", alice)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"profile": "no-such-profile"}, "profile"),
        ({"profile": "cpu-xlarge"}, "profile"),  # exists, but alice is not in power-users
        ({"profile": "cpu-small", "image": "1999.01"}, "image"),
        ({"profile": "cpu-small", "image--unlisted-choice": "evil/image:latest"}, "image--unlisted-choice"),
        ({"profile": "cpu-small", "colour": "blue"}, "colour"),
    ],
)
def test_bad_options_get_400_naming_the_field(hub, admin_token, alice, options, field):
    r = spawn(hub, "alice", "bad", alice, options)
    assert r.status_code == 400, r.text
    assert field in r.json()["message"], r.json()
    servers = hub.request("GET", "/users/alice", admin_token).json()["servers"]
    assert "bad" not in servers, "a rejected server must not be running or pending"
    hub.request("DELETE", "/users/alice/servers/bad", alice, json={"remove": True})


# --- GPUs -----------------------------------------------------------------------------


def test_gpus_are_exclusive_and_freed_on_stop(hub, admin_token, alice):
    bob = hub.make_user(admin_token, "bob")
    spawned = []
    try:
        for user, token, name in (("alice", alice, "g1"), ("bob", bob, "g2")):
            r = spawn(hub, user, name, token, {"profile": "gpu-1"})
            assert r.status_code in (201, 202), r.text
            hub.wait_ready(user, name, token)
            spawned.append((user, name, token))
        seen = {info(hub, u, n, t)["resources"]["gpus"]["visible_devices"][0] for u, n, t in spawned}
        assert seen == {"0", "1"}, seen
        # Both GPUs are taken: a third GPU server fails fast, with nothing left behind.
        r = spawn(hub, "alice", "g3", alice, {"profile": "gpu-1"})
        assert r.status_code == 409, r.text
        assert "GPU" in r.json()["message"]
        assert "g3" not in hub.request("GET", "/users/alice", admin_token).json()["servers"]
        hub.request("DELETE", "/users/alice/servers/g3", alice, json={"remove": True})
        # A CPU server sees no GPU at all.
        r = spawn(hub, "alice", "cpu", alice, {"profile": "cpu-small"})
        assert r.status_code in (201, 202), r.text
        hub.wait_ready("alice", "cpu", alice)
        assert not info(hub, "alice", "cpu", alice)["resources"]["gpus"]["visible_devices"]
        spawned.append(("alice", "cpu", alice))
        # Stopping a GPU server frees its device for the next one.
        user, name, token = spawned.pop(0)
        stop(hub, user, name, token)
        r = spawn(hub, "alice", "g3", alice, {"profile": "gpu-1"})
        assert r.status_code in (201, 202), r.text
        hub.wait_ready("alice", "g3", alice)
        spawned.append(("alice", "g3", alice))
    finally:
        for user, name, token in spawned:
            stop(hub, user, name, token)


# --- admin automation ----------------------------------------------------------------


def test_token_command_for_unknown_user_fails_clearly(hub):
    import subprocess

    from hubprocess import VENV_BIN

    out = subprocess.run([str(VENV_BIN / "hubforge"), "--settings", str(hub.settings_file), "token", "nobody"],
                         capture_output=True, text=True, env=hub.env(), timeout=120)
    assert out.returncode == 1
    assert "nobody" in out.stderr


def test_admin_token_has_admin_rights(hub, admin_token):
    r = hub.request("GET", "/users", admin_token)
    assert r.status_code == 200
    assert "admin" in {u["name"] for u in r.json()}
    assert hub.request("GET", "/users").status_code == 403


def test_failed_start_frees_gpu_and_leaves_nothing(hub, admin_token):
    token = hub.make_user(admin_token, "frank", groups=["testers"])
    r = spawn(hub, "frank", "dies", token, {"profile": "gpu-broken"})
    assert r.status_code == 500, r.text
    assert "exited during start-up with status 1" in r.json()["message"]
    assert "dies" not in hub.request("GET", "/users/frank", admin_token).json()["servers"]
    groups = [g for g in Path("/sys/fs/cgroup/memory/hubforge").glob("frank*")] if os.geteuid() == 0 else []
    assert groups == [], "the failed server's cgroup was not removed"
    # Both GPUs are free again: two GPU servers start side by side.
    started = []
    try:
        for name in ("a", "b"):
            r = spawn(hub, "frank", name, token, {"profile": "gpu-1"})
            assert r.status_code in (201, 202), r.text
            started.append(name)
            hub.wait_ready("frank", name, token)
    finally:
        for name in started:
            stop(hub, "frank", name, token)
        hub.request("DELETE", "/users/frank/servers/dies", token, json={"remove": True})


def test_server_extension_access_matrix(hub, admin_token, alice):
    """owner / other user / admin / anonymous on the HubForge endpoint of a user's server."""
    bob = hub.make_user(admin_token, "bob")
    r = spawn(hub, "alice", "matrix", alice, {"profile": "cpu-small"})
    assert r.status_code in (201, 202), r.text
    try:
        hub.wait_ready("alice", "matrix", alice)
        url = hub.server_url("alice", "matrix") + "hubforge/api/info"

        def get(token=None):
            headers = {"Authorization": f"token {token}"} if token else {}
            return requests.get(url, headers=headers, timeout=30, allow_redirects=False)

        owner = get(alice)
        assert owner.status_code == 200 and owner.json()["user"] == "alice"
        assert alice not in owner.text, "the token must never be echoed"
        assert get(bob).status_code == 403
        assert get(admin_token).status_code == 200  # admins hold access:servers
        anonymous = get()
        assert anonymous.status_code in (302, 401, 403)
        if anonymous.status_code == 302:
            assert "/hub/" in anonymous.headers["Location"]
    finally:
        stop(hub, "alice", "matrix", alice)
