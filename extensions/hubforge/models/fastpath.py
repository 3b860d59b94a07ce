"""The hot request, answered below tornado: ``POST <name>[@<selector>]/predict`` with a hub token.

Serving is the one place where the service's own CPU per request sets the ceiling: on a
small machine the hub's proxy, this service and the model's worker share the cores, and
tornado (its HTTP/1.1 connection, then its `RequestHandler` machinery: routing, the
handler object, its prepare/finish steps, default headers) costs about as much per
request as the model's share of a batch. So the models service listens with
`hubforge.services.leanhttp.LeanHTTPServer`, and `PredictFastPath` tells it which
requests to answer itself (`hot`) and answers them (`answer`), with the same checks and
the same answers as the handlers; every other request goes to the tornado application.

What it answers is deliberately narrow: a ``POST`` to a predict endpoint, no query string,
no cookie, an ``Authorization: token|bearer <token>`` header that the hub (through the
service's `HubAuth` and its cache) resolves to a caller who may call the model
(`manager.may_invoke`), with the service started. For anything else (anonymous callers,
cookies from the Models page, refused or unknown tokens, unknown models, a hub that
cannot be reached, a service still starting) `answer` returns None and the request goes,
as received, to the application, whose `EndpointHandler` gives the answer with its
message. Once a request is answered here, prediction errors (`ModelError`: bad input 400,
too large 413, the model's own error 422, worker trouble 502/503/504) are written in the
same JSON form as the handlers' (``{"status": code, "message": text}``) and logged like
them; any other exception is a bug, logged with its traceback and answered 500 without
details.
"""

from __future__ import annotations

import json
import logging
import re
import time

from tornado import web

from ..services.auth import INTERNAL_ERROR, log_access
from ..services.leanhttp import Request, Response
from .errors import ModelError
from .manager import may_invoke

log = logging.getLogger("hubforge.models")

TOKEN = re.compile(r"(?:token|bearer)\s+(.+)", re.IGNORECASE)
JSON_TYPE = "application/json; charset=UTF-8"


class PredictFastPath:
    """`LeanHTTPServer`'s `hot` and `answer` for the models service (see module doc).

    `endpoint` matches a request path and captures ``(name, selector, action)``, as the
    application's `EndpointHandler` route does; the application's settings hold the
    service's `hub_auth` and, once started, its `manager`.
    """

    def __init__(self, app: web.Application, endpoint: re.Pattern):
        self.settings = app.settings
        self.endpoint = endpoint

    def hot(self, request: Request) -> bool:
        if request.method != "POST" or "?" in request.target or "cookie" in request.headers:
            return False
        if TOKEN.match(request.headers.get("authorization", "")) is None:
            return False
        match = self.endpoint.match(request.target)
        return match is not None and match.group(3) == "predict"

    async def answer(self, request: Request) -> Response | None:
        started = time.perf_counter()
        try:
            return await self._serve(request, started)
        except Exception:  # a bug: logged with its traceback, answered without it
            log.exception("%s failed", request.target)
            return _json(500, {"status": 500, "message": INTERNAL_ERROR})

    async def _serve(self, request: Request, started: float) -> Response | None:
        manager = self.settings.get("manager")
        hub_auth = self.settings["hub_auth"]
        name, selector, _ = self.endpoint.match(request.target).groups()
        token = TOKEN.match(request.headers["authorization"]).group(1)
        try:
            user = await hub_auth.user_for_token(token, session_id="", sync=False)
        except web.HTTPError:  # the hub cannot be asked: the handler answers that (502)
            user = None
        info = manager.models.get(name) if manager is not None and user is not None else None
        if info is None or not may_invoke(info, {"kind": "user", **user}, hub_auth.access_scopes):
            return None
        try:
            predictions, version, alias = await manager.invoke(info, selector, request.body)
        except ModelError as e:
            log_access(self.settings.get("log", log), e.status_code, "POST", request.target, user,
                       {"model": name}, 1000 * (time.perf_counter() - started), e.message)
            return _json(e.status_code, {"status": e.status_code, "message": e.message})
        extra = {"X-HubForge-Model-Version": str(version)}
        if alias:
            extra["X-HubForge-Model-Alias"] = alias
        return _json(200, {"predictions": predictions}, extra)


def _json(status: int, body: dict, extra: dict | None = None) -> Response:
    """A JSON answer with the handlers' Content-Type (and no Server banner)."""
    return Response(status, json.dumps(body).encode(), {"Content-Type": JSON_TYPE, **(extra or {})})
