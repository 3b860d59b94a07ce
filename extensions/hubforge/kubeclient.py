"""The Kubernetes API client of the services that make objects in a cluster.

The jobs executor (:mod:`hubforge.jobs.kubernetes`) and the models backend
(:mod:`hubforge.models.kubernetes`) run in the hub's pod and talk to the cluster with
``kubernetes_asyncio``; both connect the same way, with `api_client`. The objects they
send are built by the pure functions of :mod:`hubforge.k8s`.
"""

from __future__ import annotations


async def api_client():
    """A new ``kubernetes_asyncio`` ApiClient: in-cluster credentials (the pod's service
    account), else the kubeconfig (a developer's machine). The caller closes it."""
    from kubernetes_asyncio import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()
