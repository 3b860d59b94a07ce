"""A lean HTTP/1.1 listener for one hot kind of request, with tornado's server for the rest.

A service whose throughput matters for one request (the models service's ``predict``)
listens with `LeanHTTPServer` instead of tornado's `HTTPServer`. Each connection's
requests are read with httptools (llhttp, the parser uvicorn uses); a request the
service's `hot` predicate accepts, in the simple form handled here (HTTP/1.1, a
``Content-Length`` body within `max_body`, no ``Transfer-Encoding``, ``Expect`` or
``Upgrade``), is answered by its `answer` coroutine and written back as one
``Content-Length`` response (after which the connection is closed if the caller sent
``Connection: close``). Every other request goes to the service's tornado `HTTPServer`,
unchanged: the connection is handed to it over a socket pair
(`HTTPServer.handle_stream`, as tornado does for the connections it accepts) and bytes
are copied both ways. Tornado's answers are counted, and once every request it was given
is answered the connection comes back here, so a Models page request between two
predictions does not slow the connection's later predictions. Requests whose answers
cannot be counted that way (``HEAD``, ``Expect: 100-continue``, an upgrade, a request
that closes the connection, bytes the parser refuses) leave the connection with tornado
for good. `answer` may also return None (for example a token it cannot vouch for): the
request, as received, then goes to tornado, whose handlers give the answer.

Over the socket pair tornado cannot see the caller's address: its requests carry
``remote_ip`` ``0.0.0.0`` unless an ``X-Forwarded-For`` header says otherwise (the
hub's proxy sends one with every request; the service uses the address in no decision).

Why by hand: tornado spends about 0.25 ms of CPU per request reading and writing HTTP/1.1
(its `HTTP1Connection`); on a 2-core machine, where the hub's proxy, this service and a
model's worker share the cores, that is a third of the models service's time per
prediction. httptools does the parsing; no library serves one kind of request itself and
passes a connection's other requests to an existing tornado application.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import httptools
from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.netutil import bind_sockets

log = logging.getLogger("hubforge.services")

#: The longest request head read here; a longer one goes to tornado (whose limit is the same).
MAX_HEAD = 65536
#: How often idle connections are looked for, in seconds.
SWEEP_SECONDS = 60


@dataclass(slots=True)
class Request:
    """A request read here: header names are lower-case; `body` is set once it arrived."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""
    keep_alive: bool = True  # False: the caller sent "Connection: close"


