"""Spawner profiles as Python objects, and the small value helpers they need.

A :class:`ProfileSet` is what every other part of HubForge consumes: the
spawn form, REST validation of ``user_options``, the Kubernetes, container
and local-process spawners, scheduled jobs and Dask workers.  The objects are
built from data that :mod:`hubforge.profiles.validate` has already accepted,
so constructors here do not re-check the format; treat them as read-only.

Option overrides (``choices.*.override`` and ``unlisted_choice.override``) are
kept as plain data in the file's vocabulary, because resolving a user's
choices is a merge of such data (see :func:`deep_merge`) followed by one more
validation pass (:mod:`hubforge.profiles.resolve`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Profile fields an option override may change, in the order they are
#: documented; the same vocabulary as the profile itself.
RESOURCE_FIELDS = ("image", "cpu", "memory", "gpu", "environment", "volumes")

DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"

#: Placeholder in ``unlisted_choice.override`` replaced by the user's text.
VALUE_PLACEHOLDER = "{value}"

# KubeSpawner's (and JupyterHub's ByteSpecification) convention: K, M, G, T
# are powers of 1024.  Ki/Mi/Gi/Ti and a trailing B are accepted as spellings
# of the same units, so "2G", "2Gi" and "2GiB" all mean 2 * 1024**3 bytes.
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_QUANTITY_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(i?)(B?)\s*")


def parse_quantity(value: str | int) -> int:
    """Return a memory quantity in bytes.

    Accepts an int (bytes) or a string: a number, optionally with a decimal
    part, followed by an optional unit ``K``, ``M``, ``G`` or ``T`` (powers of
    1024, as in KubeSpawner), optionally spelt ``Ki``/``KiB``/``KB`` and so on.
    ``"512M"``, ``"1.5Gi"`` and ``"2GiB"`` are valid; fractions of a byte are
    rounded.  Raises :class:`ValueError` for anything else, including
    negative numbers and booleans.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"quantity must not be negative: {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"not a quantity: {value!r}")
    match = _QUANTITY_RE.fullmatch(value)
    if match is None:
        raise ValueError(
            f"not a quantity: {value!r}; use bytes or a number with K, M, G or T (e.g. 512M, 2G)"
        )
    number, unit, binary, _ = match.groups()
    if binary and not unit:
        raise ValueError(f"not a quantity: {value!r}")
    return round(float(number) * _UNITS[unit])


def format_bytes(n: int) -> str:
    """Format a byte count for people: ``2147483648`` -> ``"2 GiB"``.

    Uses the largest binary unit not above ``n`` with at most two decimals
    (``"1.5 GiB"``, ``"512 MiB"``, ``"100 B"``).
    """
    for suffix, unit in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= unit:
            text = f"{n / unit:.2f}".rstrip("0").rstrip(".")
            return f"{text} {suffix}"
    return f"{n} B"


