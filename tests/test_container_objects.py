"""What a profile becomes in the container backend, as Docker API arguments (no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubforge.profiles import load_profiles, resolve
from hubforge.spawners.container_objects import (
    home_volume_name,
    make_environment,
    make_host_config,
    make_volumes,
)
from hubforge.spawners.containers import ContainerSpawner, docker_url_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def profiles():
    return load_profiles([ROOT / "spawner_profiles"])


def test_cpu_profile_limits_and_network(profiles):
    r = resolve(profiles, {"profile": "cpu-large"}, "alice", [])
    assert make_host_config(r, [], "podman") == {
        "network_mode": "host",
        "mem_reservation": r.mem_guarantee,
        "cpu_shares": int(r.cpu_guarantee * 1024),
        "cpu_period": 100_000,
    }
    assert make_environment(r, []) == {}


def test_gpu_profile_requests_its_devices(profiles):
    r = resolve(profiles, {"profile": "gpu-1"}, "alice", [])
    assert make_host_config(r, ["1"], "podman")["devices"] == ["nvidia.com/gpu=1"]
    assert make_host_config(r, ["1"], "docker")["device_requests"] == [
        {"Driver": "nvidia", "DeviceIDs": ["1"], "Capabilities": [["gpu"]]}
    ]
    assert make_environment(r, ["1"]) == {"NVIDIA_VISIBLE_DEVICES": "1"}


def test_home_volume_names_are_escaped():
    assert home_volume_name("alice") == "hubforge-home-alice"
    assert home_volume_name("a b@c") == "hubforge-home-a-20b-40c"
    assert home_volume_name("bob", "homes-{username}") == "homes-bob"


def test_volumes_mount_home_and_profile_volumes(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(
        "profiles:\n"
        "  - slug: data\n"
        "    display_name: Data\n"
        "    image: hubforge/cpu:2026.11\n"
        "    volumes:\n"
        "      - {name: shared, mount_path: /home/jovyan/shared, host_path: /srv/shared, read_only: true}\n"
    )
    r = resolve(load_profiles([f]), {}, "alice", [])
    assert make_volumes(r, "hubforge-home-alice") == {
        "hubforge-home-alice": {"bind": "/home/jovyan", "mode": "rw"},
        "/srv/shared": {"bind": "/home/jovyan/shared", "mode": "ro"},
    }


def test_spawner_defaults_keep_servers_on_loopback():
    s = ContainerSpawner()
    assert s.ip == "127.0.0.1" and s.network_name == "host" and s.use_internal_ip
    assert s.remove is True, "stopping a server must remove its container"
    assert s.remove_home_on_user_delete is False, "homes outlive users unless an admin asks"


def test_docker_url(monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert docker_url_for("podman", "/data") == "unix:///data/podman.sock"
    assert docker_url_for("docker", "/data") == "unix:///var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert docker_url_for("podman", "/data") == "tcp://127.0.0.1:2375"
