"""`hubforge.models.fastpath.PredictFastPath` behind the lean HTTP server, as the models
service listens: which requests it answers, which go to the application (headers and
body intact), and its answers to errors, a bug included.

A real `LeanHTTPServer` with tornado's server behind it, and a real HTTP client, over
loopback; the hub's token check and the service's manager are small stand-ins with the
same interface (the real ones, through a real hub, are in tests/test_models_service.py,
which also checks that both paths answer alike). The lean server itself, on its own, is
tested in tests/test_leanhttp.py.
"""

from __future__ import annotations

import json
import re

import pytest
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer

from hubforge.models.errors import InvalidInput
from hubforge.models.fastpath import PredictFastPath
from hubforge.models.manager import ModelInfo
from hubforge.models.serving import Route, Stats
from hubforge.models.service import ENDPOINT
from hubforge.services.auth import INTERNAL_ERROR, prefixed
from hubforge.services.leanhttp import LeanHTTPServer
from tornado.netutil import bind_sockets

PREFIX = "/services/models/"
USERS = {  # token -> the hub's model of its owner
    "owner-token": {"kind": "user", "name": "ann", "admin": False, "groups": [],
                    "scopes": ["custom:hubforge:models:invoke", "access:services!service=models"]},
    "other-token": {"kind": "user", "name": "bob", "admin": False, "groups": [],
                    "scopes": ["custom:hubforge:models:invoke", "access:services!service=models"]},
}


class HubAuthStandIn:
    access_scopes = {"access:services!service=models"}

    def __init__(self):
        self.asked = []

    async def user_for_token(self, token, use_cache=True, session_id="", *, sync=True):
        self.asked.append(token)
        return USERS.get(token)


class ManagerStandIn:
    def __init__(self):
        self.models = {name: ModelInfo(name=name, owner="ann", shared_with={}, route=Route(latest=1),
                                       stats=Stats(60), samples=None) for name in ("good", "bad", "buggy")}
        self.bodies = []

    async def invoke(self, info, selector, body):
        self.bodies.append(body)
        if info.name == "bad":
            raise InvalidInput("dataframe_records[0].age: column 'age' expects a whole number (long), got \"x\"")
        if info.name == "buggy":
            raise RuntimeError("a bug, with a secret-looking detail")
        return [len(body)], 3, selector


class Handler(web.RequestHandler):
    """Where replayed requests land: says so, with what it received."""

    def post(self, name, selector, action):
        self.finish({"via": "handler", "name": name, "body": self.request.body.decode(),
                     "authorization": self.request.headers.get("Authorization", "")})


@pytest.fixture
async def server():
    hub_auth, manager = HubAuthStandIn(), ManagerStandIn()
    app = web.Application([(prefixed(PREFIX, ENDPOINT), Handler)], hub_auth=hub_auth, manager=manager)
    fast = PredictFastPath(app, re.compile(prefixed(PREFIX, ENDPOINT)))
    http = LeanHTTPServer(HTTPServer(app, xheaders=True), fast.hot, fast.answer)
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    await http.start(sockets)
    client = AsyncHTTPClient(force_instance=True)

    async def post(path, body=b'{"dataframe_records": [{"x": 1}]}', token="owner-token", **headers):
        if token:
            headers["Authorization"] = f"token {token}"
        try:
            r = await client.fetch(f"http://127.0.0.1:{port}{PREFIX}{path}", method="POST", body=body,
                                   headers=headers, raise_error=False)
        except HTTPClientError as e:  # pragma: no cover - raise_error=False
            r = e.response
        return r.code, dict(r.headers), json.loads(r.body or b"null")

    yield post, hub_auth, manager
    client.close()
    http.stop()


async def test_a_token_call_is_answered_by_the_fast_path(server):
    post, hub_auth, manager = server
    status, headers, body = await post("good@staging/predict", body=b"0123456789")
    assert status == 200 and body == {"predictions": [10]}
    assert headers["X-Hubforge-Model-Version"] == "3" and headers["X-Hubforge-Model-Alias"] == "staging"
    assert headers["Content-Type"] == "application/json; charset=UTF-8" and "Server" not in headers
    assert manager.bodies == [b"0123456789"] and hub_auth.asked == ["owner-token"]


@pytest.mark.parametrize("path,kw,why", [
    ("good/predict?x=1", {}, "a query string"),
    ("good/predict", {"Cookie": "jupyterhub-session-id=abc"}, "a cookie"),
    ("good/predict", {"token": None}, "no token"),
    ("good/predict", {"token": "unknown-token"}, "a token the hub does not know"),
    ("good/predict", {"token": "other-token"}, "a caller who may not call the model"),
    ("missing/predict", {}, "an unknown model"),
    ("good/health", {}, "not predict"),
])
async def test_other_requests_are_replayed_to_the_application_intact(server, path, kw, why):
    post, _, manager = server
    status, _, body = await post(path, body=b'{"rows": 1}', **kw)
    assert status == 200, why
    assert body["via"] == "handler" and body["body"] == '{"rows": 1}', why
    assert body["authorization"] == (f"token {kw['token']}" if kw.get("token") else
                                     "" if "token" in kw else "token owner-token"), why
    assert manager.bodies == [], why


async def test_a_model_error_is_answered_with_its_status_and_message(server, caplog):
    post, _, _ = server
    status, headers, body = await post("bad/predict")
    assert status == 400 and headers["Content-Type"] == "application/json; charset=UTF-8"
    assert body == {"status": 400, "message": "dataframe_records[0].age: column 'age' expects a whole number "
                                               "(long), got \"x\""}
    # Logged like the handlers' answers: status, path, caller, model, time, message.
    assert re.search(r"^400 POST /services/models/bad/predict user=ann model=bad [0-9.]+ms: dataframe_records\[0\]"
                     r"\.age: ", "\n".join(caplog.messages), re.M), caplog.messages


async def test_a_bug_is_a_500_without_its_details(server, caplog):
    post, _, _ = server
    status, _, body = await post("buggy/predict")
    assert status == 500 and body == {"status": 500, "message": INTERNAL_ERROR}
    assert "secret-looking" not in json.dumps(body)
    assert any(r.exc_info and "a bug, with a secret-looking detail" in str(r.exc_info[1]) for r in caplog.records)
    # The connection's next request is served: nothing was left half-answered.
    assert (await post("good/predict", body=b"12"))[2] == {"predictions": [2]}
