"""`hubforge.services.leanhttp.LeanHTTPServer` on its own: which requests it answers, how
the others reach tornado (intact, in order, on the same connection), that a connection
comes back once tornado's answers are out, and that nothing is left behind.

A real `LeanHTTPServer` with a real tornado application behind it; the clients write
raw HTTP/1.1 over loopback, so that keep-alive, pipelining and odd requests are exactly
what the test says. Tornado's answers carry its ``Server`` header; the lean ones do not.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httptools
import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from hubforge.services import leanhttp
from hubforge.services.leanhttp import LeanHTTPServer, Response


class Echo(web.RequestHandler):
    """What tornado received."""

    def _echo(self):
        self.finish({"via": "tornado", "method": self.request.method, "path": self.request.uri,
                     "body": self.request.body.decode("latin-1"),
                     "headers": {k.lower(): v for k, v in self.request.headers.items()}})

    get = post = put = delete = _echo

    def head(self):
        self.set_header("Content-Length", "123")  # a HEAD answer announces a body it does not send


class Chunked(web.RequestHandler):
    async def get(self):
        for i in range(3):
            self.write(f"part {i};")
            await self.flush()  # no Content-Length: tornado sends chunks


class Big(web.RequestHandler):
    def get(self):
        self.finish(b"x" * (8 * 2**20))


@web.stream_request_body
class Upload(web.RequestHandler):
    def prepare(self):
        self.request.connection.set_max_body_size(64 * 2**20)
        self.size = 0

    def data_received(self, chunk):
        self.size += len(chunk)

    def put(self):
        self.finish({"via": "tornado", "size": self.size})


def hot(request):
    return request.method == "POST" and request.target.startswith("/hot") and request.headers.get("x-lean") != "no"


async def answer(request):
    what = request.headers.get("x-answer", "")
    if what == "none":
        return None
    if what == "raise":
        raise RuntimeError("a bug")
    if what.startswith("slow"):
        await asyncio.sleep(0.2)
        if what == "slow-none":
            return None
    return Response(200, b"lean:" + request.body, {"Content-Type": "text/plain", "X-Path": request.target})


@pytest.fixture
async def lean():
    app = web.Application([("/hot.*", Echo), ("/echo.*", Echo), ("/chunked", Chunked), ("/big", Big),
                           ("/upload", Upload)])
    fallback = HTTPServer(app, xheaders=True)
    server = LeanHTTPServer(fallback, hot, answer, max_body=2**20)
    sockets = bind_sockets(0, "127.0.0.1")
    await server.start(sockets)
    server.port = sockets[0].getsockname()[1]
    server.tornado = fallback
    yield server
    server.stop()
    await fallback.close_all_connections()


class Client:
    """One raw HTTP/1.1 connection; `responses(n)` reads n complete answers."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.done: list[dict] = []
        self.heads: list[bool] = []  # per request sent: was it a HEAD
        self._new_parser()

    def _new_parser(self):
        self.current = {"headers": {}, "body": b""}
        self.parser = httptools.HttpResponseParser(self)

    @classmethod
    async def open(cls, port):
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, *requests: bytes):
        self.writer.write(b"".join(requests))
        self.heads.extend(r.startswith(b"HEAD ") for r in requests)

    async def responses(self, n: int, timeout: float = 10) -> list[dict]:
        async def read():
            while len(self.done) < n:
                data = await self.reader.read(1 << 20)
                if not data:
                    raise ConnectionError(f"closed after {len(self.done)} answers")
                self._feed(data)
        await asyncio.wait_for(read(), timeout)
        out, self.done = self.done[:n], self.done[n:]
        return out

    def _feed(self, data):
        while data:
            if self.heads[:1] == [True]:  # a HEAD answer is its head only
                end = data.find(b"\r\n\r\n")
                head, data = data[:end + 4], data[end + 4:]
                self.parser.feed_data(head)
                self.done.append(dict(self.current, status=self.parser.get_status_code()))
                self.heads.pop(0)
                self._new_parser()
                continue
            self.parser.feed_data(data)
            data = b""

    def on_header(self, name, value):
        self.current["headers"][name.decode().lower()] = value.decode()

    def on_body(self, body):
        self.current["body"] += body

    def on_message_complete(self):
        self.done.append(dict(self.current, status=self.parser.get_status_code()))
        self.heads.pop(0)
        self.current = {"headers": {}, "body": b""}

    async def closed(self, timeout: float = 5) -> bool:
        return await asyncio.wait_for(self.reader.read(), timeout) == b""

    def close(self):
        self.writer.close()


