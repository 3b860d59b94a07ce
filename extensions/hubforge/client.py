"""The REST client the notebook side (and the CLI) uses to call HubForge's hub services.

A user's server holds one credential for the hub: ``JUPYTERHUB_API_TOKEN``. With it,
`ServiceClient` finds a hub service's own URL through the hub API
(``GET {JUPYTERHUB_API_URL}/services/<name>``, which needs the token to carry
``read:services!service=<name>``) and calls the service directly, with the header
``Authorization: token ...``::

    from hubforge.client import ServiceClient, ServiceError

    data = ServiceClient("data")
    try:
        connections = data.get("api/connections")["connections"]
    except ServiceError as e:
        print(e.status, e.message)   # e.g. 403 "you may not use connection 'x'"

Every call has a timeout (``timeout``, seconds). Every failure becomes a
`ServiceError` carrying an HTTP-like status and a message fit for the user: the
service's own ``message`` for its 4xx/5xx answers, 502 when the hub or the service
cannot be reached or answers nonsense, 504 when it does not answer in time. The token
never appears in a message, a repr or a log line.

The client is synchronous on purpose: a kernel already runs an event loop, where a
blocking call is the only kind a notebook line can make, and the server extension calls
it from worker threads. The service URL is looked up once and forgotten when the
service cannot be reached, so a restarted service on a new port is found again.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from .exceptions import HubForgeError

#: Seconds one request may take, connecting included, unless the caller says otherwise.
DEFAULT_TIMEOUT = 10.0


class ServiceError(HubForgeError):
    """A HubForge service call failed.

    ``status`` is the HTTP status to report (the service's own for its answers; 502 when
    the hub or the service is unreachable or misbehaves; 504 on a timeout) and
    ``message`` the text to show the user. ``service`` names the service.
    """

    def __init__(self, service: str, status: int, message: str):
        self.service = service
        self.status = status
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} ({self.service} service, HTTP {self.status})"


def _ssl_context(environ: Mapping[str, str]) -> ssl.SSLContext | None:
    """The client TLS context for JupyterHub's internal SSL, or None when it is off."""
    ca = environ.get("JUPYTERHUB_SSL_CLIENT_CA")
    if not ca:
        return None
    context = ssl.create_default_context(cafile=ca)
    certfile = environ.get("JUPYTERHUB_SSL_CERTFILE")
    if certfile:
        context.load_cert_chain(certfile, environ.get("JUPYTERHUB_SSL_KEYFILE") or None)
    return context


