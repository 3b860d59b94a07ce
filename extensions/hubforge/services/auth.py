"""Hub authentication and scope checks for HubForge's hub services.

Every HubForge service (``data`` today; jobs and models later) is a small tornado app
run by the hub. This module is what such a service imports so that all of them answer
the same way:

* **Who is calling**: JupyterHub's :class:`~jupyterhub.services.auth.HubOAuth` identifies
  the caller from an ``Authorization: token ...`` header (a user's API token, or a
  server's ``JUPYTERHUB_API_TOKEN``) or, for browsers, from the OAuth cookie the service
  sets after the hub's login. The identity model the hub returns always carries the
  user's ``name``, ``admin`` flag, ``groups`` and the token's expanded ``scopes``
  (JupyterHub 5 grants every token the ``read:users:name``/``read:users:groups`` scopes
  on its own owner for this), so a service needs no hub API rights of its own to learn a
  caller's groups. Answers are cached for `HubServiceApp.identity_cache_seconds`.
* **May they**: a handler method declares its scopes with :func:`requires_scopes`. The
  caller must also hold one of the service's access scopes
  (``access:services!service=<name>``), as JupyterHub defines access to a service.
* **How it fails**: :class:`APIHandler` answers JSON ``{"status": ..., "message": ...}``
  without tracebacks, 401 for an anonymous call, 403 naming a missing scope;
  :class:`PageHandler` sends an anonymous browser to the hub's login and back.
* **What is logged**: one line per request with the status, method, path (never the
  query string, where a ``?token=`` could be), user, the handler's ``log_context``
  (e.g. ``connection=warehouse``) and the error message. Every log line of the process
  passes through :class:`RedactingFormatter`, which replaces any value registered with
  :func:`redact_in_logs` by ``[secret]``, tracebacks included.

A service subclasses :class:`HubServiceApp` (or :class:`StatefulServiceApp`, for one
that opens a database and background work after it listens and stops them on SIGTERM:
jobs, models), lists its handlers with patterns relative to the service prefix, and
calls ``launch_instance()``::

    class HelloHandler(APIHandler):
        @requires_scopes("custom:hubforge:hello:read")
        async def get(self):
            self.write_json({"hello": self.current_user["name"]})

    class HelloService(HubServiceApp):
        def handlers(self):
            return [(r"api/hello", HelloHandler)]
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import re
import signal
from collections.abc import Iterable
from functools import wraps
from html import escape
from http.client import responses
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated, check_scopes
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from traitlets import Integer, Unicode, default
from traitlets.config import Application

from ..exceptions import UserInputError

#: Values that must never appear in a log line of this process (see `redact_in_logs`).
_REDACTED: set[str] = set()
#: Shorter values are not redacted: replacing every "abc" in the logs would hide more
#: than it protects, and a secret that short is no secret anyway.
MIN_REDACTED_LENGTH = 4


def redact_in_logs(values: Iterable[str]) -> None:
    """Register secret values that `RedactingFormatter` removes from every log line."""
    _REDACTED.update(v for v in values if isinstance(v, str) and len(v) >= MIN_REDACTED_LENGTH)


def redact(text: str, values: Iterable[str] | None = None) -> str:
    """`text` with every secret value (default: those registered) replaced by ``[secret]``."""
    for value in sorted(_REDACTED if values is None else values, key=len, reverse=True):
        if value:
            text = text.replace(value, "[secret]")
    return text


class RedactingFormatter(logging.Formatter):
    """A log formatter that removes registered secrets from the whole formatted record.

    Redacting after formatting covers the message, its arguments and any traceback,
    which is where a database driver's error (URL and password included) would show up.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class ServiceOAuth(HubOAuth):
    """JupyterHub's `HubOAuth`, asking the hub once for concurrent lookups of one identity.

    `HubOAuth` caches the hub's answer to "who holds this token (or cookie)" for
    ``cache_max_age`` seconds, but requests that miss the cache together each ask: when
    the entry of a token that a hundred concurrent callers share expires, the hub gets a
    hundred identical ``GET /hub/api/user`` calls at once (a model's callers, every
    ``identity_cache_seconds``). Here the first miss asks, and the requests that miss
    while it is under way wait for its answer (or its error). One caller giving up does
    not cancel the lookup the others wait on.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._lookups: dict = {}  # cache key -> the lookup under way

    async def _check_hub_authorization(self, url, api_token, cache_key=None, use_cache=True):
        if not use_cache or cache_key is None:
            return await super()._check_hub_authorization(url, api_token, cache_key, use_cache)
        with contextlib.suppress(KeyError):
            return self.cache[cache_key]  # the usual case, on every request: no task to make
        lookup = self._lookups.get(cache_key)
        if lookup is None:
            lookup = asyncio.ensure_future(super()._check_hub_authorization(url, api_token, cache_key, use_cache))
            self._lookups[cache_key] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(cache_key, None))
        return await asyncio.shield(lookup)


def requires_scopes(*scopes: str):
    """Decorate a handler method: the caller must hold every one of `scopes`.

    Anonymous callers get 401 (`APIHandler`) or the hub's login page (`PageHandler`);
    an identified caller lacking a scope gets 403 naming it. The service's access scope
    is always required as well.
    """

    def decorator(method):
        @wraps(method)
        async def wrapper(self, *args, **kwargs):
            self.authorize(scopes)
            result = method(self, *args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        wrapper.required_scopes = scopes
        return wrapper

    return decorator


class ServiceHandler(HubOAuthenticated, web.RequestHandler):
    """Base of every HubForge service handler: identifies the caller in `prepare`.

    ``self.current_user`` is the hub's identity model (``name``, ``kind``, ``admin``,
    ``groups``, ``scopes``) or None. Put request details worth logging (never a secret)
    in ``self.log_context``; they end up in the access log line.
    """

    #: The message of the error this request answered with, for the access log.
    error_message = ""

    @property
    def hub_auth(self) -> HubOAuth:
        return self.settings["hub_auth"]

    @property
    def log(self) -> logging.Logger:
        return self.settings["log"]

    async def prepare(self) -> None:
        # Identify the caller once, without blocking the event loop (the mixin's
        # get_current_user would ask the hub synchronously from a thread). HubOAuth
        # ignores the cookie of a request that fails JupyterHub's XSRF rules (a change
        # or a cross-site fetch without the _xsrf token of a page we served), so such a
        # request is anonymous here. Token-authenticated requests cannot be forged.
        self.log_context: dict[str, str] = {}
        try:
            self._hub_user = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError as e:
            if e.status_code < 500:
                raise
            self.log.error("cannot check the caller's token with the hub: %s", e.log_message)
            raise web.HTTPError(502, "cannot check your identity with the hub; try again shortly") from None
        if self._hub_user is not None:
            self._hub_user.setdefault("kind", "user")

    def get_current_user(self):
        return getattr(self, "_hub_user", None)

    def authorize(self, scopes: Iterable[str]) -> dict:
        """Check the caller holds the service's access scope and every one of `scopes`."""
        user = self.current_user
        if user is None:
            self.on_anonymous()
        held = set(user.get("scopes", []))
        missing = [scope for scope in scopes if not check_scopes({scope}, held)]
        access = self.hub_auth.access_scopes
        if access and not check_scopes(access, held):
            # Any one access scope will do; name the narrowest (access:services!service=NAME).
            missing.append(sorted(access, key=lambda scope: "!" not in scope)[0])
        if missing:
            plural = "s" if len(missing) > 1 else ""
            raise web.HTTPError(403, f"this request needs the scope{plural} {', '.join(missing)}, which your token lacks")
        return user

    def on_anonymous(self):
        """Respond to a caller the hub did not identify; must raise. Default: 401
        (`PageHandler` sends browsers to the hub's login instead)."""
        raise web.HTTPError(401, "authentication required")

    def log_exception(self, typ, value, tb) -> None:
        # An HTTPError is an answer, not a failure: the access log line records it with its
        # message. Anything else is a bug: log its traceback once, here (redacted).
        if not isinstance(value, (web.HTTPError, UserInputError)):
            self.log.error("%s failed: %r", self.request.path, value, exc_info=(typ, value, tb))

    def error_text(self, status_code: int, exc_info) -> str:
        """The message shown for an error: ours for HTTPError, a generic one otherwise."""
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, web.HTTPError) and exc.log_message:
            return exc.log_message % exc.args if exc.args else exc.log_message
        if isinstance(exc, web.HTTPError) or status_code < 500:
            return responses.get(status_code, "error")
        return INTERNAL_ERROR


