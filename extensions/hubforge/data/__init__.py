"""Data access from notebooks: the team's named connections, in one line, without passwords.

Administrators declare connections once (docs/data.md); the hub's ``data`` service
decides which ones you may use and hands this process their credentials only when a
driver needs them. In a notebook::

    import hubforge.data as hd

    hd.list_connections()
    # [{'name': 'warehouse', 'kind': 'sql', 'description': 'Team warehouse'}, ...]

    engine = hd.connect("warehouse")            # a SQLAlchemy engine (kind "sql")
    pd.read_sql("SELECT count(*) FROM sales.orders", engine)

    fs = hd.connect("lake")                     # an fsspec filesystem (kind "files"),
    fs.ls("")                                   # rooted at the connection's URL

    hd.read("warehouse", "sales.orders", limit=1000)   # a DataFrame; LIMIT runs in SQL
    hd.read("lake", "2026/orders.parquet", limit=100)  # reads only the rows it needs
    hd.query("warehouse", "SELECT region, sum(amount) FROM sales.orders GROUP BY 1")

    hd.browser()                                # the data browser widget

    from hubforge.data.preview import preview, tree
    preview("lake", "2026/orders.parquet")      # {"columns", "rows", "truncated"}, JSON-able
    tree("warehouse", "sales")                  # schemas/tables or folders/files, columns

and ``%%sql warehouse`` (see `hubforge.data.magics`). Fast bounded previews and
browsing live in `hubforge.data.preview`, the widget in `hubforge.data.widget`.

Credentials stay out of sight: engines print their URL with the password masked, this
package's objects print no secret, and every error is a `DataError` whose message names
the connection and the cause with every credential value removed (the original
exception is not chained, since its text is not ours to vouch for). Nothing is logged.

Each connection's credentials are cached in this process for `CREDENTIALS_TTL` seconds
(so previews stay fast) along with its engine or filesystem; after that they are asked
for again, and an engine is rebuilt only when they changed. `clear_cache` forgets them
at once. Every query has the connection's timeout (``query_timeout``, set by the
administrator): PostgreSQL enforces it as ``statement_timeout``; DuckDB and SQLite
queries are interrupted by a timer. Other databases get only the connect timeout.

This module imports pandas, SQLAlchemy, fsspec, pyarrow and even the HTTP client only
when a function needs them, so importing it (as every kernel does, for ``%%sql``)
costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import HubForgeError

if TYPE_CHECKING:
    import pandas
    import sqlalchemy

    from ..client import ServiceClient, ServiceError

    from .widget import DataBrowser

__all__ = [
    "CREDENTIALS_TTL",
    "DataError",
    "QueryTimeout",
    "browser",
    "clear_cache",
    "connect",
    "list_connections",
    "query",
    "read",
]

#: Seconds a connection's credentials (and its engine or filesystem) are reused before
#: the data service is asked again.
CREDENTIALS_TTL = 60.0
#: Seconds to wait for a database or object store to accept a connection.
CONNECT_TIMEOUT = 10
#: The hub service that owns the connection catalogue.
SERVICE_NAME = "data"

# Schemas every PostgreSQL/DuckDB database has and nobody browses.
SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog", "pg_toast"})
# storage_options keys whose string values are secrets (at any depth).
_SECRET_KEY = re.compile(r"secret|passw|token|key|credential|session|signature|sas|auth", re.I)


class DataError(HubForgeError):
    """Using a data connection failed.

    ``message`` is what the user sees: it names the connection and the cause and holds
    no credential. ``connection`` is the connection's name (None for a failure of the
    data service as a whole) and ``status_code`` the HTTP status the notebook server
    answers with: 400 bad input (a bad path, a SQL error), 403/404 from the data
    service or the storage, 502 an unreachable or misconfigured source or service,
    504 a timeout.
    """

    status_code = 500

    def __init__(self, connection: str | None, message: str, status_code: int | None = None):
        self.connection = connection
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        super().__init__(message)


class QueryTimeout(DataError):
    """A query or read ran past the connection's ``query_timeout`` and was stopped."""

    status_code = 504


