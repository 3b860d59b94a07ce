"""HubForge's hub services: the pieces every service shares.

A HubForge capability that needs state or credentials the user's server must not hold
(the data connections today; jobs and models later) runs as a JupyterHub-managed
service. Two halves are shared:

* :mod:`hubforge.services.auth` is the library a service process imports: tornado
  handlers authenticated by the hub (API tokens and the OAuth cookie), explicit scope
  checks, JSON errors, the access log, and :class:`~hubforge.services.auth.HubServiceApp`
  which serves them under the prefix the hub gives the service.
* this module holds what the *hub configuration* of a service needs: merging scopes into
  the roles JupyterHub defines by default (``user``, ``server``), declaring custom
  scopes, and picking a loopback port. A capability's ``hubconfig`` module calls these,
  and ``hubforge.hub.config`` calls the capability.

Custom scopes are named ``custom:hubforge:<resource>:<verb>``; a verb that implies
another lists it in ``subscopes`` (``connect`` implies ``read``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a hub-managed service's ``url``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grant_scopes(roles: list[dict], role_name: str, scopes: Iterable[str]) -> dict:
    """Add `scopes` to the role `role_name` in a ``c.JupyterHub.load_roles`` list.

    JupyterHub refuses a role defined twice, and a ``load_roles`` entry for one of its
    default roles (``user``, ``server``, ``token``) *replaces* that role's scopes. So the
    first service to touch a default role copies JupyterHub's own default scopes into the
    entry, and later services add to the same entry. Returns the role entry.

    Example (what the data service does)::

        grant_scopes(roles, "server", ["custom:hubforge:data:connect"])
        # -> {"name": "server", "scopes": ["users:activity!user",
        #     "access:servers!server", "custom:hubforge:data:connect"]}
    """
    for role in roles:
        if role["name"] == role_name:
            break
    else:
        role = {"name": role_name, "scopes": list(_default_role_scopes().get(role_name, []))}
        roles.append(role)
    for scope in scopes:
        if scope not in role["scopes"]:
            role["scopes"].append(scope)
    return role


def add_custom_scopes(c, scopes: dict[str, dict]) -> None:
    """Declare custom scopes in ``c.JupyterHub.custom_scopes``, keeping any already there."""
    existing = dict(c.JupyterHub.custom_scopes) if "custom_scopes" in c.JupyterHub else {}
    existing.update(scopes)
    c.JupyterHub.custom_scopes = existing


def _default_role_scopes() -> dict[str, list[str]]:
    # Read from JupyterHub itself so an upgrade that changes a default role is followed.
    from jupyterhub.roles import get_default_roles

    return {role["name"]: list(role["scopes"]) for role in get_default_roles()}
