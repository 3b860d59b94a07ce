"""HubForge's notebook side: the server extension, the magics and the widgets.

Two entry points share this package name, ``hubforge.singleuser``:

- jupyter-server calls `_jupyter_server_extension_points` because
  ``etc/jupyter/jupyter_server_config.d/hubforge.json`` enables it.
- IPython calls `load_ipython_extension` in every kernel because
  ``etc/ipython/ipython_config.json`` (installed into ``sys.prefix``, one of
  IPython's config directories) lists it in
  ``InteractiveShellApp.extra_extensions``.

Why ``extra_extensions`` in ``ipython_config.json``: IPython loads config
files from the system, then the environment (``sys.prefix/etc/ipython``),
then the profile directory, later files winning key by key, and a kernel
loads every ``ipython_config`` before every ``ipython_kernel_config``. So this
file is the lowest-priority setting a kernel sees, and it merges with users'
configs instead of clobbering them:

- a user's ``c.InteractiveShellApp.extensions = [...]`` (the usual way to
  load extensions) is a different trait and leaves ours loaded;
- a user's ``c.InteractiveShellApp.extra_extensions.append(...)`` in a
  ``.py`` file extends our list;
- only a plain ``c.InteractiveShellApp.extra_extensions = [...]`` (or
  ``--ext`` in a kernel spec's argv) replaces ours, which is how a user opts
  out.

Imports are deferred so that a kernel starting up does not import
jupyter-server, and a server starting up does not import IPython's magics.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .extension import HubForgeExtension

    return [{"module": "hubforge.singleuser.extension", "app": HubForgeExtension}]


def load_ipython_extension(ip: Any) -> None:
    """Register HubForge's magics in the IPython shell ``ip``."""
    from .magics import MAGICS

    for magics_class in MAGICS:
        ip.register_magics(magics_class)


def unload_ipython_extension(ip: Any) -> None:
    """Remove the magics `load_ipython_extension` registered."""
    from .magics import MAGICS

    manager = ip.magics_manager
    for magics_class in MAGICS:
        for kind, names in magics_class.magics.items():
            for name in names:
                manager.magics[kind].pop(name, None)
        manager.registry.pop(magics_class.__name__, None)
