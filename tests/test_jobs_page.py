"""The Jobs page (``/services/jobs/``) and the sandboxed rendering of output notebooks.

Three layers:

* :func:`hubforge.jobs.render.render_notebook_html` on small notebooks: every kind of
  output shows, nothing is fetched from the network, scripts-only outputs fall back to
  their static forms.
* :class:`hubforge.jobs.page.JobsPage` served by the real service library with a hub
  identity double (`FixedIdentityOAuth`): escaping, the XSRF token and the
  Content-Security-Policy of the page, the admin switch, anonymous and unscoped callers.
* The page in headless Chromium against the session's real hub and ``jobs`` service
  under the hostile base URL: a user's job with a real run, its chart, log, output and
  download, Pause through the page (and not without the page's XSRF token), another
  user who sees none of it, an admin's "all users" view.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlparse

import pytest
import requests

from conftest import ADMIN_PASSWORD
from hubforge.jobs.render import render_notebook_html
from hubprocess import Browserless, free_port, wait_for
from test_browser import page  # noqa: F401  (the Chromium page fixture, reused)

# --- rendering output notebooks (no hub) -----------------------------------------------------


def code_cell(source: str, outputs: list, cell_id: str | None = None) -> dict:
    cell = {"cell_type": "code", "metadata": {}, "source": source, "outputs": outputs, "execution_count": 1}
    if cell_id:
        cell["id"] = cell_id
    return cell


def notebook(cells: list, minor: int = 5, **metadata) -> dict:
    return {"nbformat": 4, "nbformat_minor": minor, "metadata": metadata, "cells": cells}


HTML_OUTPUT = '<div class="from-output">a table from <b>pandas</b></div><script>document.title = "ran"</script>'


def output_notebook() -> dict:
    return notebook([
        {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": "# Nightly *report*"},
        code_cell("print('hello stream')", [{"output_type": "stream", "name": "stdout", "text": "hello stream\n"}], "s"),
        code_cell("1 / 0", [{
            "output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
            "traceback": ["\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"],
        }], "e"),
        code_cell("display(HTML(...))", [{
            "output_type": "display_data", "metadata": {},
            "data": {"text/html": HTML_OUTPUT, "text/plain": "<IPython.core.display.HTML object>"},
        }], "h"),
    ], papermill={"input_path": "reports/nightly.ipynb"})


def test_render_shows_every_output_and_fetches_nothing():
    html = render_notebook_html(output_notebook())
    assert html.lstrip().lower().startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert "Nightly" in html and "<em>report</em>" in html
    assert "hello stream" in html
    assert "ZeroDivisionError" in html and "division by zero" in html
    assert '<div class="from-output">a table from <b>pandas</b></div>' in html
    assert "<title>nightly</title>" in html  # from papermill's input path
    # No script is loaded from anywhere (no require.js, MathJax, Mermaid or widget
    # manager from a CDN), and nothing else points off the document either: the only
    # script is the output's own, which the sandbox keeps from running.
    scripts = re.findall(r"<script\b[^>]*>", html, flags=re.IGNORECASE)
    assert scripts == ["<script>"], scripts
    assert not re.search(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", html, flags=re.IGNORECASE)
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?(https?:)?//", html, flags=re.IGNORECASE)
    assert not re.search(r"url\(\s*[\"']?(https?:)?//", html, flags=re.IGNORECASE)
    assert "@import" not in html


def test_render_reads_the_notebook_as_saved_on_disk():
    """Papermill and Jupyter save multi-line sources and outputs as lists of lines."""
    nb = notebook([
        {"cell_type": "markdown", "id": "m", "metadata": {}, "source": ["# Saved\n", "as *lines*"]},
        {"cell_type": "code", "id": "c", "metadata": {}, "execution_count": 1,
         "source": ["%%time\n", "total = 1 + 1\n", "print(total)"],
         "outputs": [
             {"output_type": "stream", "name": "stdout", "text": ["first line\n", "second line\n"]},
             {"output_type": "execute_result", "execution_count": 1, "metadata": {},
              "data": {"text/html": ['<p class="saved">\n', "html in lines</p>"], "text/plain": ["2"]}},
         ]},
    ], title="Saved title")
    html = render_notebook_html(nb)
    assert "<em>lines</em>" in html and "first line\nsecond line" in html
    assert '<p class="saved">\nhtml in lines</p>' in html
    assert "<title>Saved title</title>" in html


def test_outputs_that_need_scripts_show_their_static_form():
    nb = notebook([code_cell("slider", [
        {"output_type": "display_data", "metadata": {}, "data": {
            "application/vnd.jupyter.widget-view+json": {"model_id": "m1", "version_major": 2, "version_minor": 0},
            "text/plain": "IntSlider(value=3)",
        }},
        {"output_type": "display_data", "metadata": {}, "data": {
            "application/javascript": "element.text('drawn by a script')", "text/plain": "a static fallback",
        }},
    ], "w")], widgets={"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2, "version_minor": 0}})
    html = render_notebook_html(nb)
    assert "IntSlider(value=3)" in html and "a static fallback" in html
    assert "drawn by a script" not in html
    assert not re.search(r"<script\b", html, flags=re.IGNORECASE)


def test_render_titles_leaves_its_input_alone_and_refuses_a_non_notebook():
    nb = notebook([code_cell("x = 1", [])])  # nbformat 4.5 without a cell id
    before = json.dumps(nb, sort_keys=True)
    html = render_notebook_html(nb, title='run 7 of <b>"x"</b>')
    assert '<title>run 7 of &lt;b&gt;"x"&lt;/b&gt;</title>' in html
    assert json.dumps(nb, sort_keys=True) == before
    assert "<title>Output notebook</title>" in render_notebook_html(notebook([], minor=4))
    with pytest.raises(ValueError, match="not a valid notebook"):
        render_notebook_html(notebook([{"cell_type": "code", "source": "x", "outputs": "not a list"}]))
    with pytest.raises(ValueError, match="JSON object"):
        render_notebook_html(["cells"])


def test_the_exporter_is_built_once():
    from hubforge.jobs import render

    render_notebook_html(notebook([]))
    first = render._exporter
    assert first is not None
    render_notebook_html(output_notebook())
    assert render._exporter is first


# --- the page handler, with the hub's identity answered by a double ---------------------------

PREFIX = "/@/space%20word/services/jobs/"
READ = "custom:hubforge:jobs:read"
WRITE = "custom:hubforge:jobs:write"
ACCESS = "access:services!service=jobs"


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
        oauth_client_id="service-jobs", base_url=PREFIX, access_scopes={ACCESS},
        oauth_redirect_uri=f"http://127.0.0.1:9{PREFIX}oauth_callback",
        oauth_authorization_url="/@/space%20word/hub/api/oauth2/authorize",
    )


async def fetch_page(identity: dict | None):
    from tornado.httpclient import AsyncHTTPClient
    from tornado.httpserver import HTTPServer

    from hubforge.jobs.page import JobsPage
    from hubforge.services.auth import make_app

    app = make_app([(r"", JobsPage)], prefix=PREFIX, hub_auth=fixed_identity_oauth(identity))
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
    from html import unescape

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
    assert f"Path={PREFIX}" in cookie
    # One script and one style sheet, both carrying the nonce the policy allows.
    policy = r.headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy).group(1)
    assert f"style-src 'nonce-{nonce}'" in policy and "default-src 'none'" in policy
    assert "connect-src 'self'" in policy and "frame-ancestors 'self'" in policy
    assert re.findall(r"<script\b[^>]*>", html) == [f'<script nonce="{nonce}">']
    assert re.findall(r"<style\b[^>]*>", html) == [f'<style nonce="{nonce}">']
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert r.headers["Cache-Control"] == "no-store"
    # A fresh nonce per page view.
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
    r = await fetch_page(user("mallory", scopes=[READ]))
    assert r.code == 403 and ACCESS in r.body.decode()


# --- in Chromium, against the session hub's real jobs service ---------------------------------

OWNER = "jpowner"
OTHER = "jpother"
PASSWORD = "jobs-page-pass-2931"
JOB_NAME = "jobs-page-report"
# A run starts a kernel as the user's system account: seconds, or a minute when slow.
RUN_TIMEOUT = 180


def service_url(hub, path: str = "") -> str:
    return f"{hub.url}services/jobs/{path}"


def jobs_api(hub, method: str, path: str, token: str, **kw) -> requests.Response:
    kw.setdefault("timeout", 60)
    return requests.request(method, service_url(hub, path), headers={"Authorization": f"token {token}"}, **kw)


def approved_user(hub, admin_token: str, name: str) -> str:
    """Sign `name` up with PASSWORD, have the admin approve them; return an API token."""
    assert Browserless(hub).signup(name, PASSWORD).status_code == 200
    admin = Browserless(hub)
    admin.login("admin", ADMIN_PASSWORD)
    # NativeAuthenticator's approval link (it toggles: each name is approved once).
    r = admin.get(f"hub/authorize/{name}")
    assert r.status_code == 200, r.text
    return hub.make_user(admin_token, name)


def parameterised_notebook() -> dict:
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"cell_type": "code", "id": "params", "metadata": {"tags": ["parameters"]},
             "source": "greeting = 'hello'\nrepeat = 1", "outputs": [], "execution_count": None},
            {"cell_type": "code", "id": "work", "metadata": {},
             "source": "print(' '.join([f'{greeting} from the jobs page test'] * repeat))",
             "outputs": [], "execution_count": None},
        ],
    }


@pytest.fixture(scope="module")
def tokens(hub, admin_token):
    return {name: approved_user(hub, admin_token, name) for name in (OWNER, OTHER)}


@pytest.fixture(scope="module")
def job_and_run(hub, tokens):
    """OWNER's job (a daily cron that does not fire during the tests) and one finished run."""
    token = tokens[OWNER]
    r = jobs_api(hub, "POST", "api/jobs", token, json={
        "name": JOB_NAME,
        "notebook": {"path": "jobs-page.ipynb", "content": parameterised_notebook()},
        "trigger": {"type": "cron", "cron": "0 6 * * *", "timezone": "Europe/Paris"},
        "parameters": {"greeting": "bonjour", "repeat": 2},
    })
    assert r.status_code == 201, r.text
    job = r.json()
    try:
        r = jobs_api(hub, "POST", f"api/jobs/{job['id']}/runs", token, json={})
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]

        def finished():
            run = jobs_api(hub, "GET", f"api/runs/{run_id}", token).json()
            return run if run["status"] not in ("queued", "running") else None

        run = wait_for(finished, RUN_TIMEOUT, interval=1, what=f"run {run_id} of the jobs page's job to finish")
        log = jobs_api(hub, "GET", f"api/runs/{run_id}/log", token).text
        assert run["status"] == "succeeded", f"run {run_id} {run['status']}: {run['reason']}\nlog:\n{log}"
        yield job, run
    finally:
        jobs_api(hub, "DELETE", f"api/jobs/{job['id']}", token)