class APIHandler(ServiceHandler):
    """A JSON endpoint. Errors are ``{"status": code, "message": text}``."""

    def on_anonymous(self):
        raise web.HTTPError(401, "authentication required: send 'Authorization: token <your API token>'")

    def body(self) -> dict:
        """The request's body, a JSON object (``{}`` when empty); 400 saying why otherwise."""
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError as e:
            raise web.HTTPError(400, f"the request body is not JSON: {e}") from None
        except RecursionError:
            raise web.HTTPError(400, "the request body is nested too deeply") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return data

    def write_json(self, model, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(model))

    def write_error(self, status_code: int, **kwargs) -> None:
        self.error_message = self.error_text(status_code, kwargs.get("exc_info"))
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'token realm="JupyterHub"')
        self.finish(json.dumps({"status": status_code, "message": self.error_message}))


class PageHandler(ServiceHandler):
    """An HTML page for browsers: anonymous visitors go to the hub's login and back."""

    def on_anonymous(self):
        self.redirect(self.get_login_url())
        raise web.Finish()

    def write_error(self, status_code: int, **kwargs) -> None:
        self.error_message = self.error_text(status_code, kwargs.get("exc_info"))
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(
            f"<!doctype html><title>{status_code}</title>"
            f"<h1>{status_code} {escape(responses.get(status_code, ''))}</h1>"
            f"<p>{escape(self.error_message)}</p>"
        )


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """Finishes the hub's OAuth login with the app's `HubOAuth` (which holds the state)."""

    @property
    def hub_auth(self) -> HubOAuth:
        return self.settings["hub_auth"]


