"""The data service's part of the hub configuration.

:func:`configure_data_service` turns the ``data_connections`` and ``data_secrets_file``
platform settings into a hub-managed service, its custom scopes and the roles that hold
them. The scopes and roles are chosen for least privilege:

* ``custom:hubforge:data:read`` lists and describes connections;
  ``custom:hubforge:data:connect`` hands out credentials and implies ``read``.
* The ``user`` role (every hub user) gets both, ``access:services!service=data`` (the
  right to talk to the service at all) and ``read:services!service=data`` (to look up
  its URL through the hub API, as `hubforge.client.ServiceClient` does). Which
  connections a user may use is decided by the catalogue's ``allowed_users`` and
  ``allowed_groups``, inside the service.
* The ``server`` role (the ``JUPYTERHUB_API_TOKEN`` of every user server) gets the same
  four scopes on top of JupyterHub's defaults, so the notebook can fetch credentials
  without holding the user's other permissions (``inherit`` would give it all of them).
  JupyterHub intersects a server token's scopes with its owner's, so a server can never
  do more with the service than its owner.
* Browser sessions (the service's OAuth cookie) get only ``read``: credentials are
  served to API tokens only.
* The service itself needs no role: the hub tells it the caller's name, groups and
  admin flag when it checks a token.
"""

from __future__ import annotations

import os
import sys

from ..services import add_custom_scopes, free_port, grant_scopes
from .catalogue import load_catalogue
from .service import CONNECT_SCOPE, READ_SCOPE

SERVICE_NAME = "data"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
CUSTOM_SCOPES = {
    READ_SCOPE: {"description": "List and describe the data connections you may use."},
    CONNECT_SCOPE: {
        "description": "Get the credentials of the data connections you may use.",
        "subscopes": [READ_SCOPE],
    },
}
#: What a user, and a user's server, needs to find and use the service.
USER_SCOPES = [READ_SCOPE, CONNECT_SCOPE, ACCESS_SCOPE, f"read:services!service={SERVICE_NAME}"]
SERVER_SCOPES = USER_SCOPES


class FromHubEnvironment(str):
    """A service environment value read from the hub's environment when the service starts.

    JupyterHub passes managed services only a few variables of its own environment, so
    the ``{env: NAME}`` secrets of the catalogue are forwarded by name: JupyterHub calls
    this object at start time (as it does any callable in ``environment``) and it returns
    the hub's value. The value is never stored in the configuration. As a string the
    object reads ``$NAME (from the hub's environment)``: that is what JupyterHub 5 writes
    into its database, which keeps a copy of each service's ``environment``.
    """

    def __new__(cls, name: str):
        self = super().__new__(cls, f"${name} (from the hub's environment)")
        self.name = name
        return self

    def __call__(self, spawner=None) -> str:
        return os.environ.get(self.name, "")

    def __repr__(self) -> str:
        return f"FromHubEnvironment({self.name!r})"


def configure_data_service(c, settings, services: list, roles: list) -> None:
    """Add the ``data`` service to `services`, its scopes to `roles` and to `c`.

    A no-op when ``settings.data_connections`` is empty. The catalogue is validated here,
    so the hub refuses to start on an invalid file (CatalogueError lists every problem);
    missing secrets are only reported by the service, per connection.
    """
    if not settings.data_connections:
        return
    catalogue_path = settings.resolve_path(settings.data_connections)
    catalogue = load_catalogue(catalogue_path)
    secrets_path = settings.resolve_path(settings.data_secrets_file) if settings.data_secrets_file else ""

    environment = {
        "HUBFORGE_DATA_CONNECTIONS": str(catalogue_path),
        "HUBFORGE_DATA_SECRETS_FILE": str(secrets_path),
    }
    for name in sorted(catalogue.env_names()):
        environment[name] = FromHubEnvironment(name)
    services.append({
        "name": SERVICE_NAME,
        "url": f"http://127.0.0.1:{free_port()}",
        "command": [sys.executable, "-m", "hubforge.data.service"],
        "environment": environment,
        "oauth_client_allowed_scopes": [READ_SCOPE],
        # A platform service, run by the hub: no "authorize this application" page.
        "oauth_no_confirm": True,
        "display": True,
        "info": {"description": "Data connections", "api": "api/connections"},
    })
    add_custom_scopes(c, CUSTOM_SCOPES)
    grant_scopes(roles, "user", ["self", *USER_SCOPES])
    grant_scopes(roles, "server", SERVER_SCOPES)
