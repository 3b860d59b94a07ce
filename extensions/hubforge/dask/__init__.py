"""Dask from a notebook, through the hub's ``dask-gateway`` service.

Scale a computation without knowing where workers run::

    import hubforge.dask as hdask

    client = hdask.cluster(workers=4)            # a distributed.Client, connected
    client = hdask.cluster(adaptive=(1, 8))      # adaptive between 1 and 8 workers
    client = hdask.cluster(workers=2, worker_cores=2, worker_memory=4)   # GiB

    hdask.list_clusters()                        # your running clusters
    client = hdask.connect("3f2a...")            # from a new kernel: reconnect
    hdask.scale("3f2a...", 6); hdask.adapt("3f2a...", 0, 8)
    hdask.shutdown("3f2a...")                    # or hdask.shutdown(all=True)
    hdask.limits()                               # what you may take

    hdask.widget()                               # sliders, buttons, live status
    %dask start 4                                # the magic (see hubforge.dask.magics)

Clusters outlive the kernel that started them (reconnect from another), but not the
server: they stop when the server that started them stops, after the platform's idle
timeout, or when their user is deleted. Requests over your limits are refused with a
message that states the limit. The dashboard link (``client.dashboard_link``) goes
through the hub's proxy and opens for you only.

The plain dask-gateway client works too: ``dask_gateway.Gateway()`` is configured by
the environment the hub gives each server.

Importing this module is cheap: dask, distributed and dask-gateway are imported when a
function needs them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import warnings
from typing import TYPE_CHECKING, Any

from ..exceptions import HubForgeError

if TYPE_CHECKING:  # pragma: no cover
    import distributed
    import dask_gateway

__all__ = [
    "DaskError", "VersionMismatchWarning", "gateway", "cluster", "connect", "list_clusters",
    "disconnect", "shutdown", "scale", "adapt", "limits", "options", "check_versions", "widget",
]

#: Packages whose versions must agree between this kernel and the cluster.
CHECKED_PACKAGES = ("python", "dask", "distributed", "cloudpickle", "msgpack", "numpy", "pandas", "toolz")


class DaskError(HubForgeError):
    """A cluster request failed; the message says why (a limit, a missing cluster, ...)."""


class VersionMismatchWarning(UserWarning):
    """The cluster runs different versions of packages than this kernel."""


def origin() -> str:
    """``server:<name>``: this server, recorded as the origin of the clusters it starts."""
    return f"server:{os.environ.get('JUPYTERHUB_SERVER_NAME', '')}" if "JUPYTERHUB_USER" in os.environ else ""


#: One Gateway client per configuration, kept for the kernel's life: it holds an HTTP
#: session and an event-loop thread worth reusing, and dask-gateway's clients cannot be
#: closed twice (their ``__del__`` closes them again, and fails).
_GATEWAYS: dict[tuple, Any] = {}


def gateway(**kwargs) -> "dask_gateway.Gateway":
    """A `dask_gateway.Gateway` for this hub (address and hub auth from the environment)."""
    if not os.environ.get("DASK_GATEWAY__ADDRESS") and "address" not in kwargs:
        raise DaskError("no Dask gateway is configured for this server (DASK_GATEWAY__ADDRESS is not set); "
                        "ask your admin to enable the dask section of the platform settings")
    key = tuple(sorted((k, v if isinstance(v, (str, int, float, type(None))) else id(v)) for k, v in kwargs.items()))
    gw = _GATEWAYS.get(key)
    if gw is None:
        from dask_gateway import Gateway

        _guard_finalizers()

        if not _GATEWAYS:
            atexit.register(_close_gateways)
        gw = _GATEWAYS[key] = (Gateway(**kwargs), kwargs)
    return gw[0]


def _guard_finalizers() -> None:
    """Keep dask-gateway's finalizers from deadlocking the client's event loop.

    ``Gateway.__del__`` and ``GatewayCluster.__del__`` close the object synchronously:
    they submit the clean-up to the client's event-loop thread and wait for it. When the
    garbage collector happens to run them *in* that thread (any allocation there can
    trigger it), the thread waits for itself forever and every later call hangs. The
    guard skips the close in that one case; the object's HTTP session is then freed by
    the collector instead.
    """
    import asyncio

    from dask_gateway.client import Gateway, GatewayCluster

    for cls in (Gateway, GatewayCluster):
        original = cls.__dict__.get("__del__")
        if original is None or getattr(original, "_hubforge_guarded", False):
            continue

        def __del__(self, _original=original):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return _original(self)
            if getattr(self, "asynchronous", True):
                return _original(self)
            # synchronous client, finalized inside an event loop: closing would deadlock

        __del__._hubforge_guarded = True
        cls.__del__ = __del__


def _close_gateways() -> None:
    """At exit: close the cached clients once (no "unclosed session" warnings, and no
    second close from their ``__del__``)."""
    while _GATEWAYS:
        gw, _ = _GATEWAYS.popitem()[1]
        with contextlib.suppress(Exception):  # the loop may already be gone at exit
            gw.close()
        gw.__dict__.pop("_loop_runner", None)


def _translate(e: Exception) -> DaskError:
    """dask-gateway's errors, as one exception type with the server's message."""
    return DaskError(str(e).strip() or type(e).__name__)


#: dask-gateway's client drops the gateway's message for these statuses; ours instead.
_STATUS_MESSAGES = {
    401: "the Dask gateway did not accept your token (HTTP 401): it needs the scope "
         "access:services!service=dask-gateway, which every user and server has by default",
    403: "permission denied (HTTP 403): only the cluster's owner or a hub admin may use it",
}


def _call(gw, fn, *args, **kwargs):
    from aiohttp import ClientResponseError
    from dask_gateway import GatewayClusterError, GatewayServerError

    try:
        return gw.sync(fn, *args, **kwargs) if gw is not None else fn(*args, **kwargs)
    except _NoHubForgeRoutes:
        raise
    except (ValueError, GatewayClusterError, GatewayServerError) as e:
        raise _translate(e) from None
    except ClientResponseError as e:
        raise DaskError(_STATUS_MESSAGES.get(e.status, f"the Dask gateway answered HTTP {e.status} {e.message}")) from None


def cluster(workers: int | None = None, *, adaptive: tuple[int, int] | None = None,
            worker_cores: int | None = None, worker_memory: float | None = None,
            wait: bool = True, check: bool = True, gateway_kwargs: dict | None = None,
            ) -> "distributed.Client":
    """Start a cluster and return a `distributed.Client` connected to it.

    `workers` start with the scheduler; or `adaptive` = ``(minimum, maximum)``.
    `worker_cores` (whole cores) and `worker_memory` (GiB) size each worker, within
    your limits (`limits`). With `wait`, returns once `workers` (or the adaptive
    minimum) are ready. `check` compares package versions with the cluster's
    (`check_versions`). The client's ``.cluster`` is the `dask_gateway.GatewayCluster`.
    """
    opts: dict[str, Any] = {"origin": origin()}
    if adaptive is not None:
        minimum, maximum = adaptive
        if workers is not None:
            raise DaskError("give workers or adaptive=(minimum, maximum), not both")
        opts.update(adapt_minimum=int(minimum), adapt_maximum=int(maximum))
    elif workers:
        opts["workers"] = int(workers)
    if worker_cores is not None:
        opts["worker_cores"] = int(worker_cores)
    if worker_memory is not None:
        opts["worker_memory"] = float(worker_memory)
    gw = gateway(**(gateway_kwargs or {}))
    # submit, then connect: dask-gateway's new_cluster builds its cluster object first,
    # and when the gateway refuses the request (a limit), the half-built object's
    # clean-up deadlocks the client's event loop.
    name = _call(None, gw.submit, **opts)
    gc = _call(None, gw.connect, name, shutdown_on_close=False)
    client = gc.get_client(set_as_default=True)
    if wait:
        ready = (adaptive[0] if adaptive else workers) or 0
        if ready:
            try:
                client.wait_for_workers(ready, timeout=120)
            except TimeoutError:
                raise DaskError(
                    f"cluster {name} has fewer than {ready} workers after 120 s; it keeps running: "
                    f"see hubforge.dask.list_clusters(), connect({name!r}) or shutdown({name!r})"
                ) from None
    if check:
        check_versions(client)
    return client


def connect(name: str, *, check: bool = True, gateway_kwargs: dict | None = None) -> "distributed.Client":
    """A client for one of your running clusters (by name), e.g. from a new kernel."""
    gw = gateway(**(gateway_kwargs or {}))
    gc = _call(None, gw.connect, name, shutdown_on_close=False)
    client = gc.get_client(set_as_default=True)
    if check:
        check_versions(client)
    return client


class _NoHubForgeRoutes(Exception):
    """The gateway is dask-gateway's own (the Helm chart's, on Kubernetes), not HubForge's."""