def log_request(handler: web.RequestHandler) -> None:
    """The access log: one line per request, without the query string or any secret."""
    log_access(handler.settings["log"], handler.get_status(), handler.request.method, handler.request.path,
               getattr(handler, "_hub_user", None), getattr(handler, "log_context", {}),
               1000.0 * handler.request.request_time(), getattr(handler, "error_message", ""))


def log_access(log: logging.Logger, status: int, method: str, path: str, user: dict | None, context: dict,
               ms: float, error: str = "") -> None:
    """One access-log line (`log_request`'s, also written by requests answered below the
    handlers): status, method, path, caller, context, time and the error's message."""
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    who = f"{user.get('kind', 'user')}={user['name']}" if user else "user=-"
    fields = "".join(f" {k}={printable(v)}" for k, v in context.items())
    error = printable(error)
    log.log(level, "%d %s %s %s%s %.1fms%s", status, method, path, who, fields, ms, f": {error}" if error else "")


#: What a caller is told of an unexpected error (the details go to the hub's log).
INTERNAL_ERROR = "internal error in this service; the details are in the hub's log"


def printable(text: str) -> str:
    # Request paths are user input: a "%0A" in a connection name must not start a new,
    # forged log line.
    text = str(text)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def prefixed(prefix: str, pattern: str) -> str:
    """A handler pattern relative to the service prefix, as a tornado route.

    The prefix arrives URL-encoded (``/@/space%20word/services/data/``), which is also how
    tornado sees request paths, so it is matched literally.
    """
    return re.escape(prefix) + pattern.lstrip("/") + "$"


