"""REST handlers of HubForge's single-user server extension.

Routes live in `default_handlers` as ``(relative pattern, handler class)``
pairs; `HubForgeExtension` prefixes them with the server's base URL. A
capability that adds endpoints defines its handlers beside these and appends
them to `default_handlers` under ``/hubforge/api/<capability>``.
"""

from __future__ import annotations

import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from .info import server_info

# The resource name an Authorizer sees for every HubForge endpoint (the action
# comes from the HTTP method: GET is "read"). JupyterHub's own authorizer only
# checks access:servers; a custom Authorizer can grant or deny "hubforge"
# separately from "contents" or "kernels".
AUTH_RESOURCE = "hubforge"


class InfoHandler(ExtensionHandlerMixin, APIHandler):
    """``GET /hubforge/api/info``: this server's user, profile and resources.

    The body is `hubforge.singleuser.info.server_info` as JSON.
    """

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self) -> None:
        self.finish(json.dumps(server_info()))


default_handlers: list[tuple[str, type[web.RequestHandler]]] = [
    (r"/hubforge/api/info", InfoHandler),
]
