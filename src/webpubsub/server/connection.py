"""The asyncio protocol of one TCP connection: HTTP requests, then maybe a WebSocket.

It only moves bytes: httptools parses requests, REST routes answer them, the client endpoint
decides the handshake, the websockets Sans-I/O ``ServerProtocol`` does the framing, and the
node decides what every client message means. Outgoing frames are queued and written once per
loop turn (see :class:`Flusher`), so a burst of frames to one connection costs one write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import httptools
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..core.commands import Command
from ..core.connection import OTHER_SUBPROTOCOL, CloseCode, Codec, Connection, NullTransport
from ..core.errors import PayloadTooLarge, RequestError, ServiceUnavailable
from ..core.events import UpstreamRejected
from ..core.handover import Snapshot
from ..core.hub import Hub, is_plain
from ..core.node import RecoveryRefused
from ..core.ratelimit import MessageRate
from ..engine.handover import Adoption
from ..protocols import CODECS
from ..protocols.mqtt.connection import MqttConnection
from .client_endpoint import Accepted, MqttUpgrade, Pending
from .http import HttpRequest, HttpResponse, origin_form

if TYPE_CHECKING:
    from .app import Service
    from .socketio import EngineSession
    from .tunnel import TunnelSession

log = logging.getLogger("webpubsub.server")

PING_FRAME = Frame(Opcode.PING, b"").serialize(mask=False)
HELD_LIMIT = 64 * 1024  # bytes read from a client whose upgrade waits for its connect event

MESSAGES_PER_TURN = 256
"""Client messages one socket may have handled per event-loop turn; the rest of a read waits
for the next turn (with reading paused), so other sockets and /healthz are served between."""


# Connections written per slice of a hub's broadcast round; between slices the loop reads
# (a publish that arrives meanwhile joins the writes of the connections not reached yet).
ROUND_SLICE = 1000


class HubLog:
    """A hub's recent broadcasts, written to its plain connections in rounds.

    Entries are ``(seq, version, frames)``: a Flusher-wide sequence number, the hub's
    membership version when it was sent (a connection added later is not owed it) and one
    frame per codec (core/hub.py ``Batcher``). Each connection's protocol remembers the last
    ``seq`` it queued or wrote (``ServiceProtocol._cursor``)."""

    __slots__ = ("entries", "hub", "running", "upto", "waiters")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.entries: list[tuple[int, int, dict[Codec, bytes]]] = []
        self.running = False  # a round is scheduled or under way
        self.upto = 0  # the last seq the round under way started with; 0 when none is
        # REST broadcasts waiting until every connection has them (Flusher.written).
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    def release(self, upto: int | None = None) -> None:
        """Answer the waiters whose broadcast every connection has (all, without ``upto``)."""
        still = []
        for seq, waiter in self.waiters:
            if upto is None or seq <= upto:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((seq, waiter))
        self.waiters = still

    def owed(self, cursor: int, added_at: int, codec: Codec) -> list[bytes]:
        """The frames after ``cursor`` for a connection added at ``added_at``, in order."""
        return [
            frames[codec]
            for seq, version, frames in self.entries
            if seq > cursor and version >= added_at and codec in frames
        ]


class Flusher:
    """Writes each connection's queued frames once per event-loop turn, and each hub's
    broadcasts in rounds over its connections: the frames a connection is owed, joined,
    in one write; the loop reads between slices of a round."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[ServiceProtocol] = []
        self._scheduled = False
        self.logs: dict[str, HubLog] = {}  # hubs with broadcasts not yet written to all
        self.seq = 0

    def mark(self, proto: ServiceProtocol) -> None:
        self._dirty.append(proto)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for proto in dirty:
            proto.flush()

    def broadcast(self, hub: Hub, frames: dict[Codec, bytes]) -> None:
        self.seq += 1
        log = self.logs.get(hub.name)
        if log is None or log.hub is not hub:
            if log is not None:
                log.release()  # that hub is gone: nobody is left to write to
            log = self.logs[hub.name] = HubLog(hub)
        log.entries.append((self.seq, hub.version, frames))
        if not log.running:
            log.running = True
            self._loop.call_soon(self._round, log)

    def written(self, hub: str) -> asyncio.Future[None] | None:
        """A future done once every connection of the hub has its broadcasts so far (queued
        or written): the end of the round that carries the last one. REST answers a
        broadcast then, so a publisher never gets ahead of the writes (issue 16
        back-pressure): the log holds at most the broadcasts of the requests in flight.
        None when there is nothing to wait for."""
        log = self.logs.get(hub)
        if log is None or not log.entries:
            return None
        waiter = self._loop.create_future()
        log.waiters.append((log.entries[-1][0], waiter))
        return waiter

    def _round(self, log: HubLog) -> None:
        """Start a round: every connection the hub has now, a slice per loop turn."""
        if self.logs.get(log.hub.name) is not log:
            log.release()
            return
        upto = log.upto = log.entries[-1][0]
        self._slice(log, list(log.hub.connections.values()), 0, upto)

    def _slice(self, log: HubLog, conns: list[Connection], start: int, upto: int) -> None:
        if self.logs.get(log.hub.name) is not log:
            log.release()
            return
        end = min(start + ROUND_SLICE, len(conns))
        entries = log.entries
        last = entries[-1][0]
        first_seq = entries[0][0]
        first_version = entries[0][1]
        joined: dict[Codec, bytes] = {}  # what a connection owed every entry gets
        for conn in conns[start:end]:
            if conn.closed or conn.recovery is not None or conn.per_message:
                continue  # gone, or not plain (reliable and MQTT connections: core/hub.py)
            proto: ServiceProtocol = conn.transport  # type: ignore[assignment]
            cursor = proto._cursor
            if cursor >= last:
                continue
            codec = conn.codec
            if cursor < first_seq and first_version >= conn.added_at:
                data = joined.get(codec)
                if data is None:
                    frames = [f[codec] for _, _, f in entries if codec in f]
                    data = joined[codec] = frames[0] if len(frames) == 1 else b"".join(frames)
            else:
                frames = log.owed(cursor, conn.added_at, codec)
                data = frames[0] if len(frames) == 1 else b"".join(frames)
            transport = proto.transport
            if (
                proto._pending
                or proto._kernel_full
                or proto._closing
                or transport is None
                or transport.is_closing()
            ):
                proto.take_broadcast(data, last)
                continue
            proto._cursor = last  # the common case, inline: straight to the kernel
            transport.write(data)
            if proto._kernel_full:
                proto._check_backlog()
        if end < len(conns):
            self._loop.call_soon(self._slice, log, conns, end, upto)
            return
        # Every connection of the round has queued or written up to ``upto`` at least; the
        # ones added since were not owed those entries.
        keep = [entry for entry in entries if entry[0] > upto]
        log.upto = 0
        if log.waiters:
            log.release(upto)
        if keep:
            log.entries = keep
            self._loop.call_soon(self._round, log)
        else:
            del self.logs[log.hub.name]