def make_app(
    handlers: list[tuple],
    *,
    prefix: str | None = None,
    hub_auth: HubOAuth | None = None,
    log: logging.Logger | None = None,
    **settings,
) -> web.Application:
    """A tornado app serving `handlers` under the service prefix, with the OAuth callback.

    `handlers` are ``(pattern, HandlerClass[, kwargs])`` with patterns relative to the
    prefix (``r"api/connections"``; ``""`` is the service's landing page). `prefix`
    defaults to ``$JUPYTERHUB_SERVICE_PREFIX``; `hub_auth` to a `HubOAuth` configured from
    the environment the hub gives its services. Extra `settings` go to the application
    and are visible to handlers as ``self.settings``.
    """
    prefix = prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    if not prefix.endswith("/"):
        prefix += "/"
    routes = [(prefixed(prefix, pattern), *rest) for pattern, *rest in handlers]
    routes.append((prefixed(prefix, "oauth_callback"), OAuthCallbackHandler))
    hub_auth = hub_auth or ServiceOAuth(cache_max_age=10)
    settings.setdefault("cookie_secret", os.urandom(32))
    settings.setdefault("log_function", log_request)
    return web.Application(
        routes,
        hub_auth=hub_auth,
        log=log or logging.getLogger("hubforge.service"),
        service_prefix=prefix,
        **settings,
    )


