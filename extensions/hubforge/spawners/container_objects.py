"""Pure builders for the container backend: profile in, Docker API arguments out.

Kept apart from `containers.ContainerSpawner` (which talks to the engine) so that what a
profile becomes — limits, GPU requests, volumes, networking — is tested by comparing
dicts, with no engine running.
"""

from __future__ import annotations

import re

from ..profiles import ResolvedProfile

#: Where the image's user (jovyan) keeps their files; the home volume is mounted here.
HOME = "/home/jovyan"
CPU_PERIOD_US = 100_000


def home_volume_name(username: str, template: str = "hubforge-home-{username}") -> str:
    """A Docker-safe volume name for a user's persistent home."""
    safe = re.sub(r"[^a-zA-Z0-9_.-]", lambda m: f"-{ord(m.group()):x}", username)
    return template.format(username=safe)


def make_volumes(r: ResolvedProfile, home_volume: str) -> dict[str, dict]:
    """DockerSpawner ``volumes``: the home volume plus the profile's volumes."""
    volumes = {home_volume: {"bind": HOME, "mode": "rw"}}
    for vol in r.volumes:
        source = vol.host_path or vol.claim_name
        volumes[source] = {"bind": vol.mount_path, "mode": "ro" if vol.read_only else "rw"}
    return volumes


def make_host_config(r: ResolvedProfile, gpus: list[str], engine: str) -> dict:
    """Extra ``host_config`` for the container: host network, limits' guarantees, GPUs.

    The server shares the host's network and listens on 127.0.0.1 only, on a port of
    its own, so nothing is published beyond loopback. Limits themselves go through
    DockerSpawner's ``mem_limit``/``cpu_limit``; guarantees become a memory reservation
    and CPU shares.
    """
    config: dict = {"network_mode": "host"}
    if r.mem_guarantee:
        config["mem_reservation"] = r.mem_guarantee
    if r.cpu_guarantee:
        config["cpu_shares"] = max(2, int(r.cpu_guarantee * 1024))
    if r.cpu_limit:
        config["cpu_period"] = CPU_PERIOD_US
    if gpus:
        if engine == "podman":
            # podman maps GPUs through CDI device names (nvidia-ctk cdi generate).
            config["devices"] = [f"nvidia.com/gpu={g}" for g in gpus]
        else:
            config["device_requests"] = [
                {"Driver": "nvidia", "DeviceIDs": list(gpus), "Capabilities": [["gpu"]]}
            ]
    return config


def make_environment(r: ResolvedProfile, gpus: list[str]) -> dict[str, str]:
    """Variables only the container backend sets (the profile's own come from the mixin)."""
    env = {}
    if gpus:
        # Inside the container the granted devices are the only ones, numbered from 0;
        # NVIDIA's runtime hooks read this to expose them.
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env