def req(method: str, path: str, body: bytes = b"", version: str = "1.1", **headers) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"]
    if body or method in ("POST", "PUT"):
        headers.setdefault("Content-Length", str(len(body)))
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def via(response) -> str:
    return "tornado" if "TornadoServer" in response["headers"].get("server", "") else "lean"


def modes(server) -> list[str]:
    return [c.mode for c in server.connections]


async def test_one_connection_alternates_between_lean_and_tornado(lean):
    c = await Client.open(lean.port)
    plan = [(req("POST", "/hot/a", b"1"), "lean"), (req("GET", "/echo/b"), "tornado"),
            (req("POST", "/hot/c", b"22"), "lean"), (req("POST", "/echo/d", b"333"), "tornado"),
            (req("PUT", "/echo/e", b"4"), "tornado"), (req("POST", "/hot/f", b"5555"), "lean")]
    for raw, where in plan:
        c.send(raw)
        (r,) = await c.responses(1)
        assert r["status"] == 200 and via(r) == where, (raw, r)
        if where == "lean":
            assert r["body"] == b"lean:" + raw.split(b"\r\n\r\n", 1)[1]
            assert r["headers"]["x-path"] == raw.split()[1].decode() and r["headers"]["content-type"] == "text/plain"
            assert r["headers"]["date"].endswith("GMT")
        else:
            sent = json.loads(r["body"])
            assert (sent["method"], sent["path"]) == tuple(x.decode() for x in raw.split()[:2])
            assert sent["body"] == raw.split(b"\r\n\r\n", 1)[1].decode()
        assert modes(lean) == ["lean"], "the connection comes back once tornado has answered"
    c.close()


async def test_an_answer_of_none_goes_to_tornado_as_received(lean):
    c = await Client.open(lean.port)
    c.send(req("POST", "/hot/x?q=1", b'{"a": 1}', X_Answer="none", Authorization="token abc"))
    (r,) = await c.responses(1)
    sent = json.loads(r["body"])
    assert via(r) == "tornado" and sent["path"] == "/hot/x?q=1" and sent["body"] == '{"a": 1}'
    assert sent["headers"]["authorization"] == "token abc" and sent["headers"]["x-answer"] == "none"
    c.send(req("POST", "/hot/y", b"again"))
    assert [via(r) for r in await c.responses(1)] == ["lean"]
    c.close()


