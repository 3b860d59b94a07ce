"""Tests of the notebook side of data access: `hubforge.client`, `hubforge.data`
(connect, read, query, preview, tree), ``%%sql``, the data browser widget and the
server extension's ``/hubforge/api/data`` endpoints.

Real components: PostgreSQL (``HUBFORGE_TEST_PG_URL``; those tests skip without it),
DuckDB databases and Parquet/CSV files on disk, an S3-compatible server on loopback
(moto's server mode, reached over HTTP by s3fs), a real kernel and a real
jupyter-server. The hub's ``data`` service is replaced by `CatalogueStub`, a test
double that implements its REST contract (and the hub API call that finds it); an
integration test against the real service lives with the service's tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import threading
import urllib.parse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tornado import httpserver, ioloop, web
from tornado.httpclient import HTTPClientError

import hubforge.data as hd
from hubforge.client import ServiceClient, ServiceError
from hubforge.data import DataError, QueryTimeout
from hubforge.data.magics import parse_sql_magic
from hubforge.data.preview import preview, tree
from hubforge.services import free_port

PG_URL = os.environ.get("HUBFORGE_TEST_PG_URL", "")
needs_pg = pytest.mark.skipif(
    not PG_URL, reason="HUBFORGE_TEST_PG_URL is not set (no test PostgreSQL)"
)

ALICE_TOKEN = "alice-hub-token-" + secrets.token_hex(4)
BOB_TOKEN = "bob-hub-token-" + secrets.token_hex(4)
S3_KEY = "AKIAHUBFORGE" + secrets.token_hex(4).upper()
S3_SECRET = "s3-secret-" + secrets.token_hex(8)
CLOSED_PORT_PASSWORD = "closed-port-pw-" + secrets.token_hex(4)
BUCKET = "hubforge-lake"


def pg_password() -> str:
    return urllib.parse.urlsplit(PG_URL).password or "" if PG_URL else ""


def secrets_to_hide() -> list[str]:
    values = [ALICE_TOKEN, BOB_TOKEN, S3_SECRET, S3_KEY, CLOSED_PORT_PASSWORD]
    if pg_password():
        values.append(pg_password())
    return values


def assert_no_secret(text: str) -> None:
    for value in secrets_to_hide():
        assert value not in text, f"a credential leaked into: {text[:300]!r}"


# --- the data service's double -------------------------------------------------------


class CatalogueStub:
    """A stand-in for the hub's ``data`` service and the hub API call that finds it.

    Serves, on its own thread and loop (the code under test makes blocking calls):
    ``GET /hub/api/services/data`` (the hub's service model, as JupyterHub answers it)
    and the service's contract under ``/services/data/``: ``api/connections``,
    ``api/connections/<name>`` and ``api/connections/<name>/credentials``, with 404
    for unknown names, 403 for connections the token's user may not use and 503 for a
    misconfigured one. ``credential_requests`` counts credential fetches per name.
    """

    def __init__(self, connections: dict[str, dict]):
        self.connections = connections
        self.users = {ALICE_TOKEN: "alice", BOB_TOKEN: "bob"}
        self.admins = {"bob"}
        self.echoed: list[str] = []
        self.credential_requests: dict[str, int] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/hub/api"
        self._loop: ioloop.IOLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._started.wait(10)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.add_callback(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        self._loop = ioloop.IOLoop.current()
        stub = self

        class Base(web.RequestHandler):
            def prepare(self):
                header = self.request.headers.get("Authorization", "")
                self.user = stub.users.get(header.removeprefix("token "))
                if self.user is None:
                    self.fail(403, "invalid token")

            def fail(self, status, message):
                self.set_status(status)
                self.finish({"status": status, "message": message})

            def allowed(self, name):
                connection = stub.connections.get(name)
                if connection is None:
                    self.fail(404, f"connection {name!r} does not exist")
                    return None
                if self.user not in connection["users"]:
                    self.fail(403, f"you may not use connection {name!r}")
                    return None
                if connection.get("misconfigured"):
                    self.fail(503, f"connection {name!r} is misconfigured: missing secret")
                    return None
                return connection

            def public(self, name, connection):
                return {
                    "name": name,
                    "kind": connection["kind"],
                    "description": connection["description"],
                }

        class ServiceModel(Base):
            def get(self):
                self.finish(
                    {
                        "kind": "service",
                        "name": "data",
                        "url": stub.url,
                        "prefix": "/services/data/",
                    }
                )

        class Connections(Base):
            def get(self):
                # Like the real service, admins (bob here) see every connection.
                self.finish(
                    {
                        "connections": [
                            {**self.public(name, c), "usable": self.user in c["users"]}
                            for name, c in stub.connections.items()
                            if self.user in c["users"] or self.user in stub.admins
                        ]
                    }
                )

        class One(Base):
            def get(self, name):
                connection = self.allowed(name)
                if connection is not None:
                    self.finish(self.public(name, connection))

        class Credentials(Base):
            def get(self, name):
                stub.credential_requests[name] = stub.credential_requests.get(name, 0) + 1
                connection = self.allowed(name)
                if connection is not None:
                    self.finish(
                        {
                            "name": name,
                            "kind": connection["kind"],
                            "url": connection["url"],
                            "storage_options": connection.get("storage_options", {}),
                            "query_timeout": connection.get("query_timeout", 30),
                        }
                    )

        class Redirect(Base):
            def get(self):
                self.redirect(f"{stub.url}/services/data/api/echo")

        class Echo(web.RequestHandler):
            def get(self):
                stub.echoed.append(self.request.headers.get("Authorization", ""))
                self.finish({})

        class Slow(Base):
            async def get(self):
                await asyncio.sleep(2)
                self.finish({})

        app = web.Application(
            [
                (r"/hub/api/services/data", ServiceModel),
                (r"/services/data/api/connections", Connections),
                (r"/services/data/api/connections/([^/]+)", One),
                (r"/services/data/api/connections/([^/]+)/credentials", Credentials),
                (r"/services/data/api/slow", Slow),
                (r"/services/data/api/redirect", Redirect),
                (r"/services/data/api/echo", Echo),
            ]
        )
        server = httpserver.HTTPServer(app)
        server.listen(self.port, "127.0.0.1")
        self._started.set()
        self._loop.start()
        server.stop()


# --- data fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def files_root(tmp_path_factory):
    """A folder with Parquet (several row groups), CSV, TSV.gz, a corrupt and a text file."""
    import gzip

    root = tmp_path_factory.mktemp("lake")
    orders = pa.table(
        {
            "id": pa.array(range(1000), pa.int64()),
            "customer": [f"customer <{i % 7}>" for i in range(1000)],
            "amount": [i * 1.5 for i in range(1000)],
        }
    )
    pq.write_table(orders, root / "orders.parquet", row_group_size=100)
    (root / "2026").mkdir()
    lines = ["id,city,placed"] + [f"{i},city-{i % 5},2026-01-{1 + i % 28:02d}" for i in range(500)]
    (root / "2026" / "orders.csv").write_text("\n".join(lines) + "\n")
    with gzip.open(root / "2026" / "small.tsv.gz", "wt") as f:
        f.write("a\tb\n1\tx\n2\ty\n")
    (root / "notes.txt").write_text("not a table\n")
    (root / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    (root / "empty.csv").write_text("")
    return root


@pytest.fixture(scope="module")
def duckdb_file(tmp_path_factory):
    import duckdb

    path = tmp_path_factory.mktemp("duck") / "analytics.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA sales")
        con.execute(
            "CREATE TABLE sales.orders AS SELECT range AS id, 'region-' || (range % 3) AS region, "
            "range * 2.5 AS amount FROM range(5000)"
        )
        con.execute("CREATE VIEW sales.big_orders AS SELECT * FROM sales.orders WHERE amount > 100")
    return path


@pytest.fixture(scope="module")
def pg_schema():
    """A fresh schema in the test database: ``orders`` (2500 rows) and ``slow_rows``, a view
    whose every row takes 2 ms to produce (100 000 rows: about 200 s unbounded)."""
    if not PG_URL:
        yield None
        return
    import sqlalchemy as sa

    schema = f"hf_nb_{secrets.token_hex(3)}"
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        conn.exec_driver_sql(
            f"CREATE TABLE {schema}.orders AS SELECT g AS id, "
            "'customer-' || mod(g, 10) AS customer, "
            f"(g * 1.25)::numeric(12, 2) AS amount, now() AS placed FROM generate_series(1, 2500) g"
        )
        conn.exec_driver_sql(
            f"CREATE VIEW {schema}.slow_rows AS SELECT g AS id, pg_sleep(0.002)::text AS pause "
            "FROM generate_series(1, 100000) g"
        )
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@pytest.fixture(scope="module")
def s3_endpoint(files_root):
    """moto's S3 server on loopback, with the lake's files under s3://hubforge-lake/team/."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    for path in files_root.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"team/{path.relative_to(files_root)}")
    try:
        yield endpoint
    finally:
        server.stop()


def s3_options(endpoint: str) -> dict:
    return {
        "key": S3_KEY,
        "secret": S3_SECRET,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


@pytest.fixture(scope="module")
def catalogue(files_root, duckdb_file, pg_schema, s3_endpoint):
    pg = PG_URL or "postgresql://nobody:nothing@127.0.0.1:1/none"
    closed = free_port()
    stub = CatalogueStub(
        {
            "warehouse": {
                "kind": "sql",
                "description": "Team warehouse (PostgreSQL)",
                "url": pg,
                "query_timeout": 5,
                "users": {"alice"},
            },
            "warehouse-fast-timeout": {
                "kind": "sql",
                "description": "The warehouse with a 1 s timeout",
                "url": pg,
                "query_timeout": 1,
                "users": {"alice"},
            },
            "analytics": {
                "kind": "sql",
                "description": "DuckDB <analytics>",
                "url": f"duckdb:///{duckdb_file}?access_mode=read_only",
                "query_timeout": 1,
                "users": {"alice"},
            },
            "lake": {
                "kind": "files",
                "description": "Shared files",
                "url": f"file://{files_root}",
                "users": {"alice"},
            },
            "s3lake": {
                "kind": "files",
                "description": "Object store",
                "url": f"s3://{BUCKET}/team",
                "storage_options": s3_options(s3_endpoint),
                "users": {"alice"},
            },
            "s3-down": {
                "kind": "files",
                "description": "Object store that is down",
                "url": f"s3://{BUCKET}/team",
                "storage_options": s3_options(f"http://127.0.0.1:{closed}"),
                "users": {"alice"},
            },
            "offline-db": {
                "kind": "sql",
                "description": "A database nobody listens for",
                "url": f"postgresql+psycopg://analyst:{CLOSED_PORT_PASSWORD}@127.0.0.1:{closed}/db",
                "users": {"alice"},
            },
            "finance": {
                "kind": "sql",
                "description": "Bob's only",
                "url": "sqlite://",
                "users": {"bob"},
            },
            "half-set-up": {
                "kind": "sql",
                "description": "Missing its secret",
                "url": "sqlite://",
                "misconfigured": True,
                "users": {"alice"},
            },
        }
    )
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture
def alice(catalogue, monkeypatch):
    """This process is alice's notebook server: the hub API is the stub's."""
    monkeypatch.setenv("JUPYTERHUB_API_URL", catalogue.api_url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", ALICE_TOKEN)
    hd.clear_cache()
    yield catalogue
    hd.clear_cache()


# --- the REST client -----------------------------------------------------------------


def test_client_finds_the_service_through_the_hub(catalogue):
    client = ServiceClient("data", api_url=catalogue.api_url, token=ALICE_TOKEN)
    assert client.url == f"{catalogue.url}/services/data/"
    names = [c["name"] for c in client.get("api/connections")["connections"]]
    assert "lake" in names and "finance" not in names
    assert ALICE_TOKEN not in repr(client)


def test_client_errors_carry_status_and_message(catalogue):
    client = ServiceClient("data", api_url=catalogue.api_url, token=ALICE_TOKEN)
    with pytest.raises(ServiceError) as error:
        client.get("api/connections/finance/credentials")
    assert (error.value.status, error.value.message) == (
        403,
        "you may not use connection 'finance'",
    )
    with pytest.raises(ServiceError) as error:
        client.get("api/connections/nope")
    assert (error.value.status, error.value.message) == (404, "connection 'nope' does not exist")
    with pytest.raises(ServiceError) as error:
        ServiceClient("data", api_url=catalogue.api_url, token="wrong").get("api/connections")
    assert error.value.status == 502
    assert "may not look up the 'data' service" in error.value.message


def test_client_unreachable_and_slow_services(catalogue):
    closed = free_port()
    client = ServiceClient("data", api_url=f"http://127.0.0.1:{closed}/hub/api", token=ALICE_TOKEN)
    with pytest.raises(ServiceError) as error:
        client.get("api/connections")
    assert error.value.status == 502
    assert (
        f"cannot reach the hub at http://127.0.0.1:{closed}/hub/api/services/data"
        in error.value.message
    )

    slow = ServiceClient(
        "data", url=f"{catalogue.url}/services/data", token=ALICE_TOKEN, timeout=0.3
    )
    # The 504 and its message show the client's own timeout fired (the stub takes longer).
    with pytest.raises(ServiceError) as error:
        slow.get("api/slow")
    assert error.value.status == 504
    assert "did not answer within 0.3 s" in error.value.message
    for e in (error.value,):
        assert ALICE_TOKEN not in str(e)


def test_client_never_follows_redirects(catalogue):
    client = ServiceClient("data", url=f"{catalogue.url}/services/data/", token=ALICE_TOKEN)
    with pytest.raises(ServiceError) as error:
        client.get("api/redirect")
    assert error.value.status == 302
    assert catalogue.echoed == []


def test_client_outside_jupyterhub():
    client = ServiceClient("data", environ={})
    with pytest.raises(ServiceError) as error:
        client.get("api/connections")
    assert error.value.status == 502
    assert "JUPYTERHUB_API_URL is not set" in error.value.message


# --- the catalogue as a user sees it ----------------------------------------------------


def test_list_connections_shows_only_usable(alice, monkeypatch):
    connections = {c["name"]: c for c in hd.list_connections()}
    assert "finance" not in connections
    assert connections["lake"] == {"name": "lake", "kind": "files", "description": "Shared files"}
    assert connections["warehouse"]["kind"] == "sql"
    # An admin's listing has everything, flagged: only what they may use is shown.
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", BOB_TOKEN)
    hd.clear_cache()
    assert [c["name"] for c in hd.list_connections()] == ["finance"]


@pytest.mark.parametrize(
    ("name", "status", "message"),
    [
        ("nope", 404, "connection 'nope' does not exist"),
        ("finance", 403, "you may not use connection 'finance'"),
        ("half-set-up", 502, "connection 'half-set-up' is misconfigured: missing secret"),
    ],
)
def test_connect_refused(alice, name, status, message):
    with pytest.raises(DataError) as error:
        hd.connect(name)
    assert error.value.status_code == status
    assert error.value.message == message
    assert error.value.connection == name


def test_service_unreachable(alice, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_URL", f"http://127.0.0.1:{free_port()}/hub/api")
    hd.clear_cache()
    with pytest.raises(DataError) as error:
        hd.list_connections()
    assert error.value.status_code == 502
    assert "cannot reach the hub" in error.value.message


def test_credentials_are_cached_then_refetched(alice, monkeypatch, files_root):
    before = alice.credential_requests.get("lake", 0)
    preview("lake", "orders.parquet", 5)
    preview("lake", "2026/orders.csv", 5)
    fs = hd.connect("lake")
    assert alice.credential_requests["lake"] == before + 1
    monkeypatch.setattr(hd, "CREDENTIALS_TTL", 0)
    hd.clear_cache()
    hd.connect("lake")
    hd.connect("lake")
    assert alice.credential_requests["lake"] == before + 3
    assert fs.ls("") != []


# --- SQL: PostgreSQL -----------------------------------------------------------------


@needs_pg
def test_pg_connect_engine_masks_password(alice, pg_schema):
    import pandas as pd

    engine = hd.connect("warehouse")
    assert engine is hd.connect("warehouse")
    assert pg_password() not in repr(engine)
    assert pg_password() not in str(engine.url)
    assert "***" in repr(engine)
    frame = pd.read_sql(f"SELECT count(*) AS n FROM {pg_schema}.orders", engine)
    assert frame["n"][0] == 2500
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "5s"


@needs_pg
def test_pg_read_and_query_push_the_limit(alice, pg_schema):
    frame = hd.read("warehouse", f"{pg_schema}.orders", limit=7)
    assert len(frame) == 7
    assert list(frame.columns) == ["id", "customer", "amount", "placed"]
    assert len(hd.read("warehouse", f"{pg_schema}.orders")) == 2500
    # 100 000 rows at 2 ms each: only a LIMIT in SQL finishes inside the 5 s timeout.
    assert len(hd.read("warehouse", f"{pg_schema}.slow_rows", limit=5)) == 5
    frame = hd.query("warehouse", f"SELECT * FROM {pg_schema}.slow_rows", limit=3)
    assert list(frame["id"]) == [1, 2, 3]
    # Sent as written: % and :name need no escaping.
    frame = hd.query(
        "warehouse",
        f"SELECT count(*) AS n FROM {pg_schema}.orders WHERE customer LIKE 'customer-1%'",
    )
    assert frame["n"][0] == 250
    assert hd.query("warehouse", "SELECT ':x'::text AS t, '10:30'::time AS t2").iloc[0]["t"] == ":x"
    assert hd.query("warehouse", "CREATE TEMP TABLE scratch (a int)") is None


@needs_pg
def test_pg_preview_and_tree(alice, pg_schema):
    result = preview("warehouse", f"{pg_schema}.orders", limit=10)
    assert [c["name"] for c in result["columns"]] == ["id", "customer", "amount", "placed"]
    assert [c["type"] for c in result["columns"]][:3] == ["integer", "text", "numeric(12,2)"]
    assert len(result["rows"]) == 10 and result["truncated"] is True
    assert result["rows"][0][:3] == [1, "customer-1", "1.25"]
    assert isinstance(result["rows"][0][3], str)  # a timestamp, as ISO text
    json.dumps(result)
    bounded = preview("warehouse", f"{pg_schema}.slow_rows", limit=100)
    assert len(bounded["rows"]) == 100 and bounded["truncated"]

    top = tree("warehouse")
    assert {"name": pg_schema, "path": pg_schema, "type": "schema"} in top["children"]
    assert not any(c["name"] in ("pg_catalog", "information_schema") for c in top["children"])
    schema = tree("warehouse", pg_schema)
    assert schema["children"] == [
        {"name": "orders", "path": f"{pg_schema}.orders", "type": "table"},
        {"name": "slow_rows", "path": f"{pg_schema}.slow_rows", "type": "view"},
    ]
    table = tree("warehouse", f"{pg_schema}.orders")
    assert table["type"] == "table"
    assert table["columns"][0] == {"name": "id", "type": "integer"}


@needs_pg
def test_pg_query_timeout(alice):
    with pytest.raises(QueryTimeout) as error:
        hd.query("warehouse-fast-timeout", "SELECT pg_sleep(10)")
    assert error.value.status_code == 504
    assert (
        error.value.message
        == "connection 'warehouse-fast-timeout': query stopped after the 1 s query timeout"
    )
    # The pooled connection is still usable afterwards.
    assert hd.query("warehouse-fast-timeout", "SELECT 1 AS one")["one"][0] == 1


@needs_pg
def test_pg_errors_are_short_and_clean(alice, pg_schema):
    with pytest.raises(DataError) as error:
        hd.query("warehouse", "SELEC oops")
    assert error.value.status_code == 400
    assert error.value.message.startswith(
        "connection 'warehouse': query failed: syntax error at or near \"SELEC\""
    )
    assert "[SQL:" not in error.value.message
    with pytest.raises(DataError) as error:
        hd.read("warehouse", f"{pg_schema}.missing", limit=1)
    assert error.value.status_code == 404
    assert "does not exist" in error.value.message
    with pytest.raises(DataError) as error:
        preview("warehouse", f"{pg_schema}.missing")
    assert (error.value.status_code, error.value.message) == (
        404,
        f"connection 'warehouse': no such table '{pg_schema}.missing'",
    )
    with pytest.raises(DataError) as error:
        tree("warehouse", "no_such_schema")
    assert error.value.status_code == 404
    assert_no_secret(str(error.value))


def test_unreachable_database(alice):
    with pytest.raises(DataError) as error:
        hd.read("offline-db", "public.orders", limit=1)
    assert error.value.status_code == 502
    message = error.value.message
    assert message.startswith("connection 'offline-db': cannot connect to the database:")
    assert "refused" in message.lower()
    assert CLOSED_PORT_PASSWORD not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__
    engine = hd.connect("offline-db")
    assert CLOSED_PORT_PASSWORD not in repr(engine) and "***" in repr(engine)
    assert CLOSED_PORT_PASSWORD not in repr(hd._connection("offline-db"))


def test_scrubbing_removes_credentials_from_any_message(alice):
    connection = hd._connection("offline-db")
    raw = f"failed for postgresql://analyst:{CLOSED_PORT_PASSWORD}@host (token {ALICE_TOKEN})"
    error = connection.error(raw, 502)
    assert CLOSED_PORT_PASSWORD not in error.message and ALICE_TOKEN not in error.message
    s3 = hd._connection("s3lake")
    assert S3_SECRET not in s3.scrub(f"secret={S3_SECRET} key={S3_KEY}")
    assert S3_SECRET not in repr(s3) and S3_SECRET not in repr(s3.credentials)


# --- SQL: DuckDB -----------------------------------------------------------------------


def test_duckdb_read_preview_tree(alice):
    assert len(hd.read("analytics", "sales.orders", limit=11)) == 11
    assert list(hd.read("analytics", "sales.orders").columns) == ["id", "region", "amount"]
    result = preview("analytics", "sales.orders", limit=3)
    assert [(c["name"], c["type"][:7]) for c in result["columns"]] == [
        ("id", "BIGINT"),
        ("region", "VARCHAR"),
        ("amount", "DECIMAL"),
    ]
    assert result["rows"] == [
        [0, "region-0", "0.0"],
        [1, "region-1", "2.5"],
        [2, "region-2", "5.0"],
    ]
    assert result["truncated"] is True
    assert {"name": "sales", "path": "sales", "type": "schema"} in tree("analytics")["children"]
    assert tree("analytics", "sales")["children"] == [
        {"name": "big_orders", "path": "sales.big_orders", "type": "view"},
        {"name": "orders", "path": "sales.orders", "type": "table"},
    ]
    assert tree("analytics", "sales.big_orders")["type"] == "view"


def test_duckdb_query_is_interrupted_after_timeout(alice):
    with pytest.raises(QueryTimeout) as error:
        hd.query(
            "analytics", "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"
        )
    assert (
        error.value.message == "connection 'analytics': query stopped after the 1 s query timeout"
    )
    assert hd.query("analytics", "SELECT 42 AS answer")["answer"][0] == 42


# --- files: local ----------------------------------------------------------------------


def test_local_files_connect_read_preview_tree(alice, files_root):
    fs = hd.connect("lake")
    assert sorted(fs.ls("2026", detail=False)) == ["2026/orders.csv", "2026/small.tsv.gz"]
    with fs.open("notes.txt") as f:
        assert f.read() == b"not a table\n"

    frame = hd.read("lake", "orders.parquet", limit=150)
    assert len(frame) == 150 and list(frame.columns) == ["id", "customer", "amount"]
    assert len(hd.read("lake", "orders.parquet")) == 1000
    assert len(hd.read("lake", "2026/orders.csv", limit=20)) == 20
    assert len(hd.read("lake", "2026/orders.csv")) == 500
    assert hd.read("lake", "2026/small.tsv.gz")["b"].tolist() == ["x", "y"]

    result = preview("lake", "orders.parquet", limit=3)
    assert result == {
        "columns": [
            {"name": "id", "type": "int64"},
            {"name": "customer", "type": "string"},
            {"name": "amount", "type": "double"},
        ],
        "rows": [[0, "customer <0>", 0.0], [1, "customer <1>", 1.5], [2, "customer <2>", 3.0]],
        "truncated": True,
    }
    assert preview("lake", "orders.parquet", limit=1000)["truncated"] is False
    csv = preview("lake", "2026/orders.csv", limit=2)
    assert csv["columns"][2] == {"name": "placed", "type": "date32[day]"}
    assert csv["rows"] == [[0, "city-0", "2026-01-01"], [1, "city-1", "2026-01-02"]]
    assert csv["truncated"] is True
    assert preview("lake", "2026/orders.csv", limit=500)["truncated"] is False
    assert preview("lake", "empty.csv") == {"columns": [], "rows": [], "truncated": False}

    top = tree("lake")
    assert top["type"] == "folder"
    assert top["children"][0] == {"name": "2026", "path": "2026", "type": "folder"}
    assert {"name": "notes.txt", "path": "notes.txt", "type": "file", "size": 12} in top["children"]
    assert tree("lake", "2026")["children"][0]["path"] == "2026/orders.csv"
    info = tree("lake", "orders.parquet")
    assert info["type"] == "file" and info["format"] == "parquet"
    assert info["columns"][0] == {"name": "id", "type": "int64"}
    assert tree("lake", "notes.txt")["columns"] is None


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("missing.parquet", 404, "connection 'lake': no such file or folder 'missing.parquet'"),
        ("../etc/passwd.csv", 400, "connection 'lake': bad path '../etc/passwd.csv'"),
        ("notes.txt", 400, "connection 'lake': cannot read 'notes.txt': only Parquet"),
        ("broken.parquet", 400, "connection 'lake': cannot read 'broken.parquet': "),
        ("2026", 400, "connection 'lake': cannot read '2026': only Parquet"),
    ],
)
def test_file_errors(alice, path, status, message):
    with pytest.raises(DataError) as error:
        preview("lake", path)
    assert error.value.status_code == status
    assert error.value.message.startswith(message), error.value.message


def test_bad_arguments(alice):
    with pytest.raises(DataError) as error:
        preview("lake", "orders.parquet", limit=-1)
    assert error.value.status_code == 400
    with pytest.raises(DataError) as error:
        hd.read("lake", "orders.parquet", limit="10")
    assert error.value.status_code == 400
    with pytest.raises(DataError) as error:
        hd.query("lake", "SELECT 1")
    assert error.value.message == "connection 'lake' is not a SQL database (kind 'files')"
    with pytest.raises(DataError) as error:
        hd.connect("")
    assert error.value.status_code == 400


# --- files: S3 over HTTP -------------------------------------------------------------


def test_s3_connect_read_preview_tree(alice):
    fs = hd.connect("s3lake")
    assert S3_SECRET not in repr(fs)
    assert "orders.parquet" in fs.ls("", detail=False)
    assert len(hd.read("s3lake", "orders.parquet", limit=120)) == 120
    assert len(hd.read("s3lake", "2026/orders.csv")) == 500
    result = preview("s3lake", "orders.parquet", limit=150)
    assert len(result["rows"]) == 150 and result["truncated"] is True
    assert result["rows"][149] == [149, "customer <2>", 223.5]
    assert preview("s3lake", "2026/orders.csv", limit=5)["rows"][4] == [4, "city-4", "2026-01-05"]
    assert {"name": "2026", "path": "2026", "type": "folder"} in tree("s3lake")["children"]
    assert tree("s3lake", "orders.parquet")["columns"][2] == {"name": "amount", "type": "double"}
    with pytest.raises(DataError) as error:
        preview("s3lake", "nothing-here.parquet")
    assert error.value.status_code == 404


def test_s3_unreachable(alice):
    with pytest.raises(DataError) as error:
        preview("s3-down", "orders.parquet")
    assert error.value.status_code == 502
    assert error.value.message.startswith("connection 's3-down': cannot reach the storage")
    assert_no_secret(error.value.message)


# --- %%sql -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "cell", "parsed"),
    [
        ("warehouse", "SELECT 1", ("warehouse", "SELECT 1", None, None)),
        ("warehouse --limit 10 -o df", "SELECT 1", ("warehouse", "SELECT 1", 10, "df")),
        ("--limit=5 warehouse", "SELECT 1", ("warehouse", "SELECT 1", 5, None)),
        ("warehouse SELECT '-o' AS x", None, ("warehouse", "SELECT '-o' AS x", None, None)),
        ("warehouse -l 3 SELECT 1", None, ("warehouse", "SELECT 1", 3, None)),
    ],
)
def test_parse_sql_magic(line, cell, parsed):
    assert parse_sql_magic(line, cell) == parsed


@pytest.mark.parametrize(
    ("line", "cell", "message"),
    [
        ("", "SELECT 1", "usage: %%sql CONNECTION"),
        ("warehouse", "  ", "no query to run"),
        ("warehouse --limit many", "SELECT 1", "--limit takes a whole number"),
        ("warehouse -o 1x", "SELECT 1", "-o takes a Python variable name"),
        ("warehouse SELECT 1", "SELECT 2", "unexpected 'SELECT 1' after the connection name"),
    ],
)
def test_parse_sql_magic_usage_errors(line, cell, message):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match=message):
        parse_sql_magic(line, cell)


