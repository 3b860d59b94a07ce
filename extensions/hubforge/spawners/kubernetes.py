"""The Kubernetes backend: KubeSpawner, driven by the spawner profiles.

`HubForgeKubeSpawner` is ``ProfileSpawnerMixin`` over kubespawner's ``KubeSpawner``.
Each user server is a pod; each user's home is a PersistentVolumeClaim.

How the profiles reach KubeSpawner
----------------------------------
Through KubeSpawner's own ``profile_list``, which is the translation of the profiles
(:func:`hubforge.profiles.to_kubespawner_profile_list`), so a Kubernetes administrator
finds the mechanism they know, and the Helm chart's ``singleuser.profileList`` (which
the chart's image pullers read) is the same data. The alternative, applying HubForge's
:class:`~hubforge.profiles.ResolvedProfile` to the traits by hand, would duplicate
what ``KubeSpawner._load_profile`` does and leave ``profile_list`` as dead config.
What HubForge adds around it, in the order a spawn sees it:

1. **Form** — the mixin's ``get_options_form`` and ``options_from_form`` come first in
   the MRO, so HubForge's form is the one rendered and parsed; KubeSpawner's template
   (its ``options_form`` default) is never used.
2. **Validation** — JupyterHub's ``apply_user_options`` hook resolves ``user_options``
   against the profiles; `load_user_options` (the first step of KubeSpawner's start)
   raises the stored problem as HTTP 400 naming the field, before KubeSpawner looks at
   anything, so a bad option fails the same way as on every other backend.
3. **Per-user list** — ``profile_list`` defaults to :func:`user_profile_list`, a
   callable that lists only the profiles the user's name or groups allow, with the
   user's default marked. A configured static list (Zero to JupyterHub sets
   ``c.KubeSpawner.profile_list`` from ``singleuser.profileList``) is filtered the
   same way per user (:func:`filter_profile_list`); an empty one means "from the
   profile files". KubeSpawner then applies the chosen profile's
   ``kubespawner_override`` and the options' choices or unlisted values.
4. **Clean restarts** — KubeSpawner applies overrides to the spawner object itself,
   which JupyterHub keeps across restarts, so a GPU profile's limit would survive a
   restart on a CPU profile. Before each start (in ``apply_group_overrides``, which
   JupyterHub calls first) the traits a profile may change go back to their configured
   values; then JupyterHub's group overrides apply, then the profile.
5. **Additive lists** — KubeSpawner replaces lists, but a profile's volumes and
   tolerations are *extra* ones (as on every backend): the configured home volume and
   the cluster's tolerations are kept, and a profile entry replaces a configured one
   only where they share a volume name, a mount path or are equal.

The server also gets ``HUBFORGE_PROFILE`` and ``HUBFORGE_RESOURCES`` (what
``%hubforge`` shows), and the resolved profile is kept in the spawner state.

Defaults that differ from KubeSpawner's (all overridable with ``c.HubForgeKubeSpawner``):
the per-user home PVC (``storage_pvc_ensure = True``, ``pvc_name_template =
"claim-{username}"``, 10 GiB, mounted at `home_mount_path`), ``delete_pvc = False``
(deleting a user keeps their home unless the admin asks), ``fs_gid = 100`` (as in
Zero to JupyterHub, so the user can write to a fresh volume), ``cmd =
["jupyterhub-singleuser"]`` and ``default_url = "/lab"``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

from kubespawner import KubeSpawner
from traitlets import Unicode, default, validate

from ..profiles import ResolvedProfile, to_kubespawner_profile_list
from .base import ProfileSpawnerMixin

#: The user's home: a PVC per user (shared by their named servers), mounted here. The
#: Helm values generator (hubforge.helm) configures the chart's storage the same way.
HOME_PVC_NAME_TEMPLATE = "claim-{username}"
HOME_CAPACITY = "10Gi"
HOME_MOUNT_PATH = "/home/jovyan"
HOME_VOLUME_NAME = "home"

#: KubeSpawner traits a profile's ``kubespawner_override`` may set (see
#: :mod:`hubforge.profiles.kubespawner`); reset to their configured values before
#: each spawn.
PROFILE_TRAITS = (
    "image",
    "cpu_guarantee",
    "cpu_limit",
    "mem_guarantee",
    "mem_limit",
    "extra_resource_limits",
    "node_selector",
    "tolerations",
    "environment",
    "volumes",
    "volume_mounts",
)

#: How a profile's list entry matches a configured one it replaces.
_ENTRY_KEYS: dict[str, Callable[[Any], Any]] = {
    "volumes": lambda entry: entry.get("name"),
    "volume_mounts": lambda entry: entry.get("mountPath"),
    "tolerations": lambda entry: repr(sorted(entry.items())),
}


def user_profile_list(spawner: HubForgeKubeSpawner) -> list[dict[str, Any]]:
    """KubeSpawner ``profile_list`` callable: the profiles ``spawner``'s user may use.

    The default of ``HubForgeKubeSpawner.profile_list``, translated from the spawner's
    profile files, with the user's default profile marked.
    """
    return to_kubespawner_profile_list(spawner.profile_set, spawner.user.name, spawner.user_groups())


def filter_profile_list(entries: list[dict[str, Any]], spawner: HubForgeKubeSpawner) -> list[dict[str, Any]]:
    """The entries of a static ``profile_list`` that ``spawner``'s user may use.

    Entries are matched to the profile files by slug; the user's default profile
    becomes the one marked ``default``. Bound with ``functools.partial`` it is a
    ``profile_list`` callable, which is what a configured list turns into.
    """
    name, groups = spawner.user.name, spawner.user_groups()
    allowed = {p.slug for p in spawner.profile_set.for_user(name, groups)}
    default = spawner.profile_set.default_for(name, groups)
    filtered = []
    for entry in entries:
        if entry.get("slug") in allowed:
            entry = copy.deepcopy(entry)
            entry["default"] = default is not None and entry["slug"] == default.slug
            filtered.append(entry)
    return filtered


def _entries(value: list | dict) -> list:
    """KubeSpawner's list-or-dict traits as a list (dict values sorted by key, as it does)."""
    if isinstance(value, dict):
        return [value[key] for key in sorted(value)]
    return list(value)


