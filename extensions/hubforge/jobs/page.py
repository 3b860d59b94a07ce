"""The Jobs page: ``/services/jobs/`` in a browser, after the hub's login.

One self-contained HTML document (``templates/jobs.html``: inline CSS and plain
JavaScript, no build step, nothing from another site) that lists the caller's jobs and
runs and acts on them through the service's own REST API (docs/jobs.md), with the
browser's OAuth cookie. JupyterHub accepts that cookie on a script's request only with
the page's XSRF token in an ``X-XSRFToken`` header, so the handler puts the token in the
page, with the caller's name, admin flag and the service prefix the script builds its
URLs on.

Everything the API returns reaches the document through ``textContent`` and DOM
attributes, never as markup; the page's Content-Security-Policy (a fresh nonce for its
one script and one style sheet, requests to this origin only) is a second guard. The
service registers the page at its prefix::

    (r"", JobsPage)
"""

from __future__ import annotations

import secrets
from pathlib import Path

from tornado import template

from ..services.auth import PageHandler, requires_scopes

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
        user = self.current_user
        # HubOAuth patches xsrf_token: bytes, bound to the caller's OAuth cookie. Reading
        # it on a page view also sets the matching _xsrf cookie.
        xsrf = self.xsrf_token
        if isinstance(xsrf, bytes):
            xsrf = xsrf.decode("ascii")
        nonce = secrets.token_urlsafe(18)
        html = _loader.load("jobs.html").generate(
            user=user["name"],
            admin="true" if user.get("admin") else "false",
            xsrf=xsrf,
            prefix=self.settings.get("service_prefix", "/"),
            nonce=nonce,
        )
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        # The page embeds a token bound to the caller's session: never from a cache.
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY.format(nonce=nonce))
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.finish(html)
