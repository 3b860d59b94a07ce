"""REST handlers of data access in the user's server, under ``/hubforge/api/data``.

- ``GET /hubforge/api/data/connections``: the connections this user may use,
  ``{"connections": [{"name", "kind", "description"}]}``.
- ``GET /hubforge/api/data/connections/<name>/tree?path=``: `hubforge.data.preview.tree`.
- ``GET /hubforge/api/data/connections/<name>/preview?path=&limit=``:
  `hubforge.data.preview.preview` (``limit`` 0 to 10000, default 100).

Authenticated and authorized like ``/hubforge/api/info`` (resource ``"hubforge"``,
action ``read``). Errors are ``{"status", "message"}`` with the status of the
`hubforge.data.DataError`: 400 bad path or limit (or a SQL error), 403/404 from the
data service or the storage, 502 when the service or the source cannot be reached,
504 when a query runs past its timeout. The credentials the work needs are fetched by
this process from the data service and never appear in a body.

The database and file work runs in a small thread pool so the server's event loop
never waits on it; the connection cache of `hubforge.data` keeps repeated previews
to the query itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..data import DataError, list_connections
from .handlers import AUTH_RESOURCE

#: Threads running data work for the handlers: enough for a browser's parallel requests,
#: few enough that one user's previews cannot flood a database.
WORKERS = 4

_executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="hubforge-data")


class DataHandler(ExtensionHandlerMixin, APIHandler):
    """Base class: runs `hubforge.data` calls off the loop and answers JSON."""

    auth_resource = AUTH_RESOURCE

    async def respond(self, function: Callable[..., Any], *args: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(_executor, functools.partial(function, *args))
        except DataError as e:
            self.fail(e.status_code, e.message)
            return
        self.finish(json.dumps(result))

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"status": status, "message": message}))


class ConnectionsHandler(DataHandler):
    """``GET /hubforge/api/data/connections``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.respond(_connections)


class TreeHandler(DataHandler):
    """``GET /hubforge/api/data/connections/<name>/tree?path=``."""

    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        from ..data.preview import tree

        await self.respond(tree, name, self.get_query_argument("path", ""))


class PreviewHandler(DataHandler):
    """``GET /hubforge/api/data/connections/<name>/preview?path=&limit=``."""

    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        from ..data.preview import MAX_PREVIEW_ROWS, preview

        path = self.get_query_argument("path", "")
        if not path.strip():
            self.fail(400, f"connection {name!r}: give the table or file to preview in ?path=")
            return
        raw = self.get_query_argument("limit", "100")
        try:
            limit = int(raw)
        except ValueError:
            limit = -1
        if not 0 <= limit <= MAX_PREVIEW_ROWS:
            self.fail(
                400, f"limit must be a whole number from 0 to {MAX_PREVIEW_ROWS}, not {raw!r}"
            )
            return
        await self.respond(preview, name, path, limit)


def _connections() -> dict[str, Any]:
    return {"connections": list_connections()}


data_handlers: list[tuple[str, type[web.RequestHandler]]] = [
    (r"/hubforge/api/data/connections", ConnectionsHandler),
    (r"/hubforge/api/data/connections/(?P<name>[^/]+)/tree", TreeHandler),
    (r"/hubforge/api/data/connections/(?P<name>[^/]+)/preview", PreviewHandler),
]
