"""The landing page a hub service serves to browsers (the Jobs page, the Models page).

Such a page is one self-contained HTML document (inline CSS and plain JavaScript, no
build step, nothing from another site) that acts through the service's own REST API with
the browser's OAuth cookie. JupyterHub accepts that cookie on a script's request only with
the page's XSRF token in an ``X-XSRFToken`` header, so `render_page` puts the token in the
page, with the caller's name, admin flag and the service prefix the script builds its
URLs on, and sends the headers that keep the page safe: a Content-Security-Policy with a
fresh nonce for the page's own script and style sheet, ``nosniff``, and ``no-store``
(the page embeds a token bound to the caller's session).

A page handler calls it from its ``GET``::

    _loader = template.Loader(str(TEMPLATES), whitespace="all")
    CONTENT_SECURITY_POLICY = "default-src 'none'; script-src 'nonce-{nonce}'; ..."

    class JobsPage(PageHandler):
        @requires_scopes(READ_SCOPE)
        def get(self):
            render_page(self, _loader, "jobs.html", CONTENT_SECURITY_POLICY)
"""

from __future__ import annotations

import secrets
from typing import Any

from tornado import template

from .auth import PageHandler


def render_page(handler: PageHandler, loader: template.BaseLoader, template_name: str, csp: str,
                **values: Any) -> None:
    """Finish ``handler``'s request with the template ``template_name`` from ``loader``.

    The template gets ``user`` (the caller's name), ``admin`` (``"true"``/``"false"``, for
    the script), ``xsrf``, ``prefix`` (the service prefix), ``nonce`` and ``values``; its
    ``{{ }}`` are escaped by tornado. ``csp`` is the page's Content-Security-Policy with a
    ``{nonce}`` placeholder.
    """
    user = handler.current_user
    # HubOAuth patches xsrf_token: bytes, bound to the caller's OAuth cookie. Reading it
    # on a page view also sets the matching _xsrf cookie.
    xsrf = handler.xsrf_token
    if isinstance(xsrf, bytes):
        xsrf = xsrf.decode("ascii")
    nonce = secrets.token_urlsafe(18)
    html = loader.load(template_name).generate(
        user=user["name"],
        admin="true" if user.get("admin") else "false",
        xsrf=xsrf,
        prefix=handler.settings.get("service_prefix", "/"),
        nonce=nonce,
        **values,
    )
    handler.set_header("Content-Type", "text/html; charset=UTF-8")
    # The page embeds a token bound to the caller's session: never from a cache.
    handler.set_header("Cache-Control", "no-store")
    handler.set_header("Content-Security-Policy", csp.format(nonce=nonce))
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "same-origin")
    handler.finish(html)
