"""The data plane: served versions, adaptive batching, alias and canary routing, stats.

Generic over where a version's worker runs (a backend from :mod:`hubforge.models.backends`
starts it and says where it listens). For each served version the service keeps one
:class:`VersionServer`: a queue of waiting requests and a connection to each of the
version's worker processes: one for a local process or a container; one per ready pod
on Kubernetes, where the autoscaler adds and removes pods (`VersionServer.set_endpoints`).
Each connection carries one batch at a time; with several, batches go to whichever
worker is free.

**Adaptive batching.** A request that finds its version idle is sent at once, alone, so
latency at low load is the model's own. Requests that arrive while a batch is being
predicted wait; when it returns, everything waiting (up to ``max_batch_size`` rows) goes
as the next batch, in one ``predict`` call. The busier the model, the bigger the
batches, with no timer and no tuning: a scikit-learn pipeline's predict costs about the
same for 1 row as for 50, so throughput grows with load until the batches are full.

**Routing.** A model's default route is its ``production`` alias if set, else its latest
version. An alias may carry a canary: a percentage of its requests go to another
version. A change of alias or canary first makes sure the new target is loaded and
ready, then switches in one step (no ``await`` between choosing a target and queueing on
it), and a version nobody points at any more is unloaded only after its queue drained
and a grace period passed: no request fails because of a promotion.
"""

from __future__ import annotations

import asyncio
import contextlib
import bisect
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field

from .errors import ModelConflict, ModelError, PredictFailed
from .protocol import ProtocolError, encode, read_frame
from .signature import InputSchema, merge

log = logging.getLogger("hubforge.models")

#: Seconds a version that lost its last alias keeps serving requests already routed to it.
RETIRE_GRACE = 10.0
#: Latency histogram edges of the page's charts, in ms (log-spaced, 0.25 ms to ~65 s).
LATENCY_EDGES = [0.25 * 1.5**i for i in range(32)]
BUCKET_SECONDS = 5
#: The longest a batch waits for more requests under load, in seconds (see `_linger`).
MAX_LINGER = 0.004
#: Predict calls cheaper than this (seconds) never make a batch wait: about what the
#: front and the proxy spend bringing one request in.
MIN_LINGER_CALL = 0.002


@dataclass(eq=False)
class _Link:
    """A connection to one worker process of a version (a pod, on Kubernetes)."""

    address: tuple[str, int]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    busy: bool = False
    retired: bool = False  # its address left the version's endpoints: closed once idle