class ServiceClient:
    """Calls one hub service as this server's user.

    ``name`` is the service's name in the hub (``"data"``). ``url`` is the service's
    base URL, prefix included (``"http://127.0.0.1:10101/services/data/"``); leave it
    None to look it up through the hub. ``api_url`` and ``token`` default to
    ``JUPYTERHUB_API_URL`` and ``JUPYTERHUB_API_TOKEN``. ``timeout`` is in seconds and
    applies to each request.
    """

    def __init__(
        self,
        name: str,
        *,
        url: str | None = None,
        api_url: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        environ: Mapping[str, str] | None = None,
    ):
        environ = os.environ if environ is None else environ
        self.name = name
        self.timeout = timeout
        self._fixed_url = _with_slash(url) if url else None
        self._discovered_url: str | None = None
        self._api_url = api_url if api_url is not None else environ.get("JUPYTERHUB_API_URL", "")
        self._token = token if token is not None else environ.get("JUPYTERHUB_API_TOKEN", "")
        # No redirects: urllib would resend the token to wherever a redirect points.
        self._opener = urllib.request.build_opener(
            _NoRedirect, urllib.request.HTTPSHandler(context=_ssl_context(environ))
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # The token is left out on purpose.
        url = self._fixed_url or self._discovered_url or "(not looked up yet)"
        return f"<ServiceClient {self.name!r} at {url}>"

    @property
    def url(self) -> str:
        """The service's base URL, looked up through the hub on first use."""
        if self._fixed_url:
            return self._fixed_url
        with self._lock:
            if self._discovered_url is None:
                self._discovered_url = self._discover()
            return self._discovered_url

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``GET`` ``path`` (relative to the service's URL) and return the JSON body."""
        url = urllib.parse.urljoin(self.url, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            return self._request(url, what=f"the {self.name} service")
        except ServiceError as e:
            if e.status in (502, 504) and not self._fixed_url:
                # Look the service up again next time: it may have moved.
                self._discovered_url = None
            raise

    def post(self, path: str, body: Any = None) -> Any:
        """``POST`` a JSON `body` to ``path`` and return the JSON answer (None if empty)."""
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any = None) -> Any:
        """``PATCH`` ``path`` with a JSON `body` and return the JSON answer."""
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> Any:
        """``DELETE`` ``path``; returns the JSON answer, or None for an empty one (204)."""
        return self.request("DELETE", path)

    def get_bytes(self, path: str, params: Mapping[str, str] | None = None) -> bytes:
        """``GET`` ``path`` and return the raw body (an output notebook, a log)."""
        return self.request("GET", path, params=params, raw=True)

    def request(self, method: str, path: str, body: Any = None, *,
                params: Mapping[str, str] | None = None, raw: bool = False,
                data: bytes | None = None, content_type: str = "application/json",
                timeout: float | None = None) -> Any:
        """Any method: `body` is sent as JSON (or `data`, bytes of `content_type`); the
        answer is parsed as JSON unless `raw`."""
        url = urllib.parse.urljoin(self.url, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        if data is None and body is not None:
            data = json.dumps(body).encode()
        try:
            return self._request(url, what=f"the {self.name} service", method=method, data=data, raw=raw,
                                 content_type=content_type, timeout=timeout)
        except ServiceError as e:
            if e.status in (502, 504) and not self._fixed_url:
                self._discovered_url = None
            raise

    def _discover(self) -> str:
        if not self._api_url:
            raise ServiceError(
                self.name, 502, "not running under JupyterHub: JUPYTERHUB_API_URL is not set"
            )
        url = f"{self._api_url.rstrip('/')}/services/{urllib.parse.quote(self.name, safe='')}"
        try:
            model = self._request(url, what="the hub")
        except ServiceError as e:
            if e.status == 404:
                message = f"this hub has no {self.name!r} service"
            elif e.status in (401, 403):
                message = (
                    f"this server's token may not look up the {self.name!r} service "
                    f"(the hub answered {e.status}: {e.message})"
                )
            else:
                raise
            raise ServiceError(self.name, 502, message) from None
        service_url = model.get("url") if isinstance(model, dict) else None
        if not service_url:
            raise ServiceError(
                self.name, 502, f"the hub gives no URL for the {self.name!r} service"
            )
        prefix = model.get("prefix") or f"/services/{self.name}/"
        return _with_slash(service_url.rstrip("/") + "/" + prefix.lstrip("/"))

    def _request(self, url: str, *, what: str, method: str = "GET", data: bytes | None = None,
                 raw: bool = False, content_type: str = "application/json", timeout: float | None = None) -> Any:
        if not self._token:
            raise ServiceError(
                self.name, 502, "not running under JupyterHub: JUPYTERHUB_API_TOKEN is not set"
            )
        headers = {"Authorization": f"token {self._token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, headers=headers, data=data, method=method)
        where = _without_query(url)
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as e:
            with e:
                raise ServiceError(self.name, e.code, _error_message(e)) from None
        except TimeoutError:
            raise ServiceError(
                self.name, 504, f"{what} did not answer within {timeout or self.timeout:g} s ({where})"
            ) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                raise ServiceError(
                    self.name, 504, f"{what} did not answer within {timeout or self.timeout:g} s ({where})"
                ) from None
            raise ServiceError(
                self.name, 502, f"cannot reach {what} at {where}: {reason}"
            ) from None
        except OSError as e:
            raise ServiceError(self.name, 502, f"cannot reach {what} at {where}: {e}") from None
        if raw:
            return body
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise ServiceError(
                self.name, 502, f"{what} sent a body that is not JSON ({where})"
            ) from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turns a 3xx answer into an `HTTPError` instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _error_message(error: urllib.error.HTTPError) -> str:
    """The ``message`` of a JupyterHub-style JSON error body, else the status line."""
    try:
        body = json.loads(error.read(64 * 1024))
    except (ValueError, OSError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return body["message"]
    return f"HTTP {error.code} {error.reason}"


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _without_query(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
