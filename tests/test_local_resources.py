"""GPU allocation and cgroup limits of the local spawner, without a hub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubforge.exceptions import GPUUnavailable
from hubforge.spawners.cgroups import CgroupManager
from hubforge.spawners.gpus import GPUAllocator, detect_gpus, parse_gpu_setting


def test_gpu_setting_parsing():
    assert parse_gpu_setting("auto") is None
    assert parse_gpu_setting("none") == []
    assert parse_gpu_setting(" 0, 2 ") == ["0", "2"]


def test_gpus_are_exclusive_and_released():
    a = GPUAllocator(["0", "1", "2"])
    assert a.allocate("alice:x", 2) == ["0", "1"]
    assert a.allocate("alice:x", 2) == ["0", "1"], "same owner asking again keeps its devices"
    assert a.allocate("bob", 1) == ["2"]
    with pytest.raises(GPUUnavailable, match="only 0 of 3 are free"):
        a.allocate("carol", 1)
    assert a.release("alice:x") == ["0", "1"]
    assert a.allocate("carol", 2) == ["0", "1"]
    assert a.free == []


def test_gpu_requests_that_can_never_fit():
    with pytest.raises(GPUUnavailable, match="has no GPU"):
        GPUAllocator([]).allocate("alice", 1)
    with pytest.raises(GPUUnavailable, match="has only 2"):
        GPUAllocator(["0", "1"]).allocate("alice", 3)
    assert GPUAllocator([]).allocate("alice", 0) == []


def test_restore_after_hub_restart_keeps_devices_taken():
    a = GPUAllocator(["0", "1"])
    a.restore("alice", ["1", "7"])  # 7 no longer exists on this machine
    assert a.held_by("alice") == ["1"]
    assert a.allocate("bob", 1) == ["0"]


def test_detect_gpus_without_nvidia_smi():
    assert detect_gpus("no-such-nvidia-smi") == []


def test_detect_gpus_parses_nvidia_smi(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake.chmod(0o755)
    assert detect_gpus(str(fake)) == ["0", "1"]


needs_cgroups = pytest.mark.skipif(not CgroupManager().available, reason="needs root and a writable cgroup fs")


@needs_cgroups
def test_cgroup_limits_apply_and_kill_everything(tmp_path):
    cg = CgroupManager(parent="hubforge-test")
    groups = cg.create("t:one", cpu_limit=0.5, cpu_guarantee=0.25, mem_limit=256 * 2**20, mem_guarantee=None)
    try:
        # A parent that forks a child: both must end up in the group and both must die.
        proc = subprocess.Popen(
            [sys.executable, "-c", "import subprocess,time; subprocess.Popen(['sleep','300']); time.sleep(300)"],
            preexec_fn=lambda: CgroupManager.join(groups),
        )
        pids = []
        for _ in range(100):
            pids = cg.pids(groups)
            if len(pids) >= 2:
                break
            import time

            time.sleep(0.05)
        assert proc.pid in pids and len(pids) >= 2
        mem = Path(groups[0])
        limit = mem / ("memory.max" if cg.version == 2 else "memory.limit_in_bytes")
        assert int(limit.read_text()) == 256 * 2**20
        if cg.version == 1:
            assert int((Path(groups[1]) / "cpu.cfs_quota_us").read_text()) == 50_000
        assert cg.kill_and_remove(groups) == set()
        proc.wait(10)
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        assert not any(Path(g).exists() for g in groups)
    finally:
        for g in groups:
            if os.path.isdir(g):
                cg.kill_and_remove([g])
        for base in ({cg.root / "hubforge-test"} if cg.version == 2 else
                     {cg.root / c / "hubforge-test" for c in ("memory", "cpu")}):
            if base.is_dir():
                base.rmdir()
