"""``%%sql`` and ``%sql``: SQL on a named data connection, answered as a DataFrame.

::

    %%sql warehouse
    SELECT region, sum(amount) AS total FROM sales.orders GROUP BY region

    %%sql warehouse --limit 1000 -o orders
    SELECT * FROM sales.orders

    n = %sql warehouse SELECT count(*) FROM sales.orders

A thin wrapper over `hubforge.data.query`: the statement is sent as written, its rows
come back as a pandas DataFrame (None for statements without rows), ``--limit N``
fetches only the first N rows (streamed from the database), ``-o NAME`` also stores the
DataFrame in the notebook variable NAME. Errors show as one line naming the connection
and the cause, never a credential. ``hubforge.singleuser`` registers the magics in
every kernel.

Why not JupySQL (0.11.1, evaluated against SQLAlchemy 2.1 and psycopg 3): it works and
masks passwords in its connection table, but it does not fit here.

- Its connections are engines or URLs the notebook registers (``%sql engine`` or
  ``%sql postgresql://...``), kept in a process-wide table for the kernel's life. Ours
  are names resolved through the data service at each use, with credentials that
  expire after a minute and may be revoked; mapping one onto the other means
  injecting engines into JupySQL's private connection manager.
- It shows driver errors verbatim (with a hint about "snippets" for any SQL error)
  where HubForge promises a short message naming the connection with every credential
  value scrubbed, and prints "Closing <url>" lines on exit.
- It brings about 10 packages (ploomber-core with its telemetry client, sqlglot,
  prettytable, jupysql-plugin, ...) into every image for what is here about 100 lines.
- It returns its own ResultSet unless ``autopandas`` is set; a DataFrame is what
  the issue asks for.

A user who prefers JupySQL can still use it on `hubforge.data.connect`'s engine:
``%sql engine`` with ``engine = hubforge.data.connect("warehouse")``.
"""

from __future__ import annotations

import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

_USAGE = (
    "usage: %%sql CONNECTION [--limit N] [-o NAME] (then the query in the cell), "
    "or %sql CONNECTION [--limit N] [-o NAME] QUERY"
)
_OPTION = re.compile(r"\s*(--limit|-l|--out|-o)(?:\s*=\s*|\s+)(\S+)")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_sql_magic(line: str, cell: str | None) -> tuple[str, str, int | None, str | None]:
    """``(connection, query, limit, output variable)`` from a magic's line and cell.

    Options may come before or right after the connection name. Raises `UsageError`.
    """
    options: dict[str, str] = {}

    def take_options(text: str) -> str:
        while True:
            match = _OPTION.match(text)
            if not match:
                return text
            flag, value = match.groups()
            options["limit" if flag in ("--limit", "-l") else "out"] = value
            text = text[match.end() :]

    rest = take_options(line).strip()
    if not rest:
        raise UsageError(_USAGE)
    parts = rest.split(None, 1)
    connection, rest = parts[0], parts[1] if len(parts) > 1 else ""
    rest = take_options(" " + rest).strip()
    if cell is None:
        query = rest
    elif rest:
        raise UsageError(f"unexpected {rest!r} after the connection name; {_USAGE}")
    else:
        query = cell
    if not query.strip():
        raise UsageError(f"no query to run; {_USAGE}")

    limit = None
    if "limit" in options:
        try:
            limit = int(options["limit"])
        except ValueError:
            limit = -1
        if limit < 0:
            raise UsageError(f"--limit takes a whole number of rows, not {options['limit']!r}")
    out = options.get("out")
    if out is not None and not _IDENTIFIER.match(out):
        raise UsageError(f"-o takes a Python variable name, not {out!r}")
    return connection, query, limit, out


@magics_class
class DataMagics(Magics):
    """``%sql`` / ``%%sql``: queries on HubForge data connections."""

    @line_cell_magic
    def sql(self, line: str, cell: str | None = None) -> Any:
        """Run SQL on a HubForge data connection and return a DataFrame.

        Cell form: ``%%sql CONNECTION [--limit N] [-o NAME]`` with the query as the
        cell's body. Line form: ``%sql CONNECTION [--limit N] [-o NAME] QUERY``.

        ``--limit N`` (or ``-l N``) fetches only the first N rows; ``-o NAME`` also
        stores the DataFrame in the variable NAME. The statement is sent as written
        and committed; statements without rows (DDL, INSERT) return None. List the
        connections you may use with ``hubforge.data.list_connections()``.

        Examples::

            %%sql warehouse --limit 100
            SELECT * FROM sales.orders ORDER BY placed_at DESC

            total = %sql warehouse SELECT sum(amount) FROM sales.orders
        """
        from . import DataError, query

        connection, sql, limit, out = parse_sql_magic(line, cell)
        try:
            frame = query(connection, sql, limit=limit)
        except DataError as e:
            # UsageError shows just the message: the traceback would only show our frames.
            raise UsageError(e.message) from None
        if out is not None:
            self.shell.user_ns[out] = frame
        return frame