@pytest.fixture
def shell(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    ip = InteractiveShell.instance(config=Config({"HistoryManager": {"enabled": False}}))
    ip.run_line_magic("load_ext", "hubforge.singleuser")
    yield ip
    ip.run_line_magic("unload_ext", "hubforge.singleuser")
    InteractiveShell.clear_instance()


def test_sql_magic_in_shell(alice, shell):
    frame = shell.run_cell_magic(
        "sql", "analytics --limit 4 -o first", "SELECT * FROM sales.orders ORDER BY id"
    )
    assert list(frame["id"]) == [0, 1, 2, 3]
    assert shell.user_ns["first"] is frame
    line = shell.run_line_magic("sql", "analytics SELECT count(*) AS n FROM sales.orders")
    assert line["n"][0] == 5000
    result = shell.run_cell("%%sql analytics\nSELEC nonsense\n")
    assert result.error_in_exec is not None
    assert "connection 'analytics': query failed: Parser Error" in str(result.error_in_exec)


def run_in_kernel(code: str, env: dict) -> tuple[str, list]:
    from jupyter_client.manager import start_new_kernel

    kernel_manager, client = start_new_kernel(kernel_name="python3", env=env, startup_timeout=60)
    try:
        outputs: list = []
        reply = client.execute_interactive(code, timeout=60, output_hook=outputs.append)
    finally:
        client.stop_channels()
        kernel_manager.shutdown_kernel(now=True)
    return reply["content"]["status"], outputs


def test_sql_magic_in_a_real_kernel(catalogue, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    env = {
        "PATH": sys.exec_prefix + "/bin",
        "HOME": str(tmp_path),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "JUPYTERHUB_API_URL": catalogue.api_url,
        "JUPYTERHUB_API_TOKEN": ALICE_TOKEN,
    }
    # No %load_ext: the installed IPython config loads the magics in every kernel.
    code = "%%sql analytics --limit 3 -o top\nSELECT id, region FROM sales.orders ORDER BY id\n"
    status, outputs = run_in_kernel(code, env)
    assert status == "ok", outputs
    shown = json.dumps([o["content"] for o in outputs])
    assert "region-2" in shown and "region-0" in shown
    assert_no_secret(shown)

    status, outputs = run_in_kernel("%%sql offline-db\nSELECT 1\n", env)
    assert status == "error"
    shown = json.dumps([o["content"] for o in outputs])
    assert "connection 'offline-db': cannot connect to the database" in shown
    assert_no_secret(shown)


# --- the widget --------------------------------------------------------------------------


def test_browser_model_select_preview_insert(alice, shell):
    browser = hd.browser()
    assert "lake" in [c["name"] for c in browser.connections]
    browser.select_connection("lake")
    assert browser.entries[0]["path"] == "2026"
    browser.open("2026")
    assert browser.path == "2026"
    browser.open("2026/orders.csv")
    assert [c["name"] for c in browser.columns] == ["id", "city", "placed"]
    assert browser.preview["rows"][0] == [0, "city-0", "2026-01-01"]
    code = browser.insert_code()
    assert shell.rl_next_input == code
    assert 'hubforge.data.read("lake", "2026/orders.csv", limit=10000)' in code
    shell.run_cell(code)
    assert len(shell.user_ns["df"]) == 500
    browser.up()
    assert browser.path == "" and browser.selected is None


def test_browser_widgets_drive_the_model(alice, shell):
    browser = hd.browser()
    box = browser.widget()
    (connections, location_row, entries, columns, grid, buttons, output) = box.children
    insert = buttons.children[0]
    assert insert.disabled

    connections.value = "analytics"
    assert "analytics" in location_row.children[1].value
    entries.value = "sales"
    assert [o[1] for o in entries.options] == ["sales.big_orders", "sales.orders"]
    entries.value = "sales.orders"
    assert "<td>region-1</td>" in grid.value
    assert "<code>BIGINT</code>" in columns.value
    assert not insert.disabled
    insert.click()
    assert 'hubforge.data.read("analytics", "sales.orders", limit=10000)' in shell.rl_next_input
    assert "Inserted below" in output.outputs[-1]["text"]

    # Names from connections are escaped.
    connections.value = "lake"
    assert "customer &lt;0&gt;" not in grid.value  # nothing selected yet
    entries.value = "orders.parquet"
    assert "customer &lt;0&gt;" in grid.value and "customer <0>" not in grid.value

    # A failure lands in the Output, as a message.
    entries.value = "broken.parquet"
    assert output.outputs[-1]["name"] == "stderr"
    assert "connection 'lake': cannot read 'broken.parquet'" in output.outputs[-1]["text"]


def test_browser_without_ipywidgets(alice, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    browser = hd.browser()
    bundle = browser._repr_mimebundle_()
    assert "DuckDB &lt;analytics&gt;" in bundle["text/html"]
    assert "lake" in bundle["text/plain"]


# --- the server extension ----------------------------------------------------------------




async def fetch_error(jp_fetch, *parts, **params):
    with pytest.raises(HTTPClientError) as error:
        await jp_fetch(*parts, params=params)
    body = error.value.response.body.decode()
    assert_no_secret(body)
    return error.value.code, json.loads(body)


async def test_endpoints(alice, jp_fetch, jp_serverapp):
    response = await jp_fetch("hubforge", "api", "data", "connections")
    names = [c["name"] for c in json.loads(response.body)["connections"]]
    assert "lake" in names and "finance" not in names

    response = await jp_fetch(
        "hubforge", "api", "data", "connections", "lake", "tree", params={"path": "2026"}
    )
    assert json.loads(response.body)["children"][0]["path"] == "2026/orders.csv"

    response = await jp_fetch(
        "hubforge",
        "api",
        "data",
        "connections",
        "lake",
        "preview",
        params={"path": "orders.parquet", "limit": "2"},
    )
    assert response.headers["Content-Type"].startswith("application/json")
    assert json.loads(response.body)["rows"] == [[0, "customer <0>", 0.0], [1, "customer <1>", 1.5]]

    response = await jp_fetch(
        "hubforge",
        "api",
        "data",
        "connections",
        "s3lake",
        "preview",
        params={"path": "2026/orders.csv"},
    )
    body = response.body.decode()
    assert len(json.loads(body)["rows"]) == 100
    assert_no_secret(body)


@pytest.mark.parametrize(
    ("name", "params", "status", "message"),
    [
        ("lake", {"path": "orders.parquet", "limit": "lots"}, 400, "limit must be a whole number"),
        (
            "lake",
            {"path": "orders.parquet", "limit": "100000"},
            400,
            "limit must be a whole number",
        ),
        ("lake", {}, 400, "give the table or file to preview"),
        ("lake", {"path": "../x.csv"}, 400, "bad path"),
        ("lake", {"path": "missing.csv"}, 404, "no such file or folder"),
        ("finance", {"path": "t"}, 403, "you may not use connection 'finance'"),
        ("nope", {"path": "t"}, 404, "connection 'nope' does not exist"),
        ("offline-db", {"path": "public.t"}, 502, "cannot connect to the database"),
        ("s3-down", {"path": "orders.parquet"}, 502, "cannot reach the storage"),
    ],
)
async def test_preview_endpoint_errors(alice, jp_fetch, name, params, status, message):
    code, body = await fetch_error(
        jp_fetch, "hubforge", "api", "data", "connections", name, "preview", **params
    )
    assert code == status
    assert body["status"] == status
    assert message in body["message"]


@needs_pg
async def test_preview_endpoint_timeout(alice, jp_fetch, pg_schema):
    code, body = await fetch_error(
        jp_fetch,
        "hubforge",
        "api",
        "data",
        "connections",
        "warehouse-fast-timeout",
        "preview",
        path=f"{pg_schema}.slow_rows",
        limit="1000",
    )
    assert code == 504
    assert (
        body["message"]
        == "connection 'warehouse-fast-timeout': query stopped after the 1 s query timeout"
    )


async def test_endpoint_service_unreachable(alice, jp_fetch, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_URL", f"http://127.0.0.1:{free_port()}/hub/api")
    hd.clear_cache()
    code, body = await fetch_error(jp_fetch, "hubforge", "api", "data", "connections")
    assert code == 502
    assert "cannot reach the hub" in body["message"]


async def test_no_credentials_in_server_logs(alice, jp_fetch, jp_serverapp, caplog, pg_schema):
    # The server at --debug; libraries at INFO (botocore's own DEBUG lines show the
    # access key id in its request signatures, as AWS's SDK always does).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger=jp_serverapp.log.name)
    jp_serverapp.log.addHandler(caplog.handler)
    try:
        calls = [
            ("offline-db", "preview", {"path": "public.t"}),
            ("s3-down", "preview", {"path": "orders.parquet"}),
            ("s3lake", "preview", {"path": "orders.parquet"}),
            ("s3lake", "tree", {"path": ""}),
            ("finance", "tree", {"path": ""}),
            ("warehouse", "tree", {"path": ""}),
        ]
        for name, action, params in calls:
            with contextlib.suppress(HTTPClientError):
                await jp_fetch(
                    "hubforge", "api", "data", "connections", name, action, params=params
                )
    finally:
        jp_serverapp.log.removeHandler(caplog.handler)
    assert "offline-db" in caplog.text  # the requests were logged...
    assert_no_secret(caplog.text)  # ...without a credential


async def test_endpoints_need_authentication(alice, jp_fetch):
    for parts in (("connections",), ("connections", "lake", "tree")):
        with pytest.raises(HTTPClientError) as error:
            await jp_fetch(
                "hubforge", "api", "data", *parts, headers={"Authorization": "token wrong"}
            )
        assert error.value.code == 403
        assert "orders" not in error.value.response.body.decode()
