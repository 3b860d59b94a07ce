"""JupyterHub configuration for HubForge.

All the decisions live in ``hubforge.hub.config``; this file only loads the platform
settings (``hubforge.yaml`` beside it, or the file named by ``HUBFORGE_SETTINGS``) and
applies them. Add site-specific JupyterHub options below the call.
"""

import sys

from hubforge.exceptions import HubForgeError
from hubforge.hub.config import configure
from hubforge.settings import Settings

c = get_config()  # noqa: F821 (provided by JupyterHub)

try:
    configure(c, Settings.load())
except HubForgeError as e:
    print(f"HubForge cannot start:\n{e}", file=sys.stderr)
    sys.exit(2)
