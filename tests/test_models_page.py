"""The Models page (``/services/models/``).

Two layers:

* :class:`hubforge.models.page.ModelsPage` served by the real service library with a hub
  identity double (`FixedIdentityOAuth`): escaping, the XSRF token and the
  Content-Security-Policy of the page, the admin switch, anonymous and unscoped callers.
* The page in headless Chromium against the session's real hub and ``models`` service
  under the hostile base URL: a user's model (two versions of a real scikit-learn model)
  in the list with its endpoint, its versions, a promotion and a canary made through the
  page (and not without the page's XSRF token), the traffic charts drawn from real
  predictions, another user who sees none of it, an admin's "all users" view, a model
  deleted through the page, and an anonymous visitor sent to the hub's login.
"""

from __future__ import annotations

import re
import warnings
from html import unescape
from urllib.parse import urlparse

import pytest
import requests

from conftest import ADMIN_PASSWORD
from hubforge.models.archive import pack
from hubprocess import Browserless, free_port, wait_for
from test_browser import page  # noqa: F401  (the Chromium page fixture, reused)

# --- the page handler, with the hub's identity answered by a double ---------------------------

PREFIX = "/@/space%20word/services/models/"
READ = "custom:hubforge:models:read"
WRITE = "custom:hubforge:models:write"
ACCESS = "access:services!service=models"


def fixed_identity_oauth(identity: dict | None):
    """A `HubOAuth` that answers every request with `identity` (None: anonymous)."""
    from jupyterhub.services.auth import HubOAuth

    class FixedIdentityOAuth(HubOAuth):
        def get_user(self, handler, *, sync=True):
            async def answer():
                return dict(identity) if identity is not None else None

            return answer()

    return FixedIdentityOAuth(
        api_url="http://127.0.0.1:9/hub/api", api_token="service-token-for-tests",
        oauth_client_id="service-models", base_url=PREFIX, access_scopes={ACCESS},
        oauth_redirect_uri=f"http://127.0.0.1:9{PREFIX}oauth_callback",
        oauth_authorization_url="/@/space%20word/hub/api/oauth2/authorize",
    )


async def fetch_page(identity: dict | None):
    from tornado.httpclient import AsyncHTTPClient
    from tornado.httpserver import HTTPServer

    from hubforge.models.page import ModelsPage
    from hubforge.services.auth import make_app

    app = make_app([(r"", ModelsPage)], prefix=PREFIX, hub_auth=fixed_identity_oauth(identity))
    server = HTTPServer(app)
    port = free_port()
    server.listen(port, "127.0.0.1")
    try:
        return await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}{PREFIX}", follow_redirects=False, raise_error=False,
        )
    finally:
        server.stop()


def user(name: str, admin: bool = False, scopes=(READ, WRITE, ACCESS)) -> dict:
    return {"kind": "user", "name": name, "admin": admin, "groups": [], "scopes": list(scopes)}


def meta(html: str, name: str) -> str:
    found = re.search(rf'<meta name="{name}" content="([^"]*)">', html)
    assert found, f"no meta {name}"
    return unescape(found.group(1))


async def test_page_embeds_the_caller_escaped_with_the_xsrf_token_and_a_strict_policy():
    hostile = 'eve"><script>alert(1)</script>'
    r = await fetch_page(user(hostile))
    assert r.code == 200, r.body
    html = r.body.decode()
    assert "<script>alert(1)" not in html
    assert meta(html, "hubforge-user") == hostile
    assert meta(html, "hubforge-admin") == "false"
    assert meta(html, "hubforge-prefix") == PREFIX
    assert 'id="all-users"' not in html
    # The token in the page is the one JupyterHub's XSRF check compares with: the value
    # of the _xsrf cookie set on this page view (for the prefix).
    cookie = next(c for c in r.headers.get_list("Set-Cookie") if c.startswith("_xsrf="))
    assert meta(html, "hubforge-xsrf") == cookie.split(";")[0].removeprefix("_xsrf=") != ""
    # One script and one style sheet, both carrying the nonce the policy allows; nothing
    # is loaded from anywhere else.
    policy = r.headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy).group(1)
    assert f"style-src 'nonce-{nonce}'" in policy and "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    assert re.findall(r"<script\b[^>]*>", html) == [f'<script nonce="{nonce}">']
    assert re.findall(r"<style\b[^>]*>", html) == [f'<style nonce="{nonce}">']
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert not re.search(r"\sstyle\s*=", html)  # the policy refuses inline style attributes
    assert not re.search(r"\son[a-z]+\s*=", html)  # and inline event handlers
    # API data reaches the document as text only.
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html and "document.write" not in html
    assert r.headers["Cache-Control"] == "no-store"
    again = await fetch_page(user(hostile))
    assert again.headers["Content-Security-Policy"] != policy


