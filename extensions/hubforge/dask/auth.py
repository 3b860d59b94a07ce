"""Who may use a cluster: dask-gateway's JupyterHub authenticator, with admins.

dask-gateway's `JupyterHubAuthenticator` checks the caller's hub token with the hub and
requires ``access:services!service=dask-gateway`` (the hub grants it to users and to
their servers' tokens, `hubforge.dask.hubconfig`). Its users may see and change only
their own clusters. `HubForgeAuthenticator` returns `HubForgeUser`, for whom hub admins
may also see, scale and stop everyone's clusters; listing all clusters is a HubForge
route (`hubforge.dask.gateway`).
"""

from __future__ import annotations

from dask_gateway_server.auth import JupyterHubAuthenticator
from dask_gateway_server.models import User


class HubForgeUser(User):
    """A gateway user; hub admins have permission on every cluster."""

    def has_permissions(self, cluster) -> bool:
        return self.admin or self.name == cluster.username


class HubForgeAuthenticator(JupyterHubAuthenticator):
    """dask-gateway's JupyterHub authenticator, returning `HubForgeUser`."""

    async def authenticate(self, request):
        user = await super().authenticate(request)
        return HubForgeUser(user.name, groups=user.groups, admin=user.admin)
