"""The models service's core: the registry (database and files) and what is served.

:class:`ModelManager` is the one place that changes models. Every change goes the same
way: check, make the new target ready (load its worker), write the database, then switch
the in-memory route, so requests in flight never see a half-done state. The predict
path reads only memory (:class:`ModelInfo`, :class:`~hubforge.models.serving.Route`,
the loaded :class:`~hubforge.models.serving.VersionServer` objects).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from jupyterhub.services.auth import check_scopes
from sqlalchemy import func, select

from ..dbutil import iso, utcnow
from .archive import unpack
from .backends import WorkerFailed, WorkerSpec  # noqa: F401 (WorkerFailed: backends raise it)
from .db import Alias, AliasEvent, Model, Version, make_engine, sessions, upgrade
from .errors import InvalidArchive, InvalidInput, ModelConflict, ModelError
from .serving import RETIRE_GRACE, Route, Stats, VersionServer, check_loaded_limit
from .settings import INVOKE_SCOPE, MODEL_NAME, ModelsSettings
from .signature import InputSchema

log = logging.getLogger("hubforge.models")

ALIAS_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
#: Names that are paths of the service itself, not models.
RESERVED = {"api", "internal", "metrics", "health", "static", "oauth_callback", "models"}
DEFAULT_ALIAS = "production"
#: Requests of each version whose input and prediction are always kept in the samples.
ALWAYS_SAMPLED = 20


MODEL_NAME_HELP = ("1 to 63 lower-case letters, digits, '-' and '_', starting with a letter or digit, "
                   f"and none of {', '.join(sorted(RESERVED))}")


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not MODEL_NAME.match(name) or name in RESERVED:
        raise InvalidInput(f"model name {name!r} is not allowed: use {MODEL_NAME_HELP}")
    return name


def check_alias_name(alias: str) -> str:
    if not ALIAS_NAME.match(alias) or re.fullmatch(r"v\d+", alias):
        raise InvalidInput(f"alias {alias!r} is not allowed: use lower-case letters, digits, '-' and '_', "
                           "starting with a letter (v1, v2, ... address versions)")
    return alias


@dataclass
class ModelInfo:
    """What the predict path needs to know about a model, kept in memory."""

    name: str
    owner: str
    shared_with: dict
    route: Route
    stats: Stats
    samples: deque
    sampled: dict = field(default_factory=dict)  # version -> requests seen (first ones always kept)


class ModelManager:
    """The registry and the served versions of one service process."""

    def __init__(self, settings: ModelsSettings, data_dir: str, backend, *, db_url: str, fetch_base: str,
                 public_base: str = "/services/models/"):
        self.settings = settings
        self.root = Path(data_dir)
        self.store = self.root / "store"
        self.samples_dir = self.root / "samples"
        for path in (self.root, self.store, self.samples_dir, self.root / "tmp"):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.backend = backend
        self.fetch_base = fetch_base.rstrip("/") + "/"
        self.public_base = public_base.rstrip("/") + "/"
        self.engine = make_engine(db_url)
        upgrade(self.engine)
        self.sessions = sessions(self.engine)
        self.models: dict[str, ModelInfo] = {}
        self.servers: dict[tuple[str, int], VersionServer] = {}
        self._starting: dict[tuple[str, int], asyncio.Task] = {}
        self._fetch_keys: dict[str, Path] = {}  # sha256(key) -> archive a worker may download
        self._retiring: dict[tuple[str, int], asyncio.Task] = {}
        self.metrics = _Metrics()
        self.closing = False
        self._load()

    # -- start, stop --------------------------------------------------------------
    def _load(self) -> None:
        with self.sessions() as s:
            for model in s.scalars(select(Model)).all():
                self.models[model.name] = self._info(model)

    def _info(self, model: Model) -> ModelInfo:
        route = Route(latest=model.versions[-1].number if model.versions else None, default_alias=DEFAULT_ALIAS)
        for alias in model.aliases:
            route.aliases[alias.name] = alias.version
            if alias.canary_version is not None:
                route.canaries[alias.name] = (alias.canary_version, alias.canary_percent or 0.0)
        info = ModelInfo(model.name, model.owner, dict(model.shared_with or {}), route,
                         Stats(self.settings.stats_window_seconds), deque(maxlen=self.settings.sample_keep))
        path = self.samples_dir / f"{model.name}.jsonl"
        if path.exists():
            with contextlib.suppress(OSError, ValueError):
                for line in path.read_text().splitlines()[-self.settings.sample_keep:]:
                    info.samples.append(json.loads(line))
        return info

    async def warm(self) -> None:
        """Load every version an alias, canary or default route points at (at start)."""
        for name, info in list(self.models.items()):
            for version in sorted(info.route.referenced()):
                try:
                    await self.ensure(name, version)
                except ModelError as e:
                    log.warning("model %s version %s: %s", name, version, e)

    async def close(self) -> None:
        self.closing = True  # workers stopping now are not restarted
        for server in self.servers.values():
            server.close()
        await self.backend.close()
        self.engine.dispose()

    # -- serving ------------------------------------------------------------------
    async def ensure(self, name: str, version: int) -> VersionServer:
        """The ready server of a version, loading its worker first if needed.

        Concurrent callers share one load. Raises ModelError if it cannot load."""
        key = (name, version)
        server = self.servers.get(key)
        if server is not None and server.state == "ready":
            self._unretire(key)
            return server
        task = self._starting.get(key)
        if task is None:
            task = self._starting[key] = asyncio.ensure_future(self._start(name, version))
            task.add_done_callback(lambda _: self._starting.pop(key, None))
        return await asyncio.shield(task)

    async def _start(self, name: str, version: int) -> VersionServer:
        with self.sessions() as s:
            row = s.get(Version, (name, version))
            if row is None:
                raise ModelError(f"model {name} has no version {version}", 404)
            owner = row.model.owner
            signature = row.signature
        archive = self.store / name / f"{version}.tar.gz"
        return await self._start_worker(name, version, owner, signature, archive)

    async def _start_worker(self, name: str, version: int, owner: str, signature, archive: Path) -> VersionServer:
        key = secrets.token_urlsafe(32)
        key_id = hashlib.sha256(key.encode()).hexdigest()
        self._fetch_keys[key_id] = archive
        schema = InputSchema((signature or {}).get("inputs"), self.settings.max_request_rows)
        server = VersionServer(name, version, schema, max_batch=self.settings.max_batch_size,
                               timeout=self.settings.predict_timeout, max_linger=self.settings.batch_linger_ms / 1000)
        server.on_batch = self.metrics.batch_rows.labels(name, str(version)).observe
        spec = WorkerSpec(model=name, version=version, owner=owner, key=key,
                          fetch_url=self.fetch_base + "internal/archive")
        log.info("model %s version %s: loading", name, version)
        started = time.monotonic()
        try:
            host, port, handle = await self.backend.start(spec)
            server.handle = handle
            server.service_address = (host, port)
            try:
                await server.connect(host, port, key)
            except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                await self.backend.stop(handle)
                raise WorkerFailed(f"cannot reach the model's process: {e}") from None
            await self._connect_endpoints(server)
        except RuntimeError as e:  # WorkerFailed, or the Kubernetes backend's errors
            log.warning("model %s version %s failed to load: %s", name, version, e)
            raise ModelError(f"model {name} version {version} could not be loaded: {e}", 422) from None
        finally:
            self._fetch_keys.pop(key_id, None)
        server.on_broken = self._on_broken
        old = self.servers.get((name, version))
        self.servers[(name, version)] = server
        if old is not None and old is not server:
            old.close()
        log.info("model %s version %s: ready in %.1f s", name, version, time.monotonic() - started)
        return server

    async def refresh_endpoints(self) -> None:
        """Connect every served version to the workers its backend has for it now.

        On Kubernetes a version's pods come and go (the autoscaler, a pod replaced on
        another node): each version is connected to every ready pod and let go of the
        others (the service calls this every ``service.ENDPOINTS_SECONDS``). The local and
        container backends run one worker per version, and have nothing to refresh."""
        if getattr(self.backend, "endpoints", None) is None:
            return
        for server in list(self.servers.values()):
            if self.closing:
                return
            await self._connect_endpoints(server)

    async def _connect_endpoints(self, server: VersionServer) -> None:
        endpoints = getattr(self.backend, "endpoints", None)
        if endpoints is None or server.state != "ready" or server.service_address is None:
            return
        try:
            await server.set_endpoints(await endpoints(*server.service_address))
        except Exception:  # a bug: logged; the version keeps the workers it has
            log.exception("model %s version %s: cannot update its workers", server.model, server.version)

    def _on_broken(self, server: VersionServer) -> None:
        """A worker died or hung: stop it and load the version again if still wanted."""
        key = (server.model, server.version)
        if self.closing:
            return
        log.warning("model %s version %s: %s", server.model, server.version, server.error)

        async def restart():
            with contextlib.suppress(Exception):
                await self.backend.stop(server.handle)
            info = self.models.get(server.model)
            if info is not None and server.version in info.route.referenced() and self.servers.get(key) is server:
                with contextlib.suppress(ModelError):
                    await self.ensure(server.model, server.version)

        asyncio.ensure_future(restart())

    def fetch_path(self, key: str) -> Path | None:
        """The archive a worker holding `key` may download (None: no such worker)."""
        return self._fetch_keys.get(hashlib.sha256(key.encode()).hexdigest())

    async def invoke(self, info: ModelInfo, selector: str | None, body: bytes) -> tuple[list, int, str | None]:
        """`predict` for one caller's request, counted in the metrics and the page's
        stats (its outcome, latency and rows; a 404 is not: it names no served version).
        The caller has been authorized (see `may_invoke`)."""
        start = time.perf_counter()
        version = alias = None
        rows = 0
        status = 500
        try:
            limit = self.settings.max_request_mb * 2**20
            if len(body) > limit:
                raise ModelError(f"the request body is larger than {limit / 2**20:g} MiB (models.max_request_mb)", 413)
            predictions, version, alias = await self.predict(info, selector, body)
            rows = len(predictions)
            status = 200
            return predictions, version, alias
        except ModelError as e:
            status = e.status_code
            version, alias = getattr(e, "version", None), getattr(e, "alias", None)
            raise
        finally:
            if status != 404:
                elapsed = time.perf_counter() - start
                self.metrics.record(info.name, version, alias, status, elapsed, rows)
                info.stats.record(version or 0, 1000 * elapsed, status < 400)

    async def predict(self, info: ModelInfo, selector: str | None, body: bytes) -> tuple[list, int, str | None]:
        """``(predictions, version, alias)`` for a request body (checked against the
        signature of the version it is routed to)."""
        version, alias = info.route.resolve(selector)
        try:
            return await self._predict(info, selector, version, alias, body)
        except ModelError as e:
            e.version, e.alias = version, alias  # the metrics count a failure against its version
            raise

    async def _predict(self, info: ModelInfo, selector, version: int, alias, body: bytes):
        server = self.servers.get((info.name, version))
        if server is None or server.state != "ready":
            if server is None and selector is not None and alias is None:  # a version called by number
                self._check_version(info, version)
                check_loaded_limit(sum(1 for k in self.servers if k[0] == info.name),
                                   self.settings.max_loaded_versions, info.name)
            server = await self.ensure(info.name, version)
        payload, rows = server.schema.parse(body)
        predictions = await server.submit(payload, rows)
        self._sample(info, version, alias, payload, predictions)
        return predictions, version, alias

    def _check_version(self, info: ModelInfo, version: int) -> None:
        with self.sessions() as s:
            if s.get(Version, (info.name, version)) is None:
                raise ModelError(f"model {info.name} has no version {version}", 404)

    def _sample(self, info: ModelInfo, version: int, alias: str | None, payload: dict, predictions: list) -> None:
        seen = info.sampled.get(version, 0)
        info.sampled[version] = seen + 1
        if seen >= ALWAYS_SAMPLED and random.random() >= self.settings.sample_rate:
            return
        if "columns" in payload:
            first = {k: v[0] for k, v in payload["columns"].items()}
        else:
            first = payload["tensor"][0]
        entry = {"time": iso(utcnow()), "version": version, "alias": alias, "input": first,
                 "prediction": predictions[0] if predictions else None}
        info.samples.append(entry)
        path = self.samples_dir / f"{info.name}.jsonl"
        try:
            with open(path, "a") as f:
                f.write(json.dumps(entry, default=str) + "\n")
            if path.stat().st_size > 2 * 1024 * self.settings.sample_keep:  # compact now and then
                lines = path.read_text().splitlines()
                if len(lines) > 2 * self.settings.sample_keep:
                    path.write_text("\n".join(lines[-self.settings.sample_keep:]) + "\n")
        except OSError as e:
            log.warning("model %s: cannot write the sample log: %s", info.name, e)

    # -- reconciling the loaded versions with the routes ---------------------------
    def _reconcile(self, name: str) -> None:
        """Retire (after a grace period, once drained) loaded versions nothing points at
        and that were not called recently."""
        info = self.models.get(name)
        wanted = info.route.referenced() if info else set()
        for key, server in list(self.servers.items()):
            if key[0] == name and key[1] not in wanted and key not in self._retiring:
                self._retiring[key] = asyncio.ensure_future(self._retire(key, server))

    def _unretire(self, key) -> None:
        task = self._retiring.pop(key, None)
        if task is not None:
            task.cancel()

    async def _retire(self, key, server: VersionServer, grace: float = RETIRE_GRACE) -> None:
        try:
            await asyncio.sleep(grace)
            while time.monotonic() - server.last_used < grace:
                await asyncio.sleep(grace)
            info = self.models.get(key[0])
            if info is not None and key[1] in info.route.referenced():
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await server.drain()
            if self.servers.get(key) is server:
                del self.servers[key]
            server.close()
            await self.backend.stop(server.handle)
            log.info("model %s version %s: unloaded", *key)
        finally:
            if self._retiring.get(key) is asyncio.current_task():
                del self._retiring[key]

    async def unload_idle(self) -> None:
        """Unload versions called only by number and idle for ``idle_unload_seconds``."""
        now = time.monotonic()
        for key, server in list(self.servers.items()):
            info = self.models.get(key[0])
            if info is None or key[1] in info.route.referenced() or key in self._retiring:
                continue
            if now - server.last_used > self.settings.idle_unload_seconds:
                self._retiring[key] = asyncio.ensure_future(self._retire(key, server, grace=0))

    # -- registry -------------------------------------------------------------------
    def visible(self, name: str, user: dict, *, write: bool = False) -> ModelInfo:
        """The model `name` if the caller may see it (write: change it); else 404, as if absent."""
        info = self.models.get(name)
        if info is None or not may_use(info, user, manage=write):
            raise ModelError(f"model {name} does not exist", 404)
        return info

    async def publish(self, user: str, name: str, upload: Path, description: str = "") -> dict:
        """Register a new version from an uploaded archive and serve it; its JSON.

        The version is loaded before it is registered: a model that cannot load is
        refused (422, with the loader's error) and leaves nothing behind.
        """
        check_model_name(name)
        existing = self.models.get(name)
        # An admin may add a version to someone's model: it stays theirs, and runs as them.
        owner = existing.owner if existing is not None else user
        size = upload.stat().st_size
        staging = Path(tempfile.mkdtemp(dir=self.root / "tmp"))
        try:
            with open(upload, "rb") as f:
                unpack(f, staging / "model", max_bytes=int(8 * self.settings.max_upload_mb * 2**20))
            meta = read_mlmodel(staging / "model")
            archive = staging / "archive.tar.gz"
            shutil.copyfile(upload, archive)
            number = self._reserve(owner, name, description)
            server = await self._start_worker(name, number, owner, meta["signature"], archive)
            try:
                target = self.store / name
                target.mkdir(exist_ok=True, mode=0o700)
                os.replace(staging / "model", target / str(number))
                os.replace(archive, target / f"{number}.tar.gz")
                with self.sessions() as s:
                    s.add(Version(model_name=name, number=number, created_by=user, description=description,
                                  signature=meta["signature"], requirements=meta["requirements"],
                                  flavors=meta["flavors"], size=size, sha256=_sha256(target / f"{number}.tar.gz")))
                    model = s.get(Model, name)
                    model.updated = utcnow()
                    s.commit()
            except BaseException:
                server.close()
                await self.backend.stop(server.handle)
                self.servers.pop((name, number), None)
                raise
        except BaseException:
            self._release(name)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        info = self.models[name]
        info.route.latest = number
        self._reconcile(name)
        log.info("model %s version %s published by %s", name, number, user)
        return self.version_json(name, number)

    def _reserve(self, user: str, name: str, description: str) -> int:
        """A new version number of `name` (creating the model, owned by `user`)."""
        with self.sessions() as s:
            model = s.get(Model, name)
            if model is None:
                count = s.scalar(select(func.count(Model.name)).where(Model.owner == user))
                if count >= self.settings.max_models_per_user:
                    raise ModelConflict(f"you own {count} models, the most allowed (models.max_models_per_user); "
                                        "delete one first")
                model = Model(name=name, owner=user, description=description, shared_with={}, next_version=1)
                s.add(model)
            elif model.owner != user:
                raise ModelConflict(f"the name {name} is taken by another user's model; choose another name")
            number = model.next_version
            model.next_version = number + 1
            s.commit()
            if name not in self.models:
                self.models[name] = self._info(model)
            return number

    def _release(self, name: str) -> None:
        """Forget a model created by a publish that failed (it has no version)."""
        with self.sessions() as s:
            model = s.get(Model, name)
            if model is not None and not model.versions:
                s.delete(model)
                s.commit()
                self.models.pop(name, None)

    async def set_alias(self, user: str, name: str, alias: str, version: int, action: str = "set") -> dict:
        """Point `alias` at `version` (promote, rollback); clears the alias's canary."""
        check_alias_name(alias)
        info = self.models[name]
        self._check_version(info, version)
        await self.ensure(name, version)  # ready before any request goes there
        with self.sessions() as s:
            row = s.get(Alias, (name, alias))
            before = row.version if row else None
            if row is None:
                row = Alias(model_name=name, name=alias, version=version)
                s.add(row)
            row.version, row.canary_version, row.canary_percent = version, None, None
            row.updated, row.updated_by = utcnow(), user
            s.add(AliasEvent(model_name=name, alias=alias, before=before, after=version, action=action, by=user))
            s.commit()
        info.route.aliases[alias] = version
        info.route.canaries.pop(alias, None)
        self._reconcile(name)
        return self.model_json(name)

    async def delete_alias(self, user: str, name: str, alias: str) -> None:
        info = self.models[name]
        with self.sessions() as s:
            row = s.get(Alias, (name, alias))
            if row is None:
                raise ModelError(f"model {name} has no alias '{alias}'", 404)
            if alias == DEFAULT_ALIAS and info.route.latest is not None:
                await self.ensure(name, info.route.latest)  # the default route falls back to it
            s.add(AliasEvent(model_name=name, alias=alias, before=row.version, after=None, action="delete", by=user))
            s.delete(row)
            s.commit()
        info.route.aliases.pop(alias, None)
        info.route.canaries.pop(alias, None)
        self._reconcile(name)

    async def rollback(self, user: str, name: str, alias: str) -> dict:
        """Point `alias` back at the version it pointed at before its last change."""
        with self.sessions() as s:
            events = s.scalars(select(AliasEvent).where(AliasEvent.model_name == name, AliasEvent.alias == alias,
                                                       AliasEvent.action.in_(("set", "promote", "rollback")))
                               .order_by(AliasEvent.id.desc()).limit(1)).all()
        if not events or events[0].before is None:
            raise ModelConflict(f"alias '{alias}' of model {name} has no earlier version to roll back to")
        return await self.set_alias(user, name, alias, events[0].before, action="rollback")

    async def set_canary(self, user: str, name: str, alias: str, version: int, percent: float) -> dict:
        info = self.models[name]
        if alias not in info.route.aliases:
            raise ModelError(f"model {name} has no alias '{alias}'; set it before adding a canary", 404)
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise InvalidInput(f"percent: must be a number from 0 to 100, got {percent!r}")
        self._check_version(info, version)
        await self.ensure(name, version)
        with self.sessions() as s:
            row = s.get(Alias, (name, alias))
            row.canary_version, row.canary_percent = version, float(percent)
            row.updated, row.updated_by = utcnow(), user
            s.add(AliasEvent(model_name=name, alias=alias, before=row.version, after=version,
                             action=f"canary {percent:g}%", by=user))
            s.commit()
        info.route.canaries[alias] = (version, float(percent))
        self._reconcile(name)
        return self.model_json(name)

    async def end_canary(self, user: str, name: str, alias: str) -> dict:
        info = self.models[name]
        with self.sessions() as s:
            row = s.get(Alias, (name, alias))
            if row is None or row.canary_version is None:
                raise ModelError(f"alias '{alias}' of model {name} has no canary", 404)
            s.add(AliasEvent(model_name=name, alias=alias, before=row.canary_version, after=row.version,
                             action="end canary", by=user))
            row.canary_version = row.canary_percent = None
            s.commit()
        info.route.canaries.pop(alias, None)
        self._reconcile(name)
        return self.model_json(name)

    async def delete_version(self, name: str, version: int) -> None:
        info = self.models[name]
        users = [a for a, v in info.route.aliases.items() if v == version]
        users += [f"{a} (canary)" for a, (v, _) in info.route.canaries.items() if v == version]
        if users:
            raise ModelConflict(f"version {version} of model {name} is in use by alias {', '.join(users)}; "
                                "point the alias elsewhere first")
        with self.sessions() as s:
            row = s.get(Version, (name, version))
            if row is None:
                raise ModelError(f"model {name} has no version {version}", 404)
            remaining = [v.number for v in row.model.versions if v.number != version]
            if not remaining:
                raise ModelConflict(f"version {version} is the only version of model {name}; delete the model instead")
            if info.route.latest == version:
                await self.ensure(name, max(remaining))
            s.delete(row)
            s.commit()
        info.route.latest = max(remaining)
        server = self.servers.pop((name, version), None)
        if server is not None:
            server.close()
            await self.backend.stop(server.handle)
        self._remove_files(name, version)

    async def delete_model(self, name: str) -> None:
        info = self.models.pop(name)
        with self.sessions() as s:
            model = s.get(Model, name)
            numbers = range(1, model.next_version)  # failed publishes' numbers had logs too
            s.delete(model)
            s.commit()
        for key in [k for k in self.servers if k[0] == name]:
            server = self.servers.pop(key)
            server.close()
            await self.backend.stop(server.handle)
        for number in numbers:
            self._remove_files(name, number)
        shutil.rmtree(self.store / name, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.samples_dir / f"{name}.jsonl").unlink()
        del info

    def _remove_files(self, name: str, version: int) -> None:
        shutil.rmtree(self.store / name / str(version), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.store / name / f"{version}.tar.gz").unlink()
        remove_log = getattr(self.backend, "remove_log", None)
        if remove_log is not None:  # the worker's stderr may quote callers' input
            remove_log(name, version)

    def share(self, name: str, sharing: dict) -> dict:
        clean = {}
        for key in ("users", "groups", "services"):
            values = sharing.get(key, [])
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                raise InvalidInput(f"{key}: must be a list of names, got {values!r}")
            clean[key] = sorted(set(values))
        unknown = set(sharing) - {"users", "groups", "services"}
        if unknown:
            raise InvalidInput(f"{sorted(unknown)[0]}: unknown field; use users, groups and services")
        with self.sessions() as s:
            model = s.get(Model, name)
            model.shared_with = clean
            model.updated = utcnow()
            s.commit()
        self.models[name].shared_with = clean
        return self.model_json(name)

    # -- JSON -------------------------------------------------------------------------
    def model_json(self, name: str, *, versions: bool = False) -> dict:
        info = self.models[name]
        with self.sessions() as s:
            model = s.get(Model, name)
            data = {
                "name": name, "owner": model.owner, "description": model.description,
                "created": iso(model.created), "updated": iso(model.updated),
                "latest_version": info.route.latest, "versions": len(model.versions),
                "aliases": dict(sorted(info.route.aliases.items())),
                "canaries": {a: {"version": v, "percent": p} for a, (v, p) in sorted(info.route.canaries.items())},
                "default": {"alias": DEFAULT_ALIAS if DEFAULT_ALIAS in info.route.aliases else None,
                            "version": info.route.aliases.get(DEFAULT_ALIAS, info.route.latest)},
                "shared_with": {k: list(info.shared_with.get(k, [])) for k in ("users", "groups", "services")},
                "loaded": {str(v): self.servers[(name, v)].state for (n, v) in sorted(self.servers) if n == name},
                "endpoint": f"{self.public_base}{name}/predict",
                "alias_endpoints": {a: f"{self.public_base}{name}@{a}/predict" for a in sorted(info.route.aliases)},
            }
            if versions:
                data["version_list"] = [self._version_json(v) for v in model.versions]
                events = s.scalars(select(AliasEvent).where(AliasEvent.model_name == name)
                                   .order_by(AliasEvent.id.desc()).limit(50)).all()
                data["alias_history"] = [{"alias": e.alias, "before": e.before, "after": e.after,
                                          "action": e.action, "by": e.by, "at": iso(e.at)} for e in events]
        return data

    def version_json(self, name: str, number: int) -> dict:
        with self.sessions() as s:
            row = s.get(Version, (name, number))
            if row is None:
                raise ModelError(f"model {name} has no version {number}", 404)
            return self._version_json(row)

    def _version_json(self, row: Version) -> dict:
        server = self.servers.get((row.model_name, row.number))
        return {
            "model": row.model_name, "version": row.number, "created": iso(row.created),
            "created_by": row.created_by, "description": row.description, "signature": row.signature,
            "requirements": row.requirements, "flavors": row.flavors, "size": row.size, "sha256": row.sha256,
            "state": server.state if server else "unloaded", "error": server.error if server else "",
            "endpoint": f"{self.public_base}{row.model_name}@v{row.number}/predict",
        }


def may_use(info: ModelInfo, user: dict, *, manage: bool = False) -> bool:
    """Whether the caller owns the model, is an admin, or (not to manage it) it is shared
    with them, a group of theirs, or (a service) them."""
    if user.get("admin") or (user.get("kind") == "user" and user.get("name") == info.owner):
        return True
    if manage:
        return False
    shared = info.shared_with
    if user.get("kind") == "service":
        return user.get("name") in shared.get("services", ())
    return user.get("name") in shared.get("users", ()) or bool(set(user.get("groups") or ()) & set(shared.get("groups", ())))


def may_invoke(info: ModelInfo, user: dict, access_scopes: set[str]) -> bool:
    """Whether `user` (the hub's model of a token's owner) may call `info`'s endpoints:
    their token holds the service's access scope (when it has one) and either
    ``custom:hubforge:models:invoke:<name>``, or ``custom:hubforge:models:invoke`` for a
    model they may use (`may_use`)."""
    held = set(user.get("scopes", []))
    if access_scopes and not check_scopes(access_scopes, held):
        return False
    if f"{INVOKE_SCOPE}:{info.name}" in held:
        return True
    return may_use(info, user) and check_scopes({INVOKE_SCOPE}, held)


def read_mlmodel(path: Path) -> dict:
    """Signature, requirements and flavours of an unpacked MLflow model; InvalidArchive if
    it is not one HubForge can serve."""
    mlmodel = path / "MLmodel"
    if not mlmodel.is_file():
        raise InvalidArchive("the archive holds no MLmodel file at its top level: upload an MLflow model "
                             "directory's contents (hubforge.publish does this)")
    try:
        meta = yaml.safe_load(mlmodel.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InvalidArchive(f"MLmodel is not valid YAML: {e}") from None
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    if not isinstance(flavors, dict) or "python_function" not in flavors:
        raise InvalidArchive("MLmodel has no python_function flavour: HubForge serves MLflow pyfunc models")
    signature = None
    raw = meta.get("signature")
    if isinstance(raw, dict) and raw.get("inputs"):
        try:
            signature = {"inputs": json.loads(raw["inputs"]),
                         "outputs": json.loads(raw["outputs"]) if raw.get("outputs") else None}
            InputSchema(signature["inputs"])
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise InvalidArchive(f"MLmodel signature.inputs: cannot be served: {e}") from None
    requirements = []
    req = path / "requirements.txt"
    if req.is_file():
        requirements = [line.strip() for line in req.read_text(errors="replace").splitlines()
                        if line.strip() and not line.startswith("#")]
    return {"signature": signature, "requirements": requirements, "flavors": sorted(flavors)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Metrics:
    """Prometheus metrics of every model, in a registry of the service's own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self._series: dict[tuple, tuple] = {}
        self.requests = Counter("hubforge_model_requests", "Predict requests, by model, version, alias and "
                                "HTTP status.", ["model", "version", "alias", "status"], registry=self.registry)
        self.latency = Histogram("hubforge_model_request_duration_seconds", "Predict request latency in the "
                                 "service (parse, queue, predict), by model and version.", ["model", "version"],
                                 buckets=(.002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30),
                                 registry=self.registry)
        self.rows = Counter("hubforge_model_rows", "Rows predicted, by model and version.", ["model", "version"],
                            registry=self.registry)
        self.batch_rows = Histogram("hubforge_model_batch_rows", "Rows per predict call of the model (adaptive "
                                    "batching: more under load), by model and version.", ["model", "version"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024), registry=self.registry)

    def record(self, model: str, version, alias, status: int, seconds: float, rows: int) -> None:
        # Each request updates three series: their children are looked up once per
        # label set (prometheus_client's `labels()` costs a few microseconds a call, on
        # the path of every prediction), as many as the series themselves.
        key = (model, version, alias, status)
        series = self._series.get(key)
        if series is None:
            v = str(version) if version is not None else ""
            series = self._series[key] = (
                self.requests.labels(model, v, alias or "", str(status)),
                self.latency.labels(model, v) if version is not None else None,
                self.rows.labels(model, v) if version is not None else None,
            )
        requests, latency, predicted = series
        requests.inc()
        if latency is not None:
            latency.observe(seconds)
            if rows:
                predicted.inc(rows)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
