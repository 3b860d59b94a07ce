"""A lean path for the hot request: ``POST <name>[@<selector>]/predict`` with a hub token.

Serving is the one place where the service's own CPU per request sets the ceiling: on a
small machine the hub's proxy, this service and the model's worker share the cores, and
tornado's `RequestHandler` machinery (routing, the handler object, its prepare/finish
steps, default headers) costs about as much per request as the model's share of a batch.
So `PredictFastPath` sits between tornado's HTTP server and the application: it answers
prediction requests itself, with the same checks and the same answers, and hands every
other request to the application untouched.

What it answers is deliberately narrow: a ``POST`` to a predict endpoint, no query string,
no cookie, an ``Authorization: token|bearer <token>`` header that the hub (through the
service's `HubAuth` and its cache) resolves to a caller who may call the model
(`manager.may_invoke`), with the service started. Anything else (anonymous callers,
cookies from the Models page, refused or unknown tokens, unknown models, a hub that
cannot be reached, a service still starting) is replayed, headers and body, into the
application, whose `EndpointHandler` gives the answer with its message, as before. Once
a request is answered here, prediction errors (`ModelError`: bad input 400, too large
413, the model's own error 422, worker trouble 502/503/504) are written in the same JSON
form as the handlers' (``{"status": code, "message": text}``) and logged like them; any
other exception is a bug, logged with its traceback and answered 500 without details.

Written by hand because no library fits: tornado's only extension point below the
handlers is this delegate interface (`tornado.httputil.HTTPServerConnectionDelegate`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time

from tornado import httputil, web
from tornado.iostream import StreamClosedError

from ..services.auth import INTERNAL_ERROR, log_access
from .errors import ModelError
from .manager import may_invoke

log = logging.getLogger("hubforge.models")

TOKEN = re.compile(r"(?:token|bearer)\s+(.+)", re.IGNORECASE)
JSON_TYPE = "application/json; charset=UTF-8"


class PredictFastPath(httputil.HTTPServerConnectionDelegate):
    """Wraps the service's tornado `Application` for its `HTTPServer` (see module doc).

    `endpoint` matches a request path and captures ``(name, selector, action)``, as the
    application's `EndpointHandler` route does.
    """

    def __init__(self, app, endpoint: re.Pattern):
        self.app = app
        self.endpoint = endpoint

    def start_request(self, server_conn, request_conn) -> httputil.HTTPMessageDelegate:
        return _Request(self, server_conn, request_conn)

    def on_close(self, server_conn) -> None:
        self.app.on_close(server_conn)


class _Request(httputil.HTTPMessageDelegate):
    """One request: answered here, or passed on to the application."""

    def __init__(self, fast: PredictFastPath, server_conn, request_conn):
        self.fast = fast
        self.server_conn = server_conn
        self.conn = request_conn
        self.inner: httputil.HTTPMessageDelegate | None = None  # the application's delegate
        self.start_line = None
        self.headers = None
        self.match = None
        self.token = ""
        self.chunks: list[bytes] = []
        self.closed = False  # the caller went away
        self.responded = False  # an answer was written (or the application has the request)

    # --- tornado's HTTPMessageDelegate --------------------------------------------------

    def headers_received(self, start_line, headers):
        match = None
        if start_line.method == "POST" and "?" not in start_line.path and "Cookie" not in headers:
            token = TOKEN.match(headers.get("Authorization", ""))
            match = self.fast.endpoint.match(start_line.path) if token else None
            if match is not None and match.group(3) == "predict":
                self.token = token.group(1)
        if not self.token:
            return self._pass_on(start_line, headers)
        self.start_line, self.headers, self.match = start_line, headers, match
        return None

    def data_received(self, chunk: bytes):
        if self.inner is not None:
            return self.inner.data_received(chunk)
        self.chunks.append(chunk)
        return None

    def finish(self) -> None:
        if self.inner is not None:
            self.inner.finish()
            return
        asyncio.ensure_future(self._answer())

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()
        self.closed = True

    # --- here ---------------------------------------------------------------------------

    def _pass_on(self, start_line, headers):
        self.inner = self.fast.app.start_request(self.server_conn, self.conn)
        return self.inner.headers_received(start_line, headers)

    def _replay(self) -> None:
        """Hand the whole request to the application, as if it had gone there first."""
        self.responded = True  # by the application
        body = b"".join(self.chunks)
        self.chunks = []
        self._pass_on(self.start_line, self.headers)
        if body:
            self.inner.data_received(body)
        self.inner.finish()

    async def _answer(self) -> None:
        try:
            await self._serve()
        except Exception:  # a bug: logged with its traceback, answered without it
            log.exception("%s failed", self.start_line.path)
            if not self.responded:
                self._write(500, {"status": 500, "message": INTERNAL_ERROR})

    async def _serve(self) -> None:
        started = time.perf_counter()
        settings = self.fast.app.settings
        manager = settings.get("manager")
        hub_auth = settings["hub_auth"]
        name, selector, _ = self.match.groups()
        try:
            user = await hub_auth.user_for_token(self.token, session_id="", sync=False)
        except web.HTTPError:  # the hub cannot be asked: the handler answers that (502)
            user = None
        info = manager.models.get(name) if manager is not None and user is not None else None
        if info is None or not may_invoke(info, {"kind": "user", **user}, hub_auth.access_scopes):
            self._replay()
            return
        try:
            predictions, version, alias = await manager.invoke(info, selector, b"".join(self.chunks))
        except ModelError as e:
            self._log(e.status_code, user, name, started, e.message)
            self._write(e.status_code, {"status": e.status_code, "message": e.message})
            return
        extra = {"X-HubForge-Model-Version": str(version)}
        if alias:
            extra["X-HubForge-Model-Alias"] = alias
        self._write(200, {"predictions": predictions}, extra)

    def _write(self, status: int, body: dict, extra: dict | None = None) -> None:
        self.responded = True
        if self.closed:
            return
        data = json.dumps(body).encode()
        # The headers tornado's handlers send, less its Server banner.
        headers = httputil.HTTPHeaders({"Content-Type": JSON_TYPE, "Content-Length": str(len(data)), "Date": _date()})
        for key, value in (extra or {}).items():
            headers[key] = value
        start = httputil.ResponseStartLine("HTTP/1.1", status, httputil.responses.get(status, "Unknown"))
        try:
            self.conn.write_headers(start, headers, data)
            self.conn.finish()
        except StreamClosedError:
            self.closed = True

    def _log(self, status: int, user: dict, model: str, started: float, message: str) -> None:
        """The access log line of a failed request, as the handlers write it."""
        log_access(self.fast.app.settings.get("log", log), status, "POST", self.start_line.path, user,
                   {"model": model}, 1000 * (time.perf_counter() - started), message)


_date_cache = [0, ""]


def _date() -> str:
    """The HTTP Date header, formatted once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, httputil.format_timestamp(now)]
    return _date_cache[1]
