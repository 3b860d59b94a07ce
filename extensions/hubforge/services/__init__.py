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
  scopes, picking a loopback port, and on Kubernetes the address of a service in the
  hub's pod. A capability's ``hubconfig`` module calls these, and ``hubforge.hub.config``
  calls the capability.

Custom scopes are named ``custom:hubforge:<resource>:<verb>``; a verb that implies
another lists it in ``subscopes`` (``connect`` implies ``read``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

#: The hub pod's IP (HubForge's chart values set it from the downward API): the hub's
#: URL for a service in its pod (`kubernetes_address`).
POD_IP_ENV = "POD_IP"
#: Zero to JupyterHub's Service in front of the hub's pod.
KUBERNETES_HUB_HOST = "hub"


#: Ports `free_port` must not hand out: the ones it already has, and those reserved.
_taken_ports: set[int] = set()


def reserve_ports(*ports: int) -> None:
    """Keep `free_port` from handing out `ports` in this process (0 and None are ignored).

    The hub's configuration reserves the ports its settings name (the proxy's, its API's,
    the hub's) before it picks its services' ports: nothing listens on them yet while the
    configuration runs, so the kernel could offer one of them as a free port.
    """
    _taken_ports.update(p for p in ports if p)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a hub-managed service's ``url``), and
    never one this process has handed out or reserved before.

    The kernel's "any free port" forgets a port as soon as the probing socket closes, so
    two calls can get the same one back before either is listened on; a hub whose
    services then share a port fails to start. Ports are not handed out twice instead.
    """
    for _ in range(64):
        port = _unbound_port()
        if port not in _taken_ports:
            _taken_ports.add(port)
            return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 that was not handed out already ({len(_taken_ports)} were)")


def _unbound_port() -> int:
    """A port the kernel says is free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubernetes_address(port: int) -> tuple[str, str]:
    """A service in the hub's pod on ``port``: its URL for the hub, and the ``host:port`` it
    listens on (all the pod's interfaces, where the Service and other pods reach it).

    The URL is the pod's own IP (`POD_IP_ENV`), not the Service: as it starts, the hub
    tries a managed service at its URL for about ten seconds and exits if it gets no
    answer, while the ``hub`` Service sends nothing to the hub's pod before its
    readiness probe passes (and then only if the cluster routes a pod's traffic back to
    itself).
    """
    pod_ip = os.environ.get(POD_IP_ENV, "")
    if ":" in pod_ip:  # an IPv6-first cluster: listen on "::"
        return f"http://[{pod_ip}]:{port}", f":::{port}"
    # Without the pod's IP (values other than HubForge's), the Service name: it works
    # once the hub's pod is ready, which the hub does not wait for at start.
    return f"http://{pod_ip or KUBERNETES_HUB_HOST}:{port}", f"0.0.0.0:{port}"


def kubernetes_service_url(name: str, port: int, base_url: str = "/") -> str:
    """The service ``name`` in the hub's pod on ``port`` as other pods reach it, through
    the ``hub`` Service: ``http://hub:<port><base_url>services/<name>/``."""
    prefix = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
    return f"http://{KUBERNETES_HUB_HOST}:{port}{prefix}services/{name}/"


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