async def _hubforge_json(gw, method: str, path: str) -> dict:
    try:
        resp = await gw._request(method, f"{gw.address}/api/v1/hubforge/{path}")
    except ValueError as e:
        if "404" in str(e) or "Not Found" in str(e):
            raise _NoHubForgeRoutes() from None
        raise
    return await resp.json()


def _reports(gw) -> list[dict]:
    """dask-gateway's own listing, in `list_clusters`' shape (what is unknown is None)."""
    out = []
    for r in _call(None, gw.list_clusters):
        options = dict(r.options or {})
        out.append({
            "name": r.name, "user": os.environ.get("JUPYTERHUB_USER"), "status": r.status.name,
            "origin": options.get("origin", ""), "options": options, "workers": None,
            "workers_requested": None, "worker_cores": options.get("worker_cores"),
            "worker_memory": int(options["worker_memory"] * 2**30) if options.get("worker_memory") else None,
            "max_workers": None, "adaptive": bool(options.get("adapt_maximum")),
            "dashboard_link": r.dashboard_link,
            "start_time": r.start_time.timestamp() * 1000 if r.start_time else None,
        })
    return out


def disconnect(client) -> None:
    """Close a client from `cluster` or `connect`, leaving its cluster running.

    (Closing only the `distributed.Client` leaves the cluster object's own gateway
    connection, which dask-gateway closes again when it is collected, and fails.)
    """
    client.close()
    cluster = getattr(client, "cluster", None)
    if cluster is not None:
        cluster.close(shutdown=False)
        cluster.gateway.__dict__.pop("_loop_runner", None)


