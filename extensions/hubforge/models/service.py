"""The ``models`` hub service: the model registry's REST API, the served endpoints and
the Models page, under ``/services/models/``.

The hub starts it (:mod:`hubforge.models.hubconfig`) as ``python -m hubforge.models``
with its settings in ``HUBFORGE_MODELS_CONFIG`` (JSON). It is the trusted front of every
served model: it authenticates callers with the hub, checks their input against the
model's signature, batches requests and sends them to the version's worker process
(:mod:`hubforge.models.worker`), which runs the model owner's code and never sees a
caller's token. docs/models.md documents the API. Scopes:

* ``custom:hubforge:models:read`` / ``:write`` (write implies read): see / publish,
  alias, canary, share and delete the models you own (admins: all);
* ``custom:hubforge:models:invoke``: call the models you own or that are shared with you
  (a user, a group of yours, or the calling service); ``custom:hubforge:models:invoke:<name>``
  (for models listed in ``models.invoke_scopes``) calls that model, whoever you are.

A model you may not see answers 404, as if it did not exist.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from jupyterhub.services.auth import check_scopes
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from traitlets import Unicode, default

from ..services.auth import (
    APIHandler,
    StatefulServiceApp,
    log_request,
    prefixed,
    requires_scopes,
)
from .errors import InvalidInput, ModelConflict, ModelError
from .manager import may_invoke, may_use
from .settings import INVOKE_SCOPE, READ_SCOPE, WRITE_SCOPE, ModelsSettings

log = logging.getLogger("hubforge.models")

#: How often a version's workers are looked for again, in seconds (Kubernetes: the pods
#: behind its Service, which the autoscaler adds and removes; `ModelManager.refresh_endpoints`).
ENDPOINTS_SECONDS = 10
NAME = r"([a-z0-9][a-z0-9_-]{0,62})"
#: A served model's endpoints, relative to the service prefix: (name, selector, action).
ENDPOINT = rf"{NAME}(?:@([A-Za-z0-9_-]{{1,63}}))?/(predict|health|openapi\.json)"


class ModelsHandlerMixin:
    """What every models handler shares: the manager, the caller, errors."""

    @property
    def manager(self):
        try:
            return self.settings["manager"]
        except KeyError:
            raise web.HTTPError(503, "the models service is starting; try again in a few seconds") from None

    def model(self, name: str, *, write: bool = False):
        self.log_context["model"] = name
        return self.manager.visible(name, self.current_user, write=write)

    def caller_name(self) -> str:
        user = self.current_user
        if user.get("kind") != "user":
            raise web.HTTPError(403, "only hub users own models")
        return user["name"]

    def version_arg(self, value, field: str = "version") -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{field}: must be a version number (1 or more), got {value!r}")
        return value

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, ModelError):
            self.set_status(exc.status_code)
            kwargs["exc_info"] = (web.HTTPError, web.HTTPError(exc.status_code, "%s", exc.message), None)
            status_code = exc.status_code
        super().write_error(status_code, **kwargs)


class ModelListHandler(ModelsHandlerMixin, APIHandler):
    @requires_scopes(READ_SCOPE)
    def get(self):
        user = self.current_user
        everyone = self.get_argument("all", "") in ("1", "true", "yes")
        if everyone and not user.get("admin"):
            raise web.HTTPError(403, "only admins may list every user's models (?all=1)")

        # Without ?all, admins too see what is theirs or shared with them.
        as_user = {**user, "admin": False}
        names = sorted(n for n, info in self.manager.models.items() if everyone or may_use(info, as_user))
        self.write_json({"models": [self.manager.model_json(n) for n in names]})


class ModelHandler(ModelsHandlerMixin, APIHandler):
    @requires_scopes(READ_SCOPE)
    def get(self, name):
        self.model(name)
        self.write_json(self.manager.model_json(name, versions=True))

    @requires_scopes(WRITE_SCOPE)
    async def delete(self, name):
        self.model(name, write=True)
        await self.manager.delete_model(name)
        self.set_status(204)
        self.finish()


@web.stream_request_body
class VersionsHandler(ModelsHandlerMixin, APIHandler):
    """``POST`` a new version (the body: a tar.gz of an MLflow model directory)."""

    async def prepare(self):
        await super().prepare()
        self._upload = None
        self._size = 0
        if self.request.method == "POST":
            self.authorize([WRITE_SCOPE])
            self.caller_name()
            limit = int(self.manager.settings.max_upload_mb * 2**20)
            length = int(self.request.headers.get("Content-Length") or 0)
            if length > limit:
                raise web.HTTPError(413, f"the model archive is {length // 2**20} MiB; the most allowed is "
                                         f"{limit // 2**20} MiB (models.max_upload_mb)")
            self.request.connection.set_max_body_size(limit)
            self._upload = tempfile.NamedTemporaryFile(dir=self.manager.root / "tmp", delete=False)

    def data_received(self, chunk: bytes) -> None:
        if self._upload is not None:
            self._size += len(chunk)
            self._upload.write(chunk)

    def on_finish(self):
        self._cleanup()

    def on_connection_close(self):
        self._cleanup()

    def _cleanup(self):
        upload = getattr(self, "_upload", None)
        if upload is not None:
            upload.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(upload.name)
            self._upload = None

    @requires_scopes(READ_SCOPE)
    def get(self, name):
        self.model(name)
        self.write_json({"versions": self.manager.model_json(name, versions=True)["version_list"]})

    @requires_scopes(WRITE_SCOPE)
    async def post(self, name):
        user = self.caller_name()
        self.log_context["model"] = name
        info = self.manager.models.get(name)
        if info is not None and not may_use(info, self.current_user, manage=True):
            # Names are global (they are in the URL): saying one is taken is the least a
            # user needs to choose another; nothing else about the model is told.
            raise ModelConflict(f"the name {name} is taken by another user's model; choose another name")
        self._upload.flush()
        if self._size == 0:
            raise InvalidInput("the request body is empty: send the model as a tar.gz archive")
        version = await self.manager.publish(user, name, Path(self._upload.name),
                                             description=self.get_argument("description", "")[:2000])
        self.log_context["version"] = str(version["version"])
        alias = self.get_argument("alias", "")
        if alias:
            await self.manager.set_alias(user, name, alias, version["version"], action="promote")
        self.write_json(version, status=201)


class VersionHandler(ModelsHandlerMixin, APIHandler):
    @requires_scopes(READ_SCOPE)
    def get(self, name, number):
        self.model(name)
        self.write_json(self.manager.version_json(name, int(number)))

    @requires_scopes(WRITE_SCOPE)
    async def delete(self, name, number):
        self.model(name, write=True)
        await self.manager.delete_version(name, int(number))
        self.set_status(204)
        self.finish()


class AliasHandler(ModelsHandlerMixin, APIHandler):
    @requires_scopes(WRITE_SCOPE)
    async def put(self, name, alias):
        self.model(name, write=True)
        self.log_context["alias"] = alias
        version = self.version_arg(self.body().get("version"))
        self.write_json(await self.manager.set_alias(self.current_user["name"], name, alias, version, action="promote"))

    @requires_scopes(WRITE_SCOPE)
    async def delete(self, name, alias):
        self.model(name, write=True)
        await self.manager.delete_alias(self.current_user["name"], name, alias)
        self.set_status(204)
        self.finish()


class RollbackHandler(ModelsHandlerMixin, APIHandler):
    @requires_scopes(WRITE_SCOPE)
    async def post(self, name, alias):
        self.model(name, write=True)
        self.write_json(await self.manager.rollback(self.current_user["name"], name, alias))


class CanaryHandler(ModelsHandlerMixin, APIHandler):
    @requires_scopes(WRITE_SCOPE)
    async def put(self, name, alias):
        self.model(name, write=True)
        body = self.body()
        version = self.version_arg(body.get("version"))
        self.write_json(await self.manager.set_canary(self.current_user["name"], name, alias, version,
                                                      body.get("percent")))

    @requires_scopes(WRITE_SCOPE)
    async def delete(self, name, alias):
        self.model(name, write=True)
        self.write_json(await self.manager.end_canary(self.current_user["name"], name, alias))


class SharingHandler(ModelsHandlerMixin, APIHandler):
    @requires_scopes(WRITE_SCOPE)
    def put(self, name):
        self.model(name, write=True)
        self.write_json(self.manager.share(name, self.body()))


class StatsHandler(ModelsHandlerMixin, APIHandler):
    @requires_scopes(READ_SCOPE)
    def get(self, name):
        info = self.model(name)
        self.write_json(info.stats.series())


class SamplesHandler(ModelsHandlerMixin, APIHandler):
    @requires_scopes(READ_SCOPE)
    def get(self, name):
        info = self.model(name, write=True)  # inputs are the callers' data: owner and admins only
        try:
            limit = max(1, min(int(self.get_argument("limit", "100")), len(info.samples) or 1))
        except ValueError:
            raise InvalidInput("limit: must be a whole number") from None
        self.write_json({"samples": list(info.samples)[-limit:][::-1]})


class MetricsHandler(ModelsHandlerMixin, APIHandler):
    """Prometheus metrics of every model: for the ``read:metrics`` scope (or admins)."""

    def get(self):
        user = self.current_user
        if user is None:
            self.on_anonymous()
        if not (user.get("admin") or check_scopes({"read:metrics"}, set(user.get("scopes", [])))):
            raise web.HTTPError(403, "this request needs the scope read:metrics, which your token lacks")
        from prometheus_client import CONTENT_TYPE_LATEST

        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.manager.metrics.text())


class ArchiveHandler(web.RequestHandler):
    """``GET internal/archive``: a worker downloads its model with its key (no hub token)."""

    def get(self):
        header = self.request.headers.get("Authorization", "")
        key = header[7:] if header.startswith("Bearer ") else ""
        manager = self.settings.get("manager")
        path = manager.fetch_path(key) if (manager and key) else None
        if path is None or not path.is_file():
            raise web.HTTPError(403)
        self.set_header("Content-Type", "application/gzip")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                self.write(chunk)
        self.finish()

    def log_exception(self, typ, value, tb):
        if not isinstance(value, web.HTTPError):
            super().log_exception(typ, value, tb)


class EndpointHandler(ModelsHandlerMixin, APIHandler):
    """A served model: ``<name>[@<alias>|@v<N>]/predict``, ``/health``, ``/openapi.json``."""

    #: successful predictions are counted in the metrics, not written to the access log
    quiet = True

    def invoke_allowed(self, info) -> None:
        """Pass if the caller may call `info` (`may_invoke`), else raise the answer saying why."""
        user = self.current_user
        if user is None:
            self.on_anonymous()
        access = self.hub_auth.access_scopes
        if may_invoke(info, user, access):
            return
        if access and not check_scopes(access, set(user.get("scopes", []))):
            self.authorize([])  # raises 403 naming the access scope
        if not may_use(info, user):
            raise ModelError(f"model {info.name} does not exist", 404)
        raise web.HTTPError(403, f"this request needs the scope {INVOKE_SCOPE}, which your token lacks")

    def find(self, name: str):
        info = self.manager.models.get(name)
        if info is None:
            if self.current_user is None:
                self.on_anonymous()
            raise ModelError(f"model {name} does not exist", 404)
        return info

    async def post(self, name, selector, action):
        # Token-authenticated calls that pass these checks are answered by
        # `fastpath.PredictFastPath` before they reach tornado; this answers the rest
        # (cookies, query strings, refusals) alike.
        if action != "predict":
            raise web.HTTPError(405, f"use GET for {action}")
        info = self.find(name)
        self.invoke_allowed(info)
        predictions, version, alias = await self.manager.invoke(info, selector, self.request.body)
        self.set_header("X-HubForge-Model-Version", str(version))
        if alias:
            self.set_header("X-HubForge-Model-Alias", alias)
        self.write_json({"predictions": predictions})

    async def get(self, name, selector, action):
        info = self.find(name)
        self.invoke_allowed(info)
        version, alias = info.route.resolve(selector)
        if action == "predict":
            raise web.HTTPError(405, "send predictions with POST and a JSON body")
        if action == "health":
            server = self.manager.servers.get((name, version))
            state = server.state if server else "unloaded"
            self.write_json({"status": state, "model": name, "version": version, "alias": alias},
                            status=200 if state == "ready" else 503)
            return
        from .openapi import openapi

        entry = self.manager.version_json(name, version)
        base = f"{self.settings['service_prefix']}{name}{'@' + selector if selector else ''}"
        self.write_json(openapi(name, version, entry.get("signature"), base))


class HealthHandler(ModelsHandlerMixin, web.RequestHandler):
    def get(self):
        ready = "manager" in self.settings
        self.set_status(200 if ready else 503)
        self.finish({"status": "ready" if ready else "starting"})


def quiet_log_request(handler: web.RequestHandler) -> None:
    """The access log, without the line of each successful prediction (see the metrics)."""
    if getattr(handler, "quiet", False) and handler.get_status() < 400:
        return
    log_request(handler)


class ModelsService(StatefulServiceApp):
    """The models hub service (``python -m hubforge.models``)."""

    name = "hubforge-models"
    description = "HubForge's model registry and serving service (run by the hub)."
    # Set by the hub configuration (hubconfig.py) on Kubernetes.
    bind_env = "HUBFORGE_MODELS_BIND"
    secret_env = ("HUBFORGE_MODELS_DB_URL",)

    config_json = Unicode(help="The service's configuration (JSON); default $HUBFORGE_MODELS_CONFIG.").tag(config=True)

    @default("config_json")
    def _default_config_json(self):
        return os.environ.get("HUBFORGE_MODELS_CONFIG", "{}")

    def handlers(self) -> list[tuple]:
        from .page import ModelsPage

        name = NAME
        return [
            (r"", ModelsPage),
            (r"health", HealthHandler),
            (r"metrics", MetricsHandler),
            (r"internal/archive", ArchiveHandler),
            (r"api/models", ModelListHandler),
            (rf"api/models/{name}", ModelHandler),
            (rf"api/models/{name}/versions", VersionsHandler),
            (rf"api/models/{name}/versions/(\d{{1,9}})", VersionHandler),
            (rf"api/models/{name}/aliases/([^/]+)", AliasHandler),
            (rf"api/models/{name}/aliases/([^/]+)/rollback", RollbackHandler),
            (rf"api/models/{name}/aliases/([^/]+)/canary", CanaryHandler),
            (rf"api/models/{name}/sharing", SharingHandler),
            (rf"api/models/{name}/stats", StatsHandler),
            (rf"api/models/{name}/samples", SamplesHandler),
            (ENDPOINT, EndpointHandler),
        ]

    def web_settings(self) -> dict:
        return {"log_function": quiet_log_request}

    def listen(self, app: web.Application, host: str, port: int):
        from ..services.leanhttp import LeanHTTPServer
        from .fastpath import PredictFastPath

        fast = PredictFastPath(app, re.compile(prefixed(self.service_prefix, ENDPOINT)))
        # Bodies over the lean server's limit go to the handler, which applies
        # models.max_request_mb all the same.
        server = LeanHTTPServer(HTTPServer(app, xheaders=True), fast.hot, fast.answer)
        server.listen(port, host)
        return server

    def setup(self) -> None:
        """Read the configuration, open the registry, make the backend and the manager."""
        from sqlalchemy.engine import make_url

        from ..services.auth import redact_in_logs
        from .manager import ModelManager

        config = json.loads(self.config_json)
        settings = ModelsSettings(**config.get("settings", {}))
        models_dir = Path(config["models_dir"])
        models_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(models_dir, 0o700)
        db_url = os.environ.get("HUBFORGE_MODELS_DB_URL") or settings.db_url or f"sqlite:///{models_dir / 'models.sqlite'}"
        password = make_url(db_url).password
        if password:
            redact_in_logs([password])
        host, port = self.listen_address()
        fetch_base = config.get("fetch_url") or f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}{self.service_prefix}"
        backend = make_backend(config, settings, models_dir)
        self.manager = ModelManager(settings, str(models_dir), backend, db_url=db_url, fetch_base=fetch_base,
                                    public_base=config.get("public_url", "") + self.service_prefix)
        self._app.settings["models_settings"] = settings

    async def start_work(self) -> None:
        """Remove what a killed copy of the service left running, serve, load the
        versions aliases point at."""
        sweep = getattr(self.manager.backend, "sweep", None)
        if sweep is not None:
            try:
                await sweep(set())  # what a killed copy of the service left running
            except Exception as e:
                self.log.warning("cannot remove the model workers a previous run left: %s", e)
        self._app.settings["manager"] = self.manager
        self._forget_secrets()
        PeriodicCallback(self.manager.unload_idle, 30_000).start()
        PeriodicCallback(self.manager.refresh_endpoints, ENDPOINTS_SECONDS * 1000).start()
        # The libraries and state loaded by now last as long as the service: out of the
        # full garbage-collection passes that would walk them between requests.
        gc.collect()
        gc.freeze()
        await self.manager.warm()

    async def stop_work(self) -> None:
        log.info("models service stopping: served versions are unloaded")
        if hasattr(self, "manager"):
            await self.manager.close()


def make_backend(config: dict, settings: ModelsSettings, models_dir: Path):
    """The workers' backend for the platform's mode (see `hubforge.models.backends`)."""
    from .backends import ContainerBackend, LocalBackend

    mode = config.get("mode", "local")
    logs = str(models_dir / "logs")
    if mode == "containers":
        return ContainerBackend(logs, load_timeout=settings.load_timeout, **config.get("containers", {}))
    if mode == "kubernetes":
        from .kubernetes import KubernetesBackend

        return KubernetesBackend(load_timeout=settings.load_timeout, **config.get("kubernetes", {}))
    return LocalBackend(logs, load_timeout=settings.load_timeout, **config.get("local", {}))


def main(argv=None) -> None:
    ModelsService.launch_instance(argv)