def format_quantity(n: int) -> str:
    """Format a byte count exactly, in KubeSpawner's syntax: ``"2G"``.

    Picks the largest unit that divides ``n`` evenly, so that the string
    parses back (here and in KubeSpawner's ByteSpecification) to the same
    number of bytes; falls back to the plain byte count.
    """
    for suffix in ("T", "G", "M", "K"):
        unit = _UNITS[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def format_number(x: float) -> str:
    """Format a CPU count without a useless ``.0``: ``1.0`` -> ``"1"``."""
    return f"{x:g}"


def deep_merge(base: Any, override: Any) -> Any:
    """Merge ``override`` over ``base`` and return a new structure.

    Mappings merge key by key, recursively; lists and scalars in
    ``override`` replace those in ``base``.  Neither argument is modified.
    """
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        merged = {key: copy.deepcopy(value) for key, value in base.items()}
        for key, value in override.items():
            merged[key] = deep_merge(merged[key], value) if key in merged else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


def substitute_value(data: Any, value: str) -> Any:
    """Return ``data`` with ``{value}`` replaced by ``value`` in every string.

    Plain replacement rather than ``str.format``: other braces in the
    override (``${HOME}`` in an environment value) stay as written.
    """
    if isinstance(data, str):
        return data.replace(VALUE_PLACEHOLDER, value)
    if isinstance(data, Mapping):
        return {key: substitute_value(item, value) for key, item in data.items()}
    if isinstance(data, list):
        return [substitute_value(item, value) for item in data]
    return data


@dataclass(frozen=True)
class ProfileIssue:
    """One problem in a profile file, located as precisely as possible.

    ``line`` is 1-based (``None`` when the file could not be read at all),
    ``profile`` is the profile's slug or ``#<index>`` when it has none, and
    ``field`` a dotted path inside the profile (``cpu.limit``,
    ``volumes[0].host_path``).
    """

    file: str
    line: int | None
    profile: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.profile is not None:
            parts.append(f"profile {self.profile!r}")
        if self.field:
            parts.append(f"field {self.field!r}")
        parts.append(self.message)
        return ": ".join(parts)


@dataclass(frozen=True)
class Source:
    """Where a profile was defined: file and 1-based line of its entry."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Range:
    """A guarantee/limit pair (CPUs as float, memory as int bytes); either may be None."""

    guarantee: float | int | None = None
    limit: float | int | None = None


@dataclass(frozen=True)
class Gpu:
    """GPUs for a profile. ``node_selector`` and ``tolerations`` are Kubernetes only."""

    count: int = 0
    resource_name: str = DEFAULT_GPU_RESOURCE
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Gpu:
        return cls(
            count=data.get("count", 0),
            resource_name=data.get("resource_name", DEFAULT_GPU_RESOURCE),
            node_selector=dict(data.get("node_selector", {})),
            tolerations=tuple(dict(t) for t in data.get("tolerations", ())),
        )

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"count": self.count, "resource_name": self.resource_name}
        if self.node_selector:
            data["node_selector"] = dict(self.node_selector)
        if self.tolerations:
            data["tolerations"] = [dict(t) for t in self.tolerations]
        return data


@dataclass(frozen=True)
class Volume:
    """A volume mounted into the server: a host directory or a Kubernetes PVC."""

    name: str
    mount_path: str
    host_path: str | None = None
    claim_name: str | None = None
    read_only: bool = False

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Volume:
        return cls(
            name=data["name"],
            mount_path=data["mount_path"],
            host_path=data.get("host_path"),
            claim_name=data.get("claim_name"),
            read_only=bool(data.get("read_only", False)),
        )

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "mount_path": self.mount_path}
        if self.host_path is not None:
            data["host_path"] = self.host_path
        if self.claim_name is not None:
            data["claim_name"] = self.claim_name
        data["read_only"] = self.read_only
        return data


@dataclass(frozen=True)
class OptionChoice:
    """One listed choice of an option; ``override`` is partial profile data."""

    slug: str
    display_name: str
    default: bool = False
    override: dict[str, Any] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"display_name": self.display_name}
        if self.default:
            data["default"] = True
        if self.override:
            data["override"] = copy.deepcopy(self.override)
        return data


@dataclass(frozen=True)
class UnlistedChoice:
    """Free-text choice; ``{value}`` in ``override`` strings becomes the text."""

    enabled: bool = False
    display_name: str = "Other"
    validation_regex: str | None = None
    validation_message: str | None = None
    override: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> UnlistedChoice:
        return cls(
            enabled=data.get("enabled", False),
            display_name=data.get("display_name", "Other"),
            validation_regex=data.get("validation_regex"),
            validation_message=data.get("validation_message"),
            override=copy.deepcopy(dict(data.get("override", {}))),
        )

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"enabled": self.enabled, "display_name": self.display_name}
        if self.validation_regex is not None:
            data["validation_regex"] = self.validation_regex
        if self.validation_message is not None:
            data["validation_message"] = self.validation_message
        if self.override:
            data["override"] = copy.deepcopy(self.override)
        return data

    def check(self, value: str) -> str | None:
        """Return why ``value`` is refused, or None when it is acceptable."""
        if self.validation_regex is None or re.fullmatch(self.validation_regex, value):
            return None
        return self.validation_message or f"must match {self.validation_regex}"


@dataclass(frozen=True)
class ProfileOption:
    """A per-profile option the user picks on the spawn page (image, size...)."""

    name: str
    display_name: str
    choices: dict[str, OptionChoice] = field(default_factory=dict)
    unlisted: UnlistedChoice | None = None

    @classmethod
    def from_data(cls, name: str, data: Mapping[str, Any]) -> ProfileOption:
        choices = {
            slug: OptionChoice(
                slug=slug,
                display_name=choice["display_name"],
                default=choice.get("default", False),
                override=copy.deepcopy(dict(choice.get("override", {}))),
            )
            for slug, choice in data.get("choices", {}).items()
        }
        unlisted = data.get("unlisted_choice")
        return cls(
            name=name,
            display_name=data["display_name"],
            choices=choices,
            unlisted=UnlistedChoice.from_data(unlisted) if unlisted is not None else None,
        )

    @property
    def unlisted_enabled(self) -> bool:
        return self.unlisted is not None and self.unlisted.enabled

    @property
    def default_choice(self) -> str | None:
        """Slug of the choice marked default, else the first; None if no choices."""
        for slug, choice in self.choices.items():
            if choice.default:
                return slug
        return next(iter(self.choices), None)

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"display_name": self.display_name}
        if self.choices:
            data["choices"] = {slug: c.to_data() for slug, c in self.choices.items()}
        if self.unlisted is not None:
            data["unlisted_choice"] = self.unlisted.to_data()
        return data


@dataclass(frozen=True)
class Profile:
    """One spawner profile, mirroring an entry of the YAML ``profiles`` list.

    Memory is in bytes, CPUs in (possibly fractional) cores.  ``default`` is
    what the file says; :attr:`ProfileSet.default` decides the effective one.
    ``allowed_users``/``allowed_groups`` are None when not given.
    """

    slug: str
    display_name: str
    description: str | None = None
    default: bool = False
    image: str | None = None
    cpu: Range = Range()
    memory: Range = Range()
    gpu: Gpu | None = None
    environment: dict[str, str] = field(default_factory=dict)
    volumes: tuple[Volume, ...] = ()
    allowed_users: tuple[str, ...] | None = None
    allowed_groups: tuple[str, ...] | None = None
    options: dict[str, ProfileOption] = field(default_factory=dict)
    source: Source | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any], source: Source | None = None) -> Profile:
        """Build a profile from validated file data (see :mod:`.validate`)."""
        cpu = data.get("cpu", {})
        memory = data.get("memory", {})

        def quantity(value: Any) -> int | None:
            return None if value is None else parse_quantity(value)

        def names(value: Any) -> tuple[str, ...] | None:
            return None if value is None else tuple(value)

        return cls(
            slug=data["slug"],
            display_name=data["display_name"],
            description=data.get("description"),
            default=data.get("default", False),
            image=data.get("image"),
            cpu=Range(
                guarantee=None if cpu.get("guarantee") is None else float(cpu["guarantee"]),
                limit=None if cpu.get("limit") is None else float(cpu["limit"]),
            ),
            memory=Range(quantity(memory.get("guarantee")), quantity(memory.get("limit"))),
            gpu=Gpu.from_data(data["gpu"]) if "gpu" in data else None,
            environment=dict(data.get("environment", {})),
            volumes=tuple(Volume.from_data(v) for v in data.get("volumes", ())),
            allowed_users=names(data.get("allowed_users")),
            allowed_groups=names(data.get("allowed_groups")),
            options={
                name: ProfileOption.from_data(name, option)
                for name, option in data.get("options", {}).items()
            },
            source=source,
        )

    def allows(self, username: str, groups: Iterable[str] = ()) -> bool:
        """True if ``username`` (member of ``groups``) may use this profile.

        Open to everyone unless ``allowed_users`` or ``allowed_groups`` is
        set; then the user must be listed or be in one of the listed groups.
        """
        if self.allowed_users is None and self.allowed_groups is None:
            return True
        if self.allowed_users is not None and username in self.allowed_users:
            return True
        return self.allowed_groups is not None and not set(self.allowed_groups).isdisjoint(groups)

    def resource_data(self) -> dict[str, Any]:
        """The overridable fields as file data: the base option overrides merge onto."""
        data = self.to_data()
        return {key: data[key] for key in RESOURCE_FIELDS if key in data}

    def to_data(self) -> dict[str, Any]:
        """This profile in the file format (memory written as exact quantities)."""
        data: dict[str, Any] = {"slug": self.slug, "display_name": self.display_name}
        if self.description is not None:
            data["description"] = self.description
        if self.default:
            data["default"] = True
        if self.image is not None:
            data["image"] = self.image
        for name, rng, fmt in (("cpu", self.cpu, float), ("memory", self.memory, format_quantity)):
            section = {
                key: fmt(value)
                for key, value in (("guarantee", rng.guarantee), ("limit", rng.limit))
                if value is not None
            }
            if section:
                data[name] = section
        if self.gpu is not None:
            data["gpu"] = self.gpu.to_data()
        if self.environment:
            data["environment"] = dict(self.environment)
        if self.volumes:
            data["volumes"] = [v.to_data() for v in self.volumes]
        if self.allowed_users is not None:
            data["allowed_users"] = list(self.allowed_users)
        if self.allowed_groups is not None:
            data["allowed_groups"] = list(self.allowed_groups)
        if self.options:
            data["options"] = {name: o.to_data() for name, o in self.options.items()}
        return data


def effective_default(profiles: Sequence[Profile]) -> Profile | None:
    """The first profile marked default, else the first profile (None if empty)."""
    for profile in profiles:
        if profile.default:
            return profile
    return profiles[0] if profiles else None


@dataclass(frozen=True)
class ProfileSet:
    """All loaded profiles, in file order (files in the order they were given)."""

    profiles: tuple[Profile, ...]

    def get(self, slug: str) -> Profile | None:
        """The profile with this slug, or None.  Does not check permissions."""
        for profile in self.profiles:
            if profile.slug == slug:
                return profile
        return None

    @property
    def default(self) -> Profile:
        """The profile marked ``default: true``, else the first one."""
        profile = effective_default(self.profiles)
        assert profile is not None, "a loaded ProfileSet is never empty"
        return profile

    def for_user(self, username: str, groups: Iterable[str] = ()) -> list[Profile]:
        """The profiles ``username`` may use, in file order."""
        groups = frozenset(groups)
        return [p for p in self.profiles if p.allows(username, groups)]

    def default_for(self, username: str, groups: Iterable[str] = ()) -> Profile | None:
        """The user's default: the set's default if allowed, else their first profile."""
        allowed = self.for_user(username, groups)
        if self.default in allowed:
            return self.default
        return allowed[0] if allowed else None

    def to_data(self) -> dict[str, Any]:
        """The whole set as one file's data (valid input for :func:`load_profiles`)."""
        return {"profiles": [p.to_data() for p in self.profiles]}
