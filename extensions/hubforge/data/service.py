"""The ``data`` hub service: the connection catalogue and the credentials, behind the hub.

The hub starts it (see :mod:`hubforge.data.hubconfig`) as
``python -m hubforge.data.service`` with the catalogue's and the secrets file's paths in
``HUBFORGE_DATA_CONNECTIONS`` and ``HUBFORGE_DATA_SECRETS_FILE``. It reads both once, at
start, logs every connection whose secrets are missing (naming the variable, never a
value), and serves under ``/services/data/``:

==========================================  ===============================  ==================
``GET api/connections``                     connections the caller may use   data:read
                                            (admins: all)
``GET api/connections/<name>``              one of them                      data:read
``GET api/connections/<name>/credentials``  URL and options with secrets     data:connect
``GET`` (the service's page)                the same list, for a browser     data:read
==========================================  ===============================  ==================

Scopes are ``custom:hubforge:data:read`` and ``custom:hubforge:data:connect``. Admins see
every connection but get credentials only for those they may use themselves. The REST
API is documented with examples in docs/data.md.
"""

from __future__ import annotations

import os
import shutil
import sys
from html import escape
from pathlib import Path

from tornado import web
from traitlets import Unicode, default

from ..services.auth import APIHandler, HubServiceApp, PageHandler, redact_in_logs, requires_scopes
from .catalogue import Catalogue, CatalogueError, Connection, MissingSecrets, Secrets, load_catalogue

READ_SCOPE = "custom:hubforge:data:read"
CONNECT_SCOPE = "custom:hubforge:data:connect"


class CatalogueHandlerMixin:
    """What every data handler shares: the catalogue, and who may see and use what."""

    @property
    def catalogue(self) -> Catalogue:
        return self.settings["catalogue"]

    @property
    def secrets(self) -> Secrets:
        return self.settings["secrets"]

    def caller(self) -> tuple[str, set[str], bool]:
        """``(name, groups, admin)`` of the calling hub user; services are refused."""
        user = self.current_user
        if user["kind"] != "user":
            raise web.HTTPError(403, "only hub users may use data connections")
        return user["name"], set(user.get("groups") or ()), bool(user.get("admin"))

    def visible(self) -> list[Connection]:
        name, groups, admin = self.caller()
        return list(self.catalogue) if admin else self.catalogue.usable_by(name, groups)

    def summary(self, connection: Connection) -> dict:
        name, groups, _ = self.caller()
        return {**connection.summary(), "usable": connection.allows(name, groups)}

    def find(self, name: str, *, to_use: bool) -> Connection:
        """The connection `name`: 404 if absent, 403 if the caller may not see or use it.

        Admins may see every connection (``to_use=False``) but use only their own.
        """
        self.log_context["connection"] = name
        connection = self.catalogue.get(name)
        if connection is None:
            raise web.HTTPError(404, f"connection '{name}' does not exist")
        user, groups, admin = self.caller()
        if not connection.allows(user, groups) and (to_use or not admin):
            raise web.HTTPError(403, f"you may not use connection '{name}'")
        return connection


class ConnectionListHandler(CatalogueHandlerMixin, APIHandler):
    """``GET api/connections``: ``{"connections": [{"name", "kind", "description", "usable"}]}``."""

    @requires_scopes(READ_SCOPE)
    def get(self):
        self.write_json({"connections": [self.summary(c) for c in self.visible()]})


class ConnectionHandler(CatalogueHandlerMixin, APIHandler):
    """``GET api/connections/<name>``: one connection's name, kind and description."""

    @requires_scopes(READ_SCOPE)
    def get(self, name: str):
        self.write_json(self.summary(self.find(name, to_use=False)))


class CredentialsHandler(CatalogueHandlerMixin, APIHandler):
    """``GET api/connections/<name>/credentials``: what the driver needs, secrets included.

    ``{"name", "kind", "url", "storage_options", "query_timeout"}``: for kind ``sql`` the
    SQLAlchemy URL with the password filled in, for kind ``files`` the fsspec URL and
    options. 503 when the connection's secrets are not configured.
    """

    @requires_scopes(CONNECT_SCOPE)
    def get(self, name: str):
        connection = self.find(name, to_use=True)
        try:
            credentials = self.secrets.credentials(connection)
        except MissingSecrets:
            # Which secret is missing is the administrator's business: it is in the log.
            raise web.HTTPError(503, f"connection '{name}' is not configured: missing secret") from None
        self.set_header("Cache-Control", "no-store")
        self.write_json(credentials.to_json())


class ConnectionsPage(CatalogueHandlerMixin, PageHandler):
    """The service's landing page: the caller's connections, for a browser."""

    @requires_scopes(READ_SCOPE)
    def get(self):
        rows = "".join(
            f"<tr><td><code>{escape(c.name)}</code></td><td>{escape(c.kind)}</td>"
            f"<td>{escape(c.description)}</td></tr>"
            for c in self.visible()
        )
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(
            "<!doctype html><html><head><meta charset='utf-8'><title>Data connections</title></head>"
            "<body><h1>Data connections</h1>"
            f"<p>Signed in as <b>{escape(self.current_user['name'])}</b>. In a notebook: "
            "<code>hubforge.data.connect(\"NAME\")</code>.</p>"
            "<table><tr><th>Name</th><th>Kind</th><th>Description</th></tr>"
            f"{rows}</table></body></html>"
        )