def sign_in(tab, hub, name: str, password: str = PASSWORD) -> None:
    """Open the Jobs page: the hub's login, then back through OAuth to the page."""
    tab.goto(service_url(hub))
    tab.wait_for_url(lambda url: "/hub/login" in url)
    tab.fill("#username_input", name)
    tab.fill("#password_input", password)
    tab.click("#login_submit")
    tab.wait_for_url(lambda url: url.split("?")[0] == service_url(hub))


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
def test_owner_sees_job_run_chart_log_output_and_pauses_it(hub, tokens, job_and_run, page):  # noqa: F811
    from playwright.sync_api import expect

    job, run = job_and_run
    token = tokens[OWNER]
    problems = page_problems(page)
    sign_in(page, hub, OWNER)
    expect(page.locator("#main")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#whoami")).to_have_text(OWNER)
    expect(page.locator("#error")).to_be_hidden()

    row = page.locator(f'#jobs-body tr[data-job-id="{job["id"]}"]')
    expect(row).to_contain_text(JOB_NAME)
    expect(row).to_contain_text("jobs-page.ipynb")
    expect(row).to_contain_text("Every day at 06:00, Europe/Paris time")
    expect(row).to_contain_text("0 6 * * *")
    expect(row.locator(".job-state")).to_have_text("active")

    run_row = page.locator(f'#runs-body tr[data-run-id="{run["id"]}"]')
    expect(run_row).to_have_attribute("data-status", "succeeded")
    expect(run_row.locator(".run-status")).to_have_text("succeeded")
    expect(run_row).to_contain_text(JOB_NAME)
    expect(run_row).to_contain_text("manual")

    bar = page.locator(f'figure[data-job-id="{job["id"]}"] svg.chart rect.bar')
    expect(bar).to_have_count(1)
    expect(bar).to_have_attribute("data-status", "succeeded")
    expect(bar).to_have_attribute("data-run-id", str(run["id"]))

    # The log, as the REST API serves it, in the page.
    log = jobs_api(hub, "GET", f"api/runs/{run['id']}/log", token)
    assert log.status_code == 200 and log.headers["Content-Type"].startswith("text/plain"), log.text
    first_line = next(line for line in log.text.splitlines() if line.strip())
    run_row.get_by_role("button", name="Log").click()
    expect(page.locator("#log-panel")).to_be_visible()
    expect(page.locator("#log-text")).to_contain_text(first_line.strip())

    # The rendered output in a sandboxed frame, and the notebook itself as a download.
    run_row.get_by_role("button", name="Output").click()
    frame = page.locator("#output-frame")
    expect(frame).to_have_attribute("sandbox", "")
    expect(page.frame_locator("#output-frame").locator("body")).to_contain_text(
        "bonjour from the jobs page test bonjour from the jobs page test")
    with page.expect_download() as download:
        run_row.get_by_role("link", name="Download").click()
    with open(download.value.path()) as f:
        output = json.load(f)
    assert output["nbformat"] == 4
    assert "bonjour from the jobs page test" in json.dumps(output["cells"])

    # A script's change without the page's XSRF token is not the user's: refused.
    assert page_fetch(page, "POST", f"api/jobs/{job['id']}/pause", xsrf=False) in (401, 403)
    assert jobs_api(hub, "GET", f"api/jobs/{job['id']}", token).json()["paused"] is False

    row.get_by_role("button", name="Pause").click()
    expect(row.locator(".job-state")).to_have_text("paused")
    expect(row.get_by_role("button", name="Resume")).to_be_visible()
    assert jobs_api(hub, "GET", f"api/jobs/{job['id']}", token).json()["paused"] is True
    expect(page.locator("#error")).to_be_hidden()
    assert problems == []


@pytest.mark.slow
@pytest.mark.browser
def test_another_user_sees_nothing_of_it(hub, tokens, job_and_run, page):  # noqa: F811
    from playwright.sync_api import expect

    job, run = job_and_run
    problems = page_problems(page)
    sign_in(page, hub, OTHER)
    expect(page.locator("#main")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#whoami")).to_have_text(OTHER)
    expect(page.locator("#jobs-empty")).to_be_visible()
    expect(page.locator("#runs-empty")).to_be_visible()
    expect(page.locator(f'tr[data-job-id="{job["id"]}"]')).to_have_count(0)
    expect(page.locator(f'tr[data-run-id="{run["id"]}"]')).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text(JOB_NAME)
    expect(page.locator("#all-users")).to_have_count(0)
    # With a valid session and token, the owner's job is absent for this user.
    assert page_fetch(page, "POST", f"api/jobs/{job['id']}/pause", xsrf=True) == 404
    assert page_fetch(page, "GET", f"api/runs/{run['id']}/log", xsrf=True) == 404
    assert jobs_api(hub, "GET", f"api/jobs/{job['id']}", tokens[OTHER]).status_code == 404
    assert problems == []


@pytest.mark.slow
@pytest.mark.browser
def test_admin_sees_everyones_jobs_with_their_owner(hub, admin_token, job_and_run, page):  # noqa: F811
    from playwright.sync_api import expect

    job, run = job_and_run
    problems = page_problems(page)
    sign_in(page, hub, "admin", ADMIN_PASSWORD)
    expect(page.locator("#main")).to_have_attribute("aria-busy", "false")
    row = page.locator(f'#jobs-body tr[data-job-id="{job["id"]}"]')
    # The admin's own list first: the owner's job is not in it.
    expect(row).to_have_count(0)
    page.check("#all-users")
    expect(row).to_contain_text(JOB_NAME)
    expect(row.locator(".owner-col")).to_have_text(OWNER)
    expect(row.locator(".owner-col")).to_be_visible()
    expect(page.locator(f'#runs-body tr[data-run-id="{run["id"]}"] .owner-col')).to_have_text(OWNER)
    expect(page.locator(f'figure[data-job-id="{job["id"]}"] svg.chart rect.bar')).to_have_count(1)
    assert urlparse(page.url).path.endswith("/services/jobs/")
    assert problems == []
