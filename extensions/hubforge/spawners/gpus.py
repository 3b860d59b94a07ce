"""Exclusive GPU allocation for local servers.

A GPU server gets whole physical devices, handed to it through ``CUDA_VISIBLE_DEVICES``,
and no other server gets them until it stops. The allocator lives in the hub process
(one per device list), so it is the single place that knows who holds what; spawner
state records each server's devices so a restarted hub can re-register them.
"""

from __future__ import annotations

import shutil
import subprocess
import threading

from ..exceptions import GPUUnavailable

NVIDIA_SMI_TIMEOUT = 10


def detect_gpus(nvidia_smi: str = "nvidia-smi") -> list[str]:
    """Device indices reported by ``nvidia-smi``, or [] when there is no NVIDIA GPU."""
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def parse_gpu_setting(value: str) -> list[str] | None:
    """Turn the ``gpus`` setting into a device list; None means "detect"."""
    value = (value or "").strip()
    if value in ("", "auto"):
        return None
    if value == "none":
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


class GPUAllocator:
    """Hands out whole devices, exclusively, to owners ("user:server" keys)."""

    def __init__(self, devices: list[str]):
        self.devices = list(devices)
        self._owners: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    @property
    def free(self) -> list[str]:
        taken = {d for ds in self._owners.values() for d in ds}
        return [d for d in self.devices if d not in taken]

    def held_by(self, owner: str) -> list[str]:
        return list(self._owners.get(owner, []))

    def allocate(self, owner: str, count: int) -> list[str]:
        """Reserve `count` devices for `owner`; raises GPUUnavailable when impossible."""
        if count <= 0:
            return []
        with self._lock:
            if owner in self._owners:
                return list(self._owners[owner])
            if not self.devices:
                raise GPUUnavailable(
                    f"this profile needs {count} GPU(s) but this machine has no GPU"
                )
            if count > len(self.devices):
                raise GPUUnavailable(
                    f"this profile needs {count} GPU(s) but this machine has only {len(self.devices)}"
                )
            free = self.free
            if len(free) < count:
                raise GPUUnavailable(
                    f"this profile needs {count} GPU(s) but only {len(free)} of "
                    f"{len(self.devices)} are free; stop a GPU server or try again later"
                )
            self._owners[owner] = free[:count]
            return list(self._owners[owner])

    def restore(self, owner: str, devices: list[str]) -> None:
        """Re-register devices recorded in spawner state (after a hub restart)."""
        with self._lock:
            self._owners[owner] = [d for d in devices if d in self.devices]

    def release(self, owner: str) -> list[str]:
        with self._lock:
            return self._owners.pop(owner, [])


_ALLOCATORS: dict[tuple, GPUAllocator] = {}


def allocator_for(setting: str) -> GPUAllocator:
    """The hub-wide allocator for a ``gpus`` setting, shared by every backend."""
    devices = parse_gpu_setting(setting)
    key = ("auto",) if devices is None else tuple(devices)
    if key not in _ALLOCATORS:
        _ALLOCATORS[key] = GPUAllocator(detect_gpus() if devices is None else devices)
    return _ALLOCATORS[key]