class DataService(HubServiceApp):
    """The ``data`` hub service (``python -m hubforge.data.service``)."""

    name = "hubforge-data"
    description = "Serves HubForge's data-connection catalogue and credentials to hub users."

    aliases = {
        "catalogue": "DataService.catalogue_file",
        "secrets-file": "DataService.secrets_file",
        "log-level": "Application.log_level",
    }

    catalogue_file = Unicode(
        help="""The connection catalogue (YAML; format in docs/data.md).
        Default: ``$HUBFORGE_DATA_CONNECTIONS``, set by the hub from the
        ``data_connections`` platform setting.""",
    ).tag(config=True)

    @default("catalogue_file")
    def _default_catalogue_file(self):
        return os.environ.get("HUBFORGE_DATA_CONNECTIONS", "")

    secrets_file = Unicode(
        help="""A YAML file of ``name: value`` secrets that connections refer to with
        ``{secret: name}``; empty for none. Default: ``$HUBFORGE_DATA_SECRETS_FILE``, set by
        the hub from the ``data_secrets_file`` platform setting.""",
    ).tag(config=True)

    @default("secrets_file")
    def _default_secrets_file(self):
        return os.environ.get("HUBFORGE_DATA_SECRETS_FILE", "")

    def initialize(self, argv=None) -> None:
        super().initialize(argv)
        if not self.catalogue_file:
            self.log.critical("no catalogue: set HUBFORGE_DATA_CONNECTIONS or --catalogue")
            self.exit(2)
        try:
            self.catalogue = load_catalogue(self.catalogue_file)
        except CatalogueError as e:
            self.log.critical("invalid data-connection catalogue:\n%s", e)
            self.exit(2)
        self.secrets = Secrets.load(self.secrets_file or None)
        redact_in_logs(self.secrets.values_for(self.catalogue))
        for problem in self.secrets.problems:
            self.log.error("%s", problem)
        for connection in self.catalogue:
            missing = self.secrets.missing(connection)
            if missing:
                self.log.error(
                    "connection '%s' is not configured: missing %s",
                    connection.name, ", ".join(map(str, missing)),
                )
        if self.catalogue.uses_sample_data:
            try:
                make_sample_data(self.catalogue.sample_data_dir)
            except OSError as e:
                self.log.error("cannot create the sample data in %s: %s", self.catalogue.sample_data_dir, e)
        self.log.info(
            "%d connection(s) from %s: %s", len(self.catalogue), self.catalogue_file,
            ", ".join(c.name for c in self.catalogue) or "none",
        )

    def handlers(self) -> list[tuple]:
        return [
            (r"", ConnectionsPage),
            (r"api/connections", ConnectionListHandler),
            (r"api/connections/([^/]+)", ConnectionHandler),
            (r"api/connections/([^/]+)/credentials", CredentialsHandler),
        ]

    def web_settings(self) -> dict:
        return {"catalogue": self.catalogue, "secrets": self.secrets}


# --- the sample data set ------------------------------------------------------------------

_SAMPLE_SQL = """
CREATE SCHEMA sales;
CREATE TABLE sales.customers AS
    SELECT i AS customer_id,
           'Customer ' || i AS name,
           ['north', 'south', 'east', 'west'][1 + i % 4] AS region,
           DATE '2024-01-01' + CAST((i * 3) % 365 AS INTEGER) AS customer_since
    FROM range(1, 501) t(i);
CREATE TABLE sales.orders AS
    SELECT i AS order_id,
           1 + (i * 7919) % 500 AS customer_id,
           DATE '2025-01-01' + CAST(i % 365 AS INTEGER) AS order_date,
           ['widget', 'gadget', 'gizmo', 'sprocket', 'flange'][1 + i % 5] AS product,
           1 + (i * 31) % 9 AS quantity,
           round(5 + ((i * 37) % 1000) / 10.0, 2) AS unit_price
    FROM range(1, 10001) t(i);
"""


def make_sample_data(directory: Path) -> Path:
    """Create HubForge's sample data set in `directory` unless it is there already.

    ``samples.duckdb`` (schema ``sales``: ``orders`` with 10,000 rows, ``customers`` with
    500) and the same tables as ``files/orders.parquet`` and ``files/customers.csv``. The
    content is deterministic; everything is world-readable (0755/0644) because servers of
    every user open these files themselves. Built in a temporary directory and moved into
    place, so a half-made set is never seen.
    """
    import duckdb

    directory = Path(directory)
    if (directory / "samples.duckdb").exists():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "files").mkdir(parents=True)
    try:
        def quoted(path: Path) -> str:
            return "'" + str(path).replace("'", "''") + "'"

        with duckdb.connect(str(tmp / "samples.duckdb")) as con:
            con.execute(_SAMPLE_SQL)
            con.execute(f"COPY sales.orders TO {quoted(tmp / 'files' / 'orders.parquet')} (FORMAT parquet)")
            con.execute(f"COPY sales.customers TO {quoted(tmp / 'files' / 'customers.csv')} (HEADER)")
        for path in [tmp, *tmp.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        try:
            os.rename(tmp, directory)
        except OSError:
            if not (directory / "samples.duckdb").exists():
                raise
            # Another process finished first: keep its copy.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def main(argv=None) -> None:
    DataService.launch_instance(argv)


if __name__ == "__main__":
    sys.exit(main())
