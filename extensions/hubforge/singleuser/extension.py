"""The jupyter-server extension every HubForge notebook server loads.

Enabled by ``etc/jupyter/jupyter_server_config.d/hubforge.json``, which the
package installs, so no user action is needed.
"""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp

from .data_handlers import data_handlers
from .handlers import default_handlers


class HubForgeExtension(ExtensionApp):
    """Serves HubForge's REST endpoints inside the user's server.

    The routes come from `hubforge.singleuser.handlers.default_handlers` and, for
    data access, `hubforge.singleuser.data_handlers.data_handlers`; add new
    endpoints there rather than here.
    """

    name = "hubforge"
    # Loaded beside JupyterLab and jupyterhub-singleuser, never on its own.
    load_other_extensions = True

    def initialize_handlers(self) -> None:
        self.handlers.extend(default_handlers)
        self.handlers.extend(data_handlers)
