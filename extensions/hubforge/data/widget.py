"""The data browser: connections, their schemas/tables or folders/files, columns, a preview.

`DataBrowser` is a controller that owns the state and builds standard ipywidgets on
first display (``hubforge.data.browser()`` as a cell's last expression). Where
ipywidgets is missing it shows the connection list as HTML instead. Every callback
catches its errors and shows them in the widget's `Output`; every name and value
from a connection is escaped before it becomes HTML.

The same state can be driven from Python, which is how the tests drive it::

    b = DataBrowser()
    b.select_connection("warehouse")   # lists its schemas in b.entries
    b.open("sales")                     # into a schema or folder
    b.open("sales.orders")              # a table or file: b.columns and b.preview
    b.code()                            # 'df = hubforge.data.read("warehouse", ...)'
    b.insert_code()                     # puts that code in a new cell

"Insert code" uses IPython's ``set_next_input``. A kernel can only attach that to
the reply of a cell being executed: from ``b.insert_code()`` in a cell the new cell
appears at once; from the button (a widget message, not a cell) JupyterLab shows it
when the next cell runs, so the button also shows the code, ready to copy.
"""

from __future__ import annotations

import html
import json
from typing import Any

from . import DataError, list_connections

#: Rows shown in the preview grid.
PREVIEW_ROWS = 20
#: The ``limit`` put in inserted ``read`` calls (remove it to read everything).
READ_LIMIT = 10_000

_CONTAINERS = ("connection", "schema", "folder")
_ICONS = {"schema": "🗂", "folder": "📁", "table": "▦", "view": "◫", "file": "📄"}


