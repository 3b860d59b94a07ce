"""The Jobs page: ``/services/jobs/`` in a browser, after the hub's login.

One self-contained HTML document (``templates/jobs.html``: inline CSS and plain
JavaScript, no build step, nothing from another site) that lists the caller's jobs and
runs and acts on them through the service's own REST API (docs/jobs.md), with the
browser's OAuth cookie and the page's XSRF token (:mod:`hubforge.services.page`).

Everything the API returns reaches the document through ``textContent`` and DOM
attributes, never as markup; the page's Content-Security-Policy (a fresh nonce for its
one script and one style sheet, requests to this origin only) is a second guard. The
service registers the page at its prefix::

    (r"", JobsPage)
"""

from __future__ import annotations

from pathlib import Path

from tornado import template

from ..services.auth import PageHandler, requires_scopes
from ..services.page import render_page

READ_SCOPE = "custom:hubforge:jobs:read"

TEMPLATES = Path(__file__).parent / "templates"
# Compiled once, on first use; autoescaping (xhtml_escape) is on for every {{ }}.
_loader = template.Loader(str(TEMPLATES), whitespace="all")

# Only the page's own script and style run; requests go to this origin (the API, the
# rendered outputs in a frame, downloads); nothing may frame the page from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
    "connect-src 'self'; frame-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


class JobsPage(PageHandler):
    """``GET`` the service's landing page (see the module docstring)."""

    @requires_scopes(READ_SCOPE)
    def get(self):
        render_page(self, _loader, "jobs.html", CONTENT_SECURITY_POLICY)