async def test_admins_get_the_all_users_switch():
    r = await fetch_page(user("root", admin=True))
    assert r.code == 200
    html = r.body.decode()
    assert meta(html, "hubforge-admin") == "true"
    assert '<input type="checkbox" id="all-users">' in html


async def test_anonymous_goes_to_the_hub_login_and_a_caller_without_the_scope_gets_403():
    r = await fetch_page(None)
    assert r.code == 302
    assert r.headers["Location"].startswith("/@/space%20word/hub/api/oauth2/authorize?")
    r = await fetch_page(user("mallory", scopes=[ACCESS]))
    assert r.code == 403 and READ in r.body.decode()


# --- in Chromium, against the session hub's real models service ------------------------------

OWNER = "pgowner"
OTHER = "pgother"
PASSWORD = "models-page-pass-7741"
MODEL = "pg-linear"
DESCRIPTION = '<b>bold</b> & <img src=x onerror="alert(1)"> y = 2x'
# Promoting or adding a canary loads the version first: seconds, more on a busy machine.
LOAD_MS = 120_000


def service_url(hub, path: str = "") -> str:
    return f"{hub.url}services/models/{path}"


def models_api(hub, method: str, path: str, token: str, **kw) -> requests.Response:
    kw.setdefault("timeout", 300)
    return hub.service_request(method, "models", path, token, **kw)


def approved_user(hub, admin_token: str, name: str) -> str:
    """Sign `name` up with PASSWORD, have the admin approve them; return an API token."""
    assert Browserless(hub).signup(name, PASSWORD).status_code == 200
    admin = Browserless(hub)
    admin.login("admin", ADMIN_PASSWORD)
    r = admin.get(f"hub/authorize/{name}")  # NativeAuthenticator's approval (a toggle)
    assert r.status_code == 200, r.text
    return hub.make_user(admin_token, name)


@pytest.fixture(scope="module")
def tokens(hub, admin_token):
    return {name: approved_user(hub, admin_token, name) for name in (OWNER, OTHER)}


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Two versions of a tiny regression, as the archives an upload sends: y = 2x, y = 3x."""
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from hubforge.models.client import save

    root = tmp_path_factory.mktemp("page-models")
    example = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    blobs = []
    for slope in (2, 3):
        model = LinearRegression().fit(example, slope * example["x"])
        with warnings.catch_warnings():
            # MLflow warns about its own type hints and pickles as it imports and saves:
            # not this code's warnings to fix.
            warnings.simplefilter("ignore")
            blobs.append(pack(save(model, str(root / f"slope-{slope}"), input_example=example)))
    return blobs


def publish(hub, token: str, name: str, blob: bytes, description: str = "") -> dict:
    r = models_api(hub, "POST", f"api/models/{name}/versions", token, data=blob,
                   params={"description": description}, headers={"Content-Type": "application/gzip"})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def model(hub, tokens, archives):
    """OWNER's model with two versions (the second the latest, so the default route)."""
    token = tokens[OWNER]
    publish(hub, token, MODEL, archives[0], DESCRIPTION)
    publish(hub, token, MODEL, archives[1], "y = 3x")
    try:
        yield models_api(hub, "GET", f"api/models/{MODEL}", token).json()
    finally:
        models_api(hub, "DELETE", f"api/models/{MODEL}", token)


def sign_in(tab, hub, name: str, password: str = PASSWORD) -> None:
    """Open the Models page: the hub's login, then back through OAuth to the page."""
    tab.goto(service_url(hub))
    tab.wait_for_url(lambda url: "/hub/login" in url)
    tab.fill("#username_input", name)
    tab.fill("#password_input", password)
    tab.click("#login_submit")
    tab.wait_for_url(lambda url: url.split("?")[0].split("#")[0] == service_url(hub))


def page_problems(tab) -> list[str]:
    """Uncaught script errors and Content-Security-Policy refusals, as they happen."""
    problems: list[str] = []

    def on_console(message):
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            problems.append(message.text)

    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on("console", on_console)
    return problems


def page_fetch(tab, method: str, path: str, xsrf: bool) -> int:
    """The status of a script's request from the page, with or without its XSRF token."""
    return tab.evaluate(
        """([method, path, xsrf]) => {
            const meta = (n) => document.querySelector('meta[name="' + n + '"]').content;
            const headers = xsrf ? {"X-XSRFToken": meta("hubforge-xsrf")} : {};
            return fetch(meta("hubforge-prefix") + path, {method, headers, credentials: "same-origin"})
                .then((r) => r.status);
        }""",
        [method, path, xsrf],
    )


