"""The data-connection catalogue: format, validation with lines, secrets, who may use what,
and the shipped example (with the sample data set it refers to, opened for real)."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from hubforge.data.catalogue import (
    CatalogueError,
    Connection,
    Credentials,
    MissingSecrets,
    Secrets,
    SecretRef,
    check_catalogue,
    load_catalogue,
    parse_catalogue,
)
from hubprocess import ROOT

GOOD = """\
connections:
  warehouse:
    kind: sql
    description: Team warehouse (PostgreSQL)
    url: postgresql+psycopg://analyst@127.0.0.1:5432/warehouse
    password: {env: WAREHOUSE_PASSWORD}
    allowed_groups: [analysts]
    allowed_users: [alice]
    query_timeout: 12.5
  lake:
    kind: files
    description: Raw files (S3-compatible)
    url: s3://lake/raw/
    storage_options:
      endpoint_url: http://127.0.0.1:9000
      key: {env: LAKE_KEY}
      secret: {secret: lake_secret}
      client_kwargs: {region_name: eu-west-1}
    allowed_groups: [analysts]
  scratch:
    kind: files
    url: /srv/scratch/
"""


def parse(text: str):
    return parse_catalogue(textwrap.dedent(text), "cat.yaml")


def test_good_file():
    catalogue, issues = parse(GOOD)
    assert issues == []
    assert [c.name for c in catalogue] == ["warehouse", "lake", "scratch"]
    wh = catalogue.get("warehouse")
    assert wh.kind == "sql" and wh.description == "Team warehouse (PostgreSQL)"
    assert wh.password == SecretRef("env", "WAREHOUSE_PASSWORD")
    assert wh.allowed_groups == {"analysts"} and wh.allowed_users == {"alice"}
    assert wh.query_timeout == 12.5 and wh.line == 2 and wh.file == "cat.yaml"
    lake = catalogue.get("lake")
    assert lake.storage_options == {
        "endpoint_url": "http://127.0.0.1:9000",
        "key": SecretRef("env", "LAKE_KEY"),
        "secret": SecretRef("secret", "lake_secret"),
        "client_kwargs": {"region_name": "eu-west-1"},
    }
    assert lake.secret_refs() == [SecretRef("env", "LAKE_KEY"), SecretRef("secret", "lake_secret")]
    scratch = catalogue.get("scratch")
    assert scratch.open_to_all and scratch.query_timeout == 30 and scratch.description == ""
    assert catalogue.env_names() == {"WAREHOUSE_PASSWORD", "LAKE_KEY"}
    assert catalogue.get("nope") is None
    assert not catalogue.uses_sample_data


@pytest.mark.parametrize(
    "text, expected",
    [
        ("# only a comment\n", "cat.yaml:1: the file is empty"),
        ("connections: [\n", "cat.yaml:2: invalid YAML"),
        ("- a\n- b\n", "cat.yaml:1: expected a mapping with a 'connections' key, got list"),
        ("other: 1\n", "cat.yaml:1: field 'other': unknown key 'other'; expected: connections"),
        ("{}\n", "missing 'connections'"),
        ("connections: [a]\n", "cat.yaml:1: field 'connections': 'connections' must be a mapping"),
        ("connections:\n  bad/name: {kind: files, url: /x}\n",
         "cat.yaml:2: connection 'bad/name': invalid name"),
        ("connections:\n  x: 3\n", "cat.yaml:2: connection 'x': expected a mapping of settings, got int"),
        ("connections:\n  x: {url: /x}\n", "connection 'x': field 'kind': missing; choose one of: sql, files"),
        ("connections:\n  x: {kind: nosql, url: /x}\n", "field 'kind': unknown kind 'nosql'"),
        ("connections:\n  x:\n    kind: files\n    url: /x\n    colour: blue\n",
         "cat.yaml:5: connection 'x': field 'colour': unknown field for kind 'files'"),
        ("connections:\n  x:\n    kind: sql\n    url: sqlite://\n    storage_options: {a: 1}\n",
         "cat.yaml:5: connection 'x': field 'storage_options': unknown field for kind 'sql' (storage_options is for"),
        ("connections:\n  x:\n    kind: files\n    url: /x\n    password: {env: P}\n",
         "field 'password': unknown field for kind 'files' (kind 'files' takes secrets in storage_options)"),
        ("connections:\n  x: {kind: sql}\n", "connection 'x': field 'url': missing; give a SQLAlchemy URL"),
        ("connections:\n  x: {kind: files, url: ''}\n", "field 'url': missing; give an fsspec URL"),
        ("connections:\n  x: {kind: sql, url: 'not a url'}\n", "field 'url': not a SQLAlchemy URL"),
        ("connections:\n  x: {kind: sql, url: 'postgresql://u:hunter2@h/db'}\n",
         "field 'url': the URL contains a password; move it to 'password: {env: NAME}'"),
        ("connections:\n  x: {kind: sql, url: 'nosuchdb+driver://h/db'}\n",
         "field 'url': unknown SQLAlchemy dialect or driver 'nosuchdb+driver'"),
        ("connections:\n  x: {kind: files, url: data/}\n", "field 'url': a local path must be absolute"),
        ("connections:\n  x: {kind: files, url: 'file://data/'}\n", "field 'url': a file:// URL needs an absolute path"),
        ("connections:\n  x: {kind: files, url: 'nosuch://b/'}\n", "field 'url': unknown fsspec protocol 'nosuch'"),
        ("connections:\n  x: {kind: files, url: 'ftp://u:hunter2@host/dir/'}\n",
         "field 'url': the URL contains credentials; move them to storage_options"),
        ("connections:\n  x:\n    kind: sql\n    url: sqlite://\n    password: hunter2\n",
         "cat.yaml:5: connection 'x': field 'password': write {env: NAME} or {secret: NAME}, not the password itself"),
        ("connections:\n  x:\n    kind: sql\n    url: sqlite://\n    password: {vault: p}\n",
         "field 'password': expected {env: NAME} or {secret: NAME}"),
        ("connections:\n  x:\n    kind: sql\n    url: sqlite://\n    password: {env: ''}\n",
         "field 'password.env': must name an environment variable or a secret"),
        ("connections:\n  x: {kind: files, url: /x, storage_options: [a]}\n",
         "field 'storage_options': must be a mapping of fsspec options"),
        ("connections:\n  x:\n    kind: files\n    url: /x\n    storage_options:\n      client_kwargs:\n        key: {secret: 7}\n",
         "cat.yaml:7: connection 'x': field 'storage_options.client_kwargs.key.secret': must name"),
        ("connections:\n  x: {kind: files, url: /x, allowed_users: alice}\n",
         "field 'allowed_users': expected a list of names"),
        ("connections:\n  x: {kind: files, url: /x, allowed_groups: [a, 3]}\n",
         "field 'allowed_groups': expected a list of names"),
        ("connections:\n  x: {kind: files, url: /x, query_timeout: -1}\n",
         "field 'query_timeout': must be a positive number of seconds, got -1"),
        ("connections:\n  x: {kind: files, url: /x, query_timeout: soon}\n", "field 'query_timeout'"),
        ("connections:\n  x: {kind: files, url: /x, query_timeout: true}\n", "field 'query_timeout'"),
        ("connections:\n  x: {kind: files, url: /x, description: [a]}\n", "field 'description': must be text"),
        ("connections:\n  x: {kind: files, url: /x}\n  x: {kind: files, url: /y}\n",
         "cat.yaml:3: connection 'x': duplicate key 'x' (first defined on line 2)"),
    ],
)
def test_each_problem_names_file_line_connection_and_field(text, expected):
    catalogue, issues = parse_catalogue(text, "cat.yaml")
    assert catalogue is None
    assert any(expected in str(issue) for issue in issues), issues


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "cat.yaml"
    path.write_text(
        "connections:\n"
        "  a: {kind: sql, url: 'postgresql://u:pw@h/db'}\n"
        "  ok: {kind: files, url: /srv/data/}\n"
        "  b: {kind: files, url: rel/}\n"
    )
    issues = check_catalogue(path)
    assert [(i.line, i.connection, i.field) for i in issues] == [(2, "a", "url"), (4, "b", "url")]
    with pytest.raises(CatalogueError) as e:
        load_catalogue(path)
    lines = str(e.value).splitlines()
    assert lines[0].startswith(f"{path}:2: connection 'a': field 'url': the URL contains a password")
    assert lines[1].startswith(f"{path}:4: connection 'b': field 'url': a local path must be absolute")
    # The password written in the bad URL is not repeated back.
    assert "pw@" not in str(e.value)


def test_unreadable_file(tmp_path):
    assert str(check_catalogue(tmp_path / "nope.yaml")[0]).endswith("cannot read: No such file or directory")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    assert check_catalogue(tmp_path / "bin.yaml")[0].message == "not UTF-8 text"


# --- who may use what ---------------------------------------------------------------------


def conn(users=(), groups=()):
    return Connection("x", "files", "/x", allowed_users=frozenset(users), allowed_groups=frozenset(groups))


@pytest.mark.parametrize(
    "users, groups, caller, caller_groups, allowed",
    [
        ((), (), "anyone", [], True),  # no lists: open to every user
        (("alice",), (), "alice", [], True),
        (("alice",), (), "bob", ["analysts"], False),
        ((), ("analysts",), "bob", ["analysts", "other"], True),
        ((), ("analysts",), "bob", ["other"], False),
        ((), ("analysts",), "analysts", [], False),  # a user named like the group is not in it
        (("alice",), ("analysts",), "alice", [], True),  # users OR groups
        (("alice",), ("analysts",), "carol", ["analysts"], True),
        (("alice",), ("analysts",), "dave", [], False),
        (("Alice",), (), "alice", [], False),  # names are exact
    ],
)
def test_allowed_users_and_groups(users, groups, caller, caller_groups, allowed):
    assert conn(users, groups).allows(caller, caller_groups) is allowed


def test_usable_by_filters_the_catalogue():
    catalogue, _ = parse(GOOD)
    assert [c.name for c in catalogue.usable_by("alice", [])] == ["warehouse", "scratch"]
    assert [c.name for c in catalogue.usable_by("bob", ["analysts"])] == ["warehouse", "lake", "scratch"]
    assert [c.name for c in catalogue.usable_by("eve", ["guests"])] == ["scratch"]


# --- secrets and credentials ----------------------------------------------------------------

PASSWORD = "p@ss:w/rd-hunter2"


def write_secrets(tmp_path, text, mode=0o600):
    path = tmp_path / "secrets.yaml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_credentials_fill_in_the_secrets(tmp_path):
    catalogue, _ = parse(GOOD)
    secrets = Secrets.load(
        write_secrets(tmp_path, "lake_secret: lake-secret-hunter2\nunused: 42\n"),
        environ={"WAREHOUSE_PASSWORD": PASSWORD, "LAKE_KEY": "lake-key-hunter2"},
    )
    assert secrets.problems == []
    wh = secrets.credentials(catalogue.get("warehouse"))
    assert wh.to_json() == {
        "name": "warehouse",
        "kind": "sql",
        # The password is URL-encoded, so SQLAlchemy reads it back exactly.
        "url": "postgresql+psycopg://analyst:p%40ss%3Aw%2Frd-hunter2@127.0.0.1:5432/warehouse",
        "storage_options": {},
        "query_timeout": 12.5,
    }
    from sqlalchemy.engine import make_url

    assert make_url(wh.url).password == PASSWORD
    lake = secrets.credentials(catalogue.get("lake")).to_json()
    assert lake["url"] == "s3://lake/raw/"
    assert lake["storage_options"] == {
        "endpoint_url": "http://127.0.0.1:9000",
        "key": "lake-key-hunter2",
        "secret": "lake-secret-hunter2",
        "client_kwargs": {"region_name": "eu-west-1"},
    }
    assert secrets.values_for(catalogue) == {
        PASSWORD, "p%40ss%3Aw%2Frd-hunter2", "lake-key-hunter2", "lake-secret-hunter2",
    }
    # Nothing secret in a repr, a str or an error.
    for text in (repr(wh), str(wh), repr(catalogue.get("warehouse")), repr(catalogue.get("lake"))):
        assert "hunter2" not in text and "p@ss" not in text, text
    assert repr(Credentials("n", "sql", "u", {}, 1)) == (
        "Credentials(name='n', kind='sql', url=<hidden>, storage_options=<hidden>)"
    )


def test_missing_secret_is_reported_per_connection_by_name(tmp_path):
    catalogue, _ = parse(GOOD)
    secrets = Secrets.load(write_secrets(tmp_path, "other: x\n"), environ={"LAKE_KEY": "", "WAREHOUSE_PASSWORD": PASSWORD})
    assert secrets.missing(catalogue.get("warehouse")) == []
    assert secrets.missing(catalogue.get("scratch")) == []
    # An empty variable counts as missing.
    assert secrets.missing(catalogue.get("lake")) == [SecretRef("env", "LAKE_KEY"), SecretRef("secret", "lake_secret")]
    with pytest.raises(MissingSecrets) as e:
        secrets.credentials(catalogue.get("lake"))
    assert str(e.value) == "connection 'lake': missing environment variable LAKE_KEY, secret 'lake_secret'"


def test_secrets_file_problems(tmp_path):
    assert "cannot read the secrets file" in Secrets.load(tmp_path / "nope.yaml", environ={}).problems[0]
    loose = Secrets.load(write_secrets(tmp_path, "a: hunter2-value\n", mode=0o644), environ={})
    assert loose.problems == [f"{tmp_path / 'secrets.yaml'}: the secrets file is readable by others (mode 644); chmod 600 it"]
    assert loose.values == {"a": "hunter2-value"}  # still used: the admin is told, users are not locked out
    bad = Secrets.load(write_secrets(tmp_path, "a: [hunter2-value]\nb: ok-value\n"), environ={})
    assert bad.problems == [f"{tmp_path / 'secrets.yaml'}:1: secret 'a': the value must be text"]
    assert bad.values == {"b": "ok-value"}
    broken = Secrets.load(write_secrets(tmp_path, "a: [hunter2\n"), environ={})
    assert "invalid YAML" in broken.problems[0] and "hunter2" not in broken.problems[0]
    assert Secrets.load(write_secrets(tmp_path, "- a\n"), environ={}).problems[0].endswith(
        "expected a mapping of secret names to values"
    )
    assert Secrets.load(None, environ={}).problems == []


# --- the shipped example and its sample data ----------------------------------------------


def test_shipped_catalogue_works_out_of_the_box(tmp_path):
    import fsspec
    import pandas as pd
    import sqlalchemy as sa

    from hubforge.data.service import make_sample_data

    samples = tmp_path / "sample-data"
    catalogue = load_catalogue(ROOT / "hub_config" / "data_connections.yaml", sample_data_dir=samples)
    assert [c.name for c in catalogue] == ["samples", "sample-files"]
    assert all(c.open_to_all for c in catalogue)
    assert catalogue.uses_sample_data and catalogue.env_names() == set()

    assert make_sample_data(samples) == samples
    modes = {p.relative_to(samples).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [samples, *samples.rglob("*")]}
    assert modes == {
        ".": 0o755, "samples.duckdb": 0o644, "files": 0o755,
        "files/orders.parquet": 0o644, "files/customers.csv": 0o644,
    }
    secrets = Secrets(environ={})
    sql = secrets.credentials(catalogue.get("samples"))
    engine = sa.create_engine(sql.url)
    try:
        with engine.connect() as con:
            count, total = con.execute(sa.text("SELECT count(*), sum(quantity) FROM sales.orders")).one()
            assert count == 10_000 and total > 0
            assert con.execute(sa.text("SELECT count(*) FROM sales.customers")).scalar() == 500
    finally:
        engine.dispose()
    files = secrets.credentials(catalogue.get("sample-files"))
    fs, root = fsspec.core.url_to_fs(files.url, **files.storage_options)
    assert sorted(Path(p).name for p in fs.ls(root, detail=False)) == ["customers.csv", "orders.parquet"]
    with fs.open(root.rstrip("/") + "/orders.parquet") as f:
        assert len(pd.read_parquet(f)) == 10_000
    # A second start keeps the existing set.
    before = (samples / "samples.duckdb").stat().st_mtime_ns
    make_sample_data(samples)
    assert (samples / "samples.duckdb").stat().st_mtime_ns == before
    assert not list(tmp_path.glob(".sample-data.*")), "the temporary build directory is removed"