def list_clusters(all_users: bool = False, *, gateway_kwargs: dict | None = None) -> list[dict]:
    """Your running clusters (admins: everyone's with `all_users`), newest last.

    Each is a dict: name, user, status, workers (ready), workers_requested,
    worker_cores, worker_memory, max_workers, adaptive, origin, dashboard_link.
    """
    gw = gateway(**(gateway_kwargs or {}))
    try:
        data = _call(gw, _hubforge_json, gw, "GET", "clusters?all=1" if all_users else "clusters")
    except _NoHubForgeRoutes:
        if all_users:
            raise DaskError("this gateway (dask-gateway's own, as on Kubernetes) cannot list "
                            "everyone's clusters; use the gateway's admin tools") from None
        return _reports(gw)
    out = []
    for c in sorted(data["clusters"], key=lambda c: c.get("start_time") or 0):
        route = c.pop("dashboard_route", None)
        c["dashboard_link"] = f"{gw._public_address}{route}" if route else None
        out.append(c)
    return out


def limits(*, gateway_kwargs: dict | None = None) -> dict:
    """What you may take: max_clusters, per-cluster max_workers/max_cores/max_memory
    (bytes), and the largest worker (worker_cores, worker_memory in bytes)."""
    gw = gateway(**(gateway_kwargs or {}))
    try:
        return _call(gw, _hubforge_json, gw, "GET", "limits")["limits"]
    except _NoHubForgeRoutes:  # dask-gateway's own gateway: what its options' bounds say
        fields = _call(None, gw.cluster_options)._fields
        bound = lambda name: getattr(fields.get(name), "max", None)  # noqa: E731
        memory = bound("worker_memory")
        return {"max_clusters": None, "max_workers": bound("workers"), "max_cores": None,
                "max_memory": None, "worker_cores": bound("worker_cores"),
                "worker_memory": int(memory * 2**30) if memory else None}


def options(**kwargs):
    """The cluster options you may choose, with their bounds (`dask_gateway.options.Options`)."""
    gw = gateway(**kwargs)
    return _call(None, gw.cluster_options)


