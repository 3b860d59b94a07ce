"""Unit tests of the Dask part that need no hub and no cluster.

The platform's ``dask:`` settings and limits, the gateway's hub configuration (a pure
builder, compared as dicts), the gateway backend's limit checks, cluster options,
environment and command lines, the notebook-side API's argument checks, and the
scheduler preload. The real gateway, schedulers and workers are tested in
``test_dask.py``; these run in a second.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.models import User
from dask_gateway_server.utils import FrozenAttrDict
from traitlets.config import Config

import hubforge.dask as hdask
from hubforge.dask import scheduler_preload
from hubforge.dask.backend import HubForgeClusterConfig, HubForgeLocalBackend
from hubforge.dask.hubconfig import configure_dask_service, gateway_config, isolation_for, origin_options
from hubforge.dask.settings import DaskSettings, Limits, format_memory, parse_memory
from hubforge.exceptions import SettingsError
from hubforge.settings import Settings

GiB = 2**30
MiB = 2**20
ACCESS = "access:services!service=dask-gateway"
LOOKUP = "read:services!service=dask-gateway"
HOSTILE_BIND_URL = "http://127.0.0.1:8000/@/space%20word/"


def dask_settings(dask: dict, source: str = "/etc/hf/hubforge.yaml") -> DaskSettings:
    return DaskSettings.from_settings(Settings(source=source, dask=dask))


# --- sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("4 G", 4 * GiB),
    ("512M", 512 * MiB),
    ("2.5G", int(2.5 * GiB)),
    ("1 GiB", GiB),
    ("3k", 3 * 1024),
    (1024, 1024),
    (1.5, 1),
])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("value", ["lots", "4 X", "", -1, True])
def test_parse_memory_refuses_what_is_not_a_size_and_names_the_field(value):
    with pytest.raises(SettingsError, match=r"^dask\.limits\.max_memory: ") as e:
        parse_memory(value, "dask.limits.max_memory")
    assert repr(value) in str(e.value)


@pytest.mark.parametrize("n, text", [(4 * GiB, "4 GiB"), (512 * MiB, "512 MiB"), (int(2.5 * GiB), "2.5 GiB"),
                                     (2 * 2**40, "2 TiB"), (100, "100 B")])
def test_format_memory(n, text):
    assert format_memory(n) == text


# --- the dask: section ------------------------------------------------------------------


def test_defaults():
    d = dask_settings({})
    assert (d.enabled, d.idle_timeout, d.stop_with_server, d.reconcile_period, d.worker_start_timeout) == (
        True, 1800, True, 15, 60)
    assert d.default_limits == Limits(max_clusters=2, max_workers=8, max_cores=8, max_memory=16 * GiB,
                                      worker_cores=2, worker_memory=4 * GiB)
    assert d.limits_for([]) == d.default_limits == d.limits_for(["a-group-with-no-limits"])
    assert d.source == "/etc/hf/hubforge.yaml"


def test_values_are_read():
    d = dask_settings({"idle_timeout": 600, "stop_with_server": False,
                       "limits": {"max_workers": 4, "max_memory": "8 G", "worker_memory": "512M"}})
    assert (d.idle_timeout, d.stop_with_server) == (600, False)
    assert d.limits_for([]) == Limits(max_workers=4, max_memory=8 * GiB, worker_memory=512 * MiB)


def test_unknown_key_names_the_key_and_the_file():
    with pytest.raises(SettingsError, match=r"^/etc/hf/hubforge\.yaml: unknown setting 'dask\.foo'; known: .*idle_timeout"):
        dask_settings({"foo": 1})


def test_bad_value_names_the_key_and_the_file():
    with pytest.raises(SettingsError, match=r"^/etc/hf/hubforge\.yaml: setting 'dask\.idle_timeout': invalid value 'soon'"):
        dask_settings({"idle_timeout": "soon"})


@pytest.mark.parametrize("limits, message", [
    ({"max_gpus": 1}, r"dask\.limits: unknown limit 'max_gpus'; known limits: max_clusters, max_cores"),
    ({"max_workers": 2.5}, r"dask\.limits\.max_workers: expected a whole number, got 2\.5"),
    ({"max_workers": -1}, r"dask\.limits\.max_workers: expected a number >= 0, got -1"),
    ({"max_cores": "many"}, r"dask\.limits\.max_cores: expected a number >= 0, got 'many'"),
    ({"max_memory": "lots"}, r"dask\.limits\.max_memory: expected a size like '4 G'"),
    ({"worker_memory": 0}, r"dask\.limits\.worker_memory: must be more than 0, got 0"),
    ({"worker_cores": 4, "max_cores": 2}, r"dask\.limits: worker_cores 4 is more than max_cores 2"),
    ({"worker_memory": "8 G", "max_memory": "6 G"}, r"dask\.limits: worker_memory 8 GiB is more than max_memory 6 GiB"),
])
def test_bad_limits_are_refused_with_the_file_and_the_limit(limits, message):
    with pytest.raises(SettingsError, match=r"^/etc/hf/hubforge\.yaml: " + message):
        dask_settings({"limits": limits})


def test_bad_group_limits_name_the_group():
    with pytest.raises(SettingsError, match=r"^/etc/hf/hubforge\.yaml: dask\.group_limits\.big: unknown limit 'cores'"):
        dask_settings({"limits": {}, "group_limits": {"big": {"cores": 4}}})


def test_group_limits_widen_each_limit_to_the_largest():
    d = dask_settings({
        "limits": {"max_workers": 4, "max_memory": "8 G"},
        "group_limits": {
            "wide": {"max_workers": 32, "max_cores": 16},
            "fat": {"max_memory": "64 G", "worker_memory": "16 G", "max_workers": 6},
        },
    })
    base = d.limits_for([])
    assert base == Limits(max_workers=4, max_memory=8 * GiB)
    assert d.limits_for(["wide"]) == Limits(max_workers=32, max_cores=16, max_memory=8 * GiB)
    # In both groups: the largest value of each limit, whichever group it comes from.
    both = Limits(max_workers=32, max_cores=16, max_memory=64 * GiB, worker_memory=16 * GiB)
    assert d.limits_for(["fat", "wide"]) == d.limits_for({"wide", "fat", "other"}) == both
    # A group value below the default does not narrow it.
    assert d.limits_for(["fat"]).max_workers == 6 and d.limits_for(["fat"]).max_cores == base.max_cores


def test_group_limits_are_checked_against_the_files_limits_whatever_the_key_order():
    # Valid: worker_cores 16 is within the file's max_cores 32; only Limits()' 8 is lower.
    d = dask_settings({"group_limits": {"big": {"worker_cores": 16}}, "limits": {"max_cores": 32}})
    assert d.limits_for(["big"]).worker_cores == 16


# --- the binding limit ------------------------------------------------------------------


@pytest.mark.parametrize("limits, cores, memory, expected, reason", [
    (Limits(max_workers=3), 1, GiB, 3, "max_workers 3"),
    (Limits(max_workers=8, max_cores=8), 3, GiB, 2, "max_cores 8 at 3 cores per worker"),
    (Limits(max_workers=8, max_memory=10 * GiB), 1, 4 * GiB, 2, "max_memory 10 GiB at 4 GiB per worker"),
    (Limits(max_workers=8, max_cores=6, max_memory=8 * GiB), 2, 4 * GiB, 2, "max_memory 8 GiB at 4 GiB per worker"),
    (Limits(max_workers=8, max_cores=4, max_memory=16 * GiB), 2, 4 * GiB, 2, "max_cores 4 at 2 cores per worker"),
])
def test_max_workers_for_is_the_smallest_limit_and_names_it(limits, cores, memory, expected, reason):
    assert limits.max_workers_for(cores, memory) == (expected, reason)


# --- the gateway's configuration --------------------------------------------------------

PORTS = {"api": 40001, "http": 40002, "tcp": 40003}


def gateway_config_for(local: dict, data_dir="/srv/hf/state") -> dict:
    settings = Settings(source="/etc/hf/hubforge.yaml", local=local, dask={"limits": {"max_workers": 4}})
    return gateway_config(settings, DaskSettings.from_settings(settings), data_dir=Path(data_dir),
                          ports=PORTS)


def test_gateway_config():
    cfg = gateway_config_for({"isolation": "shared"})
    assert cfg["HubForgeGateway"] == {"address": "127.0.0.1:40001", "reconcile_period": 15, "stop_with_server": True}
    assert cfg["Proxy"] == {"address": "127.0.0.1:40002", "tcp_address": "127.0.0.1:40003"}
    backend = cfg["HubForgeLocalBackend"]
    assert backend["isolation"] == "shared"
    assert backend["system_user_prefix"] == "hf-"
    assert backend["dask_settings"] == {"limits": {"max_workers": 4}}
    assert backend["settings_source"] == "/etc/hf/hubforge.yaml"
    assert backend["cgroup_prefix"] == "dask-" + hashlib.sha256(b"/srv/hf/state").hexdigest()[:8]
    assert cfg["HubForgeClusterConfig"]["scheduler_cmd"][-1] == "scheduler"
    assert cfg["HubForgeClusterConfig"]["worker_cmd"][-1] == "worker"
    assert cfg["HubForgeClusterConfig"]["scheduler_cmd"][:-1] == cfg["HubForgeClusterConfig"]["worker_cmd"][:-1]
    assert cfg["HubForgeAuthenticator"] == {"jupyterhub_service_name": "dask-gateway"}
    json.dumps(cfg)  # it travels in an environment variable


def test_cgroup_prefix_is_stable_per_data_dir():
    prefix = lambda d: gateway_config_for({}, d)["HubForgeLocalBackend"]["cgroup_prefix"]  # noqa: E731
    assert prefix("/srv/a") == prefix("/srv/a")
    assert prefix("/srv/a") != prefix("/srv/b")


def test_gateway_config_is_what_the_backend_reads():
    cfg = gateway_config_for({"isolation": "shared", "system_user_prefix": "jh-"})
    backend = HubForgeLocalBackend(config=Config(cfg), fork=False)
    assert (backend.isolation, backend.system_user_prefix, backend.settings_source) == (
        "shared", "jh-", "/etc/hf/hubforge.yaml")
    assert backend.cgroup_prefix == cfg["HubForgeLocalBackend"]["cgroup_prefix"]
    assert backend.limits_for(User("alice")).max_workers == 4
    cluster_config = HubForgeClusterConfig(config=Config(cfg))
    assert cluster_config.worker_cmd == cfg["HubForgeClusterConfig"]["worker_cmd"]


@pytest.mark.parametrize("euid, wanted, expected", [
    (0, None, "system-users"),
    (0, "auto", "system-users"),
    (0, "system-users", "system-users"),
    (0, "shared", "shared"),
    (1000, None, "shared"),
    (1000, "system-users", "shared"),  # cannot switch users without root
])
def test_isolation(monkeypatch, euid, wanted, expected):
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    settings = Settings(local={} if wanted is None else {"isolation": wanted})
    assert isolation_for(settings) == expected
    assert gateway_config_for(settings.local)["HubForgeLocalBackend"]["isolation"] == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="the default isolation as root")
def test_default_isolation_as_root_is_system_users():
    assert gateway_config_for({})["HubForgeLocalBackend"]["isolation"] == "system-users"


# --- the hub service --------------------------------------------------------------------


def configure(tmp_path, **kw):
    c = Config()
    c.Spawner.environment = {"KEEP": "me"}
    services = [{"name": "idle-culler"}]
    roles = []
    kw.setdefault("bind_url", HOSTILE_BIND_URL)
    settings = Settings(source=str(tmp_path / "hubforge.yaml"), data_dir="state", **kw)
    configure_dask_service(c, settings, services, roles)
    return c, services[1:], roles


def test_configure_dask_service(tmp_path):
    c, services, roles = configure(tmp_path, dask={"limits": {"max_workers": 3}})
    [service] = services
    front = urlparse(service.pop("url"))
    assert front.hostname == "127.0.0.1" and 0 < front.port < 65536
    config = json.loads(service.pop("environment").pop("HUBFORGE_DASK_CONFIG"))
    info = service.pop("info")
    assert service == {
        "name": "dask-gateway",
        "command": [sys.executable, "-m", "hubforge.dask"],
        "oauth_no_confirm": True,
        "display": True,
    }
    tcp = int(info["proxy_address"].rsplit(":", 1)[1])
    assert info["proxy_address"] == f"gateway://127.0.0.1:{tcp}"
    assert info["address"] == "http://127.0.0.1:8000/@/space%20word/services/dask-gateway"
    assert config["Proxy"]["tcp_address"] == f"127.0.0.1:{tcp}"
    assert config["HubForgeLocalBackend"]["dask_settings"] == {"limits": {"max_workers": 3}}
    state = (tmp_path / "state").resolve()
    assert config["HubForgeLocalBackend"]["cgroup_prefix"] == "dask-" + hashlib.sha256(str(state).encode()).hexdigest()[:8]

    assert roles[0] == {"name": "dask-gateway", "scopes": ["list:users", "read:users:name", "read:servers"],
                        "services": ["dask-gateway"]}
    by_name = {r["name"]: r for r in roles}
    assert sorted(by_name) == ["dask-gateway", "server", "user"]
    for name in ("user", "server"):
        assert ACCESS in by_name[name]["scopes"] and LOOKUP in by_name[name]["scopes"]
    assert "self" in by_name["user"]["scopes"]
    # JupyterHub's own server scopes are kept next to the gateway's.
    assert "access:servers!server" in by_name["server"]["scopes"]

    env = dict(c.Spawner.environment)
    options = env.pop("DASK_GATEWAY__CLUSTER__OPTIONS")
    assert env == {
        "KEEP": "me",
        "DASK_GATEWAY__ADDRESS": "http://127.0.0.1:8000/@/space%20word/services/dask-gateway",
        "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://127.0.0.1:{tcp}",
        "DASK_GATEWAY__PUBLIC_ADDRESS": "/@/space%20word/services/dask-gateway",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }
    assert callable(options) and options is origin_options
    assert ast.literal_eval(options(SimpleNamespace(name="work"))) == {"origin": "server:work"}
    assert ast.literal_eval(options(SimpleNamespace(name=""))) == {"origin": "server:"}


def test_the_service_config_starts_a_backend(tmp_path):
    _, [service], _ = configure(tmp_path, local={"isolation": "shared"})
    cfg = Config(json.loads(service["environment"]["HUBFORGE_DASK_CONFIG"]))
    backend = HubForgeLocalBackend(config=cfg, fork=False)
    assert backend.isolation == "shared"
    assert backend.settings_source == str(tmp_path / "hubforge.yaml")


def test_containers_mode_runs_the_service_too(tmp_path):
    _, services, _ = configure(tmp_path, mode="containers", bind_url="http://0.0.0.0:8000/")
    assert [s["name"] for s in services] == ["dask-gateway"]
    assert services[0]["info"]["address"] == "http://127.0.0.1:8000/services/dask-gateway"


@pytest.mark.parametrize("kw", [{"mode": "kubernetes"}, {"dask": {"enabled": False}}])
def test_no_service(tmp_path, kw):
    c, services, roles = configure(tmp_path, **kw)
    assert services == [] and roles == []
    assert c.Spawner.environment == {"KEEP": "me"}


def test_bad_dask_settings_stop_the_hub_config(tmp_path):
    with pytest.raises(SettingsError, match=r"hubforge\.yaml: unknown setting 'dask\.workers'"):
        configure(tmp_path, dask={"workers": 4})


# --- the backend: limits and options ----------------------------------------------------

LIMITS = {"limits": {"max_workers": 6, "max_cores": 8, "max_memory": "16 G", "worker_cores": 2, "worker_memory": "4 G"},
          "group_limits": {"big": {"max_workers": 32, "max_cores": 32, "max_memory": "64 G", "worker_cores": 4}}}


@pytest.fixture
def backend():
    return HubForgeLocalBackend(dask_settings=LIMITS, settings_source="x.yaml", fork=False)


ALICE = User("alice")
BIG = User("bob", groups=["big"])
WHERE = r" \(set by the admin in dask\.limits, x\.yaml\)$"


def test_backend_constructs_without_a_gateway(backend):
    assert backend.launcher is None
    assert backend.isolation == "shared"
    assert backend.limits_for(ALICE).max_workers == 6
    assert backend.limits_for(BIG).max_workers == 32


@pytest.mark.parametrize("user, request_, message", [
    (ALICE, {"worker_cores": 3}, r"worker_cores=3 is over your limit of 2 cores per worker"),
    (ALICE, {"worker_memory": 4.5}, r"worker_memory=4\.5 GiB is over your limit of 4 GiB per worker"),
    (ALICE, {"workers": 7}, r"workers=7 is over your limit of 6 workers per cluster \(max_workers 6\)"),
    (ALICE, {"adapt_maximum": 7}, r"adapt_maximum=7 is over your limit of 6 workers per cluster"),
    (ALICE, {"adapt_minimum": 7, "adapt_maximum": 9}, r"adapt_maximum=9 is over your limit of 6 workers"),
    (ALICE, {"workers": 5, "worker_cores": 2},
     r"workers=5 is over your limit of 4 workers per cluster \(max_cores 8 at 2 cores per worker\)"),
    (ALICE, {"workers": 5, "worker_memory": 4},
     r"workers=5 is over your limit of 4 workers per cluster \(max_memory 16 GiB at 4 GiB per worker\)"),
    (BIG, {"worker_cores": 5}, r"worker_cores=5 is over your limit of 4 cores per worker"),
    (BIG, {"workers": 17, "worker_memory": 4}, r"workers=17 is over your limit of 16 workers per cluster"),
])
def test_requests_over_a_limit_are_refused_with_the_limit(backend, user, request_, message):
    with pytest.raises(PublicException, match="^" + message + r".*" + WHERE):
        backend.check_request(user, request_)


@pytest.mark.parametrize("user, request_", [
    (ALICE, {}),
    (ALICE, {"workers": 6}),
    (ALICE, {"workers": 4, "worker_cores": 2, "worker_memory": 4}),
    (ALICE, {"adapt_minimum": 1, "adapt_maximum": 6}),
    (BIG, {"worker_cores": 4, "workers": 8}),
    (BIG, {"workers": 16, "worker_memory": 4}),
    (ALICE, "not a dict"),  # dask-gateway's parser reports that
])
def test_requests_within_the_limits_pass(backend, user, request_):
    assert backend.check_request(user, request_) is None


def test_check_scale(backend):
    cluster = SimpleNamespace(config={"cluster_max_workers": 4, "max_workers_reason": "max_workers 4"})
    backend.check_scale(cluster, 4)
    backend.check_scale(cluster, 0)
    with pytest.raises(PublicException, match=r"^a cluster of 5 workers is over your limit of 4 workers per "
                                              r"cluster \(max_workers 4; set by the admin in dask\.limits, x\.yaml\)$"):
        backend.check_scale(cluster, 5)
    unbounded = SimpleNamespace(config={})
    backend.check_scale(unbounded, 1000)


def test_cluster_options_are_bounded_by_the_users_limits(backend):
    def spec(user):
        return {f["field"]: (f["default"], f["spec"]) for f in backend.cluster_options_for(user).get_specification()}

    assert spec(ALICE) == {
        "workers": (0, {"type": "int", "min": 0, "max": 6}),
        "adapt_minimum": (0, {"type": "int", "min": 0, "max": 6}),
        "adapt_maximum": (0, {"type": "int", "min": 0, "max": 6}),
        "worker_cores": (1, {"type": "int", "min": 1, "max": 2}),
        "worker_memory": (2.0, {"type": "float", "min": 0.25, "max": 4.0}),
        "origin": ("", {"type": "string"}),
    }
    big = spec(BIG)
    assert big["workers"][1]["max"] == 32 and big["worker_cores"][1]["max"] == 4
    # The default cluster_options is this function, per user.
    assert backend.cluster_options == backend.cluster_options_for


async def test_process_cluster_options(backend):
    options, config = await backend.process_cluster_options(
        ALICE, {"workers": 3, "worker_cores": 2, "worker_memory": 3, "origin": "server:work"})
    assert (config.initial_workers, config.adapt_maximum) == (3, 0)
    assert (config.worker_cores, config.worker_threads, config.worker_memory) == (2, 2, 3 * GiB)
    assert config.cluster_max_workers == 4
    assert config.max_workers_reason == "max_cores 8 at 2 cores per worker"
    assert config.origin == "server:work" and config.idle_timeout == 1800

    _, config = await backend.process_cluster_options(ALICE, {"adapt_minimum": 1, "adapt_maximum": 5})
    assert (config.initial_workers, config.adapt_minimum, config.adapt_maximum) == (0, 1, 5)
    assert (config.cluster_max_workers, config.max_workers_reason) == (6, "max_workers 6")

    with pytest.raises(PublicException, match=r"^workers=7 is over your limit"):
        await backend.process_cluster_options(ALICE, {"workers": 7})
    with pytest.raises(PublicException, match=r"Unknown fields \['gpus'\]"):
        await backend.process_cluster_options(ALICE, {"gpus": 1})


# --- the backend: processes -------------------------------------------------------------


async def fake_cluster(backend, tmp_path, request: dict, username="alice"):
    _, config = await backend.process_cluster_options(User(username), request)
    return SimpleNamespace(username=username, name="c0ffee", token="cluster-token",
                           config=FrozenAttrDict(config.to_dict()), state={"workdir": str(tmp_path)},
                           scheduler_address="tls://127.0.0.1:1")


@pytest.fixture
def shared_backend(backend):
    backend.api_url = "http://127.0.0.1:9/api"
    return backend


async def test_env_of_a_fixed_size_cluster(shared_backend, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/home/hub")
    cluster = await fake_cluster(shared_backend, tmp_path, {"workers": 3})
    env = shared_backend.get_env(cluster)
    assert env["HUBFORGE_DASK_INITIAL_WORKERS"] == "3"
    assert "HUBFORGE_DASK_ADAPT_MIN" not in env and "HUBFORGE_DASK_ADAPT_MAX" not in env
    assert (env["USER"], env["HOME"]) == ("alice", "/home/hub")
    assert env["DASK_GATEWAY_API_URL"] == "http://127.0.0.1:9/api"
    assert env["DASK_GATEWAY_CLUSTER_NAME"] == "c0ffee"


async def test_env_of_an_adaptive_cluster(shared_backend, tmp_path):
    env = shared_backend.get_env(await fake_cluster(shared_backend, tmp_path, {"adapt_minimum": 1, "adapt_maximum": 5}))
    assert (env["HUBFORGE_DASK_ADAPT_MIN"], env["HUBFORGE_DASK_ADAPT_MAX"]) == ("1", "5")
    assert "HUBFORGE_DASK_INITIAL_WORKERS" not in env
    env = shared_backend.get_env(await fake_cluster(shared_backend, tmp_path, {"adapt_maximum": 2}))
    assert (env["HUBFORGE_DASK_ADAPT_MIN"], env["HUBFORGE_DASK_ADAPT_MAX"]) == ("0", "2")


async def test_env_of_an_empty_cluster(shared_backend, tmp_path):
    env = shared_backend.get_env(await fake_cluster(shared_backend, tmp_path, {}))
    assert not {"HUBFORGE_DASK_INITIAL_WORKERS", "HUBFORGE_DASK_ADAPT_MIN", "HUBFORGE_DASK_ADAPT_MAX"} & set(env)


async def test_system_users_run_as_the_users_account(tmp_path):
    # Hub user "body" with prefix "no" is the system account "nobody", which every Debian
    # machine has: no account to create.
    backend = HubForgeLocalBackend(dask_settings={}, isolation="system-users", system_user_prefix="no", fork=False)
    backend.api_url = "http://127.0.0.1:9/api"
    cluster = await fake_cluster(backend, tmp_path, {}, username="body")
    run_as = backend.run_as("body")
    assert (run_as.uid, run_as.home) == (65534, "/nonexistent")
    env = backend.get_env(cluster)
    assert (env["USER"], env["HOME"]) == ("nobody", "/nonexistent")
    with pytest.raises(PublicException, match=r"^user x-y has no system account \(nox-y\) on this machine yet"):
        backend.run_as("x-y")


async def test_commands(shared_backend, tmp_path):
    cluster = await fake_cluster(shared_backend, tmp_path, {"workers": 1})
    scheduler = shared_backend.get_scheduler_command(cluster)
    preloads = [scheduler[i + 1] for i, arg in enumerate(scheduler) if arg == "--preload"]
    assert preloads == ["dask_gateway.scheduler_preload", "hubforge.dask.scheduler_preload"]
    assert scheduler[:len(cluster.config.scheduler_cmd)] == cluster.config.scheduler_cmd

    worker = shared_backend.get_worker_command(cluster, "w-1", "tls://127.0.0.1:2")
    assert worker[-1] == "--no-nanny" and worker.count("--no-nanny") == 1
    assert "tls://127.0.0.1:2" in worker and worker[worker.index("--name") + 1] == "w-1"


# --- the notebook-side API --------------------------------------------------------------


def test_version_differences():
    mine = {"python": "3.11.2", "dask": "2026.3.0", "distributed": "2026.3.0", "numpy": "2.1.0"}
    theirs = {
        "scheduler": {"python": "3.12.1", "dask": "2026.3.0", "distributed": "2026.3.0"},
        "workers": {
            "tls://10.0.0.1:1": {"python": "3.11.9", "dask": "2026.1.0", "distributed": "2026.3.0"},
            # the raw get_versions() shape, packages nested
            "tls://10.0.0.2:1": {"packages": {"python": "3.11.2", "numpy": "1.26.4"}},
            "tls://10.0.0.3:1": {},
        },
    }
    assert hdask.version_differences(mine, theirs) == [
        "dask: this kernel has 2026.3.0, worker tls://10.0.0.1:1 has 2026.1.0",
        "numpy: this kernel has 2.1.0, worker tls://10.0.0.2:1 has 1.26.4",
        "python: this kernel has 3.11, the scheduler has 3.12",
    ]


def test_no_version_differences():
    mine = {"python": "3.11.2", "dask": "2026.3.0"}
    assert hdask.version_differences(mine, {"scheduler": dict(mine), "workers": {"w": {**mine, "python": "3.11.9"}}}) == []
    # a package one side lacks is not a difference
    assert hdask.version_differences(mine, {"scheduler": {"python": "3.11.0"}, "workers": {"w": {"pandas": "2"}}}) == []


def test_patch_level_python_is_ignored_in_distributeds_format():
    mine = {"python": "3.11.2.final.0"}
    theirs = {"scheduler": {"python": "3.11.9.final.0"}, "workers": {"w": {"python": "3.11.4.final.0"}}}
    assert hdask.version_differences(mine, theirs) == []


def test_gateway_needs_an_address(monkeypatch):
    monkeypatch.delenv("DASK_GATEWAY__ADDRESS", raising=False)
    with pytest.raises(hdask.DaskError, match="DASK_GATEWAY__ADDRESS is not set"):
        hdask.gateway()


def test_cluster_checks_its_arguments_before_any_request(monkeypatch):
    monkeypatch.setenv("DASK_GATEWAY__ADDRESS", "http://127.0.0.1:9")
    called = []
    monkeypatch.setattr(hdask, "gateway", lambda **kw: called.append(kw))
    with pytest.raises(hdask.DaskError, match=r"give workers or adaptive=\(minimum, maximum\), not both"):
        hdask.cluster(workers=2, adaptive=(1, 2))
    assert called == []


def test_shutdown_needs_a_target_or_all(monkeypatch):
    monkeypatch.setattr(hdask, "gateway", lambda **kw: pytest.fail("no request expected"))
    with pytest.raises(hdask.DaskError, match=r"give a cluster to stop, or all=True"):
        hdask.shutdown()
    with pytest.raises(hdask.DaskError, match=r"give a cluster to stop, or all=True"):
        hdask.shutdown("c0ffee", all=True)


def test_name():
    assert hdask._name("c0ffee") == "c0ffee"
    assert hdask._name(SimpleNamespace(cluster=SimpleNamespace(name="from-client"))) == "from-client"
    assert hdask._name(SimpleNamespace(name="from-cluster")) == "from-cluster"
    for bad in (42, SimpleNamespace(cluster=SimpleNamespace(name=None)), None):
        with pytest.raises(hdask.DaskError, match=r"expected a cluster name, a Client or a GatewayCluster, got "):
            hdask._name(bad)


def test_importing_hubforge_dask_is_cheap():
    code = ("import sys, hubforge.dask; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'dask_gateway')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# --- the scheduler preload --------------------------------------------------------------


class GatewayService:
    """Stands in for dask-gateway's scheduler service: a count and an async adapt."""

    def __init__(self):
        self.count = 0
        self.adapted = []

    async def adapt(self, minimum=None, maximum=None, active=True):
        self.adapted.append((minimum, maximum))