class ServiceProtocol(asyncio.Protocol):
    """One TCP connection of the service port.

    Slotted, and what only HTTP needs is dropped after an upgrade: an idle WebSocket
    connection should cost a few kilobytes (see ``python -m bench.memory``).
    """

    __slots__ = (
        "_backlog",
        "_body",
        "_body_size",
        "_close_timer",
        "_closing",
        "_connecting",
        "_cursor",
        "_draining",
        "_expiring",
        "_header_bytes",
        "_headers",
        "_held",
        "_in_request",
        "_kernel_full",
        "_loop",
        "_lost",
        "_mqtt",
        "_mqtt_move",
        "_parts",
        "_parts_text",
        "_paused",
        "_pending",
        "_refusal",
        "_refused",
        "_request_timer",
        "_requests",
        "_serving",
        "_streaming",
        "_timer_is_idle",
        "_unwritten",
        "_upgrade",
        "_url",
        "conn",
        "eio",
        "last_received",
        "limits",
        "parser",
        "peer",
        "rate",
        "service",
        "transport",
        "tunnel",
        "ws",
    )

    def __init__(self, service: Service) -> None:
        self.service = service
        self.limits = service.settings.limits
        self._loop = service.loop
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.peer = ""
        self.last_received = 0.0  # loop time of the last bytes from the peer
        # HTTP request being parsed
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._in_request = False  # some bytes of a request arrived, not all of it
        self._requests: list[tuple[HttpRequest, bool]] = []  # (request, keep-alive), in order
        self._serving = False
        self._upgrade: HttpRequest | None = None
        # An upgrade waiting for the hub's connect event, and what the client sent meanwhile.
        self._connecting: asyncio.Task[None] | None = None
        self._mqtt: MqttUpgrade | None = None  # for an MQTT client's connect event
        # An MQTT CONNECT asking the cluster for its session; not cancelled when the client
        # leaves (the other node may have let go already: the session is kept here).
        self._mqtt_move: asyncio.Task[None] | None = None
        self._held = b""
        self._refused = False
        self._refusal: HttpResponse | None = None  # sent once the queued requests are answered
        self._draining = False  # the service is stopping: answer what is in flight, then go
        self._streaming = False  # writing an endless body (server-sent events)
        # One timer bounds each request (request_timeout) and each idle keep-alive gap.
        self._request_timer: asyncio.TimerHandle | None = None
        self._timer_is_idle = False
        # WebSocket mode
        self.ws: ServerProtocol | None = None
        self.conn: Connection | None = None
        self.tunnel: TunnelSession | None = None  # an app server's tunnel, not a client
        self.eio: EngineSession | None = None  # a Socket.IO client's Engine.IO WebSocket
        self._lost: asyncio.Future[None] | None = None  # done at connection_lost, if asked
        self.rate: MessageRate | None = None
        self._pending: list[bytes] = []
        # The last hub broadcast (Flusher seq) queued or written here.
        self._cursor = 0
        # TTL frames among _pending: (index, frame count, wall-clock expiry); None: none.
        self._expiring: list[tuple[int, int, float]] | None = None
        # The kernel's send buffer is full (asyncio paused writing): _pending is held back
        # until it drains, so a TTL message can still expire; _unwritten counts its bytes.
        self._kernel_full = False
        self._unwritten = 0
        self._parts: list[bytes] | None = None
        self._parts_text = False
        self._backlog: list[tuple[bytes, bool]] | None = None  # messages for the next turn
        self._paused = False  # reading paused while the backlog is worked off
        self._closing = False
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        self.last_received = self._loop.time()
        protocols = self.service.protocols
        protocols.add(self)
        if len(protocols) + self.service.peer_connections() > self.limits.max_connections:
            log.warning("refusing %s: %d connections open", self.peer, len(protocols) - 1)
            self._refuse(_full())
            return
        self._arm_timer(self.limits.request_timeout, self._request_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.service.protocol_closed(self)
        for timer in (self._close_timer, self._request_timer):
            if timer is not None:
                timer.cancel()
        self._pending.clear()
        self._expiring = None
        self._backlog = None
        if self._connecting is not None:
            # The client left during its connect event: stop waiting for a slot or an answer.
            self._connecting.cancel()
            self._connecting = None
        if self.tunnel is not None:
            self.tunnel.lost()
        if self.eio is not None:
            self.eio.ws_lost(self)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        conn = self.conn
        if conn is None:
            return
        if isinstance(conn, MqttConnection):
            if conn.socket_lost(self, self._loop.time()):
                self.service.mqtt_clients.discard(
                    conn
                )  # MQTT: the will, then the session ends (mqtt spec 6.1)
            return
        node = self.service.node
        ws = self.ws
        close = ws.close_rcvd if ws is not None else None
        if close is not None and conn.transport is self and _ends_connection(ws, close.code):
            conn.closed = True
            node.disconnect(conn, close.reason)
        else:
            node.connection_lost(conn, self, self.service.loop.time())

    def data_received(self, data: bytes) -> None:
        self.last_received = self._loop.time()
        if self.ws is not None:
            self._ws_received(data)
            return
        if self._connecting is not None:
            self._hold(data)
            return
        if self._refused:
            return
        try:
            assert self.parser is not None, "HTTP bytes after the upgrade"
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0]
            self._start_upgrade(data[offset:])
        except httptools.HttpParserError as exc:
            # httptools reports an exception raised in a callback as its context.
            if isinstance(exc.__context__, _Refuse):
                self._refuse_after_queue(exc.__context__.response)
            else:
                error = _error(400, "Error.BadRequest", f"Malformed HTTP request: {exc}")
                self._refuse_after_queue(error)

    def eof_received(self) -> bool | None:
        if self.ws is not None:
            self.ws.receive_eof()
            # The transport closes when this returns: handle every message read before.
            self._ws_events(everything=True)
        return None

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._in_request = True
        if self._request_timer is None or self._timer_is_idle:
            # A new request on a kept-alive connection: it has request_timeout to arrive.
            self._arm_timer(self.limits.request_timeout, self._request_timeout)

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
        parser = self.parser
        assert parser is not None
        target, authority = origin_form(self._url.decode("latin-1"))
        headers = self._headers
        if authority is not None:
            # RFC 9112 3.2.2: the target's authority replaces any Host header.
            headers = [(k, v) for k, v in headers if k != "host"] + [("host", authority)]
        request = HttpRequest(
            parser.get_method().decode("ascii", "replace"),
            target,
            headers,
            b"".join(self._body),
            self.peer,
        )
        self._body = []
        self._in_request = False
        upgrade = request.header("upgrade")
        if parser.should_upgrade() and upgrade and upgrade.lower() == "websocket":
            self._upgrade = request
            return
        self._cancel_timer()
        keep_alive = parser.should_keep_alive() and not self._draining
        self._requests.append((request, keep_alive))
        if not self._serving:
            self._serving = True
            self._loop.create_task(self._serve_requests())

    # -- HTTP -------------------------------------------------------------------------------

    async def _serve_requests(self) -> None:
        try:
            while self._requests and self.transport is not None:
                request, keep_alive = self._requests.pop(0)
                request.followed = bool(self._requests)
                if request.path.startswith("/clients/socketio/"):  # a poll may wait long
                    if self._lost is None:
                        self._lost = self._loop.create_future()
                    request.gone = self._lost
                response = await self.service.handle_http(request)
                if self.transport.is_closing():
                    return
                keep_alive = keep_alive and not self._draining
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
        self._after_requests()

    def _after_requests(self) -> None:
        """Every queued request is answered: send a pending refusal, or wait for the next."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.ws is not None:
            return
        if self._refusal is not None:
            response, self._refusal = self._refusal, None
            self._refuse(response)
        elif self._draining and not self._in_request:
            transport.close()
        elif not self._in_request and self._upgrade is None:
            self._arm_timer(self.limits.keep_alive_timeout, self._idle_timeout, idle=True)

    async def _write_stream(self, stream: AsyncIterator[bytes]) -> None:
        """Write a streamed body until it ends or the client goes; then close."""
        self._streaming = True
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
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response.serialize(keep_alive=False))
            self.transport.close()

    def _refuse_after_queue(self, response: HttpResponse) -> None:
        """Refuse the request being read, after answering those read before it in full
        (RFC 9112 9.3.2: pipelined requests are answered in order)."""
        self._refused = True  # read no further
        if self._serving or self._requests:
            self._refusal = response
        else:
            self._refuse(response)

    def _arm_timer(self, delay: float, callback: Callable[[], None], *, idle: bool = False) -> None:
        self._cancel_timer()
        self._request_timer = self._loop.call_later(delay, callback)
        self._timer_is_idle = idle

    def _cancel_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timeout(self) -> None:
        """A request (or the first one) did not arrive in full within request_timeout:
        the slow-header and slow-body ("slowloris") cut."""
        self._request_timer = None
        if self.ws is not None or self._refused:
            return
        if self._in_request or self._upgrade is not None or not (self._serving or self._requests):
            error = _error(408, "Error.RequestTimeout", "The request took too long to arrive.")
            self._refuse_after_queue(error)

    def _idle_timeout(self) -> None:
        """A kept-alive connection sent nothing for keep_alive_timeout: close it quietly."""
        self._request_timer = None
        if self.transport is not None and self.ws is None and not self._in_request:
            self.transport.close()

    def drain(self) -> None:
        """The service is stopping: finish the request in flight, then close; close an idle
        HTTP connection now. WebSocket clients are closed by the node (1001)."""
        self._draining = True
        transport = self.transport
        if self.ws is not None or transport is None:
            return
        busy = self._serving or self._requests or self._in_request or self._upgrade is not None
        if self._streaming or (not busy and not self._refused):
            transport.close()  # a stream never finishes by itself: end it now

    # -- WebSocket handshake -------------------------------------------------------------

    def _start_upgrade(self, rest: bytes) -> None:
        request = self._upgrade
        self._upgrade = None
        if request is None or self._requests or self._serving:
            self._refuse(_error(400, "Error.BadRequest", "Unexpected upgrade request."))
            return
        self._cancel_timer()
        if self._draining:
            self._refuse(_shutting_down())
            return
        if self.service.socketio.matches(request.path):
            self.service.socketio.upgrade(request, self, rest)
            return
        tunnels = self.service.tunnels
        if tunnels.matches(request.path):
            accepted = tunnels.handshake(request, self)
            if isinstance(accepted, HttpResponse):
                self._refuse(accepted)
            else:
                self._accept_tunnel(*accepted, rest)
            return
        result = self.service.client_endpoint.handshake(request, self)
        if isinstance(result, Pending):
            # The hub's blocking connect event decides (spec 5.5). Reading goes on, so a
            # client that leaves meanwhile is noticed and its connect event cancelled.
            self._refused = True
            self._held = rest
            self._connecting = self._loop.create_task(self._connect_event(result))
            return
        self._accept_once_listening(result, rest)

    def _accept_once_listening(self, result: HttpResponse | Accepted, rest: bytes) -> None:
        """Accept, but in a cluster tell a client it is connected only once this node receives
        its hub's commands from the others (a hub new here needs a subscription first):
        before, a send to its group through another node would be accepted and never reach
        it."""
        engine = self.service.engine
        if engine is not None and isinstance(result, Accepted) and result.moving is not None:
            self._refused = True
            self._held = rest
            self._connecting = self._loop.create_task(self._accept_when_moved(result))
            return
        if engine is not None and isinstance(result, Accepted) and result.conn is not None:
            waiter = engine.listening(result.conn.hub)
            if waiter is not None:
                self._refused = True
                self._held = rest
                listen = self._accept_when_listening(result, waiter)
                self._connecting = self._loop.create_task(listen)
                return
        self._accept(result, rest)

    async def _accept_when_listening(self, result: Accepted, waiter: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(
                asyncio.shield(waiter), self.service.settings.cluster.redis_timeout
            )
        except TimeoutError:
            self._connecting = None
            self._refused = False
            self._refuse(
                _error(503, "Error.ServiceUnavailable.Redis", "The cluster did not answer in time.")
            )
            return
        self._connecting = None
        self._refused = False
        held, self._held = self._held, b""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self._accept(result, held)

    async def _accept_when_moved(self, result: Accepted) -> None:
        """A reliable client came back here for a connection another node holds: have it
        handed over (engine/handover.py), then resume it on this socket.

        The move runs in its own task: a client that leaves meanwhile must not cancel it
        half-way (the other node may have let go already); it is then adopted detached."""
        engine = self.service.engine
        codec = result.moving
        assert engine is not None and codec is not None and result.resume is not None
        hub, connection_id, token = result.resume
        move = self._loop.create_task(
            engine.take_over(hub, connection_id, token, codec.subprotocol or "")
        )
        move.add_done_callback(self._adopt_if_gone)
        try:
            adoption = await asyncio.shield(move)
        except asyncio.CancelledError:
            if move.done():
                self._adopt_if_gone(move)  # it finished just as the client left
            raise
        except RecoveryRefused as exc:
            result.refusal = str(exc)
            adoption = None
        except ServiceUnavailable as exc:
            # Not a refusal: the client may try again (1013), it keeps its recovery window.
            result.refusal, result.retry, adoption = exc.message, True, None
        except Exception:
            log.exception("recovering %s through another node failed", connection_id)
            result.refusal, result.retry, adoption = "The recovery failed.", True, None
        self._connecting = None
        self._refused = False
        held, self._held = self._held, b""
        if adoption is not None:
            result.adopted = (adoption.snapshot, engine.finish_move(adoption))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self._accept(result, held)

    def _adopt_if_gone(self, move: asyncio.Task[Adoption]) -> None:
        """The client left while its connection moved here: keep it, detached."""
        if self._connecting is not None or move.cancelled() or move.exception() is not None:
            return  # still waited for (or nothing to adopt)
        if self.ws is not None:
            return  # accepted
        engine = self.service.engine
        assert engine is not None
        adoption = move.result()
        if adoption.done:
            return
        node = self.service.node
        codec = CODECS[adoption.snapshot.subprotocol]
        gone = NullTransport()
        now = self._loop.time()
        conn = node.adopt(adoption.snapshot, codec, gone, now, engine.finish_move(adoption))
        node.connection_lost(conn, gone, now)

    def _hold(self, data: bytes) -> None:
        """Keep what a client sends before its upgrade is answered (it should send nothing);
        past a small bound stop reading, as the client will have to wait anyway."""
        self._held += data
        if len(self._held) > HELD_LIMIT and self.transport is not None:
            self.transport.pause_reading()

    async def _connect_event(self, pending: Pending) -> None:
        """Run the connect event, then answer the upgrade, whatever happens.

        Cancelled when the client goes (``connection_lost``); any other failure is logged and
        answered with 500, so no upgrade is ever left unanswered.
        """
        try:
            await self._connect_and_answer(pending)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the connect of %s failed unexpectedly", self.peer)
            self._connecting = None
            if self.ws is None:
                error = _error(500, "Error.InternalServerError", "The connect event failed.")
                self._refused = False
                self._refuse(error)
            elif self.transport is not None:
                self.transport.abort()
        finally:
            if self._connecting is asyncio.current_task():
                self._connecting = None  # (it may already wait for the hub's subscription)

    async def _connect_and_answer(self, pending: Pending) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # the client is gone: no connect event for it
        try:
            connect_result = await self.service.upstream.connect(pending)
        except UpstreamRejected as exc:
            log.info("connect event refused %s: %d %s", self.peer, exc.status, exc.message)
            error = RequestError(exc.message, code="Error.ConnectRejected", status=exc.status)
            self._connecting = None
            self._refused = False
            self._refuse(HttpResponse.error(error))
            return
        self._connecting = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._draining:
            self._refused = False
            self._refuse(_shutting_down())
            return
        result = self.service.client_endpoint.finish(pending, self, connect_result)
        self._refused = False
        rest, self._held = self._held, b""
        self.transport.resume_reading()
        self._connecting = None
        self._accept_once_listening(result, rest)

    # -- Socket.IO clients (server/socketio.py) ----------------------------------------------

    def refuse(self, response: HttpResponse) -> None:
        """Answer an upgrade with an HTTP error and close."""
        self._connecting = None
        self._refused = False
        self._refuse(response)

    def hold_upgrade(self, rest: bytes, answer: Coroutine[Any, Any, None]) -> None:
        """Keep the upgrade unanswered while ``answer`` runs (a connect round trip)."""
        self._refused = True
        self._held = rest
        self._connecting = self._loop.create_task(self._run_held(answer))

    async def _run_held(self, answer: Coroutine[Any, Any, None]) -> None:
        try:
            await answer
        finally:
            if self._connecting is asyncio.current_task():
                self._connecting = None

    def take_held(self) -> bytes:
        """What the client sent while its upgrade waited; reading goes on."""
        self._refused = False
        held, self._held = self._held, b""
        if self.transport is not None:
            self.transport.resume_reading()
        return held

    def _become_websocket(self, ws: ServerProtocol) -> None:
        """The upgrade is accepted: the 101 goes out, and from here on the socket speaks
        WebSocket only."""
        self.ws = ws
        # pause_writing as soon as the kernel does not take a whole write, resume_writing
        # once it took everything: messages wait in _pending, where a TTL can drop them.
        # Plain TCP only: asyncio's TLS transport does not resume a protocol paused at 0.
        if self.transport is not None and self.transport.get_extra_info("sslcontext") is None:
            self.transport.set_write_buffer_limits(high=0)
        # Drop what HTTP parsing needed.
        self.parser = None
        self._headers = []
        self._url = b""
        # The 101 response is queued like any frame, first, so the frames the accept queues
        # (the connected message) leave with it in one write at the end of this loop turn:
        # a syscall and a wake-up of the client fewer per handshake.
        self.send(b"".join(ws.data_to_send()))
        self.last_received = self._loop.time()

    def accept_engine(self, ws: ServerProtocol, session: EngineSession, rest: bytes) -> None:
        """An Engine.IO WebSocket: its frames go to the session."""
        self._become_websocket(ws)
        self.eio = session
        if rest:
            self._ws_received(rest)

    def _accept_tunnel(self, ws: ServerProtocol, session: TunnelSession, rest: bytes) -> None:
        """An app server's tunnel (socketio spec 4.1): frames go to its session."""
        self._become_websocket(ws)
        self.tunnel = session
        self.service.tunnels.opened(session)
        if rest:
            self._ws_received(rest)

    def _accept(self, result: HttpResponse | Accepted, rest: bytes) -> None:
        if isinstance(result, HttpResponse):
            self._refuse(result)
            return
        self._become_websocket(result.ws)
        node = self.service.node
        now = self.last_received
        self.rate = node.new_rate(now)
        if result.adopted is not None and result.moving is not None:
            snapshot, later = result.adopted
            self.conn = node.adopt(snapshot, result.moving, self, now, later)
        elif result.resume is not None and result.refusal is None:
            hub, connection_id, token = result.resume
            try:
                self.conn = node.resume(hub, connection_id, token, self, now)
            except RecoveryRefused as exc:
                result.refusal = str(exc)
        elif isinstance(result.conn, MqttConnection):
            self.conn = result.conn  # registered by the node when its CONNECT is accepted
            self._mqtt = result.mqtt
            result.conn.on_event = self.service.upstream.mqtt_event
            result.conn.rate = self.rate
            self.service.mqtt_clients.add(result.conn)
        elif result.conn is not None:
            self.conn = result.conn
            node.connect(result.conn, result.groups)
            self.service.upstream.connected(result.conn)
        if result.refusal is not None:
            log.info("refused recovery from %s: %s", self.peer, result.refusal)
            code = CloseCode.TRY_AGAIN_LATER if result.retry else CloseCode.POLICY_VIOLATION
            self.close(code, result.refusal)
            return
        if rest:
            self._ws_received(rest)

    # -- WebSocket I/O ----------------------------------------------------------------------

    def _ws_received(self, data: bytes) -> None:
        assert self.ws is not None
        self.ws.receive_data(data)
        self._ws_events()

    def _ws_events(self, *, everything: bool = False) -> None:
        """Join the frames websockets parsed into messages and handle them.

        One read may hold thousands of small messages: past ``MESSAGES_PER_TURN`` the rest
        wait in ``_backlog`` for the next loop turn with reading paused, so one flooding
        socket cannot starve the others (nor /healthz) for the whole read. Messages keep their
        order, and what websockets wants to send (pongs, the answer to a close) waits for the
        backlog, so a close read in the same segment cannot end the connection before the
        messages in front of it were handled.
        """
        ws = self.ws
        assert ws is not None
        budget = -1 if everything else MESSAGES_PER_TURN
        for frame in ws.events_received():
            if not isinstance(frame, Frame):
                continue  # the handshake was done by httptools: only frames come here
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    budget = self._ws_queue(bytes(frame.data), opcode is Opcode.TEXT, budget)
                else:
                    self._parts = [bytes(frame.data)]
                    self._parts_text = opcode is Opcode.TEXT
            elif opcode is Opcode.CONT and self._parts is not None:
                self._parts.append(bytes(frame.data))
                if frame.fin:
                    data, self._parts = b"".join(self._parts), None
                    budget = self._ws_queue(data, self._parts_text, budget)
        if self._backlog is None:
            self._write_ws()
        elif everything:
            self._ws_backlog(everything=True)
        elif not self._paused:
            self._paused = True
            if self.transport is not None:
                self.transport.pause_reading()
            self._loop.call_soon(self._ws_backlog)

    def _ws_queue(self, data: bytes, is_text: bool, budget: int) -> int:
        """Handle one message now if the turn's budget allows (-1: no budget), else queue it
        behind the others; returns what is left of the budget."""
        if self._backlog is not None:
            self._backlog.append((data, is_text))
            return budget
        if budget == 0:
            self._backlog = [(data, is_text)]
            return budget
        self._ws_message(data, is_text)
        return budget - 1 if budget > 0 else budget

    def _ws_backlog(self, *, everything: bool = False) -> None:
        """Handle the next messages of the backlog, and come back next turn for the rest;
        when it is empty, read again and send what websockets has for the client."""
        backlog = self._backlog
        if backlog is not None and self.transport is not None and not self._closing:
            count = len(backlog) if everything else MESSAGES_PER_TURN
            self._backlog = backlog[count:] or None
            for data, is_text in backlog[:count]:
                self._ws_message(data, is_text)
            if self._backlog is not None and not self._closing:
                self._loop.call_soon(self._ws_backlog)
                return
        self._backlog = None  # nothing counts once we began to close
        self._paused = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the socket is gone (or going): nothing to read or write any more
        transport.resume_reading()
        self._write_ws()

    def _ws_message(self, data: bytes, is_text: bool) -> None:
        """One complete message: charged to the rate first, then checked and handled.

        Whatever goes wrong in here is our fault, not the client's: it is logged with its
        traceback and the client is closed with 1011, never left with a socket that just
        stops (an exception escaping ``data_received`` makes asyncio abort the transport).
        """
        ws, conn = self.ws, self.conn
        if self.eio is not None and ws is not None and not self._closing:
            try:
                self.eio.ws_message(self, data, is_text)
            except Exception:
                log.exception("error handling a Socket.IO message from %s", self.peer)
                self.eio.end("Internal server error.")
                self.close(CloseCode.INTERNAL_ERROR, "Internal server error.")
            return
        if self.tunnel is not None and ws is not None and not self._closing:
            try:
                self.tunnel.receive(data, is_text)
            except Exception:
                log.exception("error handling a tunnel message from %s", self.peer)
                self.close(CloseCode.INTERNAL_ERROR, "Internal server error.")
            return
        # Messages that arrived before the client's close frame still count (it may send
        # a last message and close at once); nothing counts once we began to close.
        if ws is None or conn is None or self._closing or conn.closed:
            return
        if ws.state is not State.OPEN and not ws.close_rcvd_then_sent:
            return  # we failed the connection (protocol error): websockets closes it
        node = self.service.node
        if isinstance(conn, MqttConnection):
            if conn.transport is not self:
                return  # the session moved to a newer socket (mqtt spec 3.6)
            try:
                conn.receive(data, is_text, self._loop.time())
                self._mqtt_after(conn)
            except Exception:
                log.exception("error handling MQTT bytes from %s", conn.connection_id)
                self._internal_error(conn)
            return
        try:
            if not node.admit(conn, data, is_text, self.rate, self._loop.time()):
                return  # throttled or cut before anything else looked at it
            if is_text:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    ws.fail(CloseCode.INVALID_DATA, "Invalid UTF-8 in a text frame.")
                    node.disconnect(conn, "Invalid UTF-8 in a text frame.")
                    return
            node.receive(conn, data, is_text)
        except Exception:
            log.exception("error handling a message from %s", conn.connection_id)
            self._internal_error(conn)

    def _mqtt_after(self, conn: MqttConnection) -> None:
        """After an MQTT client's bytes: the connect event to call, ``connected`` to send,
        a resumed session that now owns this socket (mqtt spec 3.6, 5)."""
        if conn.pending_connect is not None and self._mqtt is not None and self._connecting is None:
            self._connecting = self._loop.create_task(self._mqtt_connect(conn, self._mqtt))
            return
        if conn.pending_move is not None:
            if self._mqtt_move is None:
                self._mqtt_move = self._loop.create_task(self._mqtt_locate(conn))
            return
        owner = conn.resumed or conn
        if owner.new_session:  # a new session's CONNACK went out (mqtt spec 5.3)
            owner.new_session = False
            self.service.upstream.connected(owner)
        if conn.resumed is not None:  # it resumed a session: that one owns us now
            self.conn = conn.resumed
            self.service.mqtt_clients.discard(conn)
            self.service.mqtt_clients.add(conn.resumed)

    async def _mqtt_connect(self, conn: MqttConnection, upgrade: MqttUpgrade) -> None:
        packet = conn.pending_connect
        assert packet is not None
        try:
            result, user_properties = await self.service.upstream.mqtt_connect(
                conn, upgrade, packet
            )
            if self.transport is None or self.transport.is_closing():
                return
            conn.finish_connect(result, user_properties)
            self._mqtt_after(conn)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the MQTT connect of %s failed unexpectedly", self.peer)
            self._internal_error(conn)
        finally:
            if self._connecting is asyncio.current_task():
                self._connecting = None

    async def _mqtt_locate(self, conn: MqttConnection) -> None:
        """Ask the cluster for the session of an MQTT CONNECT's client id: another node
        hands it over (resume), ends it (clean start), or holds none (engine/handover.py)."""
        engine = self.service.engine
        assert engine is not None
        outcome: Snapshot | str | None = None
        later: list[Command] = []
        try:
            try:
                adoption = await engine.take_over(
                    conn.hub, conn.connection_id, conn.move_token(), "mqtt"
                )
            except RecoveryRefused as exc:
                # No node holds it, it expired meanwhile, or its node ended it for a new
                # session; the one refusal: the id is a Web PubSub client's (mqtt spec 3.2).
                outcome = "refused" if exc.why == OTHER_SUBPROTOCOL else None
            except ServiceUnavailable as exc:
                log.warning("MQTT client %s: %s", conn.connection_id, exc.message)
                outcome = "unavailable"
            else:
                outcome, later = adoption.snapshot, engine.finish_move(adoption)
            conn.finish_move(outcome, later, self._loop.time())
            if conn.transport is self:
                self._mqtt_after(conn)
            elif conn.closed:
                self.service.mqtt_clients.discard(conn)
        except Exception:
            log.exception("the MQTT session of %s could not be located", conn.connection_id)
            self._internal_error(conn)
        finally:
            self._mqtt_move = None

    def _internal_error(self, conn: Connection) -> None:
        """Close a client whose message we failed to handle: 1011, as RFC 6455 7.4.1 says."""
        reason = "Internal server error while handling a message."
        try:
            self.service.node.close(conn, CloseCode.INTERNAL_ERROR, reason)
        except Exception:
            log.exception("error closing %s", conn.connection_id)
            self.close(CloseCode.INTERNAL_ERROR, reason)

    def _write_ws(self) -> None:
        """Write queued frames, then what the websockets protocol wants to send."""
        self.flush(force=self._closing)
        ws, transport = self.ws, self.transport
        if ws is None or transport is None:
            return
        for chunk in ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:
                transport.close()  # EOF: websockets is done with the TCP connection
                return
        # Pongs and close frames count too: a ping flood nobody reads is a slow consumer.
        self._check_backlog()
        if ws.close_expected() and self._close_timer is None:
            self._close_timer = self._loop.call_later(self.limits.close_timeout, self._abort)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # Transport interface of the core ------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue one or more serialized frames; written at the end of this loop turn."""
        if self._closing:
            return
        flusher = self.service.flusher
        if flusher.logs:
            self._catch_up(flusher)  # hub-wide frames sent before this one come first
        if not self._pending:
            flusher.mark(self)
        self._pending.append(frame)
        if self._kernel_full:
            self._unsent(len(frame))

    def _catch_up(self, flusher: Flusher) -> None:
        """Queue the hub broadcasts this connection is owed and has not queued yet, so that
        a frame of its own keeps its place after them."""
        conn = self.conn
        if conn is None:
            return
        log = flusher.logs.get(conn.hub)
        if log is None or not log.entries or self._cursor >= log.entries[-1][0]:
            return
        if not is_plain(conn):
            return
        frames = log.owed(self._cursor, conn.added_at, conn.codec)
        self._cursor = log.entries[-1][0]
        if frames:
            if not self._pending:
                flusher.mark(self)
            self._pending.extend(frames)
            if self._kernel_full:
                self._unsent(sum(len(frame) for frame in frames))

    def take_broadcast(self, data: bytes, upto: int) -> None:
        """Hub broadcasts this connection is owed, joined (``Flusher``): written at once,
        unless frames of our own wait (then after them) or the kernel is full."""
        self._cursor = upto
        if self._closing:
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self._pending and not self._kernel_full:
            transport.write(data)
            if self._kernel_full:
                self._check_backlog()
            return
        if not self._pending:
            self.service.flusher.mark(self)
        self._pending.append(data)
        if self._kernel_full:
            self._unsent(len(data))

    def send_expiring(self, pieces: tuple[bytes, ...], expires: float) -> None:
        """Queue one message's frames, dropped unless handed to the kernel by ``expires``
        (wall clock): the TTL of spec-next 4."""
        if self._closing:
            return
        pending = self._pending
        if not pending:
            self.service.flusher.mark(self)
        if self._expiring is None:
            self._expiring = []
        self._expiring.append((len(pending), len(pieces), expires))
        pending.extend(pieces)
        if self._kernel_full:
            self._unsent(sum(len(piece) for piece in pieces))

    def _unsent(self, size: int) -> None:
        self._unwritten += size
        if self._unwritten > self.limits.max_write_buffer:
            self._check_backlog()

    def pause_writing(self) -> None:
        # TLS: frames go on to asyncio's buffer as before (its TLS transport is not relied
        # on to resume us), so a TTL there ends at the TLS layer.
        transport = self.transport
        if transport is not None and transport.get_extra_info("sslcontext") is None:
            self._kernel_full = True

    def resume_writing(self) -> None:
        self._kernel_full = False
        if self._pending:
            self.service.flusher.mark(self)

    def flush(self, *, force: bool = False) -> None:
        """Hand the queued frames to the kernel, unless it is full (then they wait for
        ``resume_writing``, or ``force``: a close frame must follow them)."""
        pending = self._pending
        transport = self.transport
        if not pending or transport is None:
            return
        if transport.is_closing():
            pending.clear()
            self._expiring = None
            return
        if self._kernel_full and not force:
            return
        expiring = self._expiring
        if expiring is not None:
            self._expiring = None
            pending[:] = _unexpired(pending, expiring, time.time())
            if not pending:
                self._unwritten = 0
                return
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        pending.clear()
        self._unwritten = 0
        self._check_backlog()

    def _check_backlog(self) -> None:
        """Cut a client that lets more than ``max_write_buffer`` bytes pile up unsent.

        A client that stops reading must not grow our memory without bound.
        """
        transport = self.transport
        if self._closing or transport is None:
            return
        buffered = transport.get_write_buffer_size() + self._unwritten
        if buffered <= self.limits.max_write_buffer:
            return
        log.warning(
            "closing slow consumer %s: %d bytes unsent",
            self.conn.connection_id if self.conn else self.peer,
            buffered,
        )
        if self.conn is not None:
            self.service.node.observer.slow_consumer(self.conn, buffered)
        # Nothing more is queued; the close frame follows what is buffered, and the close
        # timer cuts the socket if the client never reads it.
        self.close(CloseCode.TRY_AGAIN_LATER, "The client is not reading fast enough.")

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (after what is queued) and drop the connection."""
        ws = self.ws
        if ws is None or self._closing:
            return
        if self.service.flusher.logs:
            self._catch_up(self.service.flusher)  # broadcasts sent before the close go first
        self._closing = True  # first: what follows may check the backlog again
        if ws.state is State.OPEN:
            ws.send_close(code, _truncate_reason(reason))
        self._write_ws()

    def ping(self) -> None:
        if self.ws is not None and self.ws.state is State.OPEN and not self._closing:
            self.send(PING_FRAME)

    def keep_alive(self, now: float) -> None:
        """Ping a WebSocket client (spec 4.9), or cut one silent for over idle_timeout.

        Any bytes count as a sign of life, pongs included; a peer that vanished without a
        FIN would otherwise hold its socket and its groups forever. The close code is not
        1008, so a reliable client may still recover (spec 4.7).
        """
        if self.ws is None or self.ws.state is not State.OPEN or self._closing:
            return
        if now - self.last_received > self.limits.idle_timeout:
            who = self.conn.connection_id if self.conn is not None else self.peer
            log.info("closing idle client %s: silent for %.0f s", who, now - self.last_received)
            self.close(CloseCode.INTERNAL_ERROR, "Keep-alive timeout: no answer to pings.")
            return
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


def _full() -> HttpResponse:
    response = _error(
        503, "Error.ServiceUnavailable.TooManyConnections", "This node has too many connections."
    )
    response.headers.append(("Retry-After", "1"))
    return response


def _shutting_down() -> HttpResponse:
    response = _error(503, "Error.ServiceUnavailable.ShuttingDown", "The service is stopping.")
    response.headers.append(("Retry-After", "1"))
    return response


def _too_large(limit: int) -> RequestError:
    return PayloadTooLarge(f"The request body is larger than {limit} bytes.")


def _truncate_reason(reason: str) -> str:
    encoded = reason.encode("utf-8")
    if len(encoded) <= 123:
        return reason
    return encoded[:120].decode("utf-8", "ignore") + "..."


def _ends_connection(ws: ServerProtocol | None, code: int) -> bool:
    """Whether a close handshake ends the logical connection, not just its socket.

    A close we started (and the client answered) ends it. A close the client started ends
    it only with 1000: any other code (the JS client's ``abort()`` closes with 3001, then
    recovers) is a drop, and a reliable connection stays recoverable for its window, as in
    Microsoft's emulator.
    """
    if ws is None or (ws.close_sent is not None and not ws.close_rcvd_then_sent):
        return True
    return code == CloseCode.NORMAL


def _unexpired(
    pending: list[bytes], expiring: list[tuple[int, int, float]], now: float
) -> list[bytes]:
    """``pending`` without the frames of messages whose TTL has passed."""
    dropped: set[int] = set()
    for start, count, expires in expiring:
        if expires <= now:
            dropped.update(range(start, start + count))
    if not dropped:
        return pending
    return [frame for i, frame in enumerate(pending) if i not in dropped]