class _Credentials:
    """The data service's answer for one connection. Its repr shows no secret."""

    def __init__(self, body: Mapping[str, Any]):
        self.name = str(body.get("name") or "")
        self.kind = str(body.get("kind") or "")
        self.url = str(body.get("url") or "")
        options = body.get("storage_options") or {}
        self.storage_options: dict[str, Any] = dict(options) if isinstance(options, Mapping) else {}
        timeout = body.get("query_timeout")
        self.query_timeout = (
            float(timeout)
            if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0
            else None
        )

    def same_as(self, other: _Credentials) -> bool:
        return (self.kind, self.url, self.storage_options, self.query_timeout) == (
            other.kind,
            other.url,
            other.storage_options,
            other.query_timeout,
        )

    def secrets(self) -> list[str]:
        """Every credential value that must never be shown, longest first."""
        found: set[str] = set()
        split = urllib.parse.urlsplit(self.url)
        try:
            password = split.password
        except ValueError:
            password = None
        if password:
            found.update({password, urllib.parse.unquote(password)})
        if split.username and password:
            found.add(self.url)
        for key, value in urllib.parse.parse_qsl(split.query):
            if value and _SECRET_KEY.search(key):
                found.add(value)
        _collect_secrets(self.storage_options, found)
        token = os.environ.get("JUPYTERHUB_API_TOKEN")
        if token:
            found.add(token)
        # Very short values would blank out ordinary words; nobody's secret is 3 letters.
        variants = set()
        for value in found:
            if len(value) >= 4:
                variants.update(
                    {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
                )
        return sorted(variants, key=len, reverse=True)

    def display_url(self) -> str:
        """The URL with any password replaced by ``***``."""
        return _mask_url(self.url)

    def __repr__(self) -> str:
        return f"<credentials for {self.name!r} ({self.kind}): {self.display_url()}>"


def _collect_secrets(value: Any, found: set[str], secret: bool = False) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _collect_secrets(item, found, secret or bool(_SECRET_KEY.search(str(key))))
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect_secrets(item, found, secret)
    elif secret and isinstance(value, str) and value:
        found.add(value)


def _mask_url(url: str) -> str:
    """``url`` with the password and secret-looking query values replaced by ``***``."""
    # String edits, not urlunsplit: that would turn "duckdb:////abs/path" into a host.
    netloc = urllib.parse.urlsplit(url).netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        url = url.replace(netloc, f"{userinfo.split(':', 1)[0]}:***@{host}", 1)

    def mask(match: re.Match[str]) -> str:
        key = match.group(2)
        return f"{match.group(1)}{key}=***" if _SECRET_KEY.search(key) else match.group(0)

    return re.sub(r"([?&])([^=&#]*)=([^&#]*)", mask, url)


class Connection:
    """One connection this user may use, with its cached engine or filesystem.

    Internal machinery shared by `connect`, `read`, `preview`, `tree` and the widget;
    get one with ``_connection(name)``. ``kind`` is ``"sql"`` or ``"files"``.
    """

    def __init__(self, name: str, credentials: _Credentials):
        self.name = name
        self.kind = credentials.kind
        self.credentials = credentials
        self.expires = time.monotonic() + CREDENTIALS_TTL
        self._lock = threading.Lock()
        self._engine: sqlalchemy.Engine | None = None
        self._fs: Any = None
        self._root = ""

    def __repr__(self) -> str:
        url = self.credentials.display_url()
        return f"<hubforge.data connection {self.name!r} ({self.kind}) {url}>"

    @property
    def query_timeout(self) -> float | None:
        return self.credentials.query_timeout

    # --- building the driver objects ------------------------------------------------

    @property
    def engine(self) -> sqlalchemy.Engine:
        """The SQLAlchemy engine (kind ``sql``), built on first use."""
        self._require("sql")
        with self._lock:
            if self._engine is None:
                with self.translate("opening the connection", status=502):
                    self._engine = _make_engine(self.credentials)
            return self._engine

    @property
    def fs(self) -> Any:
        """The fsspec filesystem of the connection's URL (not rooted; see `root`)."""
        self._require("files")
        with self._lock:
            if self._fs is None:
                with self.translate("opening the connection", status=502):
                    self._fs, self._root = _make_filesystem(self.credentials)
            return self._fs

    @property
    def root(self) -> str:
        """The connection's base path inside `fs` (no trailing slash)."""
        self.fs  # noqa: B018 - builds it
        return self._root

    @property
    def is_local(self) -> bool:
        """Whether the files are on this machine's filesystem (DuckDB reads them directly)."""
        from fsspec.implementations.local import LocalFileSystem

        return isinstance(self.fs, LocalFileSystem)

    def filesystem(self) -> Any:
        """A `DirFileSystem` rooted at the connection's URL: paths are relative to it."""
        from fsspec.implementations.dirfs import DirFileSystem

        return DirFileSystem(path=self.root, fs=self.fs)

    def full_path(self, path: str) -> str:
        """``path`` (already checked by `clean_path`) inside `fs`."""
        return f"{self.root}/{path}" if path else self.root

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _require(self, kind: str) -> None:
        if self.kind != kind:
            what = "a SQL database" if kind == "sql" else "a file store"
            raise DataError(
                self.name, f"connection {self.name!r} is not {what} (kind {self.kind!r})", 400
            )

    # --- errors ------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` with every credential value of this connection replaced by ``***``."""
        for secret in self.credentials.secrets():
            text = text.replace(secret, "***")
        return text

    def error(self, cause: str, status: int, cls: type[DataError] = DataError) -> DataError:
        """A `DataError` "connection 'NAME': CAUSE", scrubbed."""
        return cls(self.name, self.scrub(f"connection {self.name!r}: {cause}"), status)

    @contextlib.contextmanager
    def translate(self, doing: str, status: int | None = None, path: str = "") -> Iterator[None]:
        """Turn any exception raised inside into a scrubbed `DataError`.

        ``doing`` says what failed ("query failed", "opening the connection");
        ``status`` forces the HTTP status of errors that are not otherwise recognised;
        ``path`` is the file or table concerned, for messages.
        """
        try:
            yield
        except DataError:
            raise
        except Exception as exc:
            raise _translate(self, exc, doing, status, path) from None


def _translate(
    conn: Connection, exc: BaseException, doing: str, status: int | None, path: str
) -> DataError:
    """Classify ``exc`` into a user-facing `DataError` (see `DataError` for statuses)."""
    what = f" {path!r}" if path else ""
    if "sqlalchemy" in sys.modules:
        from sqlalchemy import exc as sa_exc

        if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
            orig = exc.orig
            cause = _driver_message(orig)
            if _is_cancelled(orig):
                return conn.error(
                    f"query stopped after the {conn.query_timeout or 0:g} s query timeout",
                    504,
                    QueryTimeout,
                )
            if exc.connection_invalidated or status == 502:
                return conn.error(f"cannot connect to the database: {cause}", 502)
            if _is_missing_table(orig):
                return conn.error(f"{doing}{what}: {cause}", 404)
            return conn.error(f"{doing}{what}: {cause}", status or 400)
        if isinstance(exc, sa_exc.NoSuchTableError):
            return conn.error(f"no such table{what}", 404)
        if isinstance(exc, (sa_exc.ArgumentError, sa_exc.NoSuchModuleError)):
            return conn.error(f"the connection is misconfigured: {_first_line(exc)}", 502)
    if isinstance(exc, FileNotFoundError):
        return conn.error(f"no such file or folder{what}", 404)
    if isinstance(exc, IsADirectoryError):
        return conn.error(f"{path!r} is a folder, not a file", 400)
    if isinstance(exc, NotADirectoryError):
        return conn.error(f"{path!r} is a file, not a folder", 400)
    if isinstance(exc, PermissionError):
        return conn.error(f"permission denied{what}: {_first_line(exc)}", 403)
    if isinstance(exc, TimeoutError):
        return conn.error(f"{doing}: timed out", 504, QueryTimeout)
    name = type(exc).__name__
    module = type(exc).__module__
    if isinstance(exc, ConnectionError) or name in (
        "EndpointConnectionError",
        "ClientConnectorError",
    ):
        return conn.error(f"cannot reach the storage: {_first_line(exc)}", 502)
    if name == "InterruptException":
        return conn.error(
            f"query stopped after the {conn.query_timeout or 0:g} s query timeout",
            504,
            QueryTimeout,
        )
    if module.startswith(("pyarrow", "_duckdb", "duckdb")):
        return conn.error(f"{doing}{what}: {_first_line(exc)}", status or 400)
    return conn.error(f"{doing}{what}: {name}: {_first_line(exc)}", status or 500)


def _driver_message(orig: BaseException) -> str:
    """A driver's error text, without SQLAlchemy's statement echo and at most 5 lines."""
    lines = [line.rstrip() for line in str(orig).strip().splitlines() if line.strip()]
    return "\n".join(lines[:5])[:1000] or type(orig).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


def _is_missing_table(orig: BaseException) -> bool:
    if getattr(orig, "sqlstate", None) in ("42P01", "3F000"):  # undefined table/schema
        return True
    if type(orig).__name__ == "CatalogException":  # DuckDB
        return "does not exist" in str(orig)
    return type(orig).__module__ == "sqlite3" and "no such table" in str(orig)


def _is_cancelled(orig: BaseException) -> bool:
    """Whether a driver error means the query was stopped by our timeout."""
    if getattr(orig, "sqlstate", None) == "57014":  # PostgreSQL query_canceled
        return True
    if type(orig).__name__ == "InterruptException":  # DuckDB
        return True
    return type(orig).__module__ == "sqlite3" and "interrupted" in str(orig)


# --- drivers -------------------------------------------------------------------------


def _make_engine(credentials: _Credentials) -> sqlalchemy.Engine:
    """A SQLAlchemy engine for ``credentials`` with connect and query timeouts."""
    import sqlalchemy as sa

    url = sa.make_url(credentials.url)
    timeout = credentials.query_timeout
    connect_args: dict[str, Any] = {}
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "postgresql":
        if (
            url.drivername == "postgresql"
            and not _importable("psycopg2")
            and _importable("psycopg")
        ):
            # The team's URL may name no driver; psycopg 3 is the one installed here.
            url = url.set(drivername="postgresql+psycopg")
            driver = "psycopg"
        if driver in ("psycopg", "psycopg2", "psycopg2cffi"):
            connect_args["connect_timeout"] = CONNECT_TIMEOUT
            if timeout:
                options = str(url.query.get("options", "") or "")
                connect_args["options"] = (
                    f"{options} -c statement_timeout={int(timeout * 1000)}".strip()
                )
    engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    if timeout and backend in ("duckdb", "sqlite"):
        _interrupt_after(engine, timeout)
    return engine


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _interrupt_after(engine: sqlalchemy.Engine, seconds: float) -> None:
    """Interrupt any statement on ``engine`` still running after ``seconds`` (DuckDB, SQLite)."""
    from sqlalchemy import event

    key = "hubforge_timer"

    @event.listens_for(engine, "before_cursor_execute")
    def _start(
        conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, many: Any
    ) -> None:
        dbapi = conn.connection.dbapi_connection
        timer = threading.Timer(seconds, _interrupt, (dbapi,))
        timer.daemon = True
        conn.info[key] = timer
        timer.start()

    def _stop(conn: Any) -> None:
        timer = conn.info.pop(key, None)
        if timer is not None:
            timer.cancel()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, *args: Any) -> None:
        _stop(conn)

    @event.listens_for(engine, "handle_error")
    def _error(context: Any) -> None:
        if context.connection is not None:
            _stop(context.connection)