def _name(target) -> str:
    if isinstance(target, str):
        return target
    cluster = getattr(target, "cluster", None) or target  # a Client or a GatewayCluster
    name = getattr(cluster, "name", None)
    if not isinstance(name, str):
        raise DaskError(f"expected a cluster name, a Client or a GatewayCluster, got {target!r}")
    return name


def scale(target, n: int, *, gateway_kwargs: dict | None = None) -> None:
    """Ask for `n` workers (turns adaptive scaling off). Over your limit: DaskError."""
    gw = gateway(**(gateway_kwargs or {}))
    _call(gw, gw._scale_cluster, _name(target), int(n))


def adapt(target, minimum: int = 0, maximum: int | None = None, *, gateway_kwargs: dict | None = None) -> None:
    """Scale between `minimum` and `maximum` workers with the load."""
    gw = gateway(**(gateway_kwargs or {}))
    _call(gw, gw._adapt_cluster, _name(target), minimum=int(minimum),
          maximum=None if maximum is None else int(maximum), active=True)


def shutdown(target=None, *, all: bool = False, gateway_kwargs: dict | None = None) -> list[str]:
    """Stop one cluster (a name, Client or GatewayCluster) or, with `all`, all of yours.

    Returns the names of the clusters stopped.
    """
    if (target is None) == (not all):
        raise DaskError("give a cluster to stop, or all=True")
    gw = gateway(**(gateway_kwargs or {}))
    if all:
        from urllib.parse import quote

        try:
            user = os.environ.get("JUPYTERHUB_USER") or _call(gw, _hubforge_json, gw, "GET", "limits")["user"]
            return _call(gw, _hubforge_json, gw, "DELETE", f"users/{quote(user, safe='')}/clusters")["stopped"]
        except _NoHubForgeRoutes:  # dask-gateway's own gateway: one by one
            names = [r["name"] for r in _reports(gw)]
            for name in names:
                _call(gw, gw._stop_cluster, name)
            return names
    name = _name(target)
    _call(gw, gw._stop_cluster, name)
    return [name]


def version_differences(client_versions: dict, cluster_versions: dict) -> list[str]:
    """Lines like ``dask: this kernel 2026.8.0, scheduler 2026.3.0`` for each mismatch."""
    lines = []
    for role in ("scheduler", "workers"):
        theirs = cluster_versions.get(role)
        items = (theirs or {}).items() if role == "workers" else [("scheduler", theirs)]
        for who, versions in items:
            if not versions:
                continue
            packages = versions.get("packages", versions)
            for pkg in CHECKED_PACKAGES:
                mine = client_versions.get(pkg)
                other = packages.get(pkg)
                if pkg == "python":  # major.minor: "3.11.2.final.0" and "3.11.9" agree
                    mine, other = (".".join((v or "").split(".")[:2]) for v in (mine, other))
                if mine and other and mine != other:
                    where = "the scheduler" if role == "scheduler" else f"worker {who}"
                    lines.append(f"{pkg}: this kernel has {mine}, {where} has {other}")
    return sorted(set(lines))


def check_versions(client) -> list[str]:
    """Warn (`VersionMismatchWarning`) if the cluster's packages differ from this kernel's.

    A cluster runs the environment of the platform's image; a kernel with other versions
    (a ``pip install`` in the notebook, an older image) fails in obscure ways when it
    sends work, so the difference is named up front. Returns the differences.
    """
    from distributed.versions import get_versions

    mine = get_versions()["packages"]
    mine["python"] = get_versions()["host"]["python"]
    theirs = client.get_versions(check=False)
    for role in ("scheduler",):
        if theirs.get(role):
            theirs[role] = {**theirs[role]["packages"], "python": theirs[role]["host"]["python"]}
    theirs["workers"] = {w: {**v["packages"], "python": v["host"]["python"]}
                         for w, v in (theirs.get("workers") or {}).items()}
    differences = version_differences(mine, theirs)
    if differences:
        warnings.warn(
            "this kernel and the Dask cluster run different package versions, which makes "
            "work fail in obscure ways; use the cluster from a server on the same image, or "
            "reinstall these here: " + "; ".join(differences),
            VersionMismatchWarning, stacklevel=3,
        )
    return differences


def widget(**kwargs):
    """The cluster widget: size, start, scale, stop, live status, dashboard link."""
    from .widgets import ClusterWidget

    return ClusterWidget(**kwargs)