class VersionServer:
    """One served version: its worker connections and the queue in front of them."""

    def __init__(self, model: str, version: int, schema: InputSchema, *, max_batch: int, timeout: float,
                 max_linger: float = MAX_LINGER):
        self.model = model
        self.version = version
        self.schema = schema
        self.max_batch = max_batch
        self.timeout = timeout
        self.max_linger = max_linger
        self.state = "loading"  # loading, ready, failed, stopped
        self.error = ""
        self.handle = None  # the backend's handle of the worker
        self.service_address: tuple[str, int] | None = None  # where the backend said it listens
        self.last_used = time.monotonic()
        self._pending: deque = deque()
        self._busy = False  # the dispatch loop (`_flush`) runs
        self._links: list[_Link] = []
        self._key = ""  # the workers' key, for connections opened later
        self._in_flight = 0  # batches sent and not answered
        self._freed = asyncio.Event()  # a link finished a batch
        self._drained = asyncio.Event()
        self._drained.set()
        self._recent: deque = deque(maxlen=8)  # requests per batch, latest batches
        self._last_call = 0.0  # seconds the latest predict call took
        self._enough: asyncio.Future | None = None  # set when `_wanted` requests wait
        self._wanted = 0
        self.on_broken = None  # called (self) when the connection to its last worker fails
        self.on_batch = None  # called (rows) for every predict call sent to the worker

    def __repr__(self) -> str:
        return f"<VersionServer {self.model} v{self.version} {self.state}>"

    async def connect(self, host: str, port: int, key: str, timeout: float = 30) -> None:
        """Connect to the version's worker at ``host:port``; the version is then ready."""
        self._key = key
        self._links.append(await self._open((host, port), timeout))
        self.state = "ready"

    async def _open(self, address: tuple[str, int], timeout: float) -> _Link:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout)
        try:
            writer.write(encode({"key": self._key}))
            hello = await asyncio.wait_for(read_frame(reader), timeout)
            if not hello.get("ok"):
                raise ConnectionError("the model's worker refused the service's key")
        except BaseException:
            writer.close()
            raise
        return _Link(address, reader, writer)

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        """Addresses of the workers this version sends batches to."""
        return [link.address for link in self._links if not link.retired]

    async def set_endpoints(self, addresses: list[tuple[str, int]], timeout: float = 10) -> None:
        """Send batches to the workers at `addresses` from now on (Kubernetes: the ready
        pods behind the version's Service). New ones are connected (one that cannot be
        reached is logged and tried at the next call); connections to workers no longer
        listed are closed once their batch in flight is answered. An empty list changes
        nothing: a version keeps the workers it has rather than none."""
        wanted = set(addresses)
        if self.state != "ready" or not wanted:
            return
        current = {link.address for link in self._links}
        for address in sorted(wanted - current):
            try:
                link = await self._open(address, timeout)
            except (OSError, asyncio.TimeoutError, ConnectionError, ProtocolError) as e:
                log.warning("model %s version %s: cannot reach the worker at %s:%s: %s",
                            self.model, self.version, *address, e)
                continue
            if self.state != "ready":
                link.writer.close()
                return
            self._links.append(link)
            self._freed.set()
        for link in list(self._links):
            if link.address not in wanted and len(self.endpoints) > 1:
                link.retired = True
                if not link.busy:
                    self._drop(link)

    def submit(self, payload: dict, rows: int) -> asyncio.Future:
        """Queue one request; its future resolves to its predictions (a list of `rows`)."""
        if self.state != "ready":
            raise PredictFailed(f"model {self.model} version {self.version} is {self.state}"
                                + (f": {self.error}" if self.error else ""), 503)
        future = asyncio.get_running_loop().create_future()
        self._pending.append((payload, rows, future))
        self.last_used = time.monotonic()
        if self._enough is not None and len(self._pending) >= self._wanted and not self._enough.done():
            self._enough.set_result(None)
        if not self._busy:
            self._busy = True
            self._drained.clear()
            asyncio.ensure_future(self._flush())
        return future

    async def _flush(self) -> None:
        try:
            while self._pending:
                if self.state != "ready":  # broken (being restarted) or unloaded meanwhile
                    self._fail_pending(self._restarting(502) if self.state == "failed" else self._unloaded())
                    break
                if self._idle_link() is None:  # every worker has a batch: wait for one to answer
                    self._freed.clear()
                    await self._freed.wait()
                    continue
                await self._linger()
                link = self._idle_link()  # links may have come or gone meanwhile
                if link is None or not self._pending:
                    continue
                link.busy = True
                self._in_flight += 1
                batch = [self._pending.popleft()]
                rows = batch[0][1]
                while self._pending and rows + self._pending[0][1] <= self.max_batch:
                    item = self._pending.popleft()
                    batch.append(item)
                    rows += item[1]
                self._recent.append(len(batch))
                if len(self._links) == 1:
                    await self._send(link, batch)  # one worker: nothing to overlap
                else:
                    asyncio.ensure_future(self._send(link, batch))
        finally:
            self._busy = False
            if not self._in_flight:
                self._drained.set()

    def _idle_link(self) -> _Link | None:
        return next((link for link in self._links if not link.busy and not link.retired), None)

    async def _send(self, link: _Link, batch: list) -> None:
        """Predict `batch` on `link` (marked busy and counted in flight by the caller)."""
        started = time.perf_counter()
        try:
            await self._predict(batch, link)
        finally:
            self._last_call = time.perf_counter() - started
            link.busy = False
            self._in_flight -= 1
            if link.retired:
                self._drop(link)
            self._freed.set()
            if not self._in_flight and not self._busy:
                self._drained.set()

    def _drop(self, link: _Link) -> None:
        link.writer.close()
        with contextlib.suppress(ValueError):
            self._links.remove(link)

    async def _linger(self) -> None:
        """Under load, give the requests in flight a moment to join the next batch.

        A model's predict costs about as much for one row as for dozens, so every call
        spent on a small batch is CPU the front and the proxy lack to bring requests in.
        Only when recent batches held several requests (callers are waiting on each
        other) and a predict call costs more than `MIN_LINGER_CALL` (for a cheap
        model the front is the bottleneck, and waiting would only add latency) does the
        next batch wait, at most half the last call's time and `max_linger` seconds, until
        as many requests as the recent largest batch are queued. A lone caller never
        waits: its request found no batch before it.
        """
        peak = max(self._recent, default=1)
        if (peak < 2 or len(self._pending) >= peak or self._last_call < MIN_LINGER_CALL
                or self.max_linger <= 0):
            return
        self._enough = asyncio.get_running_loop().create_future()
        self._wanted = peak
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._enough), min(self.max_linger, self._last_call / 2))
        finally:
            self._enough = None

    async def _call(self, payload: dict, link: _Link) -> dict:
        link.writer.write(encode(payload))
        return await asyncio.wait_for(read_frame(link.reader), self.timeout)

    async def _predict(self, batch: list, link: _Link) -> None:
        payload = batch[0][0] if len(batch) == 1 else merge([item[0] for item in batch])
        if self.on_batch is not None:
            self.on_batch(sum(item[1] for item in batch))
        try:
            reply = await self._call(payload, link)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ProtocolError, OSError) as e:
            timed_out = isinstance(e, asyncio.TimeoutError)
            reason = (f"predict took longer than {self.timeout:g} s (models.predict_timeout)" if timed_out
                      else f"the model's process stopped ({type(e).__name__})")
            self._drop(link)
            if any(not other.retired for other in self._links):
                # Another worker (pod) serves on; this one's batch is lost with it.
                log.warning("model %s version %s: worker at %s:%s: %s", self.model, self.version,
                            *link.address, reason)
                error = PredictFailed(f"model {self.model} version {self.version}: {reason}", 504 if timed_out else 502)
            else:
                self._break(reason)
                error = self._restarting(504 if timed_out else 502)
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        if reply.get("ok"):
            predictions = reply.get("predictions") or []
            total = sum(item[1] for item in batch)
            if len(predictions) != total:
                error = PredictFailed(f"the model returned {len(predictions)} predictions for {total} rows", 502)
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
            offset = 0
            for _, rows, future in batch:
                if not future.done():
                    future.set_result(predictions[offset:offset + rows])
                offset += rows
            return
        if len(batch) > 1:
            # One request's input made the model raise: predict each alone, so only the
            # request at fault gets the error.
            for item in batch:
                await self._predict([item], link)
            return
        future = batch[0][2]
        if not future.done():
            future.set_exception(PredictFailed(f"the model could not predict: {reply.get('error', 'unknown error')}"))

    def _break(self, reason: str) -> None:
        self.state = "failed"
        self.error = reason
        for link in list(self._links):
            self._drop(link)
        self._freed.set()  # the dispatch loop ends (the version is no longer ready)
        if self.on_broken is not None:
            self.on_broken(self)

    async def drain(self, timeout: float = 30) -> None:
        """Wait until the queue is empty (no batch in flight)."""
        await asyncio.wait_for(self._drained.wait(), timeout)

    def close(self) -> None:
        self.state = "stopped"
        for link in list(self._links):
            self._drop(link)
        self._freed.set()
        self._fail_pending(self._unloaded())

    def _restarting(self, status: int) -> PredictFailed:
        return PredictFailed(f"model {self.model} version {self.version}: {self.error}; "
                             "it is being restarted, try again shortly", status)

    def _unloaded(self) -> PredictFailed:
        return PredictFailed(f"model {self.model} version {self.version} was unloaded", 503)

    def _fail_pending(self, error: PredictFailed) -> None:
        while self._pending:
            *_, future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)