@pytest.mark.parametrize("raw,why", [
    (b"POST /hot/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "a chunked body"),
    (req("POST", "/hot/a", b"abc", version="1.0"), "HTTP/1.0"),
    (req("POST", "/hot/a", b"abc", X_Lean="no"), "the service's predicate says no"),
    (req("POST", "/hot/a", b"x" * (2**20 + 1)), "a body over max_body"),
])
async def test_requests_the_lean_server_does_not_take_are_tornados(lean, raw, why):
    c = await Client.open(lean.port)
    c.send(raw)
    (r,) = await c.responses(1)
    assert r["status"] == 200 and via(r) == "tornado", why
    assert json.loads(r["body"])["body"] in ("abc", "x" * (2**20 + 1)), why
    c.close()


async def test_expect_continue_and_head_leave_the_connection_with_tornado(lean):
    c = await Client.open(lean.port)
    c.send(req("HEAD", "/echo/h"))
    (r,) = await c.responses(1)
    assert r["status"] == 200 and r["headers"]["content-length"] == "123" and r["body"] == b""
    assert modes(lean) == ["pipe"]  # a HEAD answer's length cannot be read from its head
    c.send(req("POST", "/hot/after", b"still answered"))
    (r,) = await c.responses(1)
    assert via(r) == "tornado" and json.loads(r["body"])["body"] == "still answered"
    c.close()

    c = await Client.open(lean.port)
    c.writer.write(req("POST", "/hot/e", b"body", Expect="100-continue").split(b"\r\n\r\n")[0] + b"\r\n\r\n")
    line = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
    assert line.startswith(b"HTTP/1.1 100 ")  # tornado's, as without the lean server
    c.send(b"body")
    (r,) = await c.responses(1)
    assert via(r) == "tornado" and json.loads(r["body"])["body"] == "body"
    c.close()


async def test_a_chunked_answer_is_relayed_whole_then_the_connection_comes_back(lean):
    c = await Client.open(lean.port)
    c.send(req("GET", "/chunked"))
    (r,) = await c.responses(1)
    assert r["body"] == b"part 0;part 1;part 2;" and r["headers"]["transfer-encoding"] == "chunked"
    c.send(req("POST", "/hot/next", b"n"))
    assert [via(r) for r in await c.responses(1)] == ["lean"]
    c.close()


async def test_pipelined_requests_are_answered_in_order(lean):
    c = await Client.open(lean.port)
    c.send(req("POST", "/hot/1", b"one", X_Answer="slow"), req("GET", "/echo/2"), req("POST", "/hot/3", b"three"),
           req("POST", "/hot/4", b"four"))
    rs = await c.responses(4)
    assert [via(r) for r in rs] == ["lean", "tornado", "tornado", "tornado"]
    assert rs[0]["body"] == b"lean:one" and json.loads(rs[1]["body"])["path"] == "/echo/2"
    assert [json.loads(r["body"])["body"] for r in rs[2:]] == ["three", "four"]
    # All answered: the next request is read here again.
    c.send(req("POST", "/hot/5", b"five"))
    assert [r["body"] for r in await c.responses(1)] == [b"lean:five"]
    c.close()


async def test_a_large_request_behind_one_handed_to_tornado_late_still_gets_through(lean):
    # While a request is answered here, reading pauses once more than a request's worth
    # waits behind it; handing the connection over must resume it.
    c = await Client.open(lean.port)
    body = b"y" * (16 * 2**20)
    c.send(req("POST", "/hot/1", b"one", X_Answer="slow-none"), req("PUT", "/echo/2", body))
    rs = await c.responses(2, timeout=30)
    assert [via(r) for r in rs] == ["tornado", "tornado"]
    assert json.loads(rs[0]["body"])["body"] == "one" and len(json.loads(rs[1]["body"])["body"]) == len(body)
    c.close()


async def test_connection_close_is_honoured_on_both_paths(lean):
    for raw in (req("POST", "/hot/a", b"x", Connection="close"), req("GET", "/echo/a", Connection="close")):
        c = await Client.open(lean.port)
        c.send(raw)
        (r,) = await c.responses(1)
        assert r["status"] == 200 and r["headers"]["connection"].lower() == "close"
        assert await c.closed()


async def test_large_bodies_both_ways_are_relayed_intact(lean):
    c = await Client.open(lean.port)
    body = bytes(range(256)) * (20 * 4096)  # 20 MiB up
    c.send(req("PUT", "/upload", body))
    (r,) = await c.responses(1, timeout=60)
    assert json.loads(r["body"]) == {"via": "tornado", "size": len(body)}
    c.send(req("GET", "/big"))
    (r,) = await c.responses(1, timeout=60)
    assert r["body"] == b"x" * (8 * 2**20)
    c.send(req("POST", "/hot/after", b"a"))
    assert [via(r) for r in await c.responses(1)] == ["lean"]
    c.close()


async def test_a_bug_in_answer_closes_only_its_connection(lean, caplog):
    caplog.set_level(logging.ERROR, "hubforge.services")
    c = await Client.open(lean.port)
    c.send(req("POST", "/hot/bug", b"x", X_Answer="raise"))
    assert await c.closed()
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)
    c = await Client.open(lean.port)
    c.send(req("POST", "/hot/fine", b"y"))
    assert [r["body"] for r in await c.responses(1)] == [b"lean:y"]
    c.close()


async def test_bytes_that_are_not_http_get_tornados_answer(lean):
    c = await Client.open(lean.port)
    c.writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    data = await asyncio.wait_for(c.reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 400 ")  # tornado's answer, then it closed


async def test_answers_never_carry_a_forged_header():
    with pytest.raises(ValueError, match="line break"):
        leanhttp._serialize(Response(200, b"", {"X-A": "ok\r\nSet-Cookie: x=1"}))


async def test_nothing_is_left_behind(lean):
    clients = []
    for raw in (req("POST", "/hot/a", b"1"), req("GET", "/echo/b"), req("HEAD", "/echo/c")):
        c = await Client.open(lean.port)
        c.send(raw)
        await c.responses(1)
        clients.append(c)
    assert len(lean.connections) == 3 and len(lean.tornado._connections) == 2
    for c in clients:
        c.close()
    for _ in range(100):
        if not lean.connections and not lean.tornado._connections:
            break
        await asyncio.sleep(0.02)
    assert not lean.connections and not lean.tornado._connections


async def test_idle_connections_are_closed(lean, monkeypatch):
    lean.stop()
    monkeypatch.setattr(leanhttp, "SWEEP_SECONDS", 0.05)
    server = LeanHTTPServer(lean.fallback, hot, answer, idle_timeout=0.1)
    sockets = bind_sockets(0, "127.0.0.1")
    await server.start(sockets)
    c = await Client.open(sockets[0].getsockname()[1])
    c.send(req("POST", "/hot/a", b"1"))
    await c.responses(1)
    assert await c.closed(timeout=5)
    server.stop()
