"""Helm values for running HubForge on Kubernetes, generated from the platform's files.

:mod:`.values` turns ``spawner_profiles/`` and the platform settings into values for
the Zero to JupyterHub chart and the dask-gateway chart, with :mod:`.jobs`'s part for the
scheduled-jobs service (values, and the RBAC manifest ``jobs-rbac.yaml``) and :mod:`.models`'s
for the models service (values, and ``models-rbac.yaml``); :mod:`.cli` is the
``hubforge helm-values`` command that writes (or checks) ``helm-values/``. See
docs/kubernetes.md.
"""

__all__ = ["CHARTS", "dask_gateway_values", "generate", "jupyterhub_values", "stale_files", "write"]


def __getattr__(name):
    # Lazy, so that `hubforge --help` does not pay for the profile and chart machinery.
    if name in __all__:
        from . import values

        return getattr(values, name)
    raise AttributeError(name)
