"""Notebook widgets, importable as ``hubforge.widgets``.

Re-exports the widgets of the single-user side and of data access, so notebooks need
not know where each lives: ``ServerInfoWidget`` (what ``%hubforge`` shows) and
``DataBrowser`` (what ``hubforge.data.browser()`` returns).
"""

from .data.widget import DataBrowser
from .singleuser.widgets import ServerInfoWidget

__all__ = ["DataBrowser", "ServerInfoWidget"]