class HubServiceApp(Application):
    """Base class of HubForge's hub services: configuration, logging and the web server.

    Subclasses override `handlers` (and usually `initialize` to load their state). The
    hub starts the service with ``JUPYTERHUB_SERVICE_URL``/``_PREFIX``/``_API_TOKEN`` and
    friends in its environment; every trait below defaults from there.
    """

    _log_formatter_cls = RedactingFormatter

    @default("log_level")
    def _default_log_level(self):
        return logging.INFO

    @default("log_format")
    def _default_log_format(self):
        # JupyterHub's own format, so the service's lines read like the hub's around them.
        return "[%(levelname)1.1s %(asctime)s.%(msecs).03d %(name)s] %(message)s"

    service_url = Unicode(
        help="""Where the service listens, e.g. ``http://127.0.0.1:10101``.
        Default: ``$JUPYTERHUB_SERVICE_URL``, which the hub sets from the service's ``url``.""",
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")

    service_prefix = Unicode(
        help="""URL path the service is served under, e.g. ``/services/data/``.
        Default: ``$JUPYTERHUB_SERVICE_PREFIX`` (it includes the hub's base URL).""",
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")

    identity_cache_seconds = Integer(
        10,
        help="""How long, in seconds, the hub's answer to "who owns this token" is reused.

        Default 10. A change of a user's groups or a revoked token takes effect after at
        most this long. Example, in a service's command line:
        ``--DataService.identity_cache_seconds=30``.""",
    ).tag(config=True)

    def get_default_logging_config(self) -> dict:
        config = super().get_default_logging_config()
        # tornado's and JupyterHub's client loggers write through the same redacting handler.
        for name in ("tornado", "jupyterhub", "hubforge"):
            config["loggers"][name] = {"level": "INFO", "handlers": ["console"], "propagate": False}
        return config

    def handlers(self) -> list[tuple]:
        """``(pattern relative to the prefix, HandlerClass[, kwargs])`` tuples to serve.

        Subclasses list theirs; the base serves only the OAuth callback."""
        return []

    def web_settings(self) -> dict:
        """Extra tornado settings, visible to handlers as ``self.settings``."""
        return {}

    def listen_address(self) -> tuple[str, int]:
        """``(host, port)`` to listen on: `service_url`'s."""
        url = urlparse(self.service_url)
        return url.hostname or "127.0.0.1", url.port or 80

    async def after_listen(self) -> None:
        """Work to do once the service answers (the hub waits only so long for that);
        the default does nothing."""

    def make_app(self) -> web.Application:
        hub_auth = ServiceOAuth(parent=self, cache_max_age=self.identity_cache_seconds)
        return make_app(
            self.handlers(), prefix=self.service_prefix, hub_auth=hub_auth, log=self.log,
            **self.web_settings(),
        )

    def listen(self, app: web.Application, host: str, port: int):
        """Serve `app` on ``host:port``; returns the server (its ``stop()`` is called at
        exit). Tornado's `HTTPServer` here; the models service puts a lean server for
        its predictions in front (`hubforge.services.leanhttp`)."""
        server = HTTPServer(app, xheaders=True)
        server.listen(port, host)
        return server

    def start(self) -> None:
        from ..forkserver import die_with_parent

        die_with_parent()  # stop with the hub, even a killed one
        app = self.make_app()
        host, port = self.listen_address()
        server = self.listen(app, host, port)
        self.log.info("%s listening on %s%s", self.name, self.service_url.rstrip("/"), self.service_prefix)
        IOLoop.current().add_callback(self.after_listen)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                IOLoop.current().start()
        finally:
            server.stop()


class StatefulServiceApp(HubServiceApp):
    """A hub service with state to open after it listens and to close when it stops
    (the jobs and models services).

    The hub gives a service ten seconds to answer, and on a busy machine imports,
    database migrations and starting workers can take longer, so `after_listen` does the
    opening: `setup` (read the configuration, open the database: synchronous), then
    `start_work` (the background work). Handlers answer 503 "starting" until the service
    puts its state in ``self._app.settings``; if `setup` fails the service exits. SIGTERM
    and SIGINT run `stop_work` (at most `stop_timeout` seconds) before the loop stops.

    Subclasses override `setup`, `start_work` and `stop_work`, and set `bind_env` and
    `secret_env`; `start_work` calls `_forget_secrets` once nothing it starts needs them.
    """

    #: An environment variable that, when set (``host:port``, ``:::port`` for IPv6),
    #: overrides where the service listens: on Kubernetes, all interfaces of the hub's
    #: pod, where the proxy and the pods the service starts reach it. Empty: none.
    bind_env = ""
    #: Environment variables `_forget_secrets` removes besides the hub token and every
    #: ``*PASSWORD*`` (e.g. the service's database URL).
    secret_env: tuple[str, ...] = ()
    #: Seconds `stop_work` may take before the service stops anyway.
    stop_timeout = 20

    def listen_address(self) -> tuple[str, int]:
        """``$<bind_env>`` (``host:port``) when set, else `service_url`'s."""
        bind = os.environ.get(self.bind_env, "") if self.bind_env else ""
        if bind:
            host, _, port = bind.rpartition(":")
            return host or "0.0.0.0", int(port)
        return super().listen_address()

    def make_app(self) -> web.Application:
        # Kept: `setup` completes its settings after the service listens.
        self._app = super().make_app()
        return self._app

    def setup(self) -> None:
        """Read the configuration and open what the service needs (synchronous: the
        requests that arrive meanwhile wait, then get 503 until `start_work` is done)."""

    async def start_work(self) -> None:
        """Start the background work and hand the state to the handlers."""

    async def stop_work(self) -> None:
        """Stop the background work (SIGTERM, SIGINT)."""

    async def after_listen(self) -> None:
        try:
            self.setup()
        except Exception:
            self.log.exception("the %s service cannot start", self.name.removeprefix("hubforge-"))
            IOLoop.current().stop()
            raise
        await self.start_work()

    def start(self) -> None:
        loop = IOLoop.current()

        def stop(*_):
            loop.add_callback_from_signal(self._shutdown)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        super().start()

    def _forget_secrets(self) -> None:
        """Remove the hub token, `secret_env` and passwords from this process's environment.

        Read already (HubOAuth's settings are resolved here, first), they would otherwise
        be inherited by the processes the service starts later (a forkserver that
        multiprocessing restarts after a crash, a model's worker), and so be readable by
        user code in /proc/<pid>/environ.
        """
        hub_auth = self._app.settings["hub_auth"]
        for name in hub_auth.trait_names():
            with contextlib.suppress(Exception):
                getattr(hub_auth, name)
        for name in list(os.environ):
            if name in ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", *self.secret_env) or "PASSWORD" in name:
                del os.environ[name]

    async def _shutdown(self) -> None:
        try:
            await asyncio.wait_for(self.stop_work(), self.stop_timeout)
        except Exception:
            self.log.exception("stopping the %s service failed", self.name.removeprefix("hubforge-"))
        finally:
            IOLoop.current().stop()
