"""What every HubForge spawner shares: profiles in, validated settings out.

`ProfileSpawnerMixin` is mixed into a JupyterHub ``Spawner`` subclass (local process,
container, Kubernetes). It renders the spawn form from the profiles the user may use,
turns form data and REST ``user_options`` into a :class:`ResolvedProfile` through the
single translation layer in :mod:`hubforge.profiles`, and reports progress as an async
generator of small JSON events. A backend only has to turn the resolved profile into
its own settings (``apply_profile``) and start.

Bad options raise ``tornado.web.HTTPError(400)`` from ``start``: JupyterHub relays that
status and message unchanged to the REST caller, and the spawn form shows it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tornado import web
from traitlets import HasTraits, List, Unicode, default

from ..exceptions import GPUUnavailable, OptionsError
from ..profiles import ProfileSet, ResolvedProfile, load_profiles, render_form, parse_form, resolve
from .gpus import GPUAllocator, allocator_for

_PROFILE_CACHE: dict[tuple, ProfileSet] = {}


def cached_profiles(paths: list[str]) -> ProfileSet:
    """Load profiles once per set of file modification times (edits apply to new spawns)."""
    files = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.y*ml")) if p.is_dir() else [p])
    key = tuple((str(f), f.stat().st_mtime_ns) for f in files if f.exists())
    if key not in _PROFILE_CACHE:
        _PROFILE_CACHE.clear()
        _PROFILE_CACHE[key] = load_profiles(paths)
    return _PROFILE_CACHE[key]


class ProfileSpawnerMixin(HasTraits):
    """Profile handling shared by HubForge's spawners. Backends override `apply_profile`."""

    profile_paths = List(
        Unicode(),
        help="""Spawner profile files or directories this spawner offers.

        Set by the hub config from the settings file's ``profiles``; e.g.
        ``c.LocalSpawner.profile_paths = ["/etc/hubforge/profiles"]``.
        """,
    ).tag(config=True)

    gpus = Unicode(
        "auto",
        help="""GPUs to hand out: ``auto`` (ask nvidia-smi), ``none``, or ids like ``"0,1"``.

        Each GPU server gets whole devices exclusively until it stops.
        Example: ``c.LocalSpawner.gpus = "0,1"``.
        """,
    ).tag(config=True)

    resolved: ResolvedProfile | None = None

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return ProfileSpawnerMixin._apply_profile_options

    @staticmethod
    def _apply_profile_options(spawner, user_options) -> None:
        """JupyterHub's hook for user_options (5.3+): resolve them against the profiles.

        A problem is kept and raised as a 400 by ``start`` (through `resolve_options`):
        raising here would make JupyterHub log a traceback for every typo a user makes.
        """
        try:
            spawner.resolved = spawner.resolve_options()
            spawner._options_error = None
        except web.HTTPError as e:
            spawner.resolved = None
            spawner._options_error = e

    @default("profile_paths")
    def _default_profile_paths(self):
        from ..settings import REPO_ROOT

        return [str(REPO_ROOT / "spawner_profiles")]

    @property
    def profile_set(self) -> ProfileSet:
        return cached_profiles(self.profile_paths)

    @property
    def key(self) -> str:
        """The stable identifier used in logs and resource names: "user:server"."""
        return f"{self.user.name}:{self.name}" if self.name else self.user.name

    def user_groups(self) -> list[str]:
        return [g.name for g in getattr(self.user, "groups", [])]

    # --- spawn form -----------------------------------------------------------------

    async def get_options_form(self):
        profiles = self.profile_set.for_user(self.user.name, self.user_groups())
        return render_form(profiles)

    def options_from_form(self, formdata):
        options = parse_form(formdata)
        # Validate now so the form is shown again with the reason instead of spawning.
        try:
            resolve(self.profile_set, options, self.user.name, self.user_groups())
        except OptionsError as e:
            raise ValueError(str(e)) from None
        return options

    # --- validation -------------------------------------------------------------------

    def validated_profile(self) -> ResolvedProfile:
        """The resolved profile for this spawn; HTTP 400 if the options were invalid."""
        error = getattr(self, "_options_error", None)
        if error is not None:
            raise error
        return self.resolved if self.resolved is not None else self.resolve_options()

    def resolve_options(self) -> ResolvedProfile:
        """Resolve `user_options` against the profiles; HTTP 400 with the reason if invalid."""
        try:
            return resolve(self.profile_set, self.user_options or {}, self.user.name, self.user_groups())
        except OptionsError as e:
            raise web.HTTPError(400, str(e), reason="Invalid user_options") from None

    # --- start-up ---------------------------------------------------------------------

    async def wait_listening(self, ip: str, port: int) -> None:
        """Return once the server accepts connections; fail fast if it exits first.

        JupyterHub would only notice an early exit after ``http_timeout``, and 5.5 then
        answers the spawn request with an ``InvalidStateError`` 500; checking here turns
        that into an immediate failure with the exit status, and a clean stop.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        slug = self.resolved.slug if self.resolved is not None else "?"
        while loop.time() < deadline:
            # poll() may clear the spawner's state once the process is gone.
            status = await self.poll()
            if status is not None:
                raise web.HTTPError(
                    500,
                    f"the server for {self.key} (profile {slug}) exited during "
                    f"start-up with status {status}; the hub log has its output",
                    reason="Server exited",
                )
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 1)
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    # --- GPUs -------------------------------------------------------------------------

    @property
    def allocator(self) -> GPUAllocator:
        return allocator_for(self.gpus)

    @property
    def held_gpus(self) -> list[str]:
        return getattr(self, "_hf_gpus", [])

    def acquire_gpus(self, r: ResolvedProfile) -> list[str]:
        """Reserve the profile's GPUs for this server; HTTP 409 at once if none are free."""
        if not r.gpu_count:
            return []
        try:
            self._hf_gpus = self.allocator.allocate(self.key, r.gpu_count)
        except GPUUnavailable as e:
            raise web.HTTPError(409, f"profile {r.slug}: {e}", reason="GPU unavailable") from None
        self.emit(f"Allocated GPU {', '.join(self._hf_gpus)}", 20)
        return self._hf_gpus

    def release_gpus(self) -> None:
        if self.held_gpus:
            self.allocator.release(self.key)
            self.log.info("%s: released GPU %s", self.key, ",".join(self.held_gpus))
            self._hf_gpus = []

    def restore_gpus(self, state: dict) -> None:
        """Re-register the GPUs a server held before a hub restart."""
        self._hf_gpus = list(state.get("gpus", []))
        if self._hf_gpus:
            self.allocator.restore(self.key, self._hf_gpus)

    # --- state across hub restarts ---------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self.held_gpus:
            state["gpus"] = self.held_gpus
        if self.resolved is not None:
            state["profile"] = self.resolved.to_dict()
        return state

    def load_state(self, state):
        super().load_state(state)
        if state.get("profile"):
            self.resolved = ResolvedProfile.from_dict(state["profile"])
        self.restore_gpus(state)

    # --- progress ---------------------------------------------------------------------

    def emit(self, message: str, progress: int) -> None:
        """Record a progress event shown on the spawn page and in the REST progress stream."""
        self.log.info("%s: %s", self.key, message)
        self._events.append({"progress": progress, "message": message})

    @property
    def _events(self) -> list:
        if not hasattr(self, "_hf_events"):
            self._hf_events = []
        return self._hf_events

    def reset_progress(self) -> None:
        self._hf_events = []
        self._hf_started = time.monotonic()

    async def progress(self):
        """Yield this spawn's events as they happen, until the server has started."""
        sent = 0
        while True:
            events = self._events
            while sent < len(events):
                yield events[sent]
                sent += 1
            if not self._spawn_pending:
                return
            await asyncio.sleep(0.1)

    def profile_env(self) -> dict[str, str]:
        """Environment every backend gives the server: the profile's own plus HubForge's."""
        import json

        r = self.resolved
        if r is None:
            return {}
        env = dict(r.environment)
        env["HUBFORGE_PROFILE"] = r.slug
        # The documented shape (docs/profiles.md), which singleuser.info reads: the
        # environment stays a mapping. Its values are already in this very process
        # environment, and what the server shows (%hubforge, its API) is names only.
        env["HUBFORGE_RESOURCES"] = json.dumps(r.to_dict(), sort_keys=True)
        if r.mem_limit:
            env["MEM_LIMIT"] = str(r.mem_limit)
        if r.cpu_limit:
            env["CPU_LIMIT"] = str(r.cpu_limit)
        return env
