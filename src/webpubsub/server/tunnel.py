"""The app-server tunnel ``/server/tunnel`` (socketio spec 4): its sockets, requests both ways.

An app server (``@azure/web-pubsub-socket.io``) opens a WebSocket to
``/server/tunnel?hub={hub}&access_token={jwt}`` and keeps it. Over it:

* the service sends CloudEvents as HttpRequest frames (:meth:`Tunnels.fetch`, the upstream
  caller's other transport) and the app server answers with HttpResponse frames;
* the app server sends REST calls as HttpRequest frames; they are served by the REST route
  table, one at a time in arrival order, each answered once applied (streamed answers as
  several HttpResponse frames with ``NotCompleted``).

Which app server gets which connection is decided in ``core/tunnels.py``; the frames are
``protocols/tunnel.py``. This module only moves them between sockets and the service.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.server import ServerProtocol

from ..core.errors import BadRequest, ProtocolViolation, RequestError, Unauthorized
from ..core.names import check_hub
from ..core.tunnels import RemotePins, RouteKind, TunnelRegistry
from ..protocols import tunnel as frames
from ..protocols.frames import binary_frame
from .http import HttpRequest, HttpResponse, origin_form

if TYPE_CHECKING:
    from .app import Service
    from .connection import ServiceProtocol

log = logging.getLogger("webpubsub.tunnel")

TUNNEL_PATH = "/server/tunnel"
FRAME_HEADROOM = 64 * 1024  # a frame's JSON (URL, headers) on top of the body limit
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013
REMOTE_POLL = 0.25  # seconds between looks at the cluster for an app server coming back


class TunnelUnavailable(Exception):
    """No tunnel could carry a call: no app server, its grace period ran out, or the socket
    carrying it closed. ``kind`` names it for metrics."""

    def __init__(self, message: str, kind: str = "no_tunnel") -> None:
        super().__init__(message)
        self.kind = kind


class AnswerTooLarge(Exception):
    """An app server's answer over the call's cap."""


@dataclass(slots=True)
class TunnelAnswer:
    status_code: int
    headers: list[tuple[str, str]]
    content: bytes


@dataclass(slots=True)
class _Exchange:
    """A request the service sent, collecting its answer's frames."""

    future: asyncio.Future[TunnelAnswer]
    cap: int | None  # None: the body is not wanted (read while small, else dropped)
    limit: int
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    started: bool = False


