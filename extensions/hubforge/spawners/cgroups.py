"""CPU and memory limits for local servers through Linux control groups.

Used when the hub runs as root and the cgroup file system is writable; works with
cgroup v2 (unified) and v1 (separate ``cpu`` and ``memory`` hierarchies). Each server
gets its own group, ``hubforge/<key>``; the server joins it between fork and exec, so
it and every kernel it starts are limited and can all be killed at stop, leaving no
orphaned process. Without root or a writable cgroup file system the limits are only
advertised to the server (``MEM_LIMIT``/``CPU_LIMIT``) — the documented best effort.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


class CgroupManager:
    """Creates, fills, kills and removes one control group per server."""

    def __init__(self, root: Path = CGROUP_ROOT, parent: str = "hubforge"):
        self.root = Path(root)
        self.parent = parent

    @property
    def version(self) -> int | None:
        """2 for the unified hierarchy, 1 for v1 controllers, None if unusable."""
        if os.geteuid() != 0:
            return None
        if (self.root / "cgroup.controllers").exists():
            return 2
        if (self.root / "memory").is_dir() and (self.root / "cpu").is_dir():
            return 1
        return None

    @property
    def available(self) -> bool:
        return self.version is not None and os.access(self.root, os.W_OK)

    def paths(self, key: str) -> list[Path]:
        name = _safe(key)
        if self.version == 2:
            return [self.root / self.parent / name]
        return [self.root / c / self.parent / name for c in ("memory", "cpu")]

    def create(self, key: str, cpu_limit: float | None, cpu_guarantee: float | None,
               mem_limit: int | None, mem_guarantee: int | None) -> list[str]:
        """Make the group and write its limits; returns the group directories."""
        version = self.version
        if version == 2:
            parent = self.root / self.parent
            parent.mkdir(exist_ok=True)
            # Children can only use controllers the parent delegates.
            _write(self.root / "cgroup.subtree_control", "+cpu +memory", missing_ok=True)
            _write(parent / "cgroup.subtree_control", "+cpu +memory", missing_ok=True)
            group = parent / _safe(key)
            group.mkdir(exist_ok=True)
            if mem_limit:
                _write(group / "memory.max", str(mem_limit))
                _write(group / "memory.swap.max", "0", missing_ok=True)
            if mem_guarantee:
                _write(group / "memory.low", str(mem_guarantee), missing_ok=True)
            if cpu_limit:
                _write(group / "cpu.max", f"{int(cpu_limit * CPU_PERIOD_US)} {CPU_PERIOD_US}")
            if cpu_guarantee:
                _write(group / "cpu.weight", str(max(1, min(10000, int(cpu_guarantee * 100)))))
            return [str(group)]
        mem_group, cpu_group = self.paths(key)
        for g in (mem_group, cpu_group):
            g.mkdir(parents=True, exist_ok=True)
        if mem_limit:
            _write(mem_group / "memory.limit_in_bytes", str(mem_limit))
        if mem_guarantee:
            _write(mem_group / "memory.soft_limit_in_bytes", str(mem_guarantee), missing_ok=True)
        if cpu_limit:
            _write(cpu_group / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu_group / "cpu.cfs_quota_us", str(int(cpu_limit * CPU_PERIOD_US)))
        if cpu_guarantee:
            _write(cpu_group / "cpu.shares", str(max(2, int(cpu_guarantee * 1024))))
        return [str(mem_group), str(cpu_group)]

    @staticmethod
    def join(groups: list[str], pid: int | None = None) -> None:
        """Move `pid` (default: this process) into the groups; safe to call in preexec_fn."""
        pid = pid or os.getpid()
        for g in groups:
            with open(os.path.join(g, "cgroup.procs"), "w") as f:
                f.write(str(pid))

    @staticmethod
    def pids(groups: list[str]) -> set[int]:
        found: set[int] = set()
        for g in groups:
            try:
                found.update(int(p) for p in Path(g, "cgroup.procs").read_text().split())
            except (FileNotFoundError, ValueError):
                pass
        return found

    def kill_and_remove(self, groups: list[str], timeout: float = 5.0) -> set[int]:
        """SIGKILL whatever is left in the groups, then remove them. Returns pids still alive."""
        deadline = time.monotonic() + timeout
        left = self.pids(groups)
        while left and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
            left = self.pids(groups)
        for g in groups:
            try:
                os.rmdir(g)
            except FileNotFoundError:
                pass
            except OSError:
                if not left:
                    raise
        return left


def _write(path: Path, value: str, missing_ok: bool = False) -> None:
    try:
        path.write_text(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
    except OSError:
        if not missing_ok:
            raise
