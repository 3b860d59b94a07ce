"""HubForge's dask-gateway backend for one machine: local processes, as the user, fast.

`HubForgeLocalBackend` is dask-gateway's `LocalBackend` with four changes:

* **Who runs it**: with ``system-users`` isolation the scheduler and workers run as the
  hub user's system account, the one the local spawner runs their server as
  (`hubforge.spawners.local.system_user_name`), so a cluster reads and writes what the
  user's notebook can and nothing else. With ``shared`` isolation they run as the hub's
  user, like the servers.
* **How fast**: processes are forked from a preloaded forkserver
  (`hubforge.dask.launcher`) instead of started as new interpreters, and a cluster's
  initial workers are requested by the scheduler's first heartbeat
  (`hubforge.dask.scheduler_preload`).
* **Limits**: cluster options are bounded by the user's limits
  (`hubforge.dask.settings`); a request over a limit is refused with a message that
  states it, and so is a cluster over ``max_clusters``. As root, each cluster gets a
  control group sized to its limits, which is also how stopping a cluster kills every
  process it started.
* **Origin**: a cluster records which notebook server started it (option ``origin``,
  ``server:<name>``), so the gateway can stop it when that server stops
  (`hubforge.dask.gateway`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.backends.local import LocalBackend, LocalClusterConfig
from dask_gateway_server.options import Float, Integer, Options, Select, String
from traitlets import Bool, Dict, Enum, Integer as IntegerTrait, List, Type, Unicode, default

from ..spawners.cgroups import CgroupManager
from ..spawners.local import system_user_name
from .launcher import ForkLauncher, RunAs
from .settings import DaskSettings, Limits, format_memory

GiB = 2**30
#: What a scheduler may use, on top of the workers' limits.
SCHEDULER_CORES = 1
SCHEDULER_MEMORY = 1 * GiB


class HubForgeClusterConfig(LocalClusterConfig):
    """dask-gateway's cluster configuration plus what HubForge's clusters carry."""

    initial_workers = IntegerTrait(0, help="Workers the scheduler asks for at start.", config=True)
    adapt_minimum = IntegerTrait(0, help="Adaptive scaling's minimum at start.", config=True)
    adapt_maximum = IntegerTrait(0, help="Adaptive scaling's maximum at start (0: not adaptive).", config=True)
    origin = Unicode("", help="Which notebook server started the cluster: 'server:<name>'.", config=True)
    max_workers_reason = Unicode("", help="The limit that bounds the cluster's workers, in words.", config=True)
    image = Unicode("", help="The container image schedulers and workers run (mode containers).", config=True)


def _bounded(value, bound: float, message: str) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > bound:
        raise PublicException(message)


class HubForgeLocalBackend(LocalBackend):
    """Local processes for the embedded default; see the module documentation."""

    cluster_config_class = Type(
        "hubforge.dask.backend.HubForgeClusterConfig",
        klass="dask_gateway_server.backends.base.ClusterConfig",
        help="The cluster config class to use.",
        config=True,
    )

    isolation = Enum(
        ["system-users", "shared"], default_value="shared",
        help="Run clusters as the user's system account (system-users) or as the gateway's user.",
        config=True,
    )

    system_user_prefix = Unicode("hf-", help="The local spawner's system_user_prefix.", config=True)

    dask_settings = Dict(help="The ``dask:`` section of the platform settings.", config=True)

    settings_source = Unicode("hubforge.yaml", help="The settings file, for messages.", config=True)

    cgroup_prefix = Unicode(
        "",
        help="""Name prefix of the clusters' control groups (``hubforge/<prefix>-<cluster>``);
        empty: no control groups. Unique per gateway, so a restarted gateway removes only
        its own leftovers.""",
        config=True,
    )

    fork = Bool(True, help="Fork schedulers and workers from a preloaded forkserver.", config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.settings = DaskSettings(source=self.settings_source, **self.dask_settings)
        self.cgroups = CgroupManager()
        self.launcher = ForkLauncher() if self.fork else None

    # --- limits and options -----------------------------------------------------------

    def limits_for(self, user) -> Limits:
        return self.settings.limits_for(getattr(user, "groups", ()))

    def cluster_options_for(self, user) -> Options:
        """The options a user may choose, bounded by their limits (dask-gateway's spec)."""
        limits = self.limits_for(user)
        worker_cores_max = max(1, int(limits.worker_cores))
        memory_max = limits.worker_memory / GiB
        settings = self.settings

        def handler(options, user):
            cores = int(options.worker_cores)
            memory = int(options.worker_memory * GiB)
            max_workers, reason = limits.max_workers_for(cores, memory)
            config = {
                "worker_cores": cores,
                "worker_threads": cores,
                "worker_memory": memory,
                "scheduler_cores": SCHEDULER_CORES,
                "scheduler_memory": SCHEDULER_MEMORY,
                "cluster_max_workers": max_workers,
                "max_workers_reason": reason,
                "idle_timeout": settings.idle_timeout,
                "origin": options.origin,
            }
            config.update(self.extra_config(options))
            if options.adapt_maximum:
                config["adapt_minimum"] = options.adapt_minimum
                config["adapt_maximum"] = options.adapt_maximum
            else:
                config["initial_workers"] = options.workers
            return config

        return Options(
            Integer("workers", default=0, min=0, max=limits.max_workers, label="Workers at start"),
            Integer("adapt_minimum", default=0, min=0, max=limits.max_workers, label="Adaptive minimum"),
            Integer("adapt_maximum", default=0, min=0, max=limits.max_workers,
                    label="Adaptive maximum (0: fixed size)"),
            Integer("worker_cores", default=1, min=1, max=worker_cores_max, label="Cores per worker"),
            Float("worker_memory", default=min(2.0, memory_max), min=0.25, max=memory_max,
                  label="Memory per worker (GiB)"),
            String("origin", default="", label="Started by (server:<name>)"),
            *self.extra_option_fields(),
            handler=handler,
        )

    def extra_option_fields(self) -> list:
        """Cluster options a subclass adds (the container backend: the image)."""
        return []

    def extra_config(self, options) -> dict:
        """Cluster configuration a subclass derives from its extra options."""
        return {}

    @default("cluster_options")
    def _default_cluster_options(self):
        return self.cluster_options_for

    def check_request(self, user, request: dict) -> None:
        """Refuse options over the user's limits, with a message that states the limit."""
        if not isinstance(request, dict):
            return  # dask-gateway's own parser reports the type error
        limits = self.limits_for(user)
        where = f"(set by the admin in dask.limits, {self.settings_source})"
        _bounded(request.get("worker_cores"), limits.worker_cores,
                 f"worker_cores={request.get('worker_cores')} is over your limit of "
                 f"{limits.worker_cores:g} cores per worker {where}")
        memory = request.get("worker_memory")
        _bounded(memory, limits.worker_memory / GiB,
                 f"worker_memory={memory} GiB is over your limit of "
                 f"{format_memory(limits.worker_memory)} per worker {where}")
        cores = request.get("worker_cores") or 1
        memory_bytes = int((memory or min(2.0, limits.worker_memory / GiB)) * GiB)
        if isinstance(cores, (int, float)) and cores > 0:
            max_workers, reason = limits.max_workers_for(cores, memory_bytes)
            minimum, maximum = request.get("adapt_minimum"), request.get("adapt_maximum")
            if isinstance(minimum, int) and minimum and not maximum:
                raise PublicException("adapt_minimum needs adapt_maximum (adaptive scaling between the two)")
            if isinstance(minimum, int) and isinstance(maximum, int) and maximum and minimum > maximum:
                raise PublicException(f"adapt_minimum {minimum} is more than adapt_maximum {maximum}")
            for key in ("workers", "adapt_maximum", "adapt_minimum"):
                _bounded(request.get(key), max_workers,
                         f"{key}={request.get(key)} is over your limit of {max_workers} workers "
                         f"per cluster ({reason}) {where}")

    async def process_cluster_options(self, user, request):
        self.check_request(user, request)
        return await super().process_cluster_options(user, request)

    async def start_cluster(self, user, cluster_options):
        options, config = await self.process_cluster_options(user, cluster_options)
        limits = self.limits_for(user)
        active = [c for c in self.db.name_to_cluster.values()
                  if c.username == user.name and c.target <= JobStatus.RUNNING]
        if len(active) >= limits.max_clusters:
            raise PublicException(
                f"you already have {len(active)} running cluster{'s' if len(active) != 1 else ''} "
                f"and your limit is {limits.max_clusters} (dask.limits.max_clusters, "
                f"{self.settings_source}); stop one first (hubforge.dask.shutdown) or connect "
                f"to it (hubforge.dask.connect)"
            )
        if self.isolation == "system-users":
            self.run_as(user.name)  # fails here, with a clear message, not in the reconciler
        cluster = self.db.create_cluster(user.name, options, config.to_dict())
        self.log.info("Created cluster %s for user %s", cluster.name, user.name)
        self.queue.put(cluster)
        return cluster.name

    def check_scale(self, cluster, count: int) -> None:
        """Refuse a scale request over the cluster's limit (dask-gateway would cap it silently)."""
        max_workers = cluster.config.get("cluster_max_workers")
        if max_workers is not None and count > max_workers:
            reason = cluster.config.get("max_workers_reason") or f"max_workers {max_workers}"
            raise PublicException(
                f"a cluster of {count} workers is over your limit of {max_workers} workers per "
                f"cluster ({reason}; set by the admin in dask.limits, {self.settings_source})"
            )

    # --- processes ------------------------------------------------------------------

    def system_user(self, username: str) -> str:
        return system_user_name(self.system_user_prefix, username)

    def run_as(self, username: str) -> RunAs | None:
        if self.isolation != "system-users":
            return None
        account = self.system_user(username)
        try:
            pw = pwd.getpwnam(account)
        except KeyError:
            raise PublicException(
                f"user {username} has no system account ({account}) on this machine yet; "
                f"start a notebook server once, then create the cluster"
            ) from None
        return RunAs(pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(account, pw.pw_gid)), pw.pw_dir)

    def setup_working_directory(self, cluster):
        """The cluster's directory (TLS files, logs, spill), owned by the user, mode 0700.

        Replaces `LocalBackend.setup_working_directory`, which adds the TLS file paths
        to the list it chowns with ``paths.extend(path)``: one entry per *character*,
        the first being ``/``, so as root it hands the root directory to the user.
        """
        workdir = tempfile.mkdtemp(prefix="dask-", suffix=f"-{cluster.name}")
        try:
            certs, logs = self.get_certs_directory(workdir), self.get_logs_directory(workdir)
            for path in (certs, logs):
                os.mkdir(path, 0o700)
            cert_path, key_path = self._get_tls_paths(workdir)
            files = []
            for path, data in ((cert_path, cluster.tls_cert), (key_path, cluster.tls_key)):
                with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                    f.write(data)
                files.append(path)
            run_as = self.run_as(cluster.username)
            if run_as is not None:
                for path in (workdir, certs, logs, *files):
                    os.chown(path, run_as.uid, run_as.gid)
        except BaseException:  # not in the cluster's state yet: nobody else would remove it
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return workdir

    def make_preexec_fn(self, cluster):
        """For ``fork = False``: become the user's *system account* (dask-gateway's own
        would become the system user named like the hub user)."""
        run_as, workdir = self.run_as(cluster.username), cluster.state["workdir"]

        def preexec():
            if run_as is not None:
                os.setgid(run_as.gid)
                os.setgroups(list(run_as.groups))
                os.setuid(run_as.uid)
            os.chdir(workdir)

        return preexec

    def get_env(self, cluster):
        env = super().get_env(cluster)
        run_as = self.run_as(cluster.username)
        env["USER"] = self.system_user(cluster.username) if run_as else cluster.username
        if run_as:
            env["HOME"] = run_as.home
        elif "HOME" in os.environ:
            env["HOME"] = os.environ["HOME"]
        config = cluster.config
        if config.get("adapt_maximum"):
            env["HUBFORGE_DASK_ADAPT_MIN"] = str(config.get("adapt_minimum") or 0)
            env["HUBFORGE_DASK_ADAPT_MAX"] = str(config["adapt_maximum"])
        elif config.get("initial_workers"):
            env["HUBFORGE_DASK_INITIAL_WORKERS"] = str(config["initial_workers"])
        return env

    def get_scheduler_command(self, cluster):
        return super().get_scheduler_command(cluster) + ["--preload", "hubforge.dask.scheduler_preload"]

    def get_worker_command(self, cluster, worker_name, scheduler_address=None):
        return super().get_worker_command(cluster, worker_name, scheduler_address) + ["--no-nanny"]

    async def start_process(self, cluster, cmd, env, name):
        if self.launcher is None:
            return await super().start_process(cluster, cmd, env, name)
        role = "scheduler" if name == "scheduler" else "worker"
        prefix = cluster.config.get(f"{role}_cmd") or []
        argv = list(cmd[len(prefix):])
        workdir = cluster.state["workdir"]
        log_path = os.path.join(self.get_logs_directory(workdir), name + ".log")
        return self.launcher.start(
            role, argv, env, log_path, workdir,
            run_as=self.run_as(cluster.username), cgroups=cluster.state.get("cgroups") or [],
        )

    # --- control groups -------------------------------------------------------------

    def _cgroup_key(self, cluster_name: str) -> str:
        return f"{self.cgroup_prefix}-{cluster_name}"

    def make_cgroups(self, cluster) -> list[str]:
        if not self.cgroup_prefix or not self.cgroups.available:
            return []
        config = cluster.config
        max_workers = config.get("cluster_max_workers") or 0
        cores = SCHEDULER_CORES + max_workers * (config.get("worker_cores") or 1)
        memory = SCHEDULER_MEMORY + max_workers * (config.get("worker_memory") or GiB)
        return self.cgroups.create(self._cgroup_key(cluster.name), cpu_limit=cores, cpu_guarantee=None,
                                   mem_limit=memory, mem_guarantee=None)

    async def do_setup(self):
        await super().do_setup()
        self.sweep_cgroups()
        if self.launcher is not None:
            self.launcher.warm()  # here, before other threads: it scrubs the environment

    def sweep_cgroups(self) -> None:
        """Kill and remove control groups a previous run of this gateway left behind,
        and remove empty ones other gateways left (never another's live processes)."""
        if not self.cgroup_prefix or not self.cgroups.available:
            return
        for parent in self.cgroups.paths("x"):
            parent = Path(parent).parent
            if not parent.is_dir():
                continue
            for group in parent.glob("dask-*"):
                key = group.name
                if key.startswith(f"{self.cgroup_prefix}-"):
                    left = self.cgroups.kill_and_remove(self.cgroups.paths(key))
                    self.log.warning("removed the leftover cluster control group %s%s", key,
                                     f" ({len(left)} processes would not die)" if left else "")
                elif not self.cgroups.pids(self.cgroups.paths(key)):
                    # another gateway's, empty: its gateway was killed before removing it
                    for path in self.cgroups.paths(key):
                        with contextlib.suppress(OSError):
                            os.rmdir(path)

    async def do_start_cluster(self, cluster):
        groups = self.make_cgroups(cluster)
        started = False
        try:
            async for state in super().do_start_cluster(cluster):
                started = True
                yield {**state, "cgroups": groups}
        except BaseException:
            if groups and not started:  # not in the cluster's state yet: nobody else removes them
                self.cgroups.kill_and_remove(groups)
            raise

    def log_failure(self, cluster) -> None:
        """Put the end of a failed cluster's process logs in the gateway's log.

        The working directory (and the logs in it) goes when the cluster stops, so this
        is the one place an admin can read why a scheduler or worker did not start.
        """
        workdir = cluster.state.get("workdir")
        if not workdir:
            return
        for log in sorted(Path(self.get_logs_directory(workdir)).glob("*.log")):
            # The directory is the user's: never follow a link, never block on a FIFO,
            # read only the end of a regular file.
            try:
                fd = os.open(log, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    continue
                f.seek(max(0, st.st_size - 8192))
                lines = f.read(8192).decode(errors="replace").splitlines()[-15:]
            if lines:
                self.log.warning("cluster %s failed; the end of %s:\n%s", cluster.name, log.name, "\n".join(lines))

    async def do_stop_cluster(self, cluster):
        if cluster.target == JobStatus.FAILED:
            self.log_failure(cluster)
        try:
            await super().do_stop_cluster(cluster)
        finally:
            groups = cluster.state.get("cgroups") or []
            if groups:
                left = await asyncio.get_running_loop().run_in_executor(
                    None, self.cgroups.kill_and_remove, groups)
                if left:
                    self.log.error("cluster %s: processes %s survived SIGKILL", cluster.name, sorted(left))
            if self.launcher is not None:
                self.launcher.reap()

    def cleanup_working_directory(self, workdir):
        # The workers' spill directories belong to the user; remove them as root.
        if os.path.exists(workdir):
            shutil.rmtree(workdir, ignore_errors=True)


class HubForgeContainerBackend(HubForgeLocalBackend):
    """Mode `containers`: each scheduler and worker is a container from the user's image.

    The same processes as `HubForgeLocalBackend` (dask-gateway's commands and
    environment, the limits, the origin), but started as ``podman run --rm`` of the
    image the user's server runs (cluster option ``image``, one of the profiles' images;
    every server's environment sends its own), with host networking on 127.0.0.1, the
    user's home volume at the same place as in their server, ``--cpus``/``--memory`` from
    the worker size, and the image's own user. So a cluster has exactly the packages the
    notebook has. The TLS certificate and key reach the container as environment values
    (distributed accepts PEM contents there), passed by name from podman's own
    environment, never on a command line. The gateway watches the ``podman run`` client
    process (it forwards signals to the container and exits with it); stopping a cluster
    also removes any container left with its label.
    """

    images = List(Unicode(), help="Images a cluster may run: the profiles' images; the first is the default.",
                  config=True)
    engine_command = Unicode("podman", help="The container engine's command.", config=True)
    home_volume_template = Unicode("hubforge-home-{username}", help="The container spawner's home volume name.",
                                   config=True)
    home_mount = Unicode("/home/jovyan", help="Where the home volume is mounted in the container.", config=True)
    label_prefix = Unicode("hubforge.dask", help="Prefix of the labels put on cluster containers.", config=True)
    gateway_tag = Unicode("", help="Labels this gateway's containers, so a restart removes only its own.",
                          config=True)

    @default("fork")
    def _default_fork(self):
        return False

    def extra_option_fields(self) -> list:
        images = list(self.images) or ["hubforge/cpu:latest"]
        return [Select("image", images, default=images[0], label="Image")]

    def extra_config(self, options) -> dict:
        return {"image": options.image}

    def run_as(self, username: str) -> RunAs | None:
        return None  # containers run as their image's user

    def container_env(self, env: dict[str, str]) -> dict[str, str]:
        """What the container gets: dask-gateway's and HubForge's variables, TLS as contents."""
        out = {}
        for key, value in env.items():
            if not key.startswith(("DASK_", "HUBFORGE_DASK_")):
                continue
            if key.startswith("DASK_DISTRIBUTED__COMM__TLS__") and os.path.isfile(value):
                with open(value) as f:
                    value = f.read()
            out[key] = value
        return out

    def container_command(self, cluster, role: str, name: str, argv: list[str], env: dict[str, str]) -> list[str]:
        """The ``podman run`` command line (no values of secrets: ``-e NAME`` only)."""
        from ..spawners.container_objects import home_volume_name

        config = cluster.config
        if role == "worker":
            cores, memory = config.get("worker_cores") or 1, config.get("worker_memory") or GiB
        else:
            cores, memory = SCHEDULER_CORES, SCHEDULER_MEMORY
        cmd = [
            self.engine_command, "run", "--rm", "--pull=never", "--network=host",
            "--name", f"hubforge-dask-{cluster.name}-{name}",
            "--label", f"{self.label_prefix}.cluster={cluster.name}",
            "--label", f"{self.label_prefix}.gateway={self.gateway_tag}",
            "--label", f"{self.label_prefix}.user={cluster.username}",
            "--label", f"{self.label_prefix}.worker={name[len('worker-'):] if role == 'worker' else ''}",
            f"--cpus={cores:g}", f"--memory={int(memory)}",
            "--volume", f"{home_volume_name(cluster.username, self.home_volume_template)}:{self.home_mount}",
            "--workdir", self.home_mount,
        ]
        for key in sorted(env):
            cmd += ["--env", key]
        return cmd + [config.get("image") or self.images[0], "dask", role, *argv]

    async def start_process(self, cluster, cmd, env, name):
        from ..podman import podman_env

        role = "scheduler" if name == "scheduler" else "worker"
        prefix = cluster.config.get(f"{role}_cmd") or []
        values = self.container_env(env)
        command = self.container_command(cluster, role, name, list(cmd[len(prefix):]), values)
        log_path = os.path.join(self.get_logs_directory(cluster.state["workdir"]), name + ".log")
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, env={**podman_env(), **values}, start_new_session=True,
                stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            os.close(fd)
        return proc.pid

    async def remove_containers(self, label: str) -> None:
        from ..podman import podman_env

        async def run(*args):
            proc = await asyncio.create_subprocess_exec(
                self.engine_command, *args, env=podman_env(),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            out, _ = await proc.communicate()
            return out.decode().split()

        ids = await run("ps", "-aq", "--filter", f"label={label}")
        if ids:
            await run("rm", "-f", "-t", "0", *ids)
            self.log.info("removed %d container(s) labelled %s", len(ids), label)

    async def do_stop_cluster(self, cluster):
        try:
            await super().do_stop_cluster(cluster)
        finally:
            await self.remove_containers(f"{self.label_prefix}.cluster={cluster.name}")

    async def do_stop_worker(self, worker):
        try:
            await super().do_stop_worker(worker)
        finally:  # a SIGKILLed `podman run` client leaves its container running
            await self.remove_containers(f"{self.label_prefix}.worker={worker.name}")

    async def do_setup(self):
        await super().do_setup()
        if self.gateway_tag:
            await self.remove_containers(f"{self.label_prefix}.gateway={self.gateway_tag}")
