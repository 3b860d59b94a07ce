"""`hubforge.services.auth.ServiceOAuth`: concurrent requests that miss the identity cache
ask the hub once between them.

JupyterHub's real `HubOAuth` code, over real HTTP, against a small tornado application
in the hub's place that answers ``GET /hub/api/user`` slowly enough (0.3 s) for the
requests to overlap, and counts the questions. Through a real hub and the models
service, the same is checked in tests/test_models_service.py.
"""

from __future__ import annotations

import asyncio

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from hubforge.services.auth import ServiceOAuth

ANN = {"kind": "user", "name": "ann", "admin": False, "groups": [], "scopes": ["access:services"]}


class HubAPIStandIn(web.RequestHandler):
    async def get(self):
        hub = self.settings["hub"]
        token = self.request.headers.get("Authorization", "").partition(" ")[2]
        hub["asked"].append(token)
        await asyncio.sleep(hub["delay"])
        if hub["fail"]:
            raise web.HTTPError(503)
        if token != "ann-token":
            raise web.HTTPError(403)
        self.write(ANN)


@pytest.fixture
async def hub():
    state = {"asked": [], "delay": 0.3, "fail": False}
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(web.Application([(r"/hub/api/user", HubAPIStandIn)], hub=state))
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    state["auth"] = ServiceOAuth(api_url=f"http://127.0.0.1:{port}/hub/api", api_token="service-token",
                                 cache_max_age=60)
    yield state
    server.stop()


async def lookups(auth, token: str, n: int) -> list:
    return await asyncio.gather(*(auth.user_for_token(token, session_id="", sync=False) for _ in range(n)),
                                return_exceptions=True)


async def test_concurrent_misses_ask_the_hub_once(hub):
    found = await lookups(hub["auth"], "ann-token", 20)
    assert found == [ANN] * 20
    assert hub["asked"] == ["ann-token"]
    # Cached now: no more questions, and no lookup is left under way.
    assert await lookups(hub["auth"], "ann-token", 5) == [ANN] * 5
    assert hub["asked"] == ["ann-token"] and hub["auth"]._lookups == {}


async def test_each_token_is_its_own_lookup_and_unknown_ones_are_none(hub):
    found = await asyncio.gather(lookups(hub["auth"], "ann-token", 5), lookups(hub["auth"], "stranger", 5))
    assert found == [[ANN] * 5, [None] * 5]
    assert sorted(hub["asked"]) == ["ann-token", "stranger"]


async def test_a_failed_lookup_fails_every_waiter_and_is_not_kept(hub):
    hub["fail"] = True
    found = await lookups(hub["auth"], "ann-token", 10)
    assert len(found) == 10 and all(isinstance(e, web.HTTPError) and e.status_code == 502 for e in found), found
    assert hub["asked"] == ["ann-token"] and hub["auth"]._lookups == {}
    hub["fail"] = False  # the hub is back: the next request asks again
    assert await lookups(hub["auth"], "ann-token", 3) == [ANN] * 3
    assert hub["asked"] == ["ann-token"] * 2


async def test_one_caller_giving_up_does_not_cancel_the_others(hub):
    auth = hub["auth"]
    first = asyncio.ensure_future(auth.user_for_token("ann-token", session_id="", sync=False))
    others = asyncio.ensure_future(lookups(auth, "ann-token", 4))
    await asyncio.sleep(0.1)  # all five are waiting on the one lookup
    first.cancel()
    assert await others == [ANN] * 4
    assert first.cancelled()
    assert hub["asked"] == ["ann-token"]


async def test_use_cache_false_always_asks(hub):
    auth = hub["auth"]
    found = await asyncio.gather(*(auth.user_for_token("ann-token", use_cache=False, sync=False) for _ in range(3)))
    assert found == [ANN] * 3 and hub["asked"] == ["ann-token"] * 3
