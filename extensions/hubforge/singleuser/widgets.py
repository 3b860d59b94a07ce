"""Notebook widgets of HubForge's notebook side.

A controller object owns the state and builds standard ipywidgets on first
display. ipywidgets is imported only then, and where it is missing the
controller displays as plain HTML instead. Button callbacks never raise into
the kernel: failures land in the widget's `Output`.
"""

from __future__ import annotations

import logging
from typing import Any

from .info import ServerInfo, server_info

log = logging.getLogger(__name__)


class ServerInfoWidget:
    """A panel with `server_info` and a "Refresh" button.

    Display it as the last expression of a cell::

        from hubforge.widgets import ServerInfoWidget
        ServerInfoWidget()

    ``.info`` is the dict last read; ``.refresh()`` re-reads it, as the button
    does.
    """

    def __init__(self) -> None:
        self.info: dict[str, Any] = server_info()
        self._cached_widget: Any = None
        self._widgets_missing = False

    def __repr__(self) -> str:
        return repr(ServerInfo(self.info))

    def _repr_html_(self) -> str:
        return ServerInfo(self.info)._repr_html_()

    def refresh(self) -> None:
        """Read the server's information again and update the panel."""
        self.info = server_info()
        if self._cached_widget is not None:
            self._html.value = self._repr_html_()

    def _on_refresh(self, _button: Any = None) -> None:
        # Assigning outputs (not clear_output) works outside an Output context too.
        self._output.outputs = ()
        try:
            self.refresh()
        except Exception as exc:
            log.exception("Refreshing the HubForge server info failed")
            # A text stream, so the message cannot inject markup.
            self._output.append_stderr(f"Refresh failed: {type(exc).__name__}: {exc}\n")

    def widget(self) -> Any:
        """The ipywidgets VBox for this panel, or None without ipywidgets."""
        if self._cached_widget is not None or self._widgets_missing:
            return self._cached_widget
        try:
            from ipywidgets import HTML, Button, HBox, Output, VBox
        except ImportError:
            self._widgets_missing = True
            return None
        self._html = HTML(value=self._repr_html_())
        self._button = Button(
            description="Refresh", icon="refresh", tooltip="Read the server info again"
        )
        self._button.on_click(self._on_refresh)
        self._output = Output()
        self._cached_widget = VBox([self._html, HBox([self._button]), self._output])
        return self._cached_widget

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        widget = self.widget()
        if widget is not None:
            return widget._repr_mimebundle_(**kwargs)
        return {"text/plain": repr(self), "text/html": self._repr_html_()}
