"""The ``dask-gateway`` hub service: dask-gateway's server, run by the hub, made HubForge's.

``python -m hubforge.dask`` runs `HubForgeGateway`, which is dask-gateway's own
`DaskGateway` application with:

* its configuration from the platform settings (JSON in ``HUBFORGE_DASK_CONFIG``, set
  by the hub; `hubforge.dask.hubconfig` builds it);
* `HubForgeAuthenticator` (hub tokens, the service's access scope, admins) and
  `HubForgeLocalBackend` (local processes as the user, forked, with limits);
* scale and adapt requests over a cluster's limit **refused** with a message that states
  the limit (dask-gateway's own routes cap them silently), and three routes of its own
  under ``/api/v1/hubforge/``: ``clusters`` (yours, or with ``?all=1`` everyone's for
  admins, with owners and worker counts), ``limits`` (yours), and ``DELETE
  users/<name>/clusters`` (stop all of a user's clusters: the user or an admin);
* a **front** at the service's URL, where the hub's proxy sends ``/services/dask-gateway/``:
  API requests pass to dask-gateway's proxy (the gateway authenticates them), while a cluster's **dashboard** (``clusters/<name>/...``, pages and websockets)
  is served only to its owner or an admin, signed in through the hub (OAuth cookie or
  token), and never gets the caller's hub credentials;
* a **reconciler** that asks the hub, every ``reconcile_period`` seconds, about the
  owners of running clusters: a deleted user's clusters stop, and so do those a notebook
  server started once that server has stopped (``stop_with_server``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from html import escape
from urllib.parse import quote

import aiohttp
from aiohttp import web as aioweb
from dask_gateway_server.app import DaskGateway
from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.routes import api_handler, default_routes
from tornado import httpclient, httputil, web, websocket
from tornado.httpserver import HTTPServer
from traitlets import Bool, Float, Unicode, default
from traitlets.config import Config

from ..services.auth import PageHandler, make_app

SCALE_ROUTE = "/api/v1/clusters/{cluster_name}/scale"
ADAPT_ROUTE = "/api/v1/clusters/{cluster_name}/adapt"

hubforge_routes = aioweb.RouteTableDef()


async def _permitted_cluster(request):
    user = request["user"]
    backend = request.app["backend"]
    name = request.match_info["cluster_name"]
    cluster = await backend.get_cluster(name)
    if cluster is None:
        raise aioweb.HTTPNotFound(reason=f"Cluster {name} not found")
    if not user.has_permissions(cluster):
        raise aioweb.HTTPForbidden(reason=f"User {user.name} lacks permissions to change cluster {name}")
    return backend, cluster


async def _json_body(request) -> dict:
    try:
        msg = await request.json()
    except ValueError:
        raise aioweb.HTTPUnprocessableEntity(reason="the request body is not valid JSON") from None
    if not isinstance(msg, dict):
        raise aioweb.HTTPUnprocessableEntity(reason="the request body must be a JSON object")
    return msg


@hubforge_routes.post(SCALE_ROUTE)
@api_handler(user_authenticated=True)
async def scale_cluster(request):
    backend, cluster = await _permitted_cluster(request)
    msg = await _json_body(request)
    count = msg.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise aioweb.HTTPUnprocessableEntity(reason=f"Scale expects a non-negative integer, got {count!r}")
    try:
        backend.check_scale(cluster, count)
    except PublicException as e:
        raise aioweb.HTTPUnprocessableEntity(reason=str(e)) from None
    try:
        await backend.forward_message_to_scheduler(cluster, {"op": "scale", "count": count})
    except PublicException as e:
        raise aioweb.HTTPConflict(reason=str(e)) from None
    return aioweb.json_response({"ok": True, "msg": None})


@hubforge_routes.post(ADAPT_ROUTE)
@api_handler(user_authenticated=True)
async def adapt_cluster(request):
    backend, cluster = await _permitted_cluster(request)
    msg = await _json_body(request)
    minimum, maximum = msg.get("minimum"), msg.get("maximum")
    active = msg.get("active", True)
    limit = cluster.config.get("cluster_max_workers")
    for key, value in (("minimum", minimum), ("maximum", maximum)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise aioweb.HTTPUnprocessableEntity(reason=f"adapt {key} must be a non-negative integer, got {value!r}")
    if active:
        if maximum is None:
            maximum = limit
        try:
            for value in (minimum or 0, maximum or 0):
                backend.check_scale(cluster, value)
        except PublicException as e:
            raise aioweb.HTTPUnprocessableEntity(reason=str(e)) from None
        if minimum is not None and maximum is not None and minimum > maximum:
            raise aioweb.HTTPUnprocessableEntity(reason=f"adapt minimum {minimum} is more than maximum {maximum}")
    try:
        await backend.forward_message_to_scheduler(
            cluster, {"op": "adapt", "minimum": minimum, "maximum": maximum, "active": active})
    except PublicException as e:
        raise aioweb.HTTPConflict(reason=str(e)) from None
    return aioweb.json_response({"ok": True, "msg": None})


def cluster_summary(record) -> dict:
    """What `hubforge.dask.list_clusters` shows of a cluster (never its TLS key)."""
    workers = [w for w in record.workers.values() if w.status < JobStatus.STOPPED]
    running = [w for w in workers if w.status == JobStatus.RUNNING]
    config = record.config
    model = record.to_model()
    return {
        "name": record.name,
        "user": record.username,
        "status": model.status.name,
        "origin": config.get("origin", ""),
        "options": record.options,
        "workers": len(running),
        "workers_requested": record.count,
        "worker_cores": config.get("worker_cores"),
        "worker_memory": config.get("worker_memory"),
        "max_workers": config.get("cluster_max_workers"),
        "adaptive": bool(config.get("adapt_maximum")),
        "dashboard_route": model.to_dict(full=False)["dashboard_route"],
        "start_time": model.start_time,
    }


@hubforge_routes.get("/api/v1/hubforge/clusters")
@api_handler(user_authenticated=True)
async def hubforge_clusters(request):
    user = request["user"]
    backend = request.app["backend"]
    everyone = request.query.get("all") in ("1", "true")
    if everyone and not user.admin:
        raise aioweb.HTTPForbidden(reason="only hub admins may list everyone's clusters")
    records = [c for c in backend.db.name_to_cluster.values()
               if c.target <= JobStatus.RUNNING and (everyone or c.username == user.name)]
    return aioweb.json_response({"clusters": [cluster_summary(c) for c in records]})


@hubforge_routes.get("/api/v1/hubforge/limits")
@api_handler(user_authenticated=True)
async def hubforge_limits(request):
    user = request["user"]
    backend = request.app["backend"]
    return aioweb.json_response({"user": user.name, "limits": backend.limits_for(user).to_json()})


@hubforge_routes.delete("/api/v1/hubforge/users/{username}/clusters")
@api_handler(user_authenticated=True)
async def hubforge_stop_user(request):
    user = request["user"]
    username = request.match_info["username"]
    if not (user.admin or user.name == username):
        raise aioweb.HTTPForbidden(reason=f"only {username} or a hub admin may stop {username}'s clusters")
    backend = request.app["backend"]
    stopped = await stop_user_clusters(backend, username)
    return aioweb.json_response({"stopped": stopped})


async def stop_user_clusters(backend, username: str, origin: str | None = None) -> list[str]:
    names = [c.name for c in backend.db.name_to_cluster.values()
             if c.username == username and c.target <= JobStatus.RUNNING
             and (origin is None or c.config.get("origin") == origin)]
    for name in names:
        await backend.stop_cluster(name)
    return names


def gateway_routes() -> list:
    """dask-gateway's routes, with HubForge's scale and adapt, plus HubForge's own."""
    ours = {(r.method, r.path) for r in hubforge_routes}
    return [r for r in default_routes if (r.method, r.path) not in ours] + list(hubforge_routes)


