"""The embedded default backend: each user's server is a local process.

Built on JupyterHub's ``LocalProcessSpawner``. On top of it, from the resolved profile:

* isolation: with ``system-users`` (the default when the hub runs as root) every hub user
  gets a system user ``hf-<name>`` and an owner-only home; with ``shared`` every server
  runs as the hub's user with a home under the data directory;
* limits: a cgroup per server with the profile's CPU and memory limits (root only),
  which also lets ``stop`` kill every process the server started;
* GPUs: whole devices from a hub-wide allocator, exposed through ``CUDA_VISIBLE_DEVICES``
  and freed on stop or on a failed start;
* volumes: each profile volume with a ``host_path`` appears as ``~/<name>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import re
import shutil
import sys
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from tornado import web
from traitlets import Bool, Enum, Unicode, default

from .base import ProfileSpawnerMixin
from .cgroups import CgroupManager
_SYSTEM_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")


def system_user_name(prefix: str, hub_user: str) -> str:
    """The system account of a hub user: ``<prefix><name>``, hashed if unsafe or long.

    One mapping for everything that runs as the user: the local spawner, and the Dask
    gateway's schedulers and workers (`hubforge.dask.backend`).
    """
    name = prefix + hub_user.lower()
    if _SYSTEM_NAME.match(name) and name[len(prefix):] == hub_user:
        return name
    safe = re.sub(r"[^a-z0-9]", "", hub_user.lower())[:16]
    digest = hashlib.sha256(hub_user.encode()).hexdigest()[:8]
    return f"{prefix}{safe}-{digest}"


async def ensure_system_account(account: str, home: str, hub_user: str) -> pwd.struct_passwd:
    """Create the system account `account` of `hub_user` if missing (``useradd``), with an
    owner-only home; returns its passwd entry. Needs root. Raises OSError with the reason.

    Shared by the local spawner and the jobs service, which runs scheduled notebooks as
    the user even if they never started a server.
    """
    try:
        pwd.getpwnam(account)
    except KeyError:
        proc = await asyncio.create_subprocess_exec(
            "useradd", "--create-home", "--home-dir", home, "--shell", "/bin/bash",
            "--user-group", "--comment", f"HubForge user {hub_user}", account,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        if proc.returncode != 0:
            try:  # a concurrent start created it first
                pwd.getpwnam(account)
            except KeyError:
                raise OSError(f"could not create system user {account}: {out.decode().strip()}") from None
    pw = pwd.getpwnam(account)
    os.makedirs(pw.pw_dir, exist_ok=True)
    os.chown(pw.pw_dir, pw.pw_uid, pw.pw_gid)
    os.chmod(pw.pw_dir, 0o700)
    return pw


class LocalSpawner(ProfileSpawnerMixin, LocalProcessSpawner):
    """Runs a user's server as a local process, shaped by their chosen profile."""

    isolation = Enum(
        ["auto", "system-users", "shared"],
        default_value="auto",
        help="""How servers of different users are kept apart.

        ``system-users``: one system user per hub user, owner-only homes (needs root).
        ``shared``: all servers run as the hub's user (no isolation; for one person's
        laptop). ``auto`` (default): ``system-users`` as root, else ``shared``.
        Example: ``c.LocalSpawner.isolation = "shared"``.
        """,
    ).tag(config=True)

    system_user_prefix = Unicode(
        "hf-",
        help="""Prefix for the system users made for hub users, e.g. ``hf-alice``.

        Default ``hf-``. Example: ``c.LocalSpawner.system_user_prefix = "jh-"``.
        """,
    ).tag(config=True)

    home_root = Unicode(
        "/home",
        help="""Directory under which system users' homes are created (``system-users``).""",
    ).tag(config=True)

    shared_home_root = Unicode(
        help="""Directory under which homes are created in ``shared`` isolation.

        Default: ``<data_dir>/homes`` as set by the hub config.
        """,
    ).tag(config=True)

    use_cgroups = Bool(
        True,
        help="""Enforce CPU and memory limits with cgroups when running as root.

        Default True. Without root (or with this off) limits are only advertised to the
        server as ``CPU_LIMIT``/``MEM_LIMIT`` (best effort).
        """,
    ).tag(config=True)

    cgroup_parent = Unicode(
        "hubforge",
        help="Name of the parent cgroup under which each server gets its own group.",
    ).tag(config=True)

    @default("cmd")
    def _default_cmd(self):
        return [os.path.join(os.path.dirname(sys.executable), "jupyterhub-singleuser")]

    @default("default_url")
    def _default_default_url(self):
        return "/lab"

    @default("shared_home_root")
    def _default_shared_home_root(self):
        return os.path.join(os.path.expanduser("~"), ".hubforge-homes")

    # --- isolation --------------------------------------------------------------------

    @property
    def effective_isolation(self) -> str:
        if self.isolation != "auto":
            return self.isolation
        return "system-users" if os.geteuid() == 0 else "shared"

    @property
    def system_user(self) -> str:
        """The system user for this hub user: ``<prefix><name>``, hashed if unsafe or long."""
        return system_user_name(self.system_user_prefix, self.user.name)

    @property
    def home(self) -> str:
        if self.effective_isolation == "system-users":
            return os.path.join(self.home_root, self.system_user)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.user.name)
        return os.path.join(self.shared_home_root, safe)

    async def ensure_user(self) -> None:
        """Create the system user (or shared home) with an owner-only home directory."""
        if self.effective_isolation == "system-users":
            if os.geteuid() != 0:
                raise web.HTTPError(
                    500, "system-users isolation needs the hub to run as root; set isolation: shared"
                )
            try:
                pw = await ensure_system_account(self.system_user, self.home, self.user.name)
            except OSError as e:
                raise web.HTTPError(500, str(e)) from None
            self._check_environment_readable(pw)
        else:
            os.makedirs(self.home, mode=0o700, exist_ok=True)
            os.chmod(self.home, 0o700)
        self._link_volumes()

    def _check_environment_readable(self, pw) -> None:
        """Fail fast, naming the path, when the system user cannot run the server command."""
        cmd = shutil.which(self.cmd[0]) or self.cmd[0]
        for path in (cmd, os.path.realpath(sys.executable)):
            p = Path(path)
            for parent in [*reversed(p.parents), p]:
                st = parent.stat()
                if not st.st_mode & 0o001 and not (st.st_uid == pw.pw_uid):
                    raise web.HTTPError(
                        500,
                        f"system user {self.system_user} cannot reach {parent} "
                        f"(needed for {path}); install HubForge where other users can read it "
                        "(e.g. a venv from /usr/bin/python3 outside /root) or use isolation: shared",
                    )

    def _link_volumes(self) -> None:
        """Show each host-path volume of the profile as ``~/<name>``."""
        for vol in self.resolved.volumes if self.resolved else ():
            if not getattr(vol, "host_path", None):
                continue
            link = os.path.join(self.home, vol.name)
            if os.path.islink(link) or not os.path.exists(link):
                if os.path.islink(link):
                    os.unlink(link)
                os.symlink(vol.host_path, link)

    def make_preexec_fn(self, name):
        groups = list(self._cgroups)
        become = set_user_setuid(self.system_user) if self.effective_isolation == "system-users" else None
        home = self.home

        def preexec():
            if groups:
                CgroupManager.join(groups)
            if become is not None:
                become()
            else:
                os.chdir(home)

        return preexec

    def user_env(self, env):
        if self.effective_isolation == "system-users":
            env["USER"] = self.system_user
            env["SHELL"] = "/bin/bash"
        else:
            env["USER"] = self.user.name
        env["HOME"] = self.home
        return env

    def get_env(self):
        env = super().get_env()
        bindir = os.path.dirname(sys.executable)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", os.defpath)
        env.update(self.profile_env())
        env["CUDA_VISIBLE_DEVICES"] = ",".join(self.held_gpus)
        return env

    def get_args(self):
        args = super().get_args()
        if self.effective_isolation == "shared" and os.geteuid() == 0:
            args.append("--ServerApp.allow_root=True")
        return args

    # --- GPUs and cgroups -------------------------------------------------------------

    @property
    def _cgroups(self) -> list[str]:
        return getattr(self, "_hf_cgroups", [])

    @property
    def cgroup_manager(self) -> CgroupManager:
        return CgroupManager(parent=self.cgroup_parent)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self):
        self.reset_progress()
        self.resolved = r = self.validated_profile()
        self.emit(f"Profile {r.display_name} ({r.slug})", 10)
        try:
            self.acquire_gpus(r)
            await self.ensure_user()
            self.emit(f"Home directory {self.home}", 30)
            if self.use_cgroups and self.cgroup_manager.available and (r.cpu_limit or r.mem_limit):
                self._hf_cgroups = await asyncio.to_thread(
                    self.cgroup_manager.create, self.key, r.cpu_limit, r.cpu_guarantee,
                    r.mem_limit, r.mem_guarantee,
                )
                self.emit("Applied CPU and memory limits", 40)
            ip, port = await super().start()
            self.emit(f"Started JupyterLab (pid {self.pid}); waiting for it to answer", 60)
            await self.wait_listening(ip, port)
            return ip, port
        except BaseException:
            await self._release()
            raise

    async def stop(self, now=False):
        await super().stop(now=now)
        await self._release()

    async def _release(self) -> None:
        """Free everything the server held: leftover processes, cgroups, GPUs."""
        if self._cgroups:
            left = await asyncio.to_thread(self.cgroup_manager.kill_and_remove, self._cgroups)
            if left:
                self.log.warning("%s: processes %s survived SIGKILL", self.key, sorted(left))
            self._hf_cgroups = []
        self.release_gpus()

    def get_state(self):
        state = super().get_state()
        if self._cgroups:
            state["cgroups"] = self._cgroups
        return state

    def load_state(self, state):
        super().load_state(state)
        self._hf_cgroups = list(state.get("cgroups", []))
