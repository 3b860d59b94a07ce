"""Translation of HubForge profiles into KubeSpawner's ``profile_list``.

A pure builder: profiles in, list of dicts out, no cluster or KubeSpawner
import needed, so it is tested by comparing dicts.  The vocabulary maps as
follows (see docs/profiles.md for the table):

==========================  ==============================================
HubForge                    ``kubespawner_override`` key
==========================  ==============================================
image                       image
cpu.guarantee / .limit      cpu_guarantee / cpu_limit (cores, float)
memory.guarantee / .limit   mem_guarantee / mem_limit (exact string, "2G")
gpu.count, .resource_name   extra_resource_limits {resource_name: "count"}
gpu.node_selector           node_selector
gpu.tolerations             tolerations
environment                 environment
volumes                     volumes + volume_mounts (Kubernetes specs)
==========================  ==============================================

KubeSpawner merges dict-valued overrides into the spawner's current value
and replaces lists, which is the same rule HubForge's own resolver follows,
so an option choice translates key by key.  Memory strings containing
``{value}`` are passed through untouched for KubeSpawner to substitute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .model import (
    DEFAULT_GPU_RESOURCE,
    VALUE_PLACEHOLDER,
    Profile,
    ProfileOption,
    ProfileSet,
    deep_merge,
    format_quantity,
    parse_quantity,
)


def _volume(volume: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A HubForge volume as a (Kubernetes volume, volume mount) pair."""
    if "host_path" in volume:
        spec: dict[str, Any] = {"name": volume["name"], "hostPath": {"path": volume["host_path"]}}
    else:
        spec = {"name": volume["name"], "persistentVolumeClaim": {"claimName": volume["claim_name"]}}
    mount = {
        "name": volume["name"],
        "mountPath": volume["mount_path"],
        "readOnly": bool(volume.get("read_only", False)),
    }
    return spec, mount


def _quantity(value: Any) -> Any:
    if isinstance(value, str) and VALUE_PLACEHOLDER in value:
        return value
    return format_quantity(parse_quantity(value))


def kubespawner_override(
    data: Mapping[str, Any], base_gpu: Mapping[str, Any] | None = None, partial: bool = False
) -> dict[str, Any]:
    """Translate resource data (a profile's, or an option override) to KubeSpawner keys.

    ``base_gpu`` is the profile's ``gpu`` block, which fills in the resource
    name when an override changes only the count.  For a whole profile
    (``partial=False``) a GPU count of 0 emits no ``extra_resource_limits``;
    in an override it emits ``"0"``, because KubeSpawner's dict merge could
    not otherwise remove the profile's GPU limit.
    """
    out: dict[str, Any] = {}
    if "image" in data:
        out["image"] = data["image"]
    for section, prefix, convert in (("cpu", "cpu", float), ("memory", "mem", _quantity)):
        values = data.get(section, {})
        for key in ("guarantee", "limit"):
            if key in values:
                out[f"{prefix}_{key}"] = convert(values[key])
    gpu = data.get("gpu")
    if gpu is not None:
        merged = deep_merge(dict(base_gpu or {}), gpu)
        count = merged.get("count", 0)
        if ("count" in gpu or "resource_name" in gpu) and (partial or count > 0):
            name = merged.get("resource_name", DEFAULT_GPU_RESOURCE)
            out["extra_resource_limits"] = {name: str(count)}
        if "node_selector" in gpu:
            out["node_selector"] = dict(gpu["node_selector"])
        if "tolerations" in gpu:
            out["tolerations"] = [dict(t) for t in gpu["tolerations"]]
    if "environment" in data:
        out["environment"] = dict(data["environment"])
    if "volumes" in data:
        pairs = [_volume(v) for v in data["volumes"]]
        out["volumes"] = [spec for spec, _ in pairs]
        out["volume_mounts"] = [mount for _, mount in pairs]
    return out


def _anchored(regex: str) -> str:
    # HubForge matches the whole value (re.fullmatch); KubeSpawner uses
    # re.match and the browser's pattern attribute, so anchor explicitly.
    if regex.startswith("^") and regex.endswith("$") and not regex.endswith("\\$"):
        return regex
    return f"^(?:{regex})$"


def _option(option: ProfileOption, base_gpu: Mapping[str, Any]) -> dict[str, Any]:
    default = option.default_choice
    entry: dict[str, Any] = {
        "display_name": option.display_name,
        "choices": {
            slug: {
                "display_name": choice.display_name,
                "default": slug == default,
                "kubespawner_override": kubespawner_override(choice.override, base_gpu, partial=True),
            }
            for slug, choice in option.choices.items()
        },
    }
    if option.unlisted is not None:
        unlisted = option.unlisted
        translated: dict[str, Any] = {"enabled": unlisted.enabled, "display_name": unlisted.display_name}
        if unlisted.validation_regex is not None:
            translated["validation_regex"] = _anchored(unlisted.validation_regex)
        if unlisted.validation_message is not None:
            translated["validation_message"] = unlisted.validation_message
        translated["kubespawner_override"] = kubespawner_override(unlisted.override, base_gpu, partial=True)
        entry["unlisted_choice"] = translated
    return entry


def profile_entry(profile: Profile, default: bool) -> dict[str, Any]:
    """One ``profile_list`` entry for ``profile``."""
    base_gpu = profile.gpu.to_data() if profile.gpu is not None else {}
    entry: dict[str, Any] = {"display_name": profile.display_name, "slug": profile.slug}
    if profile.description is not None:
        entry["description"] = profile.description
    entry["default"] = default
    entry["kubespawner_override"] = kubespawner_override(profile.resource_data(), base_gpu)
    if profile.options:
        entry["profile_options"] = {name: _option(o, base_gpu) for name, o in profile.options.items()}
    return entry


def to_kubespawner_profile_list(
    profile_set: ProfileSet, username: str | None = None, groups: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """KubeSpawner ``profile_list`` for ``profile_set``.

    With neither ``username`` nor ``groups`` every profile is listed (for a
    static ``c.KubeSpawner.profile_list``); otherwise only those the user may
    use (for a ``profile_list`` callable).  Exactly one entry has
    ``default: True``: the user's default profile.
    """
    if username is None and groups is None:
        profiles = list(profile_set.profiles)
        default: Profile | None = profile_set.default
    else:
        profiles = profile_set.for_user(username or "", groups or ())
        default = profile_set.default_for(username or "", groups or ())
    return [profile_entry(p, p is default) for p in profiles]