# --- the front: the hub's proxy sends /services/dask-gateway/ here --------------------

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length", "host"}
#: Never forwarded to a cluster's dashboard: the caller's hub credentials.
CREDENTIAL_HEADERS = {"authorization", "cookie"}


class _Forwarding:
    """Forwards the request to dask-gateway's HTTP proxy, below the service prefix."""

    def upstream_url(self, scheme: str = "http") -> str:
        # dask-gateway's proxy serves at its root: strip the service prefix (which may
        # hold URL-encoded characters the proxy would compare decoded).
        path = "/" + self.request.path[len(self.settings["service_prefix"]):]
        url = f"{scheme}://{self.settings['upstream']}{path}"
        return url + (f"?{self.request.query}" if self.request.query else "")

    async def forward(self, strip_credentials: bool) -> None:
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() not in HOP_BY_HOP and not (strip_credentials and k.lower() in CREDENTIAL_HEADERS)}
        body = self.request.body if self.request.method not in ("GET", "HEAD", "DELETE") or self.request.body else None
        request = httpclient.HTTPRequest(
            self.upstream_url(), method=self.request.method, headers=headers, body=body,
            follow_redirects=False, decompress_response=False, request_timeout=300,
            allow_nonstandard_methods=True,
        )
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except OSError as e:
            raise web.HTTPError(502, f"the Dask gateway is not answering: {e.strerror or e}") from None
        if response.code == 599:
            raise web.HTTPError(502, "the Dask gateway is not answering; try again shortly")
        self.set_status(response.code, response.reason)
        self._headers = httputil.HTTPHeaders()  # drop tornado's defaults; take upstream's
        for k, v in response.headers.get_all():
            # A dashboard is the user's own web server on the hub's origin: it may set no
            # cookie there, and its content types are taken as they are.
            if k.lower() not in HOP_BY_HOP and not (strip_credentials and k.lower() == "set-cookie"):
                self.add_header(k, v)
        if strip_credentials:
            self.set_header("X-Content-Type-Options", "nosniff")
        if response.body and self.request.method != "HEAD":
            self.write(response.body)
        self.finish()


