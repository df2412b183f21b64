"""The asyncio protocol of one TCP connection: HTTP requests, then maybe a WebSocket.

It only moves bytes: httptools parses requests, REST routes answer them, the client endpoint
decides the handshake, the websockets Sans-I/O ``ServerProtocol`` does the framing, and the
node decides what every client message means. Outgoing frames are queued and written once per
loop turn (see :class:`Flusher`), so a burst of frames to one connection costs one write.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, cast

import httptools
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..core.connection import CloseCode, Connection
from ..core.errors import PayloadTooLarge, RequestError
from ..core.events import UpstreamRejected
from ..core.node import RecoveryRefused
from .client_endpoint import Accepted, Pending
from .http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from .app import Service

log = logging.getLogger("webpubsub.server")

PING_FRAME = Frame(Opcode.PING, b"").serialize(mask=False)


class Flusher:
    """Writes each connection's queued frames once per event-loop turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[ServiceProtocol] = []
        self._scheduled = False

    def mark(self, proto: ServiceProtocol) -> None:
        self._dirty.append(proto)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for proto in dirty:
            proto.flush()


class ServiceProtocol(asyncio.Protocol):
    """One TCP connection of the service port."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.limits = service.settings.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        # HTTP request being parsed
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._requests: deque[HttpRequest] = deque()
        self._serving = False
        self._upgrade: HttpRequest | None = None
        self._refused = False
        # WebSocket mode
        self.ws: ServerProtocol | None = None
        self.conn: Connection | None = None
        self._pending: list[bytes] = []
        self._parts: list[bytes] | None = None
        self._parts_text = False
        self._closing = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        self.service.protocols.add(self)
        self._handshake_timer = self.service.loop.call_later(
            self.limits.request_timeout, self._request_timeout
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.service.protocols.discard(self)
        for timer in (self._close_timer, self._handshake_timer):
            if timer is not None:
                timer.cancel()
        self._pending.clear()
        conn = self.conn
        if conn is None:
            return
        node = self.service.node
        close = self.ws.close_rcvd if self.ws is not None else None
        if close is not None and conn.transport is self:
            # The client said goodbye (or answered ours): the connection ends for good.
            conn.closed = True
            node.disconnect(conn, close.reason)
        else:
            node.connection_lost(conn, self, self.service.loop.time())

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            self._ws_received(data)
            return
        if self._refused:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0]
            self._start_upgrade(data[offset:])
        except httptools.HttpParserError as exc:
            # httptools reports an exception raised in a callback as its context.
            if isinstance(exc.__context__, _Refuse):
                self._refuse(exc.__context__.response)
            else:
                self._refuse(_error(400, "Error.BadRequest", f"Malformed HTTP request: {exc}"))

    def eof_received(self) -> bool | None:
        if self.ws is not None:
            self.ws.receive_eof()
            self._ws_events()
        return None

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_url_length:
            raise _Refuse(_error(414, "Error.UriTooLong", "The request URL is too long."))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if (
            len(self._headers) >= self.limits.max_header_count
            or self._header_bytes > self.limits.max_header_bytes
        ):
            raise _Refuse(
                _error(431, "Error.HeadersTooLarge", "The request headers are too large.")
            )
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        for key, value in self._headers:
            too_large = value.strip().isdigit() and int(value) > self.limits.max_body_size
            if key == "content-length" and too_large:
                raise _Refuse(HttpResponse.error(_too_large(self.limits.max_body_size)))

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limits.max_body_size:
            raise _Refuse(HttpResponse.error(_too_large(self.limits.max_body_size)))
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = HttpRequest(
            self.parser.get_method().decode("ascii", "replace"),
            self._url.decode("latin-1"),
            self._headers,
            b"".join(self._body),
            self.peer,
        )
        self._body = []
        upgrade = request.header("upgrade")
        if self.parser.should_upgrade() and upgrade and upgrade.lower() == "websocket":
            self._upgrade = request
            return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._requests.append(request)
        if not self._serving:
            self._serving = True
            self.service.loop.create_task(self._serve_requests())

    # -- HTTP -------------------------------------------------------------------------------

    async def _serve_requests(self) -> None:
        try:
            while self._requests and self.transport is not None:
                request = self._requests.popleft()
                keep_alive = self.parser.should_keep_alive()
                response = await self.service.handle_http(request)
                if self.transport.is_closing():
                    return
                self.transport.write(
                    response.serialize(head=request.method == "HEAD", keep_alive=keep_alive)
                )
                if response.stream is not None:
                    await self._write_stream(response.stream)
                    return
                if not keep_alive:
                    self.transport.close()
                    return
        finally:
            self._serving = False

    async def _write_stream(self, stream: AsyncIterator[bytes]) -> None:
        """Write a streamed body until it ends or the client goes; then close."""
        try:
            async for chunk in stream:
                transport = self.transport
                if transport is None or transport.is_closing():
                    break
                if transport.get_write_buffer_size() <= self.limits.max_write_buffer:
                    transport.write(chunk)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            if self.transport is not None:
                self.transport.close()

    def _refuse(self, response: HttpResponse) -> None:
        """Answer a request we will not read to its end, then close."""
        self._refused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response.serialize(keep_alive=False))
            self.transport.close()

    def _request_timeout(self) -> None:
        self._handshake_timer = None
        if self.ws is None and not self._requests and not self._serving:
            self._refuse(_error(408, "Error.RequestTimeout", "The request took too long."))

    # -- WebSocket handshake -------------------------------------------------------------

    def _start_upgrade(self, rest: bytes) -> None:
        request = self._upgrade
        self._upgrade = None
        if request is None or self._requests or self._serving:
            self._refuse(_error(400, "Error.BadRequest", "Unexpected upgrade request."))
            return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        result = self.service.client_endpoint.handshake(request, self)
        if isinstance(result, Pending):
            # The hub's blocking connect event decides (spec 5.5); read nothing meanwhile.
            self._refused = True
            if self.transport is not None:
                self.transport.pause_reading()
            self.service.loop.create_task(self._connect_event(result, rest))
            return
        self._accept(result, rest)

    async def _connect_event(self, pending: Pending, rest: bytes) -> None:
        try:
            connect_result = await self.service.upstream.connect(pending)
        except UpstreamRejected as exc:
            log.info("connect event refused %s: %d %s", self.peer, exc.status, exc.message)
            error = RequestError(exc.message, code="Error.ConnectRejected", status=exc.status)
            self._refused = False
            self._refuse(HttpResponse.error(error))
            return
        if self.transport is None or self.transport.is_closing():
            return
        result = self.service.client_endpoint.finish(pending, self, connect_result)
        self._refused = False
        self.transport.resume_reading()
        self._accept(result, rest)

    def _accept(self, result: HttpResponse | Accepted, rest: bytes) -> None:
        if isinstance(result, HttpResponse):
            self._refuse(result)
            return
        self.ws = result.ws
        self._write_ws()  # the 101 response
        node = self.service.node
        if result.resume is not None:
            hub, connection_id, token = result.resume
            try:
                self.conn = node.resume(hub, connection_id, token, self, self.service.loop.time())
            except RecoveryRefused as exc:
                result.refusal = str(exc)
        elif result.conn is not None:
            self.conn = result.conn
            node.connect(result.conn, result.groups)
            self.service.upstream.connected(result.conn)
        if result.refusal is not None:
            log.info("refused recovery from %s: %s", self.peer, result.refusal)
            self.close(CloseCode.POLICY_VIOLATION, result.refusal)
            return
        if rest:
            self._ws_received(rest)

    # -- WebSocket I/O ----------------------------------------------------------------------

    def _ws_received(self, data: bytes) -> None:
        assert self.ws is not None
        self.ws.receive_data(data)
        self._ws_events()

    def _ws_events(self) -> None:
        ws = self.ws
        assert ws is not None
        for frame in ws.events_received():
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    self._ws_message(frame.data, opcode is Opcode.TEXT)
                else:
                    self._parts = [frame.data]
                    self._parts_text = opcode is Opcode.TEXT
            elif opcode is Opcode.CONT and self._parts is not None:
                self._parts.append(frame.data)
                if frame.fin:
                    data, self._parts = b"".join(self._parts), None
                    self._ws_message(data, self._parts_text)
        self._write_ws()

    def _ws_message(self, data: bytes, is_text: bool) -> None:
        ws, conn = self.ws, self.conn
        if ws is None or conn is None or ws.state is not State.OPEN or conn.closed:
            return
        if is_text:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                ws.fail(CloseCode.INVALID_DATA, "Invalid UTF-8 in a text frame.")
                self.service.node.disconnect(conn, "Invalid UTF-8 in a text frame.")
                return
        self.service.node.receive(conn, data, is_text)

    def _write_ws(self) -> None:
        """Write queued frames, then what the websockets protocol wants to send."""
        self.flush()
        ws, transport = self.ws, self.transport
        if ws is None or transport is None:
            return
        for chunk in ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:
                transport.close()  # EOF: websockets is done with the TCP connection
                return
        if ws.close_expected() and self._close_timer is None:
            self._close_timer = self.service.loop.call_later(self.limits.close_timeout, self._abort)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # Transport interface of the core ------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue one or more serialized frames; written at the end of this loop turn."""
        if self._closing:
            return
        if not self._pending:
            self.service.flusher.mark(self)
        self._pending.append(frame)

    def flush(self) -> None:
        pending = self._pending
        transport = self.transport
        if not pending or transport is None:
            return
        if transport.is_closing():
            pending.clear()
            return
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        pending.clear()
        if transport.get_write_buffer_size() > self.limits.max_write_buffer:
            # A client that stops reading must not grow our memory without bound.
            buffered = transport.get_write_buffer_size()
            log.warning(
                "closing slow consumer %s: %d bytes unsent",
                self.conn.connection_id if self.conn else self.peer,
                buffered,
            )
            if self.conn is not None:
                self.service.node.observer.slow_consumer(self.conn, buffered)
            # Nothing more is queued; the close frame follows what is buffered, and the
            # close timer cuts the socket if the client never reads it.
            self.close(CloseCode.TRY_AGAIN_LATER, "The client is not reading fast enough.")

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (after what is queued) and drop the connection."""
        ws = self.ws
        if ws is None or self._closing:
            return
        if ws.state is State.OPEN:
            ws.send_close(code, _truncate_reason(reason))
        self._write_ws()
        self._closing = True

    def ping(self) -> None:
        if self.ws is not None and self.ws.state is State.OPEN and not self._closing:
            self.send(PING_FRAME)


class _Refuse(Exception):
    """Raised inside httptools callbacks to stop parsing and answer with ``response``."""

    def __init__(self, response: HttpResponse):
        super().__init__(response.status)
        self.response = response


def _error(status: int, code: str, message: str) -> HttpResponse:
    response = HttpResponse.json(status, {"code": code, "message": message})
    response.headers.append(("x-ms-error-code", code))
    return response


def _too_large(limit: int) -> RequestError:
    return PayloadTooLarge(f"The request body is larger than {limit} bytes.")


def _truncate_reason(reason: str) -> str:
    encoded = reason.encode("utf-8")
    if len(encoded) <= 123:
        return reason
    return encoded[:120].decode("utf-8", "ignore") + "..."