def _interrupt(dbapi_connection: Any) -> None:
    with contextlib.suppress(Exception):
        dbapi_connection.interrupt()


def _make_filesystem(credentials: _Credentials) -> tuple[Any, str]:
    """The fsspec filesystem and base path of a files connection, with timeouts."""
    import fsspec.core
    from fsspec.utils import get_protocol

    options = dict(credentials.storage_options)
    if get_protocol(credentials.url) in ("s3", "s3a"):
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", CONNECT_TIMEOUT)
        config.setdefault("read_timeout", max(credentials.query_timeout or 0, 30))
        config.setdefault("retries", {"max_attempts": 2})
        options["config_kwargs"] = config
    fs, root = fsspec.core.url_to_fs(credentials.url, **options)
    return fs, root.rstrip("/")


# --- the connection cache --------------------------------------------------------------


class _Registry:
    """This process's data-service client and cached connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: ServiceClient | None = None
        self._connections: dict[str, Connection] = {}

    def client(self) -> ServiceClient:
        from ..client import ServiceClient

        with self._lock:
            if self._client is None:
                self._client = ServiceClient(SERVICE_NAME)
            return self._client

    def get(self, name: str) -> Connection:
        with self._lock:
            cached = self._connections.get(name)
        if cached is not None and cached.expires > time.monotonic():
            return cached
        from ..client import ServiceError

        try:
            body = self.client().get(
                f"api/connections/{urllib.parse.quote(name, safe='')}/credentials"
            )
        except ServiceError as e:
            if e.status in (403, 404):
                self._drop(name)
            raise _service_error(name, e) from None
        if (
            not isinstance(body, Mapping)
            or body.get("kind") not in ("sql", "files")
            or not body.get("url")
        ):
            raise DataError(
                name, f"connection {name!r}: the data service sent unusable credentials", 502
            )
        credentials = _Credentials(body)
        with self._lock:
            current = self._connections.get(name)
            if current is not None and current.credentials.same_as(credentials):
                current.expires = time.monotonic() + CREDENTIALS_TTL
                return current
            connection = self._connections[name] = Connection(name, credentials)
        if current is not None:
            current.close()
        return connection

    def _drop(self, name: str) -> None:
        with self._lock:
            dropped = self._connections.pop(name, None)
        if dropped is not None:
            dropped.close()

    def clear(self) -> None:
        with self._lock:
            dropped = list(self._connections.values())
            self._connections.clear()
            self._client = None
        for connection in dropped:
            connection.close()


_registry = _Registry()


def _service_error(name: str | None, error: ServiceError) -> DataError:
    status = error.status if error.status in (400, 403, 404, 504) else 502
    message = error.message
    if name is not None and repr(name) not in message and name not in message:
        message = f"connection {name!r}: {message}"
    cls = QueryTimeout if status == 504 else DataError
    return cls(name, message, status)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise DataError(None, f"a connection name must be a non-empty string, not {name!r}", 400)
    return name.strip()


def _connection(name: str | Connection) -> Connection:
    """The cached `Connection` for ``name`` (or ``name`` itself if it is one)."""
    if isinstance(name, Connection):
        return name
    return _registry.get(_check_name(name))


def clean_path(conn: Connection, path: Any) -> str:
    """A relative path inside a files connection, or a `DataError` (400).

    Leading and trailing slashes are dropped; ``..`` segments, NUL bytes and
    backslashes are refused so that a path never leaves the connection's root.
    """
    if path is None:
        return ""
    if not isinstance(path, str):
        raise conn.error(f"a path must be a string, not {type(path).__name__}", 400)
    parts = [part for part in path.strip().strip("/").split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts) or "\x00" in path or "\\" in path:
        raise conn.error(
            f"bad path {path!r}: use a path relative to the connection, without '..'", 400
        )
    return "/".join(parts)


def split_table(conn: Connection, what: Any) -> tuple[str | None, str]:
    """``"schema.table"`` -> ``("schema", "table")``; ``"table"`` -> ``(None, "table")``."""
    if not isinstance(what, str) or not what.strip() or "\x00" in what:
        raise conn.error(
            f"a table name must be a non-empty string like 'schema.table', not {what!r}", 400
        )
    schema, dot, table = what.strip().partition(".")
    if not dot:
        return None, schema
    if not schema or not table:
        raise conn.error(f"bad table name {what!r}: write 'schema.table' or 'table'", 400)
    return schema, table


def check_limit(conn: Connection | None, limit: Any, maximum: int | None = None) -> int | None:
    """``limit`` as a non-negative int (None stays None), or a `DataError` (400)."""
    if limit is None:
        return None
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or limit < 0
        or (maximum and limit > maximum)
    ):
        bound = f" at most {maximum}" if maximum else ""
        message = f"limit must be a whole number from 0{bound}, not {limit!r}"
        if conn is None:
            raise DataError(None, message, 400)
        raise conn.error(message, 400)
    return limit


# --- the public API --------------------------------------------------------------------


def list_connections() -> list[dict[str, Any]]:
    """The connections you may use: ``[{"name", "kind", "description"}, ...]``."""
    from ..client import ServiceError

    try:
        body = _registry.client().get("api/connections")
    except ServiceError as e:
        raise _service_error(None, e) from None
    connections = body.get("connections") if isinstance(body, Mapping) else None
    if not isinstance(connections, list):
        raise DataError(None, "the data service sent an unusable connection list", 502)
    return [
        {
            "name": str(item.get("name", "")),
            "kind": str(item.get("kind", "")),
            "description": str(item.get("description") or ""),
        }
        for item in connections
        # Admins are shown every connection, flagged "usable": false where not theirs.
        if isinstance(item, Mapping) and item.get("name") and item.get("usable", True) is not False
    ]


def connect(name: str) -> Any:
    """A ready SQLAlchemy engine (kind ``sql``) or fsspec filesystem (kind ``files``).

    The engine's URL carries the password but prints it as ``***``; it has the
    connection's query and connect timeouts. The filesystem is a `DirFileSystem` rooted
    at the connection's URL, so paths are relative to it (``fs.ls("")``,
    ``fs.open("2026/orders.csv")``). Both are cached for `CREDENTIALS_TTL` seconds:
    calling `connect` again within that time returns the same object.

    Raises `DataError`: 404 for an unknown connection, 403 for one you may not use,
    502 when the data service or the source is unreachable or misconfigured.
    """
    connection = _connection(name)
    if connection.kind == "sql":
        return connection.engine
    return connection.filesystem()


def read(name: str, what: str, limit: int | None = None) -> pandas.DataFrame:
    """A table or a file of connection ``name`` as a pandas DataFrame.

    For SQL connections ``what`` is a table, ``"schema.table"`` or ``"table"`` (the
    default schema); ``limit`` becomes a ``LIMIT`` in the query, so only those rows
    leave the database. For files connections ``what`` is a path relative to the
    connection, of a Parquet (``.parquet``, ``.pq``) or CSV (``.csv``, ``.tsv``, also
    ``.gz``) file; with a ``limit`` only the row groups or bytes holding those rows are
    read.

    Examples::

        read("warehouse", "sales.orders", limit=1000)
        read("lake", "2026/orders.parquet")
    """
    from . import preview as _preview

    connection = _connection(name)
    limit = check_limit(connection, limit)
    if connection.kind == "sql":
        return _preview.read_table(connection, what, limit)
    return _preview.read_file(connection, what, limit)


def query(name: str, sql: str, limit: int | None = None) -> pandas.DataFrame | None:
    """Run ``sql`` on SQL connection ``name``; a DataFrame of its rows, or None.

    The statement is sent as written (no parameter substitution, so ``%`` and ``:``
    need no escaping) and committed. With a ``limit`` a query's rows are streamed from
    the database and only the first ``limit`` are fetched. Statements that return no
    rows (DDL, ``INSERT``) return None.
    """
    from . import preview as _preview

    connection = _connection(name)
    limit = check_limit(connection, limit)
    return _preview.run_query(connection, sql, limit)


def browser() -> DataBrowser:
    """The data browser widget: connections, their tables or files, columns, a preview.

    Display it as the last expression of a cell: ``hubforge.data.browser()``.
    """
    from .widget import DataBrowser

    return DataBrowser()


def clear_cache() -> None:
    """Forget cached credentials and close cached engines; the next call asks the service."""
    _registry.clear()