class APIPassThroughHandler(_Forwarding, web.RequestHandler):
    """dask-gateway's REST API: forwarded as is; the gateway authenticates every call."""

    def check_xsrf_cookie(self):
        """No XSRF check here: the API is token-authenticated, by the gateway."""

    async def _any(self, *args):
        await self.forward(strip_credentials=False)

    get = post = delete = put = patch = head = _any


class DashboardHandler(_Forwarding, PageHandler, websocket.WebSocketHandler):
    """A cluster's dashboard, for its owner and hub admins only; pages and websockets."""

    async def get(self, name: str, rest: str = ""):
        user = self.authorize([])
        self.log_context["cluster"] = name
        backend = self.settings["gateway"].backend
        record = backend.db.get_cluster(name)
        if record is None or not (user.get("admin") or user["name"] == record.username):
            raise web.HTTPError(404, f"you have no cluster named {name}")
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await websocket.WebSocketHandler.get(self, name, rest)
        else:
            await self.forward(strip_credentials=True)

    # websocket relay
    async def open(self, *args):
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() not in HOP_BY_HOP | CREDENTIAL_HEADERS and not k.lower().startswith("sec-websocket")}
        request = httpclient.HTTPRequest(self.upstream_url("ws"), headers=headers)
        try:
            self.upstream = await websocket.websocket_connect(
                request, on_message_callback=self._from_upstream,
                subprotocols=[p for p in self.request.headers.get("Sec-WebSocket-Protocol", "").replace(" ", "").split(",") if p] or None,
            )
        except Exception as e:
            self.log.warning("dashboard websocket to %s failed: %s", self.request.path, e)
            self.close(1011, "the cluster's dashboard is not answering")

    def select_subprotocol(self, subprotocols):
        return subprotocols[0] if subprotocols else None

    def _from_upstream(self, message):
        if message is None:
            self.close()
        else:
            self.write_message(message, binary=isinstance(message, bytes))

    async def on_message(self, message):
        upstream = getattr(self, "upstream", None)
        if upstream is not None:
            await upstream.write_message(message, binary=isinstance(message, bytes))

    def on_close(self):
        upstream = getattr(self, "upstream", None)
        if upstream is not None:
            upstream.close()


class HomeHandler(PageHandler):
    """``/services/dask-gateway/``: your clusters, with links to their dashboards."""

    def get(self):
        user = self.authorize([])
        backend = self.settings["gateway"].backend
        rows = []
        for record in backend.db.name_to_cluster.values():
            if record.target > JobStatus.RUNNING or not (user.get("admin") or record.username == user["name"]):
                continue
            s = cluster_summary(record)
            link = (f'<a href="{escape(self.settings["service_prefix"])}clusters/{escape(s["name"])}/status">dashboard</a>'
                    if s["dashboard_route"] else "")
            rows.append(f"<tr><td>{escape(s['name'])}</td><td>{escape(s['user'])}</td><td>{s['status']}</td>"
                        f"<td>{s['workers']}</td><td>{link}</td></tr>")
        body = "".join(rows) or '<tr><td colspan="5">No running clusters.</td></tr>'
        self.finish(
            "<!doctype html><title>Dask clusters</title><h1>Dask clusters</h1>"
            "<table><tr><th>Cluster</th><th>User</th><th>Status</th><th>Workers</th><th></th></tr>"
            f"{body}</table><p>Start one in a notebook: <code>hubforge.dask.cluster(workers=2)</code></p>"
        )


