"""The ``dask-gateway`` hub service end to end: a real hub, gateway, schedulers and workers.

Covers what a user does (start, compute, reconnect, scale, stop), who may do it (the
owner; admins; not another user, not a token without the service's scope, not an
anonymous caller, also for the dashboard), the limits (refused with a message stating
them) and the clean-up (idle timeout, the server stopping, the user deleted; no process
or control group left behind).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import tempfile
import time
from pathlib import Path

import pytest
import requests
from conftest import TEST_PREFIX
from hubprocess import Browserless, HubProcess, wait_for

pytestmark = pytest.mark.slow

hd = pytest.importorskip("hubforge.dask")
dask_gateway = pytest.importorskip("dask_gateway")

from dask_gateway.auth import JupyterHubAuth  # noqa: E402


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cluster_pids(client) -> set[int]:
    return {client.run_on_scheduler(os.getpid), *client.run(os.getpid).values()}


def gateway_kwargs(hub: HubProcess, token: str) -> dict:
    info = hub.request("GET", "/services/dask-gateway", token).json()["info"]
    return {"address": info["address"], "proxy_address": info["proxy_address"],
            "auth": JupyterHubAuth(api_token=token)}


def names(clusters) -> set[str]:
    return {c["name"] for c in clusters}


# --- the session hub: system accounts, cgroups, the default limits -----------------------


def test_cluster_computes_as_the_user_and_leaves_nothing_behind(hub, dask_user):
    kw = dask_user["gateway_kwargs"]
    client = hd.cluster(workers=2, worker_memory=0.5, gateway_kwargs=kw)
    name = client.cluster.name
    try:
        import dask.array as da
        import dask.dataframe as dd
        import numpy as np
        import pandas as pd

        x = da.arange(1_000_000, chunks=100_000)
        assert x.sum().compute() == 999_999 * 1_000_000 // 2
        assert float(da.ones((2000, 2000), chunks=500).mean().compute()) == 1.0
        pdf = pd.DataFrame({"key": np.arange(10_000) % 7, "value": np.arange(10_000)})
        ddf = dd.from_pandas(pdf, npartitions=4)
        got = ddf.groupby("key")["value"].sum().compute().sort_index()
        pd.testing.assert_series_equal(got, pdf.groupby("key")["value"].sum(), check_names=False)

        # Scheduler and workers run as the user's system account, like their server.
        uids = {client.run_on_scheduler(os.getuid), *client.run(os.getuid).values()}
        account = pwd.getpwnam(TEST_PREFIX + dask_user["name"])
        assert uids == {account.pw_uid}, (uids, account)
        pids = cluster_pids(client)
        assert len(pids) == 3
        # the environment a process started with stays readable (/proc/PID/environ): the
        # gateway's hub token and configuration are not in it
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"JUPYTERHUB_API_TOKEN" not in environ and b"HUBFORGE_DASK_CONFIG" not in environ
        # forked, but named for what they are in ps and top
        assert {Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids} == {"dask-scheduler", "dask-worker"}
        from hubforge.spawners.cgroups import CgroupManager

        if CgroupManager().available:  # as root: every process in the cluster's control group
            for pid in pids:
                assert "hubforge/dask-" in Path(f"/proc/{pid}/cgroup").read_text() and name in \
                    Path(f"/proc/{pid}/cgroup").read_text()

        listed = {c["name"]: c for c in hd.list_clusters(gateway_kwargs=kw)}
        assert listed[name]["workers"] == 2 or listed[name]["workers_requested"] == 2
        assert listed[name]["user"] == dask_user["name"]
        assert listed[name]["dashboard_link"].endswith(f"/services/dask-gateway/clusters/{name}/status")
        assert hd.check_versions(client) == []
    finally:
        client.close()
        hd.shutdown(name, gateway_kwargs=kw)
    wait_for(lambda: not any(alive(p) for p in pids), 30, what="cluster processes gone")
    assert name not in names(hd.list_clusters(gateway_kwargs=kw))

    def groups():
        root = Path("/sys/fs/cgroup")
        return list(root.glob(f"*/hubforge/dask-*-{name}")) + list(root.glob(f"hubforge/dask-*-{name}"))

    # the control group goes right after the processes (cgroups need root; none otherwise)
    wait_for(lambda: groups() == [], 30, what="the cluster's control groups removed")


def test_reconnect_from_a_new_client_and_scale(dask_user):
    kw = dask_user["gateway_kwargs"]
    first = hd.cluster(workers=1, worker_memory=0.5, gateway_kwargs=kw)
    name = first.cluster.name
    first.close()  # the kernel that started it went away; the cluster did not
    try:
        again = hd.connect(name, gateway_kwargs=kw)
        hd.scale(name, 2, gateway_kwargs=kw)
        again.wait_for_workers(2, timeout=60)
        assert len(again.scheduler_info()["workers"]) == 2
        hd.adapt(name, 1, 2, gateway_kwargs=kw)
        again.close()
    finally:
        assert hd.shutdown(name, gateway_kwargs=kw) == [name]


def test_limits_are_refused_with_a_message_that_states_them(dask_user):
    kw = dask_user["gateway_kwargs"]
    limits = hd.limits(gateway_kwargs=kw)
    assert limits["max_workers"] == 8 and limits["worker_cores"] == 2 and limits["max_clusters"] == 2

    with pytest.raises(hd.DaskError, match=r"worker_cores=3 is over your limit of 2 cores per worker"):
        hd.cluster(worker_cores=3, gateway_kwargs=kw)
    with pytest.raises(hd.DaskError, match=r"worker_memory=8.0 GiB is over your limit of 4 GiB"):
        hd.cluster(worker_memory=8, gateway_kwargs=kw)
    with pytest.raises(hd.DaskError, match=r"workers=9 is over your limit of 8 workers per cluster"):
        hd.cluster(workers=9, gateway_kwargs=kw)
    # max_cores 8 at 2 cores per worker allows 4 workers
    with pytest.raises(hd.DaskError, match=r"limit of 4 workers per cluster \(max_cores 8 at 2 cores"):
        hd.cluster(workers=5, worker_cores=2, gateway_kwargs=kw)

    gw = hd.gateway(**kw)
    a = gw.new_cluster(worker_memory=0.5, shutdown_on_close=False)
    b = gw.new_cluster(worker_memory=0.5, shutdown_on_close=False)
    try:
        with pytest.raises(hd.DaskError, match=r"you already have 2 running clusters and your limit is 2"):
            hd.cluster(worker_memory=0.5, gateway_kwargs=kw)
        with pytest.raises(hd.DaskError, match=r"a cluster of 9 workers is over your limit of 8 workers"):
            hd.scale(a.name, 9, gateway_kwargs=kw)
        with pytest.raises(hd.DaskError, match=r"over your limit of 8 workers"):
            hd.adapt(a.name, 0, 20, gateway_kwargs=kw)
        # dask-gateway's own client gets the refusal too, not a silent cap
        with pytest.raises(ValueError, match="over your limit"):
            a.scale(9)
    finally:
        a.shutdown()
        b.shutdown()


def test_only_the_owner_and_admins_reach_a_cluster(hub, admin_token, dask_user):
    kw = dask_user["gateway_kwargs"]
    client = hd.cluster(workers=0, worker_memory=0.5, gateway_kwargs=kw)
    name = client.cluster.name
    client.close()
    try:
        other_token = hub.make_user(admin_token, "dask-other")
        other = gateway_kwargs(hub, other_token)
        assert name not in names(hd.list_clusters(gateway_kwargs=other))
        for attempt in (lambda: hd.connect(name, gateway_kwargs=other),
                        lambda: hd.scale(name, 1, gateway_kwargs=other),
                        lambda: hd.shutdown(name, gateway_kwargs=other)):
            with pytest.raises(hd.DaskError, match="only the cluster's owner or a hub admin"):
                attempt()
        r = requests.delete(f"{kw['address']}/api/v1/hubforge/users/{dask_user['name']}/clusters",
                            headers={"Authorization": f"jupyterhub {other_token}"}, timeout=10)
        assert r.status_code == 403 and "only dasker or a hub admin" in r.json()["error"]
        with pytest.raises(hd.DaskError, match=r"permission denied \(HTTP 403\)"):
            hd.list_clusters(all_users=True, gateway_kwargs=other)
        r = requests.get(f"{kw['address']}/api/v1/hubforge/clusters?all=1",
                         headers={"Authorization": f"jupyterhub {other_token}"}, timeout=10)
        assert r.status_code == 403 and "only hub admins" in r.json()["error"]

        # The API itself: anonymous 401; a token without access:services!service=dask-gateway 401
        url = f"{kw['address']}/api/v1/clusters/{name}"
        assert requests.get(url, timeout=10).status_code == 401
        r = hub.request("POST", "/users/dask-other/tokens", admin_token,
                        json={"scopes": ["read:users:name!user=dask-other"], "note": "no dask"})
        narrow = r.json()["token"]
        r = requests.get(url, headers={"Authorization": f"jupyterhub {narrow}"}, timeout=10)
        assert r.status_code == 401
        r = requests.get(url, headers={"Authorization": f"jupyterhub {other_token}"}, timeout=10)
        assert r.status_code == 403

        # An admin sees everyone's clusters and may stop them.
        admin = gateway_kwargs(hub, admin_token)
        everyone = {c["name"]: c for c in hd.list_clusters(all_users=True, gateway_kwargs=admin)}
        assert everyone[name]["user"] == dask_user["name"]
        assert hd.shutdown(name, gateway_kwargs=admin) == [name]
        wait_for(lambda: name not in names(hd.list_clusters(gateway_kwargs=kw)), 30, what="cluster stopped")
    finally:
        hd.shutdown(name, gateway_kwargs=kw)


async def bokeh_websocket_ack(page_url: str, page: str, token: str) -> bool:
    """Open the dashboard page's bokeh websocket through the front; True on bokeh's ACK."""
    import re

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    session_token = re.search(r'"token":\s*"([^"]+)"', page) or re.search(r"token: '([^']+)'", page)
    assert session_token, "no bokeh session token in the dashboard page"
    request = HTTPRequest(page_url.replace("http://", "ws://", 1) + "/ws",
                          headers={"Authorization": f"token {token}"})
    conn = await asyncio.wait_for(
        websocket_connect(request, subprotocols=["bokeh", session_token.group(1)]), 30)
    try:
        first = await asyncio.wait_for(conn.read_message(), 30)
    finally:
        conn.close()
    return first is not None and "ACK" in str(first)


def test_dashboard_only_for_its_owner_through_the_hub_proxy(hub, admin_token, dask_user):
    kw = dask_user["gateway_kwargs"]
    client = hd.cluster(workers=1, worker_memory=0.5, gateway_kwargs=kw)
    name = client.cluster.name
    try:
        link = client.dashboard_link
        assert link.startswith(hub.url) and link.endswith(f"/clusters/{name}/status")
        own = requests.get(link, headers={"Authorization": f"token {dask_user['token']}"}, timeout=30)
        assert own.status_code == 200, own.text[:500]
        assert "bokeh" in own.text.lower()
        # the page's live plots come over a websocket, relayed through the same route
        assert asyncio.run(bokeh_websocket_ack(link, own.text, dask_user["token"]))
        other_token = hub.make_user(admin_token, "dask-other")
        other = requests.get(link, headers={"Authorization": f"token {other_token}"}, timeout=30)
        assert other.status_code == 404
        assert f"you have no cluster named {name}" in other.text
        anonymous = requests.get(link, allow_redirects=False, timeout=30)
        assert anonymous.status_code == 302 and "/hub/" in anonymous.headers["Location"]
        admin = requests.get(link, headers={"Authorization": f"token {admin_token}"}, timeout=30)
        assert admin.status_code == 200
        # the landing page lists the user's clusters with their dashboard links
        home = requests.get(hub.url + "services/dask-gateway/",
                            headers={"Authorization": f"token {dask_user['token']}"}, timeout=30)
        assert home.status_code == 200 and name in home.text
    finally:
        client.close()
        hd.shutdown(name, gateway_kwargs=kw)


def test_clusters_stop_when_the_server_that_started_them_stops(hub, admin_token):
    name = "dask-server"
    token = hub.make_user(admin_token, name)
    r = hub.request("POST", f"/users/{name}/servers/work", token, json={"profile": "cpu-small"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready(name, "work", token)
    kw = gateway_kwargs(hub, token)
    gw = hd.gateway(**kw)
    try:
        # one started by the server (as the environment makes every server's clusters),
        # one by a script outside any server
        from_server = gw.new_cluster(origin="server:work", workers=1, worker_memory=0.5, shutdown_on_close=False)
        from_script = gw.new_cluster(worker_memory=0.5, shutdown_on_close=False)
        client = from_server.get_client(set_as_default=False)
        client.wait_for_workers(1, timeout=60)
        pids = cluster_pids(client)
        client.close()

        r = hub.request("DELETE", f"/users/{name}/servers/work", token)
        assert r.status_code in (202, 204)
        hub.wait_gone(name, "work", token)
        wait_for(lambda: from_server.name not in names(hd.list_clusters(gateway_kwargs=kw)), 60,
                 what="the server's cluster stopped")
        wait_for(lambda: not any(alive(p) for p in pids), 30, what="its processes gone")
        assert from_script.name in names(hd.list_clusters(gateway_kwargs=kw))
        assert "the server 'work' that started it has stopped" in hub.log()
    finally:
        hd.shutdown(all=True, gateway_kwargs=kw)


# --- a hub of its own: idle timeout, deleted users, group limits, one cluster each --------


@pytest.fixture(scope="module")
def small_hub():
    hub = HubProcess(
        Path(tempfile.mkdtemp(prefix="hubforge-dask-")),
        local={"isolation": "shared"},
        dask={
            "idle_timeout": 6,
            "reconcile_period": 1,
            "limits": {"max_workers": 2, "max_clusters": 1, "worker_memory": "1 G"},
            "group_limits": {"big": {"max_workers": 5, "max_clusters": 2}},
        },
    )
    hub.start()
    try:
        Browserless(hub).signup("admin", "correct-horse-battery-staple")
        hub.admin_token = hub.token("admin")
        yield hub
    finally:
        hub.stop()


def test_idle_clusters_stop_themselves(small_hub):
    token = small_hub.make_user(small_hub.admin_token, "idler")
    kw = gateway_kwargs(small_hub, token)
    client = hd.cluster(workers=1, worker_memory=0.5, gateway_kwargs=kw)
    name = client.cluster.name
    pids = cluster_pids(client)
    client.close()
    wait_for(lambda: name not in names(hd.list_clusters(gateway_kwargs=kw)), 60, what="idle cluster stopped")
    wait_for(lambda: not any(alive(p) for p in pids), 30, what="its processes gone")


def test_deleting_a_user_stops_their_clusters(small_hub):
    admin = small_hub.admin_token
    token = small_hub.make_user(admin, "leaver")
    kw = gateway_kwargs(small_hub, token)
    client = hd.cluster(workers=1, worker_memory=0.5, gateway_kwargs=kw)
    busy = client.submit(time.sleep, 3600)  # so the idle timeout does not stop it first
    pids = cluster_pids(client)
    name = client.cluster.name
    r = small_hub.request("DELETE", "/users/leaver", admin)
    assert r.status_code == 204
    wait_for(lambda: not any(alive(p) for p in pids), 60, what="the deleted user's cluster processes gone")
    assert f"stopping cluster {name}: its user leaver was deleted from the hub" in small_hub.log()
    del busy
    client.close()


def test_group_limits_widen_the_defaults(small_hub):
    admin = small_hub.admin_token
    plain = gateway_kwargs(small_hub, small_hub.make_user(admin, "plain"))
    big = gateway_kwargs(small_hub, small_hub.make_user(admin, "bigger", groups=["big"]))
    assert hd.limits(gateway_kwargs=plain)["max_workers"] == 2
    assert hd.limits(gateway_kwargs=big)["max_workers"] == 5
    with pytest.raises(hd.DaskError, match="over your limit of 2 workers"):
        hd.cluster(workers=3, worker_memory=0.25, gateway_kwargs=plain)
    spec = hd.options(**big)
    assert spec._fields["workers"].max == 5
    gw = hd.gateway(**big)
    try:
        gw.new_cluster(workers=0, worker_memory=0.25, shutdown_on_close=False)
        gw.new_cluster(workers=0, worker_memory=0.25, shutdown_on_close=False)
        with pytest.raises(hd.DaskError, match="your limit is 2"):
            hd.cluster(worker_memory=0.25, gateway_kwargs=big)
    finally:
        hd.shutdown(all=True, gateway_kwargs=big)


# --- dask-gateway's own server (what the Helm chart runs on Kubernetes) -------------------


def test_the_api_falls_back_on_dask_gateways_own_server(tmp_path):
    import subprocess
    import sys

    from dask_gateway.auth import BasicAuth
    from hubprocess import free_port

    api, http, tcp = free_port(), free_port(), free_port()
    dask_cmd = [str(Path(sys.executable).with_name("dask"))]
    (tmp_path / "config.py").write_text(f"""
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{http}"
c.Proxy.tcp_address = "127.0.0.1:{tcp}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.ClusterConfig.scheduler_cmd = {dask_cmd + ["scheduler"]!r}
c.ClusterConfig.worker_cmd = {dask_cmd + ["worker"]!r}
""")
    server = subprocess.Popen([str(Path(sys.executable).with_name("dask-gateway-server")), "-f", "config.py"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    kw = {"address": f"http://127.0.0.1:{http}", "proxy_address": f"gateway://127.0.0.1:{tcp}",
          "auth": BasicAuth("plain", "x")}
    try:
        wait_for(lambda: requests.get(f"{kw['address']}/api/health", timeout=2).ok, 30, what="dask-gateway-server")
        assert hd.list_clusters(gateway_kwargs=kw) == []
        name = hd.gateway(**kw).submit()
        listed = hd.list_clusters(gateway_kwargs=kw)
        assert [c["name"] for c in listed] == [name] and listed[0]["status"] in ("PENDING", "RUNNING")
        assert hd.limits(gateway_kwargs=kw)["max_clusters"] is None
        with pytest.raises(hd.DaskError, match="cannot list everyone's clusters"):
            hd.list_clusters(all_users=True, gateway_kwargs=kw)
        assert hd.shutdown(all=True, gateway_kwargs=kw) == [name]
        wait_for(lambda: hd.list_clusters(gateway_kwargs=kw) == [], 60, what="cluster stopped")
    finally:
        server.terminate()
        server.wait(30)
