"""Pure builders for the Kubernetes objects HubForge creates.

Dicts out, no cluster needed: :func:`make_user_pod` and :func:`make_user_pvc` return
the pod and the home PVC that :class:`~hubforge.spawners.kubernetes.HubForgeKubeSpawner`
would create for a user and their ``user_options``, as plain Kubernetes JSON, built by
KubeSpawner's own code (see :mod:`.pods`). Tests validate them against the Kubernetes
OpenAPI schema; ``kubectl apply`` accepts them as they are.
"""

from .pods import make_user_pod, make_user_pvc, offline_spawner, to_json

__all__ = ["make_user_pod", "make_user_pvc", "offline_spawner", "to_json"]
