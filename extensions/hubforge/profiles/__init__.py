"""Spawner profiles: the one source of truth for what a user's server gets.

Administrators describe profiles (image, CPUs, memory, GPUs, environment,
volumes, who may use them, and options users pick from) in YAML files; see
docs/profiles.md.  This package reads and validates them with line numbers
(:mod:`.loader`, :mod:`.schema`, :mod:`.validate`), models them
(:mod:`.model`), resolves a user's choices (:mod:`.resolve`), and translates
them for each consumer: the spawn form (:mod:`.form`) and KubeSpawner
(:mod:`.kubespawner`).  Spawners, jobs and Dask import from here only.

Typical use::

    profiles = load_profiles(["/etc/hubforge/profiles"])
    resolved = resolve(profiles, spawner.user_options, user.name, group_names)
"""

from .form import parse_form, render_form, resources_summary
from .kubespawner import to_kubespawner_profile_list
from .loader import check_files, load_profiles
from .model import (
    Gpu,
    OptionChoice,
    Profile,
    ProfileIssue,
    ProfileOption,
    ProfileSet,
    Range,
    Source,
    UnlistedChoice,
    Volume,
    format_bytes,
    format_quantity,
    parse_quantity,
)
from .resolve import ResolvedProfile, resolve

__all__ = [
    "Gpu",
    "OptionChoice",
    "Profile",
    "ProfileIssue",
    "ProfileOption",
    "ProfileSet",
    "Range",
    "ResolvedProfile",
    "Source",
    "UnlistedChoice",
    "Volume",
    "check_files",
    "format_bytes",
    "format_quantity",
    "load_profiles",
    "parse_form",
    "parse_quantity",
    "render_form",
    "resolve",
    "resources_summary",
    "to_kubespawner_profile_list",
]
