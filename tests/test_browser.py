"""The whole user path in a real browser: login, spawn form, JupyterLab, a notebook.

Headless Debian Chromium driven by Playwright against the session's real hub and
proxy under the hostile base URL. It checks what only a browser can: the spawn
form's script (a profile's options are enabled only while it is selected, "Other…"
reveals the text box), the redirects through the progress page into JupyterLab,
and a kernel that runs inside the chosen profile and has the ``%hubforge`` magic.
Screenshots of the spawn form and of JupyterLab go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from conftest import ADMIN_PASSWORD
from hubprocess import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
# The network is closed here: no GPU, no QUIC, no background fetches or updates.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
SERVER = "browser"
NOTEBOOK = "browser-test.ipynb"
# JupyterLab needs several seconds to start on a small machine.
SPAWN_TIMEOUT_MS = 90_000


@pytest.fixture
def page(request):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium'; ./run-tests installs it as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    failed_before = request.session.testsfailed
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(30_000)
            yield page
            # The test's report is in by teardown: on failure keep its last screen.
            if request.session.testsfailed > failed_before:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "browser-failure.png"))
        finally:
            browser.close()


@pytest.fixture
def named_server(hub, admin_token):
    """The admin's server name for this test; stopped and waited for afterwards."""
    yield SERVER
    r = hub.request("DELETE", f"/users/admin/servers/{SERVER}", admin_token)
    assert r.status_code in (202, 204, 404), r.text
    hub.wait_gone("admin", SERVER, admin_token)


def test_spawn_from_form_and_run_a_notebook(hub, admin_token, named_server, page):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    navigations: list[str] = []
    page.on("request", lambda r: navigations.append(r.url) if r.is_navigation_request() else None)

    # 1. Sign in through the login form.
    page.goto(f"{hub.url}hub/login")
    page.fill("#username_input", "admin")
    page.fill("#password_input", ADMIN_PASSWORD)
    page.click("#login_submit")
    page.wait_for_url(lambda url: "/hub/login" not in url)

    # 2. The spawn form of a named server: descriptions from default.yaml, and the
    # script enables only the selected profile's options.
    page.goto(f"{hub.url}hub/spawn/admin/{named_server}")
    form = page.locator("#hubforge-profiles")
    expect(form).to_contain_text("Notebooks, teaching and light data work.")
    expect(form).to_contain_text("Bigger data sets and parallel work on several cores.")
    expect(page.locator("#profile-cpu-small")).to_be_checked()
    large_image = page.locator("#profile-option-cpu-large--image")
    small_image = page.locator("#profile-option-cpu-small--image")
    expect(large_image).to_be_disabled()
    expect(small_image).to_be_enabled()

    page.check("#profile-cpu-large")
    expect(large_image).to_be_enabled()
    expect(small_image).to_be_disabled()
    other = page.locator("#profile-option-cpu-large--image--unlisted-choice")
    expect(other).to_be_hidden()
    large_image.select_option("--unlisted")
    expect(other).to_be_visible()
    large_image.select_option("2026.08")
    expect(other).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "browser-spawn-form.png"), full_page=True)

    # 3. Submit; the hub shows the progress page, then redirects into JupyterLab.
    page.click("#spawn_form button[type=submit]")
    page.wait_for_url(re.compile(rf"/user/admin/{named_server}/lab"), timeout=SPAWN_TIMEOUT_MS)
    assert any(f"/hub/spawn-pending/admin/{named_server}" in url for url in navigations), navigations
    server = hub.request("GET", "/users/admin", admin_token).json()["servers"][named_server]
    assert server["user_options"]["profile"] == "cpu-large", server
    assert server["user_options"]["image"] == "2026.08", server
    page.locator(".jp-LabShell").wait_for(timeout=SPAWN_TIMEOUT_MS)

    # 4. A notebook created through the Jupyter REST API (the kernelspec in its
    # metadata spares the kernel picker), opened and run through the UI.
    server_url = hub.server_url("admin", named_server)
    r = requests.put(
        f"{server_url}api/contents/{NOTEBOOK}",
        headers={"Authorization": f"token {admin_token}"},
        json={"type": "notebook", "content": empty_notebook()},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    page.goto(f"{server_url}lab/tree/{NOTEBOOK}")
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    kernel_status = notebook.locator(".jp-Notebook-ExecutionIndicator")
    expect(kernel_status).to_have_attribute("data-status", "idle", timeout=SPAWN_TIMEOUT_MS)

    first = notebook.locator(".jp-CodeCell").nth(0)
    first.locator(".cm-content").click()
    page.keyboard.type('print(6 * 7); import os; print(os.environ["HUBFORGE_PROFILE"])')
    output = first.locator(".jp-OutputArea")
    # JupyterLab can report the kernel idle a moment before its websocket is connected,
    # and drops a cell run in that gap (the prompt stays "[ ]"). Run the cell again in
    # place (Ctrl+Enter) if nothing started; the output is still checked strictly.
    for attempt in range(3):
        page.keyboard.press("Control+Enter")
        try:
            expect(output).to_have_text(re.compile(r"42\s+cpu-large"), timeout=20_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
            first.locator(".cm-content").click()

    # A new cell below (command mode: Escape, then "b"), edited and run.
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.type("%hubforge")
    page.keyboard.press("Control+Enter")
    info = notebook.locator(".jp-CodeCell").nth(1).locator(".hubforge-server-info")
    expect(info).to_contain_text("cpu-large", timeout=30_000)
    expect(info).to_contain_text("hubforge/cpu:2026.08")
    expect(info).to_contain_text(named_server)
    # The profile's environment variables by name (OMP_NUM_THREADS is "4" in cpu-large).
    environment = info.locator("tr", has_text="Environment")
    expect(environment).to_have_text(re.compile(r"Environment\s*OMP_NUM_THREADS$"))

    # 5. The screenshot of JupyterLab with both outputs.
    page.screenshot(path=str(ARTIFACTS / "browser-jupyterlab.png"))


def empty_notebook() -> dict:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
        "cells": [{"cell_type": "code", "id": "first", "metadata": {}, "source": "", "outputs": [], "execution_count": None}],
    }