@pytest.mark.slow
@pytest.mark.browser
def test_owner_sees_the_model_promotes_sets_a_canary_and_sees_its_traffic(hub, tokens, model, page):  # noqa: F811
    from playwright.sync_api import expect

    token = tokens[OWNER]
    problems = page_problems(page)
    sign_in(page, hub, OWNER)
    expect(page.locator("#main")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#whoami")).to_have_text(OWNER)
    expect(page.locator("#all-users")).to_have_count(0)

    # The list: latest version, default route, sharing, what is loaded, the endpoint.
    row = page.locator(f'#models-body tr[data-model="{MODEL}"]')
    expect(row.locator(".latest")).to_contain_text("v2")
    expect(row.locator(".aliases")).to_have_text("default: latest (v2)")
    expect(row.locator(".shared")).to_have_text("private")
    expect(row.locator(".loaded")).to_contain_text("v2 ready")
    expect(row.locator(".url")).to_have_text(model["endpoint"])
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    row.get_by_role("button", name=f"Copy the endpoint URL of {MODEL}").click()
    expect(page.locator("#notice-text")).to_have_text(f"Copied {model['endpoint']}")
    assert page.evaluate("navigator.clipboard.readText()") == model["endpoint"]
    # The description is the user's text, shown as text.
    expect(row).to_contain_text(DESCRIPTION)
    expect(row.locator("b, img")).to_have_count(0)

    # The model's panel: its versions.
    row.get_by_role("button", name=f"Open model {MODEL}").click()
    expect(page.locator("#model-panel")).to_be_visible()
    expect(page.locator("#model-heading")).to_have_text(f"Model {MODEL}")
    versions = page.locator("#versions-body tr")
    expect(versions).to_have_count(2)
    expect(versions.nth(0)).to_have_attribute("data-version", "2")
    expect(versions.nth(0).locator(".state")).to_have_text("ready")
    expect(versions.nth(0)).to_contain_text("python_function, sklearn")
    expect(versions.nth(0)).to_contain_text(OWNER)
    expect(versions.nth(1)).to_have_attribute("data-version", "1")
    expect(page.locator("#aliases-empty")).to_be_visible()

    # A script's change without the page's XSRF token is not the user's: refused.
    assert page_fetch(page, "PUT", f"api/models/{MODEL}/aliases/production", xsrf=False) in (401, 403)
    assert models_api(hub, "GET", f"api/models/{MODEL}", token).json()["aliases"] == {}

    # Promote v1 to production through the form.
    versions.nth(1).get_by_role("button", name="Promote v1").click()
    form = page.locator("#promote-form")
    expect(form.locator("select[name=version]")).to_have_value("1")
    expect(form.locator("input[name=alias]")).to_have_value("production")
    form.get_by_role("button", name="Promote").click()
    expect(page.locator("#notice-text")).to_have_text(f"Promoted: {MODEL} production: v1.", timeout=LOAD_MS)
    assert models_api(hub, "GET", f"api/models/{MODEL}", token).json()["aliases"] == {"production": 1}
    expect(row.locator(".aliases")).to_have_text("production: v1")
    expect(page.locator('#aliases-body tr[data-alias="production"] .serves')).to_have_text("v1")
    expect(page.locator("#history-body tr").first).to_contain_text("promote")

    # A canary: 10% of production's traffic to v2, shown as the split with its bar.
    canary = page.locator("#canary-form")
    canary.locator("select[name=alias]").select_option("production")
    canary.locator("select[name=version]").select_option("2")
    canary.locator("input[name=percent]").fill("10")
    canary.get_by_role("button", name="Set canary").click()
    expect(row.locator(".aliases")).to_have_text("production: v1 (90%) / v2 (10%)", timeout=LOAD_MS)
    expect(row.locator(".aliases svg.split rect")).to_have_count(2)
    assert models_api(hub, "GET", f"api/models/{MODEL}", token).json()["canaries"] == {
        "production": {"version": 2, "percent": 10.0}}

    # Real predictions (as the owner's API token: the default route, then v2 by number)
    # show in the charts within a refresh or two.
    for i in range(6):
        r = models_api(hub, "POST", f"{MODEL}/predict", token, json={"dataframe_records": [{"x": float(i)}]})
        assert r.status_code == 200, r.text
    r = models_api(hub, "POST", f"{MODEL}@v2/predict", token, json={"dataframe_records": [{"x": 1.0}]})
    assert r.json() == {"predictions": [pytest.approx(3.0)]}
    rate_points = page.locator('#rate-chart circle.point[data-field="rate"]')
    expect(rate_points.first).to_be_attached(timeout=20_000)
    expect(page.locator('#rate-chart polyline.series[data-version="1"]')).to_have_count(1)
    expect(page.locator('#latency-chart circle.point[data-field="p99_ms"][data-version="2"]').first).to_be_attached()
    expect(page.locator("#legend")).to_contain_text("v1")
    expect(page.locator("#stats-summary")).to_contain_text("requests/s")
    assert int(page.locator("#rate-chart").get_attribute("data-points")) >= 2

    expect(page.locator("#error")).to_be_hidden()
    assert problems == []


@pytest.mark.slow
@pytest.mark.browser
def test_another_user_sees_nothing_of_it(hub, tokens, model, page):  # noqa: F811
    from playwright.sync_api import expect

    problems = page_problems(page)
    sign_in(page, hub, OTHER)
    expect(page.locator("#main")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#whoami")).to_have_text(OTHER)
    expect(page.locator("#models-empty")).to_be_visible()
    expect(page.locator(f'tr[data-model="{MODEL}"]')).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text(MODEL)
    # With a valid session and token, the owner's model is absent for this user.
    assert page_fetch(page, "GET", f"api/models/{MODEL}", xsrf=True) == 404
    assert page_fetch(page, "DELETE", f"api/models/{MODEL}", xsrf=True) == 404
    assert models_api(hub, "GET", f"api/models/{MODEL}", tokens[OTHER]).status_code == 404
    # A link to it opens nothing, with a readable message.
    page.goto(service_url(hub) + f"#model={MODEL}")
    expect(page.locator("#notice-text")).to_contain_text("no longer exists")
    expect(page.locator("#model-panel")).to_be_hidden()
    assert models_api(hub, "GET", f"api/models/{MODEL}", tokens[OWNER]).status_code == 200
    assert problems == []


@pytest.mark.slow
@pytest.mark.browser
def test_admin_sees_everyones_models_with_their_owner(hub, admin_token, model, page):  # noqa: F811
    from playwright.sync_api import expect

    problems = page_problems(page)
    sign_in(page, hub, "admin", ADMIN_PASSWORD)
    expect(page.locator("#main")).to_have_attribute("aria-busy", "false")
    row = page.locator(f'#models-body tr[data-model="{MODEL}"]')
    expect(row).to_have_count(0)  # the admin's own list first
    page.check("#all-users")
    expect(row.locator(".owner-col")).to_have_text(OWNER)
    expect(row.locator(".owner-col")).to_be_visible()
    assert urlparse(page.url).path.endswith("/services/models/")
    assert problems == []


@pytest.mark.slow
@pytest.mark.browser
def test_an_error_is_shown_readably_and_a_model_is_deleted_through_the_page(hub, tokens, archives, page):  # noqa: F811
    from playwright.sync_api import expect

    token = tokens[OWNER]
    name = "pg-doomed"
    publish(hub, token, name, archives[0])
    try:
        problems = page_problems(page)
        sign_in(page, hub, OWNER)
        page.locator(f'#models-body tr[data-model="{name}"]').get_by_role("button", name=f"Open model {name}").click()
        expect(page.locator("#versions-body tr")).to_have_count(1)
        # The only version cannot go: the service's 409, in the banner.
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Delete v1").click()
        expect(page.locator("#error")).to_be_visible()
        expect(page.locator("#error-text")).to_have_text(
            f"version 1 is the only version of model {name}; delete the model instead (HTTP 409)")
        page.get_by_role("button", name="Dismiss").click()
        expect(page.locator("#error")).to_be_hidden()

        # Declining the confirmation deletes nothing; accepting it deletes the model.
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.get_by_role("button", name="Delete this model").click()
        assert models_api(hub, "GET", f"api/models/{name}", token).status_code == 200
        messages: list[str] = []

        def accept(dialog):
            messages.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        page.get_by_role("button", name="Delete this model").click()
        expect(page.locator("#notice-text")).to_have_text(f"Model {name} deleted.")
        assert messages == [f"Delete the model {name} with all its versions and endpoints?"]
        expect(page.locator("#model-panel")).to_be_hidden()
        expect(page.locator(f'#models-body tr[data-model="{name}"]')).to_have_count(0)
        assert models_api(hub, "GET", f"api/models/{name}", token).status_code == 404
        assert problems == []
    finally:
        models_api(hub, "DELETE", f"api/models/{name}", token)


@pytest.mark.slow
def test_anonymous_visitors_go_to_the_hub_login(hub):
    r = requests.get(service_url(hub), allow_redirects=False, timeout=30)
    assert r.status_code == 302
    assert "/hub/api/oauth2/authorize?" in r.headers["Location"]
    final = wait_for(lambda: requests.get(service_url(hub), timeout=30), 30, what="the login page")
    assert urlparse(final.url).path == urlparse(hub.url).path + "hub/login"
    assert requests.get(service_url(hub, "api/models"), timeout=30).status_code in (401, 403)