class HubForgeGateway(DaskGateway):
    """dask-gateway's server as HubForge's ``dask-gateway`` service (see the module doc)."""

    name = "hubforge-dask-gateway"

    config_json = Unicode(
        help="The gateway's traitlets configuration as JSON, or the path of a JSON file "
             "(default: $HUBFORGE_DASK_CONFIG, which the hub sets).",
        config=True,
    )

    @default("config_json")
    def _default_config_json(self):
        return os.environ.get("HUBFORGE_DASK_CONFIG", "")

    service_url = Unicode(help="Where the front listens: the hub service's url.", config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "")

    service_prefix = Unicode(help="The service's URL prefix on the hub's proxy.", config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/dask-gateway/")

    reconcile_period = Float(15, help="Seconds between checks of the hub for stopped servers and deleted users.",
                             config=True)
    stop_with_server = Bool(True, help="Stop a server's clusters when it stops.", config=True)

    @default("authenticator_class")
    def _default_authenticator_class(self):
        return "hubforge.dask.auth.HubForgeAuthenticator"

    @default("backend_class")
    def _default_backend_class(self):
        return "hubforge.dask.backend.HubForgeLocalBackend"

    def initialize(self, argv=None):
        if self.config_json.strip().startswith("{"):
            self.update_config(Config(json.loads(self.config_json)))
        elif self.config_json:
            with open(self.config_json) as f:
                self.update_config(Config(json.load(f)))
        super().initialize(argv)
        if self.subapp is not None:
            return
        app = aioweb.Application(logger=self.log)
        app.add_routes(gateway_routes())
        for key in ("gateway", "backend", "authenticator", "log"):
            app[key] = self.app[key]
        self.app = app
        self._seen: dict[str, float] = {}

    async def setup(self):
        await super().setup()
        self.front = self.start_front()
        self.hub_session = aiohttp.ClientSession()
        self.reconciler = asyncio.ensure_future(self.reconcile_loop())

    async def cleanup(self):
        if hasattr(self, "reconciler"):
            self.reconciler.cancel()
        if hasattr(self, "front"):
            self.front.stop()
        if hasattr(self, "hub_session"):
            await self.hub_session.close()
        await super().cleanup()

    def start_front(self) -> HTTPServer:
        from urllib.parse import urlparse

        proxy = self.backend.proxy
        prefix = self.service_prefix if self.service_prefix.endswith("/") else self.service_prefix + "/"
        app = make_app(
            [
                (r"", HomeHandler),
                (r"api/.*", APIPassThroughHandler),
                (r"clusters/([^/]+)(/.*)?", DashboardHandler),
            ],
            prefix=prefix, log=self.log, gateway=self, upstream=proxy.address,
            websocket_ping_interval=30,
        )
        url = urlparse(self.service_url)
        server = HTTPServer(app, xheaders=True)
        server.listen(url.port, url.hostname or "127.0.0.1")
        self.log.info("HubForge front at %s%s (dashboards for their owners only)", self.service_url.rstrip("/"), prefix)
        return server

    # --- the reconciler ---------------------------------------------------------------

    async def reconcile_loop(self):
        while True:
            await asyncio.sleep(self.reconcile_period)
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("checking clusters against the hub failed; trying again later")

    async def hub_user(self, username: str) -> tuple[int, dict]:
        url = f"{os.environ['JUPYTERHUB_API_URL'].rstrip('/')}/users/{quote(username, safe='')}"
        headers = {"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}"}
        async with self.hub_session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as r:
            return r.status, (await r.json() if r.status == 200 else {})

    async def reconcile(self) -> None:
        """Stop the clusters of deleted users, and of stopped servers."""
        now = time.monotonic()
        records = [c for c in self.backend.db.name_to_cluster.values() if c.target <= JobStatus.RUNNING]
        for name in set(self._seen) - {c.name for c in records}:
            del self._seen[name]
        owners: dict[str, list] = {}
        for c in records:
            self._seen.setdefault(c.name, now)
            owners.setdefault(c.username, []).append(c)
        for username, clusters in owners.items():
            if ":" in username:  # a hub service's cluster ("service:name"): no server to follow
                continue
            try:
                await self.reconcile_owner(username, clusters, now)
            except Exception:  # one owner's trouble must not hold up the others' clean-up
                self.log.exception("checking %s's clusters against the hub failed; next time again", username)

    async def reconcile_owner(self, username: str, clusters: list, now: float) -> None:
        """Stop `username`'s clusters if the user is gone, or the servers that started them."""
        status, model = await self.hub_user(username)
        if status == 404:
            for c in clusters:
                self.log.info("stopping cluster %s: its user %s was deleted from the hub", c.name, username)
                await self.backend.stop_cluster(c.name)
            return
        if status != 200:
            self.log.warning("the hub answered %s about user %s; their clusters are left as they are", status, username)
            return
        if not self.stop_with_server:
            return
        servers = model.get("servers") or {}
        for c in clusters:
            origin = c.config.get("origin") or ""
            if not origin.startswith("server:") or now - self._seen[c.name] < self.reconcile_period:
                continue
            server = origin[len("server:"):]
            if server not in servers:
                self.log.info("stopping cluster %s of %s: the server %r that started it has stopped",
                              c.name, username, server)
                await self.backend.stop_cluster(c.name)


main = HubForgeGateway.launch_instance
