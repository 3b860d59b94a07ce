"""The Models page: ``/services/models/`` in a browser, after the hub's login.

One self-contained HTML document (``templates/models.html``: inline CSS and plain
JavaScript, no build step, nothing from another site) listing the caller's models, their
versions, aliases, canaries and owners, with live request-rate and latency charts, and
acting on them through the service's REST API (docs/models.md) with the browser's OAuth
cookie and the page's XSRF token (:mod:`hubforge.services.page`). API data reaches the
document through ``textContent`` only; a Content-Security-Policy with a fresh nonce is a
second guard.
"""

from __future__ import annotations

from pathlib import Path

from tornado import template

from ..services.auth import PageHandler, requires_scopes
from ..services.page import render_page
from .settings import READ_SCOPE

TEMPLATES = Path(__file__).parent / "templates"
_loader = template.Loader(str(TEMPLATES), whitespace="all")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


class ModelsPage(PageHandler):
    """``GET`` the service's landing page."""

    @requires_scopes(READ_SCOPE)
    def get(self):
        render_page(self, _loader, "models.html", CONTENT_SECURITY_POLICY)