@dataclass
class Route:
    """Where a model's requests go: its aliases, canaries and latest version."""

    latest: int | None = None
    aliases: dict[str, int] = field(default_factory=dict)
    canaries: dict[str, tuple[int, float]] = field(default_factory=dict)
    default_alias: str = "production"

    def resolve(self, selector: str | None) -> tuple[int, str | None]:
        """``(version, alias)`` a request for `selector` goes to (None: the default).

        Raises ModelError 404 for an unknown alias or version."""
        if selector is None:
            alias = self.default_alias if self.default_alias in self.aliases else None
            if alias is None:
                if self.latest is None:
                    raise ModelError("the model has no versions", 404)
                return self.latest, None
        elif selector[:1] == "v" and selector[1:].isdigit():
            return int(selector[1:]), None
        else:
            alias = selector
            if alias not in self.aliases:
                raise ModelError(f"the model has no alias '{alias}'", 404)
        canary = self.canaries.get(alias)
        if canary is not None and random.random() * 100 < canary[1]:
            return canary[0], alias
        return self.aliases[alias], alias

    def referenced(self) -> set[int]:
        """Versions that must stay loaded: alias and canary targets, and the default."""
        wanted = set(self.aliases.values()) | {v for v, _ in self.canaries.values()}
        if self.default_alias not in self.aliases and self.latest is not None:
            wanted.add(self.latest)
        return wanted