@dataclass(slots=True)
class Response:
    """An answer: ``Date`` and ``Content-Length`` are added when it is written."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class LeanHTTPServer:
    """Answers `hot` requests with `answer`; hands the others to `fallback` (see module doc).

    `hot(request)` sees the request before its body is read (``body`` is empty) and says
    whether `answer` should have it. `answer(request)` returns the `Response`, or None to
    pass the request to tornado after all; it should answer its own errors (an exception
    that escapes it is logged and closes the connection).
    """

    def __init__(self, fallback: HTTPServer, hot: Callable[[Request], bool],
                 answer: Callable[[Request], Awaitable[Response | None]], *, max_body: int = 8 * 2**20,
                 idle_timeout: float = 3600.0):
        self.fallback = fallback
        self.hot = hot
        self.answer = answer
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.connections: set[_Connection] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task | None = None

    def listen(self, port: int, address: str = "") -> None:
        """Bind now (as tornado's `listen` does: all interfaces' families for ``""``),
        accept once the event loop runs."""
        sockets = bind_sockets(port, address)
        IOLoop.current().add_callback(self.start, sockets)

    async def start(self, sockets: list[socket.socket]) -> None:
        """Accept connections on listening `sockets`."""
        loop = asyncio.get_running_loop()
        for sock in sockets:
            self._servers.append(await loop.create_server(lambda: _Connection(self), sock=sock))
        self._sweeper = asyncio.ensure_future(self._sweep())

    def stop(self) -> None:
        """Stop accepting and close every connection (tornado's included)."""
        for server in self._servers:
            server.close()
        self._servers = []
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.transport.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            cutoff = time.monotonic() - self.idle_timeout
            for conn in list(self.connections):
                if conn.idle_since(cutoff):
                    conn.transport.close()


# A connection's modes: its requests read here; with tornado until its answers are out
# (counted); with tornado for good (bytes copied, nothing read).
LEAN, RELAY, PIPE = "lean", "relay", "pipe"


class _Connection(asyncio.Protocol):
    def __init__(self, server: LeanHTTPServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = None
        self.mode = LEAN
        self.buf = bytearray()  # bytes of requests not answered yet (lean mode)
        self.head: tuple[Request, int, int] | None = None  # parsed head: (request, head length, body length)
        self.busy = False  # a request is being answered here
        self.closed = False
        self.last_active = time.monotonic()
        self.paused: set[str] = set()
        self.tornado: _TornadoSide | None = None
        self.counting: _Counting | None = None  # relay mode: requests given to tornado, answers out

    def __repr__(self) -> str:
        return f"<lean connection {self.peer} {self.mode}>"

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.server.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.tornado is not None:
            self.tornado.close()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.mode is not LEAN:
            self._to_tornado(data)
            return
        self.buf += data
        if not self.busy:
            self._next()
        elif len(self.buf) > MAX_HEAD + self.server.max_body:  # more than a request ahead
            self._pause("ahead")

    def pause_writing(self) -> None:  # the caller reads tornado's answers slowly
        if self.tornado is not None:
            self.tornado.pause_reading()

    def resume_writing(self) -> None:
        if self.tornado is not None:
            self.tornado.resume_reading()

    def idle_since(self, cutoff: float) -> bool:
        return self.mode is LEAN and not self.busy and self.last_active < cutoff

    # --- requests answered here -------------------------------------------------------

    def _next(self) -> None:
        """Answer the next complete request in `buf`, or hand the connection to tornado."""
        if not self.buf or self.closed:
            return
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._hand_off()
                return
            self.head = self._parse(bytes(self.buf[:end + 4]))
            if self.head is None:
                self._hand_off()
                return
        request, head_length, body_length = self.head
        size = head_length + body_length
        if len(self.buf) < size:
            return  # the body is on its way
        raw = bytes(self.buf[:size])
        del self.buf[:size]
        self.head = None
        request.body = raw[head_length:]
        self.busy = True
        asyncio.ensure_future(self._answer(request, raw))

    def _parse(self, head: bytes) -> tuple[Request, int, int] | None:
        """The request in `head` if it is one to answer here, else None."""
        reader = _Head()
        parser = httptools.HttpRequestParser(reader)
        try:
            parser.feed_data(head)
        except httptools.HttpParserError:  # the upgrade exception included
            return None
        headers = reader.headers
        if (not reader.complete or reader.repeated or parser.get_http_version() != "1.1"
                or "transfer-encoding" in headers or "expect" in headers or "upgrade" in headers):
            return None
        length = headers.get("content-length", "0")
        if not (length.isascii() and length.isdigit()) or int(length) > self.server.max_body:
            return None
        request = Request(parser.get_method().decode("latin-1"), reader.url.decode("latin-1"), headers,
                          keep_alive=parser.should_keep_alive())
        if not self.server.hot(request):
            return None
        return request, len(head), int(length)

    async def _answer(self, request: Request, raw: bytes) -> None:
        try:
            response = await self.server.answer(request)
            data = None if response is None else _serialize(response, request.keep_alive)
        except Exception:
            log.exception("answering %s %r failed", request.method, request.target[:200])
            self.transport.close()
            return
        self.busy = False
        self._resume("ahead")
        if data is None:
            self._hand_off(raw)
            return
        if not self.closed:
            self.transport.write(data)
            if not request.keep_alive:
                self.transport.close()  # once the answer is out
                return
        self._next()

    # --- requests for tornado -----------------------------------------------------------

    def _hand_off(self, first: bytes = b"") -> None:
        """Give tornado the bytes from the current request on, counting its answers."""
        data = first + bytes(self.buf)
        self.buf.clear()
        self.head = None
        self.mode = RELAY
        self.counting = _Counting(self)
        self._to_tornado(data)

    def _to_tornado(self, data: bytes) -> None:
        if self.mode is RELAY:
            self.counting.requests(data)
        if self.tornado is None:
            self.tornado = _TornadoSide(self)
        self.tornado.write(data)

    def from_tornado(self, data: bytes) -> None:
        if self.closed:
            return
        self.transport.write(data)
        if self.mode is RELAY and self.counting.answers(data):
            self.mode = LEAN  # every request tornado was given is answered: the next is read here
            self.counting = None

    def tornado_closed(self, side: _TornadoSide) -> None:
        if self.tornado is side:
            self.tornado = None
        if self.mode is not LEAN and not self.closed:
            self.transport.close()  # after what tornado wrote (an error, Connection: close)
        # In lean mode tornado closed a connection it had no request on (its idle timeout).

    def _pause(self, why: str) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused.add(why)

    def _resume(self, why: str) -> None:
        if why in self.paused:
            self.paused.discard(why)
            if not self.paused and not self.closed:
                self.transport.resume_reading()


class _Head:
    """httptools callbacks collecting one request head."""

    def __init__(self):
        self.url = b""
        self.headers: dict[str, str] = {}
        self.repeated = False  # a header name seen twice: left to tornado's rules
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key in self.headers:
            self.repeated = True
        self.headers[key] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.complete = True


class _Counting:
    """Relay mode's bookkeeping: requests given to tornado and answers it wrote.

    Each side is read by its own httptools parser, started at a message boundary (the
    connection is handed over at the start of a request, when tornado owes nothing).
    A request whose answer cannot be delimited that way, or bytes a parser refuses,
    turn the connection into a pipe: tornado keeps it.
    """

    def __init__(self, conn: _Connection):
        self.conn = conn
        self.sent = 0
        self.answered = 0
        self.in_request = False
        self.forever = False
        self.request_parser = httptools.HttpRequestParser(self)
        self.response_parser = httptools.HttpResponseParser(_Answers(self))

    def requests(self, data: bytes) -> None:
        try:
            self.request_parser.feed_data(data)
        except httptools.HttpParserError:
            self.forever = True
        if self.forever:
            self.conn.mode = PIPE

    def answers(self, data: bytes) -> bool:
        """True once tornado answered every request it was given (and none is arriving)."""
        try:
            self.response_parser.feed_data(data)
        except httptools.HttpParserError:
            self.conn.mode = PIPE
            return False
        return self.answered == self.sent and not self.in_request and not self.forever

    # httptools callbacks of the request parser
    def on_message_begin(self) -> None:
        self.in_request = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"expect", b"upgrade"):
            self.forever = True

    def on_headers_complete(self) -> None:
        parser = self.request_parser
        if parser.get_method() == b"HEAD" or not parser.should_keep_alive():
            self.forever = True

    def on_message_complete(self) -> None:
        self.in_request = False
        self.sent += 1


class _Answers:
    """httptools callbacks of the response parser."""

    def __init__(self, counting: _Counting):
        self.counting = counting

    def on_message_complete(self) -> None:
        self.counting.answered += 1


class _TornadoSide(asyncio.Protocol):
    """This end of a socket pair whose other end is one of tornado's connections."""

    def __init__(self, conn: _Connection):
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.pending = bytearray()  # written before the transport exists
        self.closed = False
        self.reading_paused = False
        ours, theirs = socket.socketpair()
        try:
            conn.server.fallback.handle_stream(IOStream(theirs), conn.peer)
        except Exception:
            ours.close()
            theirs.close()
            raise
        asyncio.ensure_future(self._connect(ours))

    async def _connect(self, sock: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: self, sock)
        except Exception:
            log.exception("cannot relay a connection to the service's tornado server")
            sock.close()
            self.connection_lost(None)

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.pending += data
        else:
            self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        self.reading_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.closed:
            transport.close()
            return
        if self.pending:
            transport.write(bytes(self.pending))
            self.pending.clear()
        if self.reading_paused:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.conn.from_tornado(data)

    def pause_writing(self) -> None:  # tornado reads the caller's bytes slowly
        self.conn._pause("tornado")

    def resume_writing(self) -> None:
        self.conn._resume("tornado")

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.conn._resume("tornado")
        self.conn.tornado_closed(self)


def _serialize(response: Response, keep_alive: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {httputil.responses.get(response.status, 'Unknown')}",
             f"Date: {http_date()}", f"Content-Length: {len(response.body)}"]
    if not keep_alive:
        lines.append("Connection: close")
    for name, value in response.headers.items():
        line = f"{name}: {value}"
        if "\r" in line or "\n" in line:
            raise ValueError(f"a header of the answer holds a line break: {line!r}")
        lines.append(line)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


_date = [0, ""]


def http_date() -> str:
    """The ``Date`` header's value, formatted once a second."""
    now = int(time.time())
    if _date[0] != now:
        _date[:] = [now, httputil.format_timestamp(now)]
    return _date[1]

