"""A scheduler preload run after dask-gateway's: start with the workers asked for.

dask-gateway's scheduler plugin (`dask_gateway.scheduler_preload`) starts with a target
of 0 workers; a client then asks for more with a second request, once the scheduler is
up. HubForge's clusters take the initial count (or adaptive bounds) as cluster options
and the backend passes them here (``HUBFORGE_DASK_INITIAL_WORKERS``,
``HUBFORGE_DASK_ADAPT_MIN``/``_MAX``), so the scheduler's first heartbeat to the gateway,
a quarter of a second after it starts, already requests them: workers start while the
client is still connecting.
"""

from __future__ import annotations

import asyncio
import os


def _int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else None


def dask_setup(scheduler) -> None:
    service = scheduler.services.get("gateway")
    if service is None:  # not a dask-gateway scheduler
        return
    minimum, maximum = _int("HUBFORGE_DASK_ADAPT_MIN"), _int("HUBFORGE_DASK_ADAPT_MAX")
    if maximum is not None:
        service.count = minimum or 0
        asyncio.ensure_future(service.adapt(minimum=minimum or 0, maximum=maximum))
        return
    initial = _int("HUBFORGE_DASK_INITIAL_WORKERS")
    if initial:
        service.count = initial