class TunnelSession:
    """One tunnel socket of one app server (``sub``) for one hub."""

    def __init__(self, tunnels: Tunnels, proto: ServiceProtocol, hub: str, sub: str) -> None:
        self.tunnels = tunnels
        self.proto = proto
        self.hub = hub  # the key (lower case)
        self.sub = sub
        self.connection_id = uuid.uuid4().hex
        self.last_sent = 0.0
        self.closed = False
        self._next_ack = 0
        self._exchanges: dict[int, _Exchange] = {}
        self._requests: deque[frames.HttpRequest] = deque()
        self._queued = 0  # bytes of the requests waiting in _requests
        self._worker: asyncio.Task[None] | None = None
        self._streams: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<tunnel {self.connection_id} hub={self.hub} sub={self.sub}>"

    # -- frames in ------------------------------------------------------------------------

    def receive(self, data: bytes, is_text: bool) -> None:
        """One WebSocket message from the app server."""
        if self.closed:
            return
        limits = self.tunnels.service.settings.limits
        try:
            message = frames.decode(
                data, is_text=is_text, max_size=limits.max_body_size + FRAME_HEADROOM
            )
        except ProtocolViolation as exc:
            log.info("closing %r: %s", self, exc.message)
            self.proto.close(exc.code, exc.message)
            return
        if isinstance(message, frames.HttpResponse):
            self._answered(message)
            return
        if not isinstance(message, frames.HttpRequest):
            self.proto.close(
                frames.CloseCode.POLICY_VIOLATION,
                f"An app server may not send tunnel messages of type {int(message.type)}.",
            )
            return
        self._queued += _cost(message)
        if self._queued > limits.max_tunnel_backlog:
            log.warning("closing %r: %d bytes of requests wait", self, self._queued)
            self.proto.close(TRY_AGAIN_LATER, "Too many requests wait on this tunnel.")
            return
        self._requests.append(message)
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        """Serve the app server's requests one at a time, in arrival order."""
        service = self.tunnels.service
        try:
            while self._requests and not self.closed:
                request = self._requests.popleft()
                self._queued -= _cost(request)
                # Not cancelled if the socket goes: a command half-applied helps nobody.
                response = await service.handle_tunnel_request(self.hub, self.sub, request)
                if self.closed:
                    break
                if response.stream is None:
                    self._respond(request, response, response.body, False)
                else:
                    self._respond(request, response, b"", True)
                    task = asyncio.get_running_loop().create_task(
                        self._stream(request, response, response.stream)
                    )
                    self._streams.add(task)
                    task.add_done_callback(self._streams.discard)
        except Exception:
            log.exception("serving the requests of %r failed", self)
            self.proto.close(1011, "Internal server error.")
        finally:
            self._worker = None

    async def _stream(
        self, request: frames.HttpRequest, response: HttpResponse, body: AsyncIterator[bytes]
    ) -> None:
        """A streamed answer: one frame per chunk, then the last frame (``NotCompleted`` off)."""
        try:
            async for chunk in body:
                if self.closed:
                    return
                if chunk:
                    self._respond(request, response, chunk, True)
            if not self.closed:
                self._respond(request, response, b"", False)
        except Exception:
            log.exception("a streamed answer on %r failed", self)
            if not self.closed:
                self._respond(request, response, b"", False)
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()

    def _respond(
        self, request: frames.HttpRequest, response: HttpResponse, body: bytes, more: bool
    ) -> None:
        headers: frames.Headers = {}
        if response.content_type:
            headers["Content-Type"] = [response.content_type]
        for name, value in response.headers:
            headers.setdefault(name, []).append(value)
        self.send(
            frames.HttpResponse(
                request.ack_id,
                response.status,
                headers,
                body,
                more,
                request.local_routing,
                request.channel_name,
            )
        )

    def _answered(self, message: frames.HttpResponse) -> None:
        """A frame of the app server's answer to one of our requests."""
        exchange = self._exchanges.get(message.ack_id)
        if exchange is None:
            return  # a call that timed out or was cancelled: its late answer is dropped
        if not exchange.started:
            exchange.started = True
            exchange.status = message.status_code
            exchange.headers = [(k, v) for k, vs in message.headers.items() for v in vs]
        exchange.size += len(message.content)
        if exchange.cap is not None and exchange.size > exchange.cap:
            del self._exchanges[message.ack_id]
            exchange.future.set_exception(
                AnswerTooLarge(f"the answer is over the cap of {exchange.cap} bytes")
            )
            return
        if exchange.size <= exchange.limit:
            exchange.chunks.append(message.content)
        else:
            exchange.chunks = []  # not wanted, and too large to keep: only the status counts
        if not message.not_completed:
            del self._exchanges[message.ack_id]
            content = b"".join(exchange.chunks) if exchange.size <= exchange.limit else b""
            exchange.future.set_result(TunnelAnswer(exchange.status, exchange.headers, content))

    # -- frames out ---------------------------------------------------------------------------

    def send(self, message: frames.Message) -> None:
        self.last_sent = self.tunnels.service.loop.time()
        self.proto.send(binary_frame(frames.encode(message)))

    async def exchange(
        self, method: str, url: str, headers: frames.Headers, body: bytes, cap: int | None
    ) -> TunnelAnswer:
        """Send a request and wait for its whole answer (the caller bounds the wait)."""
        if self.closed:
            raise TunnelUnavailable("the tunnel closed", "tunnel_closed")
        self._next_ack += 1
        ack_id = self._next_ack
        limit = (
            cap
            if cap is not None
            else self.tunnels.service.settings.limits.max_connect_response_size
        )
        future: asyncio.Future[TunnelAnswer] = asyncio.get_running_loop().create_future()
        self._exchanges[ack_id] = _Exchange(future, cap, limit)
        try:
            self.send(frames.HttpRequest(ack_id, method, url, headers, body))
            return await future
        finally:
            self._exchanges.pop(ack_id, None)

    # -- lifecycle ----------------------------------------------------------------------------

    def lost(self) -> None:
        """The socket is gone: calls waiting on it fail, requests from it are dropped."""
        if self.closed:
            return
        self.closed = True
        for exchange in self._exchanges.values():
            if not exchange.future.done():
                exchange.future.set_exception(
                    TunnelUnavailable("the tunnel closed", "tunnel_closed")
                )
        self._exchanges.clear()
        self._requests.clear()
        self._queued = 0
        for task in list(self._streams):
            task.cancel()
        self.tunnels.lost(self)


