"""Engine.IO v4 on ``/clients/socketio/hubs/{hub}`` (socketio spec 2): polling, WebSocket,
and the upgrade from one to the other; bytes only. A session is the transport of one
``SocketIOConnection`` (protocols/socketio.py), which relays its packets to and from the
app server that answered its ``connect`` over the tunnel (server/tunnel.py).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..core import commands as c
from ..core.connection import CloseCode
from ..core.errors import BadRequest, ClientError, RequestError, TooManyRequests
from ..core.events import UpstreamRejected
from ..core.message import DataType
from ..core.names import check_hub
from ..core.odata import parse_filter
from ..core.requests import SendEvent
from ..core.socketio import INVOKE_ACK_BASE, with_ack_id
from ..protocols import engineio
from ..protocols.frames import text_frame
from ..protocols.socketio import SocketIOConnection
from .client_endpoint import Pending
from .http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from .app import Service
    from .connection import ServiceProtocol

log = logging.getLogger("webpubsub.socketio")

PREFIX = "/clients/socketio/hubs/"
TEXT = "text/plain; charset=UTF-8"
DEFAULT_PING = (25_000, 20_000)  # ms, engine.io's defaults, if the open packet lacks them


def hub_of(path: str) -> str | None:
    """The hub name of a Socket.IO client path (with or without the trailing slash)."""
    if not path.startswith(PREFIX):
        return None
    name = path[len(PREFIX) :]
    if name.endswith("/"):
        name = name[:-1]
    return name if name and "/" not in name else None


def _engine_error(error: tuple[int, str], status: int = 400) -> HttpResponse:
    return HttpResponse(status, engineio.error_body(error), content_type="application/json")


class EngineSession:
    """One Engine.IO session: polling until (and unless) a WebSocket takes over."""

    def __init__(
        self, endpoint: SocketIOEndpoint, sid: str, handshake: dict[str, Any], peer: str = ""
    ) -> None:
        self.endpoint = endpoint
        self.sid = sid
        self.peer = peer  # the client's address, as Live Trace shows it
        self.conn: SocketIOConnection | None = None
        self.queue: list[str] = []  # packets for the next poll
        self.poll: asyncio.Future[None] | None = None  # a GET waiting for packets
        self.ws: ServiceProtocol | None = None
        self.probing: ServiceProtocol | None = None  # a WebSocket on its way to take over
        self.ended = False
        interval = handshake.get("pingInterval", DEFAULT_PING[0])
        timeout = handshake.get("pingTimeout", DEFAULT_PING[1])
        interval = interval if isinstance(interval, int) else DEFAULT_PING[0]
        timeout = timeout if isinstance(timeout, int) else DEFAULT_PING[1]
        self.silence = (interval + timeout) / 1000  # a client quiet longer is gone
        max_payload = handshake.get("maxPayload")
        self.max_payload = max_payload if isinstance(max_payload, int) else 1_000_000
        self.last_seen = endpoint.loop.time()

    # -- Transport (core.connection) ------------------------------------------------------

    def send(self, frame: bytes | None) -> None:
        pass  # the node's control frames: none for Socket.IO (its codec encodes none)

    def send_expiring(self, pieces: tuple[bytes, ...], expires: float) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        """The node closes the connection (REST close, shutdown)."""
        self.end(reason, linger=True)

    # -- EngineTransport (protocols.socketio) ---------------------------------------------

    def push(self, packets: list[str]) -> None:
        if self.ended:
            return
        ws = self.ws
        if ws is not None:
            ws.send(engineio.ws_frames(packets))
            return
        self.queue.extend(packets)
        self._wake()

    def push_frames(self, frames: bytes) -> bool:
        if self.ended:
            return True
        ws = self.ws
        if ws is None:
            return False
        ws.send(frames)
        return True

    def end(self, reason: str, *, linger: bool = False) -> None:
        """Close the Engine.IO connection on whatever carries it now. ``linger``: an orderly
        close, which a polling client learns from its next poll (``6\x1e1``) if none is held
        now; after a protocol error the session is simply gone."""
        if self.ended:
            return
        self.ended = True
        conn = self.conn
        if conn is not None:
            if not conn.closed:
                conn.end(reason)
            conn.drop_acks()
        if self.ws is not None:
            self.ws.send(text_frame(engineio.CLOSE.encode()))
            self.ws.close(CloseCode.NORMAL, reason[:100])
        else:
            self.queue += [engineio.NOOP, engineio.CLOSE]
            self._wake()
        if self.probing is not None:
            self.probing.close(CloseCode.NORMAL, reason[:100])
        if not (linger and self.ws is None and self.poll is None):
            self.endpoint.sessions.pop(self.sid, None)

    def _wake(self) -> None:
        poll = self.poll
        if poll is not None and not poll.done():
            poll.set_result(None)

    # -- polling --------------------------------------------------------------------------

    async def get(self, gone: asyncio.Future[None] | None = None) -> HttpResponse:
        """A long poll: the packets waiting, or the next ones (at most ``silence`` s).
        ``gone``: done if the poll's TCP connection closes first; then, as engine.io does,
        the session ends (what it took could not be answered)."""
        if self.poll is not None:
            self.end("Two polls at once.")  # engine.io's "overlap" (socketio spec 2.2)
            return _engine_error(engineio.BAD_REQUEST)
        self.last_seen = self.endpoint.loop.time()
        if not self.queue and not self.ended:
            poll = self.poll = self.endpoint.loop.create_future()
            waits: set[asyncio.Future[None]] = {poll} if gone is None else {poll, gone}
            try:
                await asyncio.wait(waits, timeout=self.silence, return_when="FIRST_COMPLETED")
            finally:
                self.poll = None
                poll.cancel()
            if gone is not None and gone.done():
                self.end("The poll's connection closed.")
                return _engine_error(engineio.BAD_REQUEST)
        self.last_seen = self.endpoint.loop.time()
        packets, self.queue = self.queue, []
        if self.ended:
            self.endpoint.sessions.pop(self.sid, None)  # its close is on its way
        return HttpResponse(
            200, engineio.join_payload(packets or [engineio.NOOP]), content_type=TEXT
        )

    def post(self, body: bytes) -> HttpResponse:
        self.last_seen = self.endpoint.loop.time()
        if len(body) > self.max_payload:
            self.end("The payload is too large.")
            return _engine_error(engineio.BAD_REQUEST, 413)
        try:
            packets = engineio.split_payload(body)
        except engineio.EngineIOError as exc:
            self.end(f"Bad payload: {exc}.")
            return _engine_error(engineio.BAD_REQUEST)
        self._from_client(packets)
        return HttpResponse(200, b"ok", content_type="text/html")

    # -- WebSocket ------------------------------------------------------------------------

    def ws_message(self, proto: ServiceProtocol, data: bytes, is_text: bool) -> None:
        try:
            packet = engineio.from_frame(data, is_text)
        except engineio.EngineIOError as exc:
            proto.close(CloseCode.INVALID_DATA, str(exc))
            if proto is self.ws:
                self.end(f"Bad packet: {exc}.")
            return
        self.last_seen = self.endpoint.loop.time()
        if proto is self.probing:
            if packet == engineio.PING + engineio.PROBE:
                proto.send(text_frame((engineio.PONG + engineio.PROBE).encode()))
                self.queue.append(engineio.NOOP)  # the pending poll returns: pause it
                self._wake()
            elif packet == engineio.UPGRADE:
                self.probing, self.ws = None, proto
                packets, self.queue = self.queue, []
                self._wake()
                self.push([p for p in packets if p != engineio.NOOP])
            return
        if proto is self.ws:
            self._from_client([packet])

    def ws_lost(self, proto: ServiceProtocol) -> None:
        if proto is self.probing:
            self.probing = None  # the upgrade failed: polling goes on
        elif proto is self.ws:
            self.ws = None
            self.end("The WebSocket closed.")

    def _from_client(self, packets: list[str]) -> None:
        conn = self.conn
        if conn is None or self.ended:
            return
        keep = [p for p in packets if p[0] not in (engineio.NOOP, engineio.PING, engineio.UPGRADE)]
        if keep:
            conn.receive(keep)

    def tick(self, now: float) -> None:
        """A polling client that stopped polling, past ping interval + timeout, is gone."""
        if self.ws is None and self.poll is None and now - self.last_seen > self.silence:
            self.end("The client stopped polling.")
            self.endpoint.sessions.pop(self.sid, None)  # if it lingered, it waited enough


class SocketIOEndpoint:
    """``/clients/socketio/hubs/{hub}``: handshakes, polls, posts and WebSocket upgrades."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.sessions: dict[str, EngineSession] = {}
        self._invoke_tasks: set[asyncio.Task[None]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.service.loop

    def matches(self, path: str) -> bool:
        return path.startswith(PREFIX)

    # -- HTTP (polling) -------------------------------------------------------------------

    async def handle(self, request: HttpRequest) -> HttpResponse:
        response = await self._handle(request)
        origin = request.header("origin")
        if origin:  # browsers poll the service cross-origin (socketio spec 2.2, CORS)
            response.headers.append(("Access-Control-Allow-Origin", origin))
            response.headers.append(("Access-Control-Allow-Credentials", "true"))
        return response

    async def _handle(self, request: HttpRequest) -> HttpResponse:
        hub_name = hub_of(request.path)
        if hub_name is None:
            return HttpResponse.json(404, {"code": "Error.NotFound", "message": "Not found."})
        if request.method == "OPTIONS":
            response = HttpResponse(204)
            response.headers.append(("Access-Control-Allow-Methods", "GET, POST, OPTIONS"))
            wanted = request.header("access-control-request-headers")
            if wanted:
                response.headers.append(("Access-Control-Allow-Headers", wanted))
            return response
        problem = _query_problem(request)
        if problem is not None:
            return problem
        if request.query_one("transport") != "polling":
            return _engine_error(engineio.BAD_REQUEST)  # a WebSocket needs an upgrade
        sid = request.query_one("sid")
        if sid is None:
            if request.method != "GET":
                return _engine_error(engineio.BAD_HANDSHAKE_METHOD)
            opened = await self.open(request, hub_name, ["websocket"])
            if isinstance(opened, HttpResponse):
                return opened
            return HttpResponse(200, opened[1].encode(), content_type=TEXT)
        session = self.sessions.get(sid)
        if session is None or session.ws is not None:
            return _engine_error(engineio.UNKNOWN_SID)
        if request.method == "GET":
            return await session.get(request.gone)
        if request.method == "POST":
            return session.post(request.body)
        return _engine_error(engineio.BAD_HANDSHAKE_METHOD)

    async def open(
        self, request: HttpRequest, hub_name: str, upgrades: list[str]
    ) -> tuple[EngineSession, str] | HttpResponse:
        """A new Engine.IO connection: the token (or anonymous), the app server's
        ``connect`` over its tunnel, the connection registered; its open packet."""
        endpoint = self.service.client_endpoint
        try:
            hub = check_hub(hub_name)
            claims = endpoint._claims(request, PREFIX + hub_name, allow_anonymous=True)
            user_id, roles, groups = endpoint._identity(claims)
            endpoint._check_quotas(hub, groups)
            limits = self.service.settings.limits
            if len(self.sessions) >= limits.max_connections:
                # Polling clients hold no socket: the node's connection limit counts sessions.
                raise TooManyRequests(
                    f"This node has reached its limit of {limits.max_connections} connections.",
                    code="Error.TooManyConnections",
                )
        except RequestError as exc:
            return HttpResponse.error(exc)
        pending = Pending(request, hub, hub_name, claims, user_id, roles, groups, [], None)
        try:
            handshake = await self.service.upstream.socketio_connect(pending)
        except UpstreamRejected as exc:
            log.info(
                "Socket.IO connect refused for %s: %d %s", request.client, exc.status, exc.message
            )
            return HttpResponse(exc.status, exc.message.encode(), content_type=TEXT)
        session = EngineSession(self, pending.connection_id, handshake, request.client)
        node = self.service.node
        conn = SocketIOConnection(
            hub, session, node, connection_id=pending.connection_id, user_id=user_id, roles=roles
        )
        conn.on_event = self._on_event
        session.conn = conn
        self.sessions[session.sid] = session
        node.connect(conn, groups)
        return session, engineio.open_packet(handshake, upgrades)

    def _on_event(self, conn: SocketIOConnection, payload: bytes) -> bool:
        """Client packets up to the app server: one ``message`` event, in order."""
        try:
            self.service.upstream.user_event(conn, SendEvent("message", payload, DataType.TEXT))
        except ClientError as exc:  # Throttled: too many waiting
            log.warning("Socket.IO client %s: %s", conn.connection_id, exc.message)
            return False
        return True

    # -- WebSocket --------------------------------------------------------------------------

    def upgrade(self, request: HttpRequest, proto: ServiceProtocol, rest: bytes) -> None:
        """A WebSocket: a new connection (then the connect round trip first, so a refusal
        is a plain HTTP error), or the upgrade of a polling session."""
        hub_name = hub_of(request.path)
        if hub_name is None:
            proto.refuse(
                HttpResponse.json(404, {"code": "Error.NotFound", "message": "Not found."})
            )
            return
        problem = _query_problem(request)
        if problem is None and request.query_one("transport") != "websocket":
            problem = _engine_error(engineio.BAD_REQUEST)
        if problem is not None:
            proto.refuse(problem)
            return
        sid = request.query_one("sid")
        if sid is not None:
            session = self.sessions.get(sid)
            if session is None or session.ws is not None or session.probing is not None:
                proto.refuse(_engine_error(engineio.UNKNOWN_SID))
                return
            ws = self.service.client_endpoint._upgrade(request, None)
            if isinstance(ws, HttpResponse):
                proto.refuse(ws)
                return
            session.probing = proto
            proto.accept_engine(ws, session, rest)
            return
        proto.hold_upgrade(rest, self._open_websocket(request, hub_name, proto))

    async def _open_websocket(
        self, request: HttpRequest, hub_name: str, proto: ServiceProtocol
    ) -> None:
        opened = await self.open(request, hub_name, [])
        if isinstance(opened, HttpResponse):
            proto.refuse(opened)
            return
        session, packet = opened
        ws = self.service.client_endpoint._upgrade(request, None)
        if isinstance(ws, HttpResponse) or proto.transport is None or proto.transport.is_closing():
            session.end("The client left during its handshake.")
            if isinstance(ws, HttpResponse):
                proto.refuse(ws)
            return
        session.ws = proto
        proto.accept_engine(ws, session, proto.take_held())
        proto.send(text_frame(packet.encode()))

    # -- broadcasts with acknowledgements (``:invoke``, socketio spec 4.5) ------------------

    def invoke(
        self, hub: str, filter_text: str | None, body: bytes, *, here_only: bool = False
    ) -> AsyncIterator[bytes]:
        """Send one EVENT to the hub's Socket.IO clients the filter selects, each with an ack
        id of the service's; the answer streams one JSON line per client that acknowledges
        and ends when every one has acknowledged or gone (an empty answer for none). In a
        cluster the other nodes with clients of the hub do the same for theirs, and their
        lines join the stream when each is done (``here_only``: not, for such a node)."""
        try:
            packets = engineio.split_payload(body)
        except engineio.EngineIOError as exc:
            raise BadRequest(f"The body is not an Engine.IO payload: {exc}.") from None
        if not packets or with_ack_id(packets[0], 0) is None:
            raise BadRequest("The body must be one EVENT packet (and its attachments).")
        filter = parse_filter(filter_text) if filter_text and filter_text.strip() else None
        found = self.service.node.hubs.get(hub)
        targets = found.select(c.ToAll(), filter=filter) if found is not None else []
        answers: asyncio.Queue[bytes | list[bytes] | None] = asyncio.Queue()
        waiting = 0
        engine = self.service.engine
        if engine is not None and not here_only:
            call = {
                "kind": "invoke",
                "hub": hub,
                "filter": filter_text,
                "body": base64.b64encode(body).decode(),
            }
            for node in engine.nodes_with(hub):
                waiting += 1
                task = self.loop.create_task(_remote_answers(engine, node, call, answers))
                self._invoke_tasks.add(task)
                task.add_done_callback(self._invoke_tasks.discard)
        for conn in targets:
            if not isinstance(conn, SocketIOConnection) or conn.closed:
                continue

            def answer(payload: str | None, conn: SocketIOConnection = conn) -> None:
                line = None
                if payload is not None:
                    line = (
                        json.dumps({"Payload": payload, "ConnectionId": conn.connection_id}) + "\n"
                    ).encode()
                answers.put_nowait(line)

            if conn.invoke(packets, next(_invoke_ids), answer):
                waiting += 1
        return _answers(answers, waiting)

    async def serve_remote_invoke(self, call: dict[str, Any]) -> dict[str, Any]:
        """Another node's ``:invoke``, for this node's clients: every line, once all are in."""
        try:
            lines = self.invoke(
                str(call["hub"]),
                call.get("filter") if isinstance(call.get("filter"), str) else None,
                base64.b64decode(str(call["body"])),
                here_only=True,
            )
        except (RequestError, ValueError, KeyError) as exc:
            return {"error": "bad_invoke", "message": str(exc)}
        return {"lines": [line.decode() async for line in lines]}

    def tick(self, now: float) -> None:
        for session in list(self.sessions.values()):
            session.tick(now)

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            session.end("The service is shutting down.")


_invoke_ids = itertools.count(INVOKE_ACK_BASE)
INVOKE_CAP = 300.0  # s: a broadcast's acknowledgements are awaited this long at most [I]


async def _remote_answers(
    engine: Any, node: str, call: dict[str, Any], answers: asyncio.Queue[bytes | list[bytes] | None]
) -> None:
    """One other node's part of a broadcast with acknowledgements: its lines, once all in."""
    lines: list[bytes] = []
    try:
        async with asyncio.timeout(INVOKE_CAP):
            answer = await engine.rpc(node, call)
        lines = [str(line).encode() for line in answer.get("lines") or []]
    except (TimeoutError, RequestError) as exc:
        log.warning("node %s did not answer a broadcast with acknowledgements: %s", node, exc)
    except Exception:
        log.exception("asking node %s for its part of a broadcast with acks failed", node)
    finally:
        answers.put_nowait(lines)


async def _answers(
    answers: asyncio.Queue[bytes | list[bytes] | None], waiting: int
) -> AsyncIterator[bytes]:
    """The acknowledgements as they come, until every client (and node) answered or went."""
    try:
        async with asyncio.timeout(INVOKE_CAP):
            while waiting:
                item = await answers.get()
                waiting -= 1
                if isinstance(item, list):
                    for line in item:
                        yield line
                elif item is not None:
                    yield item
    except TimeoutError:
        log.warning("a broadcast with acknowledgements gave up after %d s", INVOKE_CAP)


def _query_problem(request: HttpRequest) -> HttpResponse | None:
    if request.query_one("EIO") != "4":
        return _engine_error(engineio.UNSUPPORTED_PROTOCOL_VERSION)
    if request.query_one("transport") not in ("polling", "websocket"):
        return _engine_error(engineio.UNKNOWN_TRANSPORT)
    return None


__all__ = ["EngineSession", "SocketIOEndpoint", "hub_of"]