class Stats:
    """Request counts and latency histograms of one model in 5-second buckets (page charts)."""

    def __init__(self, window_seconds: int):
        self.buckets: deque = deque(maxlen=max(1, window_seconds // BUCKET_SECONDS))

    def record(self, version: int, ms: float, ok: bool) -> None:
        now = int(time.time()) // BUCKET_SECONDS * BUCKET_SECONDS
        if not self.buckets or self.buckets[-1][0] != now:
            self.buckets.append((now, {}))
        per = self.buckets[-1][1]
        entry = per.get(version)
        if entry is None:
            entry = per[version] = [0, 0, [0] * (len(LATENCY_EDGES) + 1)]
        entry[0] += 1
        if not ok:
            entry[1] += 1
        entry[2][bisect.bisect_left(LATENCY_EDGES, ms)] += 1

    def series(self) -> dict:
        """``{"interval", "series": [{"version", "points": [...]}], "rate", "p50_ms", "p99_ms"}``."""
        versions: dict[int, list] = {}
        for t, per in self.buckets:
            for version, (count, errors, hist) in per.items():
                versions.setdefault(version, []).append({
                    "t": t, "requests": count, "errors": errors, "rate": round(count / BUCKET_SECONDS, 2),
                    "p50_ms": _percentile(hist, count, 0.5), "p99_ms": _percentile(hist, count, 0.99),
                })
        cutoff = time.time() - 60
        recent = [0, [0] * (len(LATENCY_EDGES) + 1)]
        for t, per in self.buckets:
            if t >= cutoff:
                for count, _, hist in per.values():
                    recent[0] += count
                    recent[1] = [a + b for a, b in zip(recent[1], hist)]
        return {
            "interval": BUCKET_SECONDS,
            "series": [{"version": v, "points": p} for v, p in sorted(versions.items())],
            "rate": round(recent[0] / 60, 2),
            "p50_ms": _percentile(recent[1], recent[0], 0.5),
            "p99_ms": _percentile(recent[1], recent[0], 0.99),
        }


def _percentile(hist: list[int], count: int, q: float) -> float | None:
    if not count:
        return None
    target = math.ceil(q * count)
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= target:
            return round(LATENCY_EDGES[min(i, len(LATENCY_EDGES) - 1)], 2)
    return round(LATENCY_EDGES[-1], 2)


def check_loaded_limit(loaded: int, limit: int, model: str) -> None:
    if loaded >= limit:
        raise ModelConflict(f"model {model} already has {loaded} versions loaded, the most allowed "
                            "(models.max_loaded_versions); call it through an alias instead")