class Tunnels:
    """The tunnel endpoint of one service: handshakes, every socket, the registry."""

    def __init__(self, service: Service) -> None:
        self.service = service
        limits = service.settings.limits
        self.registry: TunnelRegistry[TunnelSession] = TunnelRegistry(limits.tunnel_grace)
        self.remote = RemotePins(limits.tunnel_grace)
        self.sessions: set[TunnelSession] = set()
        self._waiters: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._suspects: set[tuple[str, str]] = set()  # pins with no connection, last sweep
        self._next_sweep = 0.0

    @staticmethod
    def matches(path: str) -> bool:
        return path.rstrip("/") == TUNNEL_PATH

    # -- handshake ----------------------------------------------------------------------------

    def handshake(
        self, request: HttpRequest, proto: ServiceProtocol
    ) -> HttpResponse | tuple[ServerProtocol, TunnelSession]:
        """Check the hub and the token, then accept the upgrade (socketio spec 4.1)."""
        try:
            hub, sub = self._authenticate(request)
        except RequestError as exc:
            log.info("refused tunnel %s: %d %s", request.client, exc.status, exc.message)
            return HttpResponse.error(exc)
        limits = self.service.settings.limits
        ws = self.service.client_endpoint.upgrade(
            request, None, limits.max_body_size + FRAME_HEADROOM + 8
        )
        if isinstance(ws, HttpResponse):
            return ws
        return ws, TunnelSession(self, proto, hub, sub)

    def _authenticate(self, request: HttpRequest) -> tuple[str, str]:
        name = request.query_one("hub")
        if not name:
            raise BadRequest("The 'hub' query parameter is required.", target="hub")
        hub = check_hub(name)
        tokens = request.query.get("access_token", [])
        headers = request.header_all("authorization")
        if len(tokens) > 1 or len(headers) > 1:
            raise Unauthorized("Send one access token.", code="Error.Unauthorized.AmbiguousToken")
        token = tokens[0] if tokens else None
        if token is None and headers:
            token = headers[0][7:] if headers[0][:7].lower() == "bearer " else None
        if not token:
            raise Unauthorized(
                "An access token is required (access_token or Authorization: Bearer).",
                code="Error.Unauthorized.NoToken",
            )
        claims = self.service.validator.decode(token)
        audiences = _audiences(claims)
        hosts = {_host_port(self.service.settings.endpoint), _host_port(request.header("host"))}
        if not any(_tunnel_audience(a, hub, hosts) for a in audiences):
            raise Unauthorized(
                "Failed to validate audience. Expected Audiences: "
                f"{self.service.settings.endpoint.rstrip('/')}{TUNNEL_PATH}?hub={name}. "
                f"Actual Audiences: {', '.join(audiences)[:500]}",
                code="Error.Unauthorized.InvalidAudience",
            )
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 256:
            sub = uuid.uuid4().hex  # no identity: this socket is an app server of its own
        return hub, sub

    def opened(self, session: TunnelSession) -> None:
        """The upgrade is answered: register, then tell the SDK (it waits for this frame)."""
        self.sessions.add(session)
        self.registry.add(session.hub, session.sub, session)
        waiter = self._waiters.pop((session.hub, session.sub), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        session.send(frames.ConnectionConnected(session.connection_id, session.sub))
        log.info("%r connected", session)

    def lost(self, session: TunnelSession) -> None:
        self.sessions.discard(session)
        self.registry.remove(session.hub, session.sub, session, self.service.loop.time())
        log.info("%r closed", session)

    def close_all(self, reason: str) -> None:
        for session in list(self.sessions):
            session.proto.close(GOING_AWAY, reason)

    # -- calls to app servers -----------------------------------------------------------------

    def has_tunnel(self, hub: str) -> bool:
        """Whether the hub has an app server, here or (in a cluster) on another node."""
        engine = self.service.engine
        return self.registry.has_tunnel(hub) or (
            engine is not None and bool(engine.tunnel_holders(hub))
        )

    def owned(self, hub: str, connection_id: str) -> bool:
        """Whether every event of the connection goes to its app server (Socket.IO)."""
        return self.registry.owned(hub, connection_id) or self.remote.owned(hub, connection_id)

    async def fetch(
        self,
        hub: str,
        connection_id: str,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        cap: int | None,
    ) -> TunnelAnswer:
        """One CloudEvents call to the app server that owns this connection (pinning a new
        connection to the next one); during a grace period, waits for its tunnel."""
        path = url.removeprefix("tunnel:").removeprefix("//")
        path = "/" + path.split("/", 1)[1] if "/" in path else "/"
        target = self.service.settings.endpoint.rstrip("/") + path
        wire_headers = {name: [value] for name, value in headers.items()}
        loop = self.service.loop
        engine = self.service.engine
        remote = self.remote.sub(hub, connection_id) is not None or (
            engine is not None
            and self.registry.pinned(hub, connection_id) is None
            and not self.registry.has_tunnel(hub)
        )
        if remote:
            return await self._fetch_remote(
                hub, connection_id, method, target, wire_headers, body, cap
            )
        while True:
            route = self.registry.route(hub, connection_id, loop.time())
            if route.kind is RouteKind.LIVE:
                assert route.tunnel is not None
                return await route.tunnel.exchange(method, target, wire_headers, body, cap)
            if route.kind is RouteKind.GONE:
                raise TunnelUnavailable("no app server is connected for the hub")
            assert route.sub is not None
            key = (hub.lower(), route.sub)
            waiter = self._waiters.get(key)
            if waiter is None or waiter.done():
                waiter = self._waiters[key] = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(waiter), route.deadline - loop.time())
            except TimeoutError:
                if self._waiters.get(key) is waiter:
                    del self._waiters[key]  # the next round finds the route gone

    async def _fetch_remote(
        self,
        hub: str,
        connection_id: str,
        method: str,
        url: str,
        headers: frames.Headers,
        body: bytes,
        cap: int | None,
    ) -> TunnelAnswer:
        """A call for a connection whose app server's tunnel is on another node (cluster):
        relayed through Redis to that node, which sends it on the tunnel. When the app
        server is nowhere (reconnecting), the cluster's view is polled until its grace
        period ends (the view changes with the nodes' heartbeats)."""
        engine = self.service.engine
        assert engine is not None
        loop = self.service.loop
        sub = self.remote.sub(hub, connection_id)
        if sub is None:
            sub = self.remote.pin(hub, connection_id, list(engine.tunnel_holders(hub)), own=False)
            if sub is None:
                raise TunnelUnavailable("no app server is connected for the hub")
        while True:
            here = self.registry.tunnel_of(hub, sub)
            if here is not None:  # the app server came back through this node
                self.remote.found(hub, connection_id)
                return await here.exchange(method, url, headers, body, cap)
            node = engine.tunnel_holders(hub).get(sub)
            if node is not None:
                call = {
                    "hub": hub.lower(),
                    "sub": sub,
                    "method": method,
                    "url": url,
                    "headers": headers,
                    "body": base64.b64encode(body).decode(),
                    "cap": cap,
                }
                answer = await engine.rpc(node, call)
                error = answer.get("error")
                if error is None:
                    self.remote.found(hub, connection_id)
                    return TunnelAnswer(
                        int(answer["status"]),
                        [(str(k), str(v)) for k, v in answer["headers"]],
                        base64.b64decode(answer["body"]),
                    )
                if error == "too_large":
                    raise AnswerTooLarge(str(answer.get("message")))
                if error != "no_tunnel":
                    raise TunnelUnavailable(str(answer.get("message") or error), str(error))
            now = loop.time()
            deadline = self.remote.missing(hub, connection_id, now)
            if now >= deadline:
                raise TunnelUnavailable("the connection's app server did not come back")
            await asyncio.sleep(min(REMOTE_POLL, deadline - now))

    async def serve_remote(self, call: dict[str, Any]) -> dict[str, Any]:
        """A call another node relays to a tunnel of this one (see :meth:`_fetch_remote`)."""
        tunnel = self.registry.tunnel_of(str(call["hub"]), str(call["sub"]))
        if tunnel is None:
            return {"error": "no_tunnel", "message": "the app server has no tunnel here"}
        limits = self.service.settings.limits
        cap = call.get("cap")
        raw_headers = call.get("headers")
        headers: frames.Headers = raw_headers if isinstance(raw_headers, dict) else {}
        try:
            async with asyncio.timeout(limits.upstream_timeout):
                answer = await tunnel.exchange(
                    str(call["method"]),
                    str(call["url"]),
                    headers,
                    base64.b64decode(str(call["body"])),
                    cap if isinstance(cap, int) else None,
                )
        except TimeoutError:
            return {"error": "timeout", "message": "timed out"}
        except TunnelUnavailable as exc:
            return {"error": exc.kind, "message": str(exc)}
        except AnswerTooLarge as exc:
            return {"error": "too_large", "message": str(exc)}
        return {
            "status": answer.status_code,
            "headers": answer.headers,
            "body": base64.b64encode(answer.content).decode(),
        }

    def own(self, hub: str, connection_id: str) -> bool:
        """Pin a new Socket.IO connection to the next app server, for all its events (one
        with a tunnel here first, else one on another node); False when the hub has none."""
        route = self.registry.route(hub, connection_id, self.service.loop.time(), own=True)
        if route.kind is RouteKind.LIVE:
            return True
        engine = self.service.engine
        if engine is None:
            return False
        subs = list(engine.tunnel_holders(hub))
        return self.remote.pin(hub, connection_id, subs, own=True) is not None

    def unpin(self, hub: str, connection_id: str) -> None:
        self.registry.unpin(hub, connection_id)
        self.remote.unpin(hub, connection_id)

    # -- the service's tick -------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Keep idle tunnels alive, close connections whose app server did not come back,
        and forget pins of connections that never registered (a client gone mid-connect)."""
        interval = self.service.settings.limits.tunnel_status_interval
        for session in list(self.sessions):
            if now - session.last_sent >= interval:
                session.send(frames.ServiceStatus("Ping"))
        node = self.service.node
        for hub, connection_id in self.registry.expire(now):
            conn = node.find_connection(hub, connection_id)
            if conn is not None:
                log.info("closing %s: its app server did not come back", connection_id)
                node.close(conn, GOING_AWAY, "The app server is gone.")
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60.0
        pins = self.registry.pins() + self.remote.pins()
        missing = {pin for pin in pins if node.find_connection(*pin) is None}
        for hub, connection_id in missing & self._suspects:
            self.unpin(hub, connection_id)
        self._suspects = missing


def _host_port(url: str | None) -> tuple[str, int | None] | None:
    if not url:
        return None
    try:
        parts = urlsplit(url if "://" in url else f"//{url}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None


def _tunnel_audience(audience: str, hub: str, hosts: set[tuple[str, int | None] | None]) -> bool:
    """Whether ``aud`` names this tunnel, leniently (spec 4.1 [I]): any of ws/wss/http/https,
    the public endpoint's host or the request's Host (ports compared when both name one),
    the path ``/server/tunnel`` (under any prefix), and ``hub`` if it names one, in any case
    and in any place of the query."""
    try:
        parts = urlsplit(audience)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme.lower() not in ("ws", "wss", "http", "https") or not parts.hostname:
        return False
    name = parts.hostname.lower()
    if not any(
        known is not None
        and known[0] == name
        and (known[1] is None or port is None or known[1] == port)
        for known in hosts
    ):
        return False
    if not parts.path.rstrip("/").endswith(TUNNEL_PATH):
        return False
    named = parse_qs(parts.query).get("hub")
    return not named or named[0].lower() == hub


def _cost(message: frames.HttpRequest) -> int:
    """What a queued request counts against ``max_tunnel_backlog``: its bytes, and a fixed
    part, so that a flood of empty requests is bounded too."""
    return len(message.content) + len(message.url) + 256


def _audiences(claims: dict[str, object]) -> list[str]:
    audience = claims.get("aud")
    if isinstance(audience, str):
        return [audience]
    if isinstance(audience, list):
        return [a for a in audience if isinstance(a, str)]
    return []


def request_of(message: frames.HttpRequest, sub: str) -> HttpRequest:
    """The REST request an app server's HttpRequest frame carries."""
    target, _ = origin_form(message.url)
    headers = [(k.lower(), v) for k, values in message.headers.items() for v in values]
    return HttpRequest(message.method, target, headers, message.content, f"tunnel:{sub}")