@pytest.fixture
def preload_env(monkeypatch):
    for name in ("HUBFORGE_DASK_INITIAL_WORKERS", "HUBFORGE_DASK_ADAPT_MIN", "HUBFORGE_DASK_ADAPT_MAX"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_preload_starts_the_initial_workers(preload_env):
    preload_env.setenv("HUBFORGE_DASK_INITIAL_WORKERS", "3")
    service = GatewayService()
    scheduler_preload.dask_setup(SimpleNamespace(services={"gateway": service}))
    assert (service.count, service.adapted) == (3, [])


def test_preload_without_anything_asked(preload_env):
    preload_env.setenv("HUBFORGE_DASK_INITIAL_WORKERS", "")
    service = GatewayService()
    scheduler_preload.dask_setup(SimpleNamespace(services={"gateway": service}))
    assert (service.count, service.adapted) == (0, [])


def test_preload_on_a_scheduler_without_the_gateway(preload_env):
    preload_env.setenv("HUBFORGE_DASK_INITIAL_WORKERS", "3")
    scheduler = SimpleNamespace(services={"dashboard": object()})
    assert scheduler_preload.dask_setup(scheduler) is None
    assert list(scheduler.services) == ["dashboard"]


@pytest.mark.parametrize("minimum, expected", [("2", 2), (None, 0)])
async def test_preload_turns_adaptive_on(preload_env, minimum, expected):
    preload_env.setenv("HUBFORGE_DASK_ADAPT_MAX", "5")
    preload_env.setenv("HUBFORGE_DASK_INITIAL_WORKERS", "9")  # adaptive wins
    if minimum is not None:
        preload_env.setenv("HUBFORGE_DASK_ADAPT_MIN", minimum)
    service = GatewayService()
    scheduler_preload.dask_setup(SimpleNamespace(services={"gateway": service}))
    assert service.count == expected
    for _ in range(3):
        if service.adapted:
            break
        await asyncio.sleep(0)
    assert service.adapted == [(expected, 5)]


@pytest.mark.parametrize("request_, message", [
    ({"adapt_minimum": 5, "adapt_maximum": 4}, "adapt_minimum 5 is more than adapt_maximum 4"),
    ({"adapt_minimum": 2}, "adapt_minimum needs adapt_maximum"),
])
def test_inconsistent_adaptive_bounds_are_refused(backend, request_, message):
    with pytest.raises(PublicException, match=message):
        backend.check_request(ALICE, request_)
    backend.check_request(ALICE, {"adapt_minimum": 2, "adapt_maximum": 4})


# --- mode containers --------------------------------------------------------------------


@pytest.fixture
def container_backend():
    from hubforge.dask.backend import HubForgeContainerBackend

    backend = HubForgeContainerBackend(
        dask_settings=LIMITS, settings_source="x.yaml", images=["hubforge/cpu:2026.11", "hubforge/cpu:2026.08"],
        gateway_tag="t4g", home_volume_template="home-{username}",
    )
    backend.api_url = "http://127.0.0.1:9/api"
    return backend


async def test_container_clusters_run_the_chosen_image_without_secrets_on_the_command_line(container_backend, tmp_path):
    from dask_gateway_server.backends.base import PublicException

    assert container_backend.launcher is None and container_backend.run_as("alice") is None
    spec = container_backend.cluster_options_for(ALICE).get_specification()
    image = next(f for f in spec if f["field"] == "image")
    assert image["spec"]["options"] == ["hubforge/cpu:2026.11", "hubforge/cpu:2026.08"]
    assert image["default"] == "hubforge/cpu:2026.11"
    with pytest.raises(PublicException, match="not a valid option for image"):
        await container_backend.process_cluster_options(ALICE, {"image": "evil/miner:latest"})

    cluster = await fake_cluster(container_backend, tmp_path, {"workers": 2, "worker_cores": 2,
                                                                 "worker_memory": 1.5, "image": "hubforge/cpu:2026.08"})
    cert = tmp_path / "dask.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n")
    env = {**container_backend.get_worker_env(cluster), "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(cert)}
    values = container_backend.container_env(env)
    assert values["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"].startswith("-----BEGIN CERTIFICATE-----")
    assert values["DASK_GATEWAY_API_TOKEN"] == "cluster-token"
    assert not {"PATH", "HOME", "USER", "VIRTUAL_ENV"} & set(values)  # the image's own, not the hub's

    argv = container_backend.get_worker_command(cluster, "w1")[2:]
    cmd = container_backend.container_command(cluster, "worker", "worker-w1", argv, values)
    joined = " ".join(cmd)
    assert "cluster-token" not in joined and "BEGIN" not in joined
    assert cmd[cmd.index("--env", cmd.index("--workdir")) + 1] in values
    assert "--network=host" in cmd and "--cpus=2" in cmd and f"--memory={int(1.5 * 2**30)}" in cmd
    assert "home-alice:/home/jovyan" in cmd
    assert "hubforge.dask.cluster=c0ffee" in cmd and "hubforge.dask.gateway=t4g" in cmd
    i = cmd.index("hubforge/cpu:2026.08")
    assert cmd[i + 1:i + 3] == ["dask", "worker"] and cmd[-1] == "--no-nanny"


def test_container_servers_send_their_image():
    class ContainerSpawner:  # the name is what origin_options looks at
        name = "gpu"
        resolved = SimpleNamespace(image="hubforge/gpu:2026.11")

    assert ast.literal_eval(origin_options(ContainerSpawner())) == {"origin": "server:gpu", "image": "hubforge/gpu:2026.11"}
    local = SimpleNamespace(name="", resolved=SimpleNamespace(image="x"))
    assert ast.literal_eval(origin_options(local)) == {"origin": "server:"}
