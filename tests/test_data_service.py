"""The ``data`` hub service: its hub configuration, and a real hub serving it.

The real-hub tests run one hub (hostile base URL, shared isolation) with a catalogue of
a real PostgreSQL (when ``HUBFORGE_TEST_PG_URL`` is set), a DuckDB file, an S3 bucket on
moto's server over loopback HTTP and a local folder, and check who gets what: the
owner/other/admin/anonymous matrix on every endpoint, tokens with too few scopes, a
browser session, a spawned server's own token, and finally that no secret reached the
hub's log (where the service, the proxy and the servers log too).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from traitlets.config import Config

from hubforge.data.catalogue import CatalogueError
from hubforge.data.hubconfig import FromHubEnvironment, configure_data_service
from hubforge.services import grant_scopes
from hubforge.settings import Settings
from hubprocess import VENV_BIN, Browserless, HubProcess, ProcessExited, free_port, wait_for

READ = "custom:hubforge:data:read"
CONNECT = "custom:hubforge:data:connect"
ACCESS = "access:services!service=data"
LOOKUP = "read:services!service=data"

# --- the hub configuration (pure: no hub) -----------------------------------------------


def settings_for(tmp_path, catalogue: str, **kw) -> Settings:
    (tmp_path / "cat.yaml").write_text(textwrap.dedent(catalogue))
    return Settings(source=str(tmp_path / "hubforge.yaml"), data_connections="cat.yaml", **kw)


def test_configure_data_service(tmp_path, monkeypatch):
    settings = settings_for(
        tmp_path,
        """\
        connections:
          wh:
            kind: sql
            url: postgresql+psycopg://analyst@db/wh
            password: {env: HF_WH_PASSWORD}
          lake:
            kind: files
            url: s3://lake/
            storage_options: {key: {env: HF_LAKE_KEY}, secret: {secret: lake}}
        """,
        data_secrets_file="secrets.yaml",
    )
    monkeypatch.setenv("HF_WH_PASSWORD", "wh-password-hunter2")
    c = Config()
    services = [{"name": "idle-culler"}]
    roles = [{"name": "idle-culler", "scopes": ["list:users"], "services": ["idle-culler"]}]
    configure_data_service(c, settings, services, roles)

    service = services[1]
    port = urlparse(service.pop("url")).port
    assert 0 < port < 65536
    env = service.pop("environment")
    assert service == {
        "name": "data",
        "command": [sys.executable, "-m", "hubforge.data.service"],
        "oauth_client_allowed_scopes": [READ],
        "oauth_no_confirm": True,
        "display": True,
        "info": {"description": "Data connections", "api": "api/connections"},
    }
    assert env["HUBFORGE_DATA_CONNECTIONS"] == str(tmp_path / "cat.yaml")
    assert env["HUBFORGE_DATA_SECRETS_FILE"] == str(tmp_path / "secrets.yaml")
    # Variables the catalogue names are forwarded by name; the value is read at start.
    assert sorted(k for k, v in env.items() if isinstance(v, FromHubEnvironment)) == ["HF_LAKE_KEY", "HF_WH_PASSWORD"]
    assert "hunter2" not in repr(services) + repr(c)
    assert env["HF_WH_PASSWORD"]() == "wh-password-hunter2" and env["HF_LAKE_KEY"]() == ""

    assert roles == [
        {"name": "idle-culler", "scopes": ["list:users"], "services": ["idle-culler"]},
        {"name": "user", "scopes": ["self", READ, CONNECT, ACCESS, LOOKUP]},
        # JupyterHub's default server scopes are kept; "inherit" is not used.
        {"name": "server", "scopes": ["users:activity!user", "access:servers!server", READ, CONNECT, ACCESS, LOOKUP]},
    ]
    assert c.JupyterHub.custom_scopes == {
        READ: {"description": "List and describe the data connections you may use."},
        CONNECT: {"description": "Get the credentials of the data connections you may use.", "subscopes": [READ]},
    }


def test_no_catalogue_no_service(tmp_path):
    c = Config()
    services, roles = [], []
    configure_data_service(c, Settings(), services, roles)
    assert services == [] and roles == [] and "custom_scopes" not in c.JupyterHub


def test_invalid_catalogue_is_refused(tmp_path):
    settings = settings_for(tmp_path, "connections:\n  x: {kind: sql, url: 'postgresql://u:pw@h/db'}\n")
    with pytest.raises(CatalogueError, match=r"cat.yaml:2: connection 'x': field 'url': the URL contains a password"):
        configure_data_service(Config(), settings, [], [])


def test_grant_scopes_merges_into_one_role_entry():
    roles = []
    grant_scopes(roles, "server", ["custom:hubforge:jobs:read"])
    grant_scopes(roles, "server", ["custom:hubforge:jobs:read", "custom:hubforge:data:read"])
    grant_scopes(roles, "reader", ["read:users"])
    assert roles == [
        {"name": "server", "scopes": [
            "users:activity!user", "access:servers!server", "custom:hubforge:jobs:read", "custom:hubforge:data:read",
        ]},
        {"name": "reader", "scopes": ["read:users"]},
    ]


# --- the shared service library (hubforge.services.auth), without a hub -----------------

LIBRARY_SECRET = "lib-secret-5e6f7a8b"


async def test_service_library_errors_logs_and_redaction():
    """Unexpected errors answer a generic 500 and log a redacted traceback; an
    unreachable hub is a 502; the access log has no query string."""
    import io
    import json
    import logging

    from jupyterhub.services.auth import HubOAuth
    from tornado.httpclient import AsyncHTTPClient
    from tornado.httpserver import HTTPServer

    from hubforge.services.auth import APIHandler, RedactingFormatter, make_app, redact_in_logs, requires_scopes

    class Boom(APIHandler):
        def get(self):
            raise RuntimeError(f"driver said: cannot connect to postgresql://u:{LIBRARY_SECRET}@db/x")

    class Protected(APIHandler):
        @requires_scopes("custom:hubforge:test:read")
        def get(self):
            self.write_json({"ok": True})

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("hubforge.test-service")
    log.handlers, log.propagate, log.level = [handler], False, logging.INFO
    redact_in_logs([LIBRARY_SECRET])
    prefix = "/@/space%20word/services/x/"
    closed = f"http://127.0.0.1:{free_port()}/hub/api"
    app = make_app([(r"boom", Boom), (r"api/protected", Protected)], prefix=prefix, log=log,
                   hub_auth=HubOAuth(api_url=closed, api_token="service-token", cache_max_age=0))
    server = HTTPServer(app)
    port = free_port()
    server.listen(port, "127.0.0.1")
    client = AsyncHTTPClient()
    base = f"http://127.0.0.1:{port}{prefix}"
    try:
        r = await client.fetch(base + "boom?token=query-token-9", raise_error=False)
        assert r.code == 500
        assert json.loads(r.body) == {
            "status": 500, "message": "internal error in this service; the details are in the hub's log",
        }
        r = await client.fetch(base + "api/protected", raise_error=False)
        assert r.code == 401 and json.loads(r.body)["message"].startswith("authentication required")
        r = await client.fetch(base + "api/protected", headers={"Authorization": "token user-token"}, raise_error=False)
        assert r.code == 502
        assert json.loads(r.body)["message"] == "cannot check your identity with the hub; try again shortly"
    finally:
        server.stop()
    text = stream.getvalue()
    assert "Traceback" in text and "RuntimeError: driver said: cannot connect to postgresql://u:[secret]@db/x" in text
    assert LIBRARY_SECRET not in text and "query-token-9" not in text and "user-token" not in text
    assert f"ERROR 500 GET {prefix}boom user=- " in text
    assert f"WARNING 401 GET {prefix}api/protected user=- " in text
    assert f"ERROR 502 GET {prefix}api/protected user=- " in text


# --- a real hub -----------------------------------------------------------------------------

PASSWORD = "correct-horse-battery-9"
LAKE_KEY = "lake-key-3f9a1c7e"
LAKE_SECRET = "lake-secret-8d2b6e4f"
BROKEN_SECRET_NAME = "not_in_the_file"


def pg_settings() -> tuple[str, str, str]:
    """``(url without password, password, username)`` of the test PostgreSQL, or a stand-in."""
    from sqlalchemy.engine import URL, make_url

    raw = os.environ.get("HUBFORGE_TEST_PG_URL")
    if not raw:
        return "postgresql+psycopg://analyst@127.0.0.1:9/warehouse", "warehouse-pw-71c3e9", ""
    u = make_url(raw)
    bare = URL.create("postgresql+psycopg", u.username, None, u.host, u.port, u.database, u.query)
    return bare.render_as_string(), u.password, u.username


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto's S3 server on loopback, with bucket ``lake`` holding ``raw/hello.csv``."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(endpoint, timeout=2).status_code < 500, 30, what="moto server")
        requests.put(f"{endpoint}/lake", timeout=10).raise_for_status()
        requests.put(f"{endpoint}/lake/raw/hello.csv", data=b"a,b\n1,2\n", timeout=10).raise_for_status()
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def data_hub(tmp_path_factory, moto):
    work = tmp_path_factory.mktemp("data-hub")
    pg_url, pg_password, _ = pg_settings()
    public = work / "public"
    public.mkdir()
    (public / "readme.txt").write_text("hello")
    (work / "alices.duckdb").touch()
    catalogue = work / "data_connections.yaml"
    catalogue.write_text(textwrap.dedent(f"""\
        connections:
          warehouse:
            kind: sql
            description: Team warehouse (PostgreSQL)
            url: {pg_url}
            password: {{env: HF_TEST_WAREHOUSE_PASSWORD}}
            allowed_groups: [analysts]
            query_timeout: 12
          alices:
            kind: sql
            description: Alice's DuckDB
            url: duckdb:///{work}/alices.duckdb
            allowed_users: [alice]
          lake:
            kind: files
            description: Raw files (S3-compatible)
            url: s3://lake/raw/
            storage_options:
              endpoint_url: {moto}
              key: {{env: HF_TEST_LAKE_KEY}}
              secret: {{secret: lake_secret}}
            allowed_groups: [analysts]
          public:
            kind: files
            description: Shared folder
            url: file://{public}/
          broken:
            kind: sql
            url: postgresql+psycopg://nobody@127.0.0.1:9/none
            password: {{secret: {BROKEN_SECRET_NAME}}}
        """))
    secrets = work / "secrets.yaml"
    secrets.write_text(f"lake_secret: {LAKE_SECRET}\n")
    os.chmod(secrets, 0o600)
    hub = HubProcess(
        work,
        env={"HF_TEST_WAREHOUSE_PASSWORD": pg_password, "HF_TEST_LAKE_KEY": LAKE_KEY},
        data_connections=str(catalogue),
        data_secrets_file=str(secrets),
        open_signup=True,
        gpus="none",
        local={"isolation": "shared"},
    )
    hub.secrets = (pg_password, LAKE_KEY, LAKE_SECRET)
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def tokens(data_hub):
    """API tokens: admin (not an analyst), alice (analyst, and listed on 'alices'), bob (nobody)."""
    hub = data_hub
    assert Browserless(hub).signup("admin", PASSWORD).status_code == 200
    admin = hub.token("admin")
    found = {"admin": admin}
    for name, groups in (("alice", ["analysts"]), ("bob", [])):
        found[name] = hub.make_user(admin, name, groups, exist_ok=False)
    return found


def service_url(hub, path: str = "") -> str:
    return hub.url + "services/data/" + path


def get(hub, path: str, token: str | None = None, **kw) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(service_url(hub, path), headers=headers, timeout=30, **kw)


EVERYONE = ["public", "broken"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "who, names",
    [
        ("alice", ["warehouse", "alices", "lake", "public", "broken"]),
        ("bob", EVERYONE),
        ("admin", ["warehouse", "alices", "lake", "public", "broken"]),  # admins see all...
    ],
)
def test_list_shows_what_the_caller_may_use(data_hub, tokens, who, names):
    r = get(data_hub, "api/connections", tokens[who])
    assert r.status_code == 200, r.text
    got = r.json()["connections"]
    assert [c["name"] for c in got] == names
    assert set(got[0]) == {"name", "kind", "description", "usable"}
    usable = {c["name"] for c in got if c["usable"]}
    # ...but may use only their own (none of the restricted ones, here).
    assert usable == (set(EVERYONE) if who != "alice" else set(names))


# (who, connection, status of describe, status of credentials)
MATRIX = [
    ("alice", "warehouse", 200, 200),  # through the group
    ("alice", "alices", 200, 200),  # through allowed_users
    ("alice", "lake", 200, 200),
    ("alice", "public", 200, 200),  # open to everyone
    ("bob", "warehouse", 403, 403),
    ("bob", "alices", 403, 403),
    ("bob", "lake", 403, 403),
    ("bob", "public", 200, 200),
    ("admin", "warehouse", 200, 403),  # admins may look, not use (least privilege)
    ("admin", "alices", 200, 403),
    ("admin", "public", 200, 200),
    ("alice", "nope", 404, 404),
    ("bob", "nope", 404, 404),
    ("admin", "nope", 404, 404),
    ("anonymous", "warehouse", 401, 401),
    ("anonymous", "public", 401, 401),
    ("anonymous", "nope", 401, 401),
]


@pytest.mark.slow
@pytest.mark.parametrize("who, name, describe, credentials", MATRIX)
def test_access_matrix(data_hub, tokens, who, name, describe, credentials):
    token = tokens.get(who)
    for path, status in ((f"api/connections/{name}", describe), (f"api/connections/{name}/credentials", credentials)):
        r = get(data_hub, path, token)
        assert r.status_code == status, (path, r.text)
        body = r.json()
        assert r.headers["Content-Type"].startswith("application/json")
        if status == 200:
            assert body["name"] == name
            continue
        assert set(body) == {"status", "message"} and body["status"] == status
        expected = {
            401: "authentication required",
            403: f"you may not use connection '{name}'",
            404: f"connection '{name}' does not exist",
        }[status]
        assert expected in body["message"]
        assert "Traceback" not in r.text
        for secret in data_hub.secrets:
            assert secret not in r.text


@pytest.mark.slow
def test_credentials_carry_what_the_driver_needs(data_hub, tokens):
    import s3fs
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    pg_url, pg_password, pg_user = pg_settings()
    r = get(data_hub, "api/connections/warehouse/credentials", tokens["alice"])
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    wh = r.json()
    assert set(wh) == {"name", "kind", "url", "storage_options", "query_timeout"}
    assert (wh["kind"], wh["storage_options"], wh["query_timeout"]) == ("sql", {}, 12)
    url = make_url(wh["url"])
    assert url.password == pg_password
    assert url.set(password="x") == make_url(pg_url).set(password="x")
    if pg_user:  # a real PostgreSQL: the credentials open it
        engine = sa.create_engine(wh["url"])
        try:
            with engine.connect() as con:
                assert con.execute(sa.text("SELECT current_user")).scalar() == pg_user
        finally:
            engine.dispose()

    lake = get(data_hub, "api/connections/lake/credentials", tokens["alice"]).json()
    assert lake["url"] == "s3://lake/raw/"
    assert lake["storage_options"] == {"endpoint_url": lake["storage_options"]["endpoint_url"],
                                       "key": LAKE_KEY, "secret": LAKE_SECRET}
    fs = s3fs.S3FileSystem(**lake["storage_options"])
    assert fs.cat(lake["url"] + "hello.csv") == b"a,b\n1,2\n"


@pytest.mark.slow
def test_missing_secret_answers_503_and_is_logged_by_name(data_hub, tokens):
    r = get(data_hub, "api/connections/broken/credentials", tokens["bob"])
    assert r.status_code == 503
    assert r.json() == {"status": 503, "message": "connection 'broken' is not configured: missing secret"}
    # Listing and describing still work: only using it fails.
    assert get(data_hub, "api/connections/broken", tokens["bob"]).status_code == 200
    assert f"connection 'broken' is not configured: missing secret '{BROKEN_SECRET_NAME}'" in data_hub.log()


@pytest.fixture(scope="module")
def scoped_token(data_hub, tokens):
    def make(user: str, scopes: list[str]) -> str:
        r = data_hub.request("POST", f"/users/{user}/tokens", tokens["admin"], json={"scopes": scopes})
        assert r.status_code == 201, r.text
        return r.json()["token"]

    return make


@pytest.mark.slow
@pytest.mark.parametrize(
    "scopes, listing, credentials, message",
    [
        (["read:users!user=alice"], 403, 403, f"needs the scopes {CONNECT}, {ACCESS}, which your token lacks"),
        (["read:users", "list:users"], 403, 403, f"needs the scopes {CONNECT}, {ACCESS}, which"),
        ([ACCESS], 403, 403, f"needs the scope {CONNECT}, which"),
        ([READ], 403, 403, f"needs the scopes {CONNECT}, {ACCESS}, which"),  # access to the service too
        ([READ, ACCESS], 200, 403, f"needs the scope {CONNECT}, which"),
        ([CONNECT, ACCESS], 200, 200, None),  # connect implies read
    ],
)
def test_tokens_need_the_custom_scopes(data_hub, scoped_token, scopes, listing, credentials, message):
    owner = "admin" if "read:users" in scopes else "alice"
    token = scoped_token(owner, scopes)
    r = get(data_hub, "api/connections", token)
    assert r.status_code == listing, r.text
    if listing == 403:
        assert "needs the scope" in r.json()["message"]
    r = get(data_hub, "api/connections/public/credentials", token)
    assert r.status_code == credentials, r.text
    if message:
        assert message in r.json()["message"]


@pytest.mark.slow
def test_browser_anonymous_goes_to_login_and_api_says_401(data_hub):
    browser = requests.Session()
    r = browser.get(service_url(data_hub), timeout=30, allow_redirects=False)
    assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"]
    r = browser.get(service_url(data_hub), timeout=30)
    assert urlparse(r.url).path.endswith("/hub/login"), r.url
    r = browser.get(service_url(data_hub, "api/connections"), timeout=30, allow_redirects=False)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("token")


@pytest.mark.slow
def test_browser_session_lists_but_gets_no_credentials(data_hub, tokens):
    browser = Browserless(data_hub)
    assert browser.signup("dora", "doras-long-pass-31").status_code == 200
    browser.login("dora", "doras-long-pass-31")
    page = browser.get("services/data/")
    assert page.status_code == 200 and page.url == service_url(data_hub), page.url
    assert "<b>dora</b>" in page.text and "<code>public</code>" in page.text
    assert "warehouse" not in page.text
    r = browser.get("services/data/api/connections")
    assert [c["name"] for c in r.json()["connections"]] == EVERYONE
    # The OAuth cookie carries only the read scope: credentials need an API token.
    r = browser.get("services/data/api/connections/public/credentials")
    assert r.status_code == 403 and CONNECT in r.json()["message"]
    # Another site's page cannot use the cookie: a cross-site fetch is anonymous.
    r = browser.get("services/data/api/connections", headers={"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 401


@pytest.mark.slow
def test_a_servers_own_token_works_for_its_owner(data_hub, tokens):
    """Spawn alice's server and use the JUPYTERHUB_API_TOKEN its process was given,
    the way `hubforge.client.ServiceClient` does: look the service up, then call it."""
    hub, alice = data_hub, tokens["alice"]
    r = hub.request("POST", "/users/alice/servers/nb", alice, json={"profile": "cpu-small"})
    assert r.status_code in (201, 202), r.text
    try:
        hub.wait_ready("alice", "nb", alice)
        state = hub.request("GET", "/users/alice", tokens["admin"]).json()["servers"]["nb"]["state"]
        environ = dict(
            kv.split("=", 1) for kv in Path(f"/proc/{state['pid']}/environ").read_text().split("\0") if "=" in kv
        )
        server_token = environ["JUPYTERHUB_API_TOKEN"]
        headers = {"Authorization": f"token {server_token}"}
        r = requests.get(environ["JUPYTERHUB_API_URL"] + "/services/data", headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        model = r.json()
        base = model["url"].rstrip("/") + model["prefix"]
        assert base.endswith("/@/space%20word/services/data/")

        r = requests.get(base + "api/connections/warehouse/credentials", headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["url"].startswith("postgresql+psycopg://")
        r = requests.get(base + "api/connections", headers=headers, timeout=30)
        assert [c["name"] for c in r.json()["connections"]] == ["warehouse", "alices", "lake", "public", "broken"]
        # The server token is not alice's full token: it cannot list users or services,
        # or start servers.
        assert hub.request("GET", "/users", server_token).status_code == 403
        assert hub.request("GET", "/services", server_token).status_code == 403
        assert hub.request("POST", "/users/alice/servers/other", server_token).status_code == 403
    finally:
        hub.request("DELETE", "/users/alice/servers/nb", alice, json={"remove": True})
        hub.wait_gone("alice", "nb", alice)


@pytest.mark.slow
def test_notebook_server_previews_through_the_real_service(data_hub, tokens):
    """End to end: the user's server's extension asks the real data service for
    credentials (with its own token) and previews a table, a file and an S3 object;
    what the user may not use stays refused, and no secret reaches a response."""
    hub, alice, bob = data_hub, tokens["alice"], tokens["bob"]
    servers = []
    try:
        for user, token in (("alice", alice), ("bob", bob)):
            r = hub.request("POST", f"/users/{user}/servers/e2e", token, json={"profile": "cpu-small"})
            assert r.status_code in (201, 202), r.text
            servers.append((user, token))
            hub.wait_ready(user, "e2e", token)

        def api(user, token, path):
            return requests.get(hub.server_url(user, "e2e") + "hubforge/api/data/" + path,
                                headers={"Authorization": f"token {token}"}, timeout=60)

        r = api("alice", alice, "connections")
        assert r.status_code == 200, r.text
        assert [c["name"] for c in r.json()["connections"]] == ["warehouse", "alices", "lake", "public", "broken"]
        r = api("alice", alice, "connections/public/tree")
        assert r.status_code == 200, r.text
        assert "readme.txt" in r.text
        if os.environ.get("HUBFORGE_TEST_PG_URL"):
            r = api("alice", alice, "connections/warehouse/tree")
            assert r.status_code == 200, r.text
            for secret in hub.secrets:
                assert secret not in r.text
        # bob's server, bob's token: the warehouse is not his.
        r = api("bob", bob, "connections/warehouse/preview?path=public.anything")
        assert r.status_code == 403, r.text
        assert "warehouse" in r.json()["message"]
        # alice may not use bob's server at all.
        assert api("bob", alice, "connections").status_code == 403
    finally:
        for user, token in servers:
            hub.request("DELETE", f"/users/{user}/servers/e2e", token, json={"remove": True})
            hub.wait_gone(user, "e2e", token)


@pytest.mark.slow
def test_one_log_line_per_request_and_no_secret_in_any_log(data_hub, tokens):
    # After every test above (pytest runs this module's tests in order).
    get(data_hub, "api/connections/lake/credentials", tokens["alice"])
    get(data_hub, "api/connections/lake/credentials", tokens["bob"])
    r = get(data_hub, "api/connections/evil%0A%5BE%20forged", tokens["bob"])
    assert r.status_code == 404 and r.json()["message"] == "connection 'evil\n[E forged' does not exist"
    def logged():
        # Wait for the last request's line: the service's output reaches the log in order.
        text = data_hub.log()
        return text if "connection=evil" in text else None

    log = wait_for(logged, 10, what="the access log lines")
    assert "200 GET /@/space%20word/services/data/api/connections/lake/credentials user=alice connection=lake" in log
    assert (
        "403 GET /@/space%20word/services/data/api/connections/lake/credentials user=bob connection=lake"
    ) in log
    assert "connection=evil\\n[E forged" in log
    assert not any(line.startswith("[E forged") for line in log.splitlines()), "a request forged a log line"
    for secret in data_hub.secrets:
        assert secret not in log, "a secret reached the hub's log"
    for token in tokens.values():
        assert token not in log
    assert "Non-jsonable" not in log
    # JupyterHub 5 keeps each service's environment in its database: only names there.
    database = (Path(data_hub.settings["data_dir"]) / "jupyterhub.sqlite").read_bytes()
    assert b"HF_TEST_LAKE_KEY (from the hub's environment)" in database
    for secret in data_hub.secrets:
        assert secret.encode() not in database, "a secret reached the hub's database"


@pytest.mark.slow
def test_the_hub_refuses_an_invalid_catalogue(tmp_path):
    catalogue = tmp_path / "cat.yaml"
    catalogue.write_text("connections:\n  x:\n    kind: sql\n    url: sqlite://\n    pasword: {env: P}\n")
    hub = HubProcess(tmp_path, data_connections=str(catalogue), gpus="none")
    with pytest.raises(ProcessExited):
        hub.start(timeout=60)
    hub.stop()
    assert f"{catalogue}:5: connection 'x': field 'pasword': unknown field for kind 'sql'" in hub.log()