def _combine(name: str, configured: list | dict, applied: list | dict) -> list | dict:
    """The configured entries followed by the profile's, the profile's winning on a match."""
    if applied == configured:
        return applied
    key = _ENTRY_KEYS[name]
    extra = _entries(applied)
    replaced = {key(entry) for entry in extra}
    return [entry for entry in _entries(configured) if key(entry) not in replaced] + extra


class HubForgeKubeSpawner(ProfileSpawnerMixin, KubeSpawner):
    """Runs a user's server as a pod shaped by their profile, with a PVC for home."""

    home_mount_path = Unicode(
        HOME_MOUNT_PATH,
        help="""Where the user's home volume (their PVC) is mounted in the server.

        Default ``/home/jovyan``, the home of the HubForge images' ``jovyan`` user. Only
        used by the default `volumes` and `volume_mounts`; set those instead to mount
        home differently. Example: ``c.HubForgeKubeSpawner.home_mount_path = "/home/user"``.
        """,
    ).tag(config=True)

    @default("profile_list")
    def _default_profile_list(self):
        return user_profile_list

    @validate("profile_list")
    def _per_user_profile_list(self, proposal):
        value = proposal["value"]
        if callable(value):
            return value
        if not value:
            return user_profile_list
        return functools.partial(filter_profile_list, _entries(value))

    @default("options_form")
    def _default_options_form(self):
        # Only for code that reads the trait: JupyterHub calls get_options_form, which
        # the mixin overrides, so KubeSpawner's own template is never rendered.
        return ProfileSpawnerMixin.get_options_form

    @default("storage_pvc_ensure")
    def _default_storage_pvc_ensure(self):
        return True

    @default("pvc_name_template")
    def _default_pvc_name_template(self):
        # One home per user, shared by their named servers, as on the other backends.
        return HOME_PVC_NAME_TEMPLATE

    @default("storage_capacity")
    def _default_storage_capacity(self):
        return HOME_CAPACITY

    @default("delete_pvc")
    def _default_delete_pvc(self):
        return False

    @default("fs_gid")
    def _default_fs_gid(self):
        return 100

    @default("volumes")
    def _default_volumes(self):
        return [{"name": HOME_VOLUME_NAME, "persistentVolumeClaim": {"claimName": "{pvc_name}"}}]

    @default("volume_mounts")
    def _default_volume_mounts(self):
        return [{"name": HOME_VOLUME_NAME, "mountPath": self.home_mount_path}]

    @default("cmd")
    def _default_cmd(self):
        return ["jupyterhub-singleuser"]

    @default("default_url")
    def _default_default_url(self):
        return "/lab"

    _hf_configured: dict[str, Any] | None = None

    def start(self):
        """KubeSpawner's start (a future), whose first step is `load_user_options`."""
        self.reset_progress()
        return super().start()

    async def apply_group_overrides(self) -> None:
        """Reset what a previous profile changed, then apply JupyterHub's group overrides."""
        if self._hf_configured is None:
            self._hf_configured = {name: copy.deepcopy(getattr(self, name)) for name in PROFILE_TRAITS}
        else:
            for name, value in self._hf_configured.items():
                setattr(self, name, copy.deepcopy(value))
        await super().apply_group_overrides()

    async def load_user_options(self) -> None:
        """Validate ``user_options`` (HTTP 400 naming the field), then apply the profile.

        Called by KubeSpawner at the start of ``start``, and by the manifest builders
        in :mod:`hubforge.k8s`.
        """
        self.resolved = resolved = self.validated_profile()
        self.emit(f"Profile {resolved.display_name} ({resolved.slug})", 5)
        before = {name: copy.deepcopy(getattr(self, name)) for name in _ENTRY_KEYS}
        await super().load_user_options()
        for name, value in before.items():
            setattr(self, name, _combine(name, value, getattr(self, name)))
        self._check_agrees(resolved)

    def _check_agrees(self, resolved: ResolvedProfile) -> None:
        # KubeSpawner applies options in declaration order, HubForge applies every
        # unlisted value after the listed choices; they differ only if an unlisted
        # value and a later option's choice set the same field.
        gpus = self.extra_resource_limits.get(resolved.gpu_resource_name, "0")
        applied = {
            "image": self.image,
            "cpu_limit": self.cpu_limit,
            "mem_limit": self.mem_limit,
            "gpu_count": int(gpus),
        }
        expected = {
            "image": resolved.image or self.image,
            "cpu_limit": resolved.cpu_limit,
            "mem_limit": resolved.mem_limit,
            "gpu_count": resolved.gpu_count,
        }
        for field, value in expected.items():
            if value is not None and applied[field] != value:
                self.log.warning(
                    "%s: profile_list gave %s=%r but the profile resolves to %r",
                    self.key, field, applied[field], value,
                )

    def get_env(self):
        env = super().get_env()
        # Only HubForge's own variables: the profile's environment is already in
        # KubeSpawner's (with its {username}-style expansion), and MEM_LIMIT/CPU_LIMIT
        # come from the traits the profile set.
        env.update({k: v for k, v in self.profile_env().items() if k.startswith("HUBFORGE_")})
        return env

    async def progress(self):
        """HubForge's events (the chosen profile), then KubeSpawner's pod events."""
        for event in list(self._events):
            yield event
        async for event in super(ProfileSpawnerMixin, self).progress():
            yield event

    def clear_state(self):
        super().clear_state()
        self.resolved = None

