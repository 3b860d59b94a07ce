"""From a profile and a user's choices to the settings a server starts with.

``user_options`` has KubeSpawner's shape, whether it comes from the spawn
form (via :func:`hubforge.profiles.form.parse_form`) or the REST API::

    {"profile": "cpu-large", "image": "2026.08", "image--unlisted-choice": "..."}

:func:`resolve` validates it against what the user may use and returns a
fresh :class:`ResolvedProfile`; raw input is never applied to anything.
Overrides apply in a fixed precedence, lowest first:

1. the profile's own fields;
2. the chosen listed choice of each option, in the order the options are
   declared in the file;
3. the unlisted (free-text) value of each option that has one, in the same
   order, with ``{value}`` replaced by the user's text.

Mappings merge key by key, lists and scalars replace.  The merged result is
validated again (e.g. guarantee <= limit); a problem there is reported as an
:class:`~hubforge.exceptions.OptionsError` on the option that caused it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import OptionsError
from .model import (
    DEFAULT_GPU_RESOURCE,
    Profile,
    ProfileSet,
    Volume,
    deep_merge,
    parse_quantity,
    substitute_value,
)
from .validate import dotted_path, override_problems

UNLISTED_SUFFIX = "--unlisted-choice"


@dataclass(frozen=True)
class ResolvedProfile:
    """What one server gets: the profile after the user's choices.

    CPUs are cores (float), memory is bytes (int); None means "not set", and
    each spawner decides what that means for its backend.  ``choices`` maps
    each option to the chosen choice slug, or ``"unlisted:<text>"``.
    """

    slug: str
    display_name: str
    image: str | None = None
    cpu_guarantee: float | None = None
    cpu_limit: float | None = None
    mem_guarantee: int | None = None
    mem_limit: int | None = None
    gpu_count: int = 0
    gpu_resource_name: str = DEFAULT_GPU_RESOURCE
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    volumes: tuple[Volume, ...] = ()
    choices: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, used for ``HUBFORGE_RESOURCES`` and spawner state."""
        return {
            "slug": self.slug,
            "display_name": self.display_name,
            "image": self.image,
            "cpu_guarantee": self.cpu_guarantee,
            "cpu_limit": self.cpu_limit,
            "mem_guarantee": self.mem_guarantee,
            "mem_limit": self.mem_limit,
            "gpu_count": self.gpu_count,
            "gpu_resource_name": self.gpu_resource_name,
            "node_selector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
            "environment": dict(self.environment),
            "volumes": [v.to_data() for v in self.volumes],
            "choices": dict(self.choices),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResolvedProfile:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, so
        state saved by an older HubForge still loads."""
        return cls(
            slug=data["slug"],
            display_name=data.get("display_name", data["slug"]),
            image=data.get("image"),
            cpu_guarantee=data.get("cpu_guarantee"),
            cpu_limit=data.get("cpu_limit"),
            mem_guarantee=data.get("mem_guarantee"),
            mem_limit=data.get("mem_limit"),
            gpu_count=data.get("gpu_count", 0),
            gpu_resource_name=data.get("gpu_resource_name", DEFAULT_GPU_RESOURCE),
            node_selector=dict(data.get("node_selector", {})),
            tolerations=[dict(t) for t in data.get("tolerations", [])],
            environment=dict(data.get("environment", {})),
            volumes=tuple(Volume.from_data(v) for v in data.get("volumes", [])),
            choices=dict(data.get("choices", {})),
        )


def _choose_profile(
    profile_set: ProfileSet, requested: Any, username: str, groups: Iterable[str]
) -> Profile:
    allowed = profile_set.for_user(username, groups)
    if requested is None or requested == "":
        profile = profile_set.default_for(username, groups)
        if profile is None:
            raise OptionsError("profile", "no profile is available to you")
        return profile
    if not isinstance(requested, str):
        raise OptionsError("profile", f"must be a string, got {type(requested).__name__}")
    for profile in allowed:
        if profile.slug == requested:
            return profile
    # Same message whether the profile is absent or just not allowed, so the
    # reply does not reveal which restricted profiles exist.
    slugs = ", ".join(p.slug for p in allowed) or "(none)"
    raise OptionsError("profile", f"unknown profile {requested!r}; choose one of: {slugs}")


def _build(profile: Profile, data: Mapping[str, Any], choices: dict[str, str]) -> ResolvedProfile:
    cpu = data.get("cpu", {})
    memory = data.get("memory", {})
    gpu = data.get("gpu", {})

    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    def quantity(value: Any) -> int | None:
        return None if value is None else parse_quantity(value)

    return ResolvedProfile(
        slug=profile.slug,
        display_name=profile.display_name,
        image=data.get("image"),
        cpu_guarantee=number(cpu.get("guarantee")),
        cpu_limit=number(cpu.get("limit")),
        mem_guarantee=quantity(memory.get("guarantee")),
        mem_limit=quantity(memory.get("limit")),
        gpu_count=gpu.get("count", 0),
        gpu_resource_name=gpu.get("resource_name", DEFAULT_GPU_RESOURCE),
        node_selector=dict(gpu.get("node_selector", {})),
        tolerations=[dict(t) for t in gpu.get("tolerations", [])],
        environment=dict(data.get("environment", {})),
        volumes=tuple(Volume.from_data(v) for v in data.get("volumes", [])),
        choices=choices,
    )


def resolve(
    profile_set: ProfileSet,
    user_options: Mapping[str, Any] | None,
    username: str,
    groups: Iterable[str] = (),
) -> ResolvedProfile:
    """Validate ``user_options`` for ``username`` and return the resolved profile.

    A missing ``profile`` means the user's default profile; a missing option
    means its default choice; a non-empty ``"<option>--unlisted-choice"``
    wins over ``"<option>"`` (as in KubeSpawner).  Raises
    :class:`~hubforge.exceptions.OptionsError` naming the offending field for
    an unknown or forbidden profile, an unknown key or choice, an unlisted
    value where none is allowed or that fails the option's regex, a
    non-string value, or choices that together give invalid resources.
    """
    user_options = dict(user_options or {})
    groups = frozenset(groups)
    profile = _choose_profile(profile_set, user_options.get("profile"), username, groups)

    known = {"profile"}
    for name in profile.options:
        known |= {name, name + UNLISTED_SUFFIX}
    for key, value in user_options.items():
        if key not in known:
            valid = ", ".join(sorted(known - {"profile"})) or "none"
            raise OptionsError(key, f"unknown option for profile {profile.slug!r}; valid options: {valid}")
        if value is not None and not isinstance(value, str):
            raise OptionsError(key, f"must be a string, got {type(value).__name__}")

    listed: list[tuple[str, dict[str, Any]]] = []
    unlisted: list[tuple[str, dict[str, Any]]] = []
    chosen: dict[str, str] = {}
    for name, option in profile.options.items():
        unlisted_key = name + UNLISTED_SUFFIX
        text = user_options.get(unlisted_key)
        if text:
            if not option.unlisted_enabled:
                valid = ", ".join(option.choices)
                raise OptionsError(unlisted_key, f"this option takes no other values; choose one of: {valid}")
            assert option.unlisted is not None
            refusal = option.unlisted.check(text)
            if refusal is not None:
                raise OptionsError(unlisted_key, refusal)
            unlisted.append((unlisted_key, substitute_value(option.unlisted.override, text)))
            chosen[name] = f"unlisted:{text}"
            continue
        slug = user_options.get(name) or option.default_choice
        if slug is None:
            # Only an unlisted choice is offered and the user gave no text.
            raise OptionsError(unlisted_key, f"a value for {option.display_name!r} is required")
        if slug not in option.choices:
            valid = ", ".join(option.choices)
            raise OptionsError(name, f"unknown choice {slug!r}; choose one of: {valid}")
        listed.append((name, option.choices[slug].override))
        chosen[name] = slug

    applied = listed + unlisted
    data = profile.resource_data()
    for _, override in applied:
        data = deep_merge(data, override)
    problems = override_problems(data)
    if problems:
        path, message = problems[0]
        # Blame the highest-precedence override touching that section; the
        # profile itself was valid when it was loaded.
        culprit = next((key for key, o in reversed(applied) if path and path[0] in o), None)
        if culprit is None:
            culprit = applied[-1][0] if applied else "profile"
        raise OptionsError(culprit, f"this choice makes {dotted_path(path)} invalid: {message}")
    return _build(profile, data, chosen)
