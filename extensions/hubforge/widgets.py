"""Notebook widgets, importable as ``hubforge.widgets``.

Re-exports `hubforge.singleuser.widgets` so notebooks need not know where
the single-user side lives.
"""

from .singleuser.widgets import ServerInfoWidget

__all__ = ["ServerInfoWidget"]
