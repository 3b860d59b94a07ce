"""The ``dask:`` section of the platform settings: the gateway, its limits, its clean-up.

Admins write it once in ``hub_config/hubforge.yaml``::

    dask:
      idle_timeout: 1800          # a cluster nobody uses stops after 30 minutes
      limits:                     # what every user may take
        max_clusters: 2
        max_workers: 8            # per cluster
        max_cores: 8              # per cluster, workers' cores added up
        max_memory: 16 G          # per cluster, workers' memory added up
        worker_cores: 2           # the largest worker a user may ask for
        worker_memory: 4 G
      group_limits:               # groups that may take more (the largest value wins)
        power-users: {max_workers: 32, max_cores: 32, max_memory: 64 G}

Limits are per cluster (workers, cores, memory) plus a number of clusters per user, so
what one user can hold at once is ``max_clusters`` times a cluster's limits; that is the
model dask-gateway itself enforces (``cluster_max_*``), and the one the user sees in
the widget. :func:`limits_for` resolves a user's limits from their groups.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields

from traitlets import Bool, Dict, Float, validate

from ..exceptions import SettingsError
from ..settings import SettingsSection

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_memory(value, where: str = "memory") -> int:
    """Bytes from ``4 G``, ``512M``, ``2.5G`` or a number of bytes; SettingsError otherwise."""
    if isinstance(value, bool):
        raise SettingsError(f"{where}: expected a size like '4 G', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise SettingsError(f"{where}: a size must be a finite number >= 0, got {value!r}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", str(value), re.IGNORECASE)
    if not m:
        raise SettingsError(f"{where}: expected a size like '4 G' or '512 M', got {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def format_memory(n: int) -> str:
    """``4 GiB``, ``512 MiB``: sizes as users read them."""
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:.3g} {unit}iB"
    return f"{n} B"


@dataclass(frozen=True)
class Limits:
    """What one user may take. Cluster limits are per cluster."""

    max_clusters: int = 2
    max_workers: int = 8
    max_cores: float = 8.0
    max_memory: int = 16 * 2**30
    worker_cores: float = 2.0
    worker_memory: int = 4 * 2**30

    @classmethod
    def from_mapping(cls, data: dict, where: str, base: "Limits | None" = None) -> "Limits":
        if not isinstance(data, dict):
            raise SettingsError(f"{where}: expected a mapping of limits, got {data!r}")
        known = {f.name for f in fields(cls)}
        values = asdict(base or cls())
        for key, value in data.items():
            if key not in known:
                raise SettingsError(f"{where}: unknown limit {key!r}; known limits: {', '.join(sorted(known))}")
            if key.endswith("memory"):
                values[key] = parse_memory(value, f"{where}.{key}")
                if values[key] <= 0:
                    raise SettingsError(f"{where}.{key}: must be more than 0, got {value!r}")
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise SettingsError(f"{where}.{key}: expected a number >= 0, got {value!r}")
                if key in ("max_clusters", "max_workers") and int(value) != value:
                    raise SettingsError(f"{where}.{key}: expected a whole number, got {value!r}")
                values[key] = int(value) if key in ("max_clusters", "max_workers") else float(value)
        limits = cls(**values)
        if 0 < limits.worker_cores < 1:
            raise SettingsError(f"{where}.worker_cores: workers have whole cores (at least 1), got {limits.worker_cores:g}")
        if limits.worker_cores > limits.max_cores:
            raise SettingsError(
                f"{where}: worker_cores {limits.worker_cores:g} is more than max_cores {limits.max_cores:g}"
            )
        if limits.worker_memory > limits.max_memory:
            raise SettingsError(
                f"{where}: worker_memory {format_memory(limits.worker_memory)} is more than "
                f"max_memory {format_memory(limits.max_memory)}"
            )
        return limits

    def widest(self, other: "Limits") -> "Limits":
        return Limits(**{f.name: max(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)})

    def max_workers_for(self, worker_cores: float, worker_memory: int) -> tuple[int, str]:
        """The most workers of that size one cluster may have, and the limit that binds."""
        candidates = [(self.max_workers, f"max_workers {self.max_workers}")]
        if worker_cores:
            candidates.append((int(self.max_cores // worker_cores),
                               f"max_cores {self.max_cores:g} at {worker_cores:g} cores per worker"))
        if worker_memory:
            candidates.append((int(self.max_memory // worker_memory),
                               f"max_memory {format_memory(self.max_memory)} at "
                               f"{format_memory(worker_memory)} per worker"))
        return min(candidates, key=lambda c: c[0])

    def to_json(self) -> dict:
        return asdict(self)


class DaskSettings(SettingsSection):
    """The ``dask:`` section of ``hubforge.yaml`` (every key optional)."""

    section = "dask"
    # The dask section's messages quote the key; kept as they were (tests match them).
    unknown_key_message = "{source}: unknown setting '{section}.{key}'; known: {known}"
    invalid_value_message = "{source}: setting '{section}.{key}': invalid value {value!r}: {error}"

    enabled = Bool(
        True,
        help="""Run the ``dask-gateway`` hub service (mode `local` and `containers`; on
        Kubernetes the dask-gateway Helm chart runs it). Default true.""",
    ).tag(config=True)

    idle_timeout = Float(
        1800,
        help="""Seconds after which a cluster with no work stops itself (dask-gateway's
        ``idle_timeout``). Default 1800; 0 never stops an idle cluster.""",
    ).tag(config=True)

    stop_with_server = Bool(
        True,
        help="""Stop the clusters a notebook server started when that server stops.
        Default true. Clusters started with a token from outside any server (a script,
        a job) are unaffected; they stop when idle or when their user is deleted.""",
    ).tag(config=True)

    reconcile_period = Float(
        15,
        help="""Seconds between the gateway's checks of the hub for stopped servers and
        deleted users, whose clusters it then stops. Default 15.""",
    ).tag(config=True)

    worker_start_timeout = Float(
        60,
        help="Seconds a worker (and the scheduler) may take to start before it is marked failed. Default 60.",
    ).tag(config=True)

    limits = Dict(
        help="""What every user may take: ``max_clusters`` (default 2) and, per cluster,
        ``max_workers`` (8), ``max_cores`` (8), ``max_memory`` (``16 G``), and the largest
        worker, ``worker_cores`` (2) and ``worker_memory`` (``4 G``). A request over a limit
        is refused with a message that states it.""",
    ).tag(config=True)

    group_limits = Dict(
        help="""Limits for members of hub groups, e.g. ``{power-users: {max_workers: 32}}``;
        keys not given keep the default limits. A user in several groups gets the largest
        value of each limit.""",
    ).tag(config=True)

    @validate("limits")
    def _check_limits(self, proposal):
        Limits.from_mapping(proposal["value"], self.where("limits"))
        return proposal["value"]

    @validate("group_limits")
    def _check_group_limits(self, proposal):
        for group, data in proposal["value"].items():
            Limits.from_mapping(data, self.where(f"group_limits.{group}"), self.default_limits)
        return proposal["value"]

    @property
    def default_limits(self) -> Limits:
        return Limits.from_mapping(self.limits, self.where("limits"))

    def limits_for(self, groups) -> Limits:
        """A user's limits: the defaults, widened by each of their groups' limits."""
        limits = self.default_limits
        for group in sorted(set(groups) & set(self.group_limits)):
            limits = limits.widest(Limits.from_mapping(
                self.group_limits[group], f"dask.group_limits.{group}", self.default_limits))
        return limits

    @classmethod
    def ordered_items(cls, data: dict) -> list[tuple[str, object]]:
        """Every key, the limits always (their defaults are checked too), group limits
        last: they are checked against the limits."""
        data = dict(data)
        for key in ("limits", "group_limits"):
            data.setdefault(key, {})
        return sorted(data.items(), key=lambda kv: kv[0] == "group_limits")