class DataBrowser:
    """A browser of the data connections this user may use.

    State (read it, or drive it with the methods): ``connections`` (from the data
    service), ``connection`` (the selected name), ``kind``, ``path`` (the schema or
    folder shown, "" for the top), ``entries`` (what is in it: dicts with ``name``,
    ``path``, ``type``), ``selected`` (the table or file chosen), ``columns`` and
    ``preview`` (its columns and first `PREVIEW_ROWS` rows), ``error`` (the last
    failure's message, or "").
    """

    def __init__(self) -> None:
        self.connections: list[dict[str, Any]] = []
        self.connection: str | None = None
        self.kind: str | None = None
        self.path = ""
        self.entries: list[dict[str, Any]] = []
        self.selected: dict[str, Any] | None = None
        self.columns: list[dict[str, str]] = []
        self.preview: dict[str, Any] | None = None
        self.error = ""
        self._cached_widget: Any = None
        self._widgets_missing = False
        self._syncing = False
        self._guard(self.refresh)

    # --- the model ----------------------------------------------------------------

    def refresh(self) -> None:
        """Read the list of connections again."""
        self.connections = list_connections()
        self._sync()

    def select_connection(self, name: str) -> None:
        """Show connection ``name``'s top level (its schemas, or its root folder)."""
        from .preview import tree

        known = {c["name"]: c for c in self.connections}
        if name not in known:
            raise DataError(name, f"connection {name!r} is not one you may use", 404)
        self.connection, self.kind = name, known[name]["kind"]
        self._clear_selection()
        self._show(tree(name, ""))

    def open(self, path: str) -> None:
        """Go into a schema or folder, or select a table or file and preview it."""
        from .preview import preview, tree

        if self.connection is None:
            raise DataError(None, "choose a connection first", 400)
        node = tree(self.connection, path)
        if node["type"] in _CONTAINERS:
            self._clear_selection()
            self._show(node)
            return
        self.selected = {"name": path.rsplit("/", 1)[-1], "path": path, "type": node["type"]}
        self.columns = node.get("columns") or []
        self.preview = None
        self._sync()
        if node["type"] in ("table", "view") or node.get("columns") is not None:
            self.preview = preview(self.connection, path, PREVIEW_ROWS)
        self._sync()

    def up(self) -> None:
        """Go to the parent schema or folder."""
        if self.connection is None or not self.path:
            return
        separator = "/" if self.kind == "files" else "."
        parent = self.path.rsplit(separator, 1)[0] if separator in self.path else ""
        from .preview import tree

        self._clear_selection()
        self._show(tree(self.connection, parent))

    def code(self) -> str:
        """Python code that reads the selection (a DataFrame, or the open file)."""
        if self.connection is None or self.selected is None:
            raise DataError(self.connection, "select a table or a file first", 400)
        name, path = json.dumps(self.connection), json.dumps(self.selected["path"])
        if self.kind == "files" and not self.columns:
            return (
                "import hubforge.data\n\n"
                f"fs = hubforge.data.connect({name})\n"
                f"with fs.open({path}, 'rb') as f:\n"
                "    data = f.read()\n"
            )
        return (
            "import hubforge.data\n\n"
            f"df = hubforge.data.read({name}, {path}, limit={READ_LIMIT})\n"
            "df\n"
        )

    def insert_code(self) -> str:
        """Add a cell with `code` below the current one; returns the code.

        Without IPython (plain Python) the code is only returned.
        """
        code = self.code()
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            shell.set_next_input(code, replace=False)
        return code

    def _clear_selection(self) -> None:
        self.selected, self.columns, self.preview = None, [], None

    def _show(self, node: dict[str, Any]) -> None:
        self.path = node.get("path", "")
        self.entries = list(node.get("children") or [])
        self._sync()

    # --- the widgets ----------------------------------------------------------------

    def widget(self) -> Any:
        """The ipywidgets VBox for this browser, or None without ipywidgets."""
        if self._cached_widget is not None or self._widgets_missing:
            return self._cached_widget
        try:
            from ipywidgets import HTML, Button, HBox, Layout, Output, Select, VBox
        except ImportError:
            self._widgets_missing = True
            return None
        self._connection_list = Select(
            description="Connection", rows=5, layout=Layout(width="auto")
        )
        self._location = HTML()
        self._up_button = Button(
            description="Up", icon="arrow-up", tooltip="Parent schema or folder"
        )
        self._entry_list = Select(rows=10, layout=Layout(width="auto"))
        self._columns_html = HTML()
        self._preview_html = HTML()
        self._insert_button = Button(
            description="Insert code", icon="plus", tooltip="Add a cell that reads the selection"
        )
        self._output = Output()
        self._connection_list.observe(self._on_connection, names="value")
        self._entry_list.observe(self._on_entry, names="value")
        self._up_button.on_click(self._on_up)
        self._insert_button.on_click(self._on_insert)
        self._cached_widget = VBox(
            [
                self._connection_list,
                HBox([self._up_button, self._location]),
                self._entry_list,
                self._columns_html,
                self._preview_html,
                HBox([self._insert_button]),
                self._output,
            ]
        )
        self._sync()
        return self._cached_widget

    def _sync(self) -> None:
        """Make the widgets show the state (no-op before the first display)."""
        if self._cached_widget is None:
            return
        self._syncing = True
        try:
            self._connection_list.options = [
                (f"{c['name']} ({c['kind']})", c["name"]) for c in self.connections
            ]
            self._connection_list.value = self.connection
            self._location.value = self._location_html()
            self._up_button.disabled = not self.path
            self._entry_list.options = [
                (f"{_ICONS.get(e['type'], '')} {e['name']}", e["path"]) for e in self.entries
            ]
            in_list = self.selected is not None and any(
                e["path"] == self.selected["path"] for e in self.entries
            )
            self._entry_list.value = self.selected["path"] if in_list else None
            self._columns_html.value = _columns_html(self.columns) if self.selected else ""
            self._preview_html.value = _preview_html(self.preview) if self.preview else ""
            self._insert_button.disabled = self.selected is None
        finally:
            self._syncing = False

    def _location_html(self) -> str:
        if self.connection is None:
            return "<i>Choose a connection</i>"
        parts = [self.connection] + ([self.path] if self.path else [])
        return "<b>" + " / ".join(html.escape(p) for p in parts) + "</b>"

    def _guard(self, action: Any, *args: Any) -> Any:
        """Run a callback; show a failure in the Output instead of raising."""
        self.error = ""
        if self._cached_widget is not None:
            self._output.outputs = ()
        try:
            return action(*args)
        except Exception as exc:
            message = exc.message if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
            self.error = message
            if self._cached_widget is not None:
                # A text stream, so the message cannot inject markup.
                self._output.append_stderr(message + "\n")
            return None

    def _on_connection(self, change: dict[str, Any]) -> None:
        if not self._syncing and change["new"]:
            self._guard(self.select_connection, change["new"])

    def _on_entry(self, change: dict[str, Any]) -> None:
        if not self._syncing and change["new"]:
            self._guard(self.open, change["new"])

    def _on_up(self, _button: Any = None) -> None:
        self._guard(self.up)

    def _on_insert(self, _button: Any = None) -> None:
        code = self._guard(self.insert_code)
        if code:
            self._output.append_stdout("Inserted below (or copy it):\n\n" + code)

    # --- display ----------------------------------------------------------------------

    def __repr__(self) -> str:
        names = ", ".join(c["name"] for c in self.connections) or "none"
        return f"<DataBrowser connections: {names}>"

    def _repr_html_(self) -> str:
        if self.error:
            return f"<p><b>Data</b>: {html.escape(self.error)}</p>"
        rows = "".join(
            f"<tr><td>{html.escape(c['name'])}</td><td>{html.escape(c['kind'])}</td>"
            f"<td>{html.escape(c['description'])}</td></tr>"
            for c in self.connections
        )
        return (
            "<div class='hubforge-data'><table><tr><th>Connection</th><th>Kind</th>"
            f"<th>Description</th></tr>{rows}</table></div>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        widget = self.widget()
        if widget is not None:
            return widget._repr_mimebundle_(**kwargs)
        return {"text/plain": repr(self), "text/html": self._repr_html_()}


def _columns_html(columns: list[dict[str, str]]) -> str:
    if not columns:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(c['name'])}</td><td><code>{html.escape(c['type'])}</code></td></tr>"
        for c in columns
    )
    return (
        f"<table class='hubforge-data-columns'><tr><th>Column</th><th>Type</th></tr>{body}</table>"
    )


def _preview_html(preview: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(c['name'])}</th>" for c in preview["columns"])
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(value)}</td>" for value in row) + "</tr>"
        for row in preview["rows"]
    )
    note = f"First {len(preview['rows'])} rows" + (
        ", more not shown" if preview["truncated"] else ""
    )
    return (
        f"<div class='hubforge-data-preview'><p><i>{note}</i></p>"
        f"<table><tr>{head}</tr>{body}</table></div>"
    )


def _cell(value: Any) -> str:
    if value is None:
        return "<i>null</i>"
    text = value if isinstance(value, str) else json.dumps(value)
    return html.escape(text)
