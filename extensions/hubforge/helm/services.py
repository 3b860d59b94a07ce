"""What every HubForge service that runs in the hub's pod needs from the chart.

The jobs service (:mod:`.jobs`) and the models service (:mod:`.models`) run in the
hub's pod, started by the hub from a ``hub.extraConfig`` entry, on a fixed port of the
chart's ``hub`` Service, and make objects in the hub's namespace. This module holds
the pure builders both use:

* :func:`service_chart_values` — the Zero to JupyterHub values that open the service's
  port: ``hub.service.extraPorts``, the hub's network-policy ingress (from the pods the
  service names, user servers and the proxy, and the hub's pod itself), user servers'
  and the proxy's egress to it, ``hub.extraEnv.POD_IP`` and the ``hub.extraConfig``
  entry.
* :func:`service_rbac` — the Role and RoleBinding for the hub's service account (the
  chart has no values key for extra RBAC rules, so they are a manifest of their own).
* :func:`section_literal` — a settings section as the Python literal the
  ``hub.extraConfig`` entry passes on.
"""

from __future__ import annotations

from typing import Any

from ..k8s.models import HUB_POD_SELECTOR
from ..services import POD_IP_ENV

#: Zero to JupyterHub's hub service account (``hub.serviceAccount.name`` unset, no
#: ``fullnameOverride``), the one the hub pod, and so the services in it, run as.
HUB_SERVICE_ACCOUNT = "hub"
#: The hub's state directory in its pod: the chart mounts the hub's PVC there
#: (``hub.db.type: sqlite-pvc``, the default). Each service's database and files go in
#: a directory named for it below it (``jobs/``, ``models/``).
HUB_DATA_DIR = "/srv/jupyterhub"
#: The label the chart gives pods that may talk to the hub: user servers and the proxy.
NETWORK_ACCESS_HUB = {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}}


def section_literal(settings, section: str) -> str:
    """The ``section:`` of the platform settings as a Python literal, keys sorted."""
    # repr, not JSON: the section's booleans must read as Python (True, not true).
    return repr(dict(sorted(dict(getattr(settings, section) or {}).items())))


def service_chart_values(*, name: str, port: int, clients: list[dict[str, Any]], extra_config: str,
                         hub_egress: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Zero to JupyterHub values for the hub service ``name`` listening on ``port`` of the hub's pod.

    * ``hub.service.extraPorts``: ``port`` on the ``hub`` Service, named ``name``.
    * ``hub.networkPolicy.ingress``: ``port`` admits the pods of the ``clients`` pod
      selectors (the pods the service starts), user servers and the proxy (the chart's
      ``network-access-hub`` label) and the hub's pod itself (the hub's checks of the
      service, should they go through the Service: values without ``POD_IP``).
    * ``hub.networkPolicy.egress``: ``hub_egress``, when given.
    * ``singleuser.networkPolicy.egress``, ``proxy.chp.networkPolicy.egress``: user
      servers and the proxy (the ``/services/<name>/`` route) may reach the hub's pod on
      ``port``. The chart's own rules let servers reach the hub only on 8081.
    * ``hub.extraEnv.POD_IP``: the hub's URL for the service is the pod's IP (see
      :func:`hubforge.services.kubernetes_address`).
    * ``hub.extraConfig``: ``hubforge-<name>.py``, the text ``extra_config``.
    """
    ports = [{"port": port, "protocol": "TCP"}]
    to_hub = [{"to": [{"podSelector": HUB_POD_SELECTOR}], "ports": ports}]
    network_policy: dict[str, Any] = {
        "ingress": [{
            "ports": ports,
            "from": [
                *({"podSelector": selector} for selector in clients),
                {"podSelector": NETWORK_ACCESS_HUB},
                {"podSelector": HUB_POD_SELECTOR},
            ],
        }],
    }
    if hub_egress:
        network_policy["egress"] = hub_egress
    return {
        "hub": {
            "extraEnv": {POD_IP_ENV: {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}},
            "service": {
                "extraPorts": [{"name": name, "port": port, "targetPort": port, "protocol": "TCP"}],
            },
            "networkPolicy": network_policy,
            "extraConfig": {f"hubforge-{name}.py": extra_config},
        },
        "singleuser": {"networkPolicy": {"egress": to_hub}},
        "proxy": {"chp": {"networkPolicy": {"egress": to_hub}}},
    }


def service_rbac(name: str, component: str, rules: list[dict[str, Any]],
                 service_account: str = HUB_SERVICE_ACCOUNT) -> list[dict[str, Any]]:
    """The Role ``name`` with ``rules`` and the RoleBinding that grants it to ``service_account``.

    Namespaced, no namespace written: ``kubectl apply --namespace <ns>`` puts both in the
    hub's namespace, and the binding's subject is that namespace's account.
    """
    labels = {"app.kubernetes.io/part-of": "hubforge", "app.kubernetes.io/component": component}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "labels": dict(labels)},
            "rules": [{key: list(value) for key, value in rule.items()} for rule in rules],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "labels": dict(labels)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account}],
        },
    ]
