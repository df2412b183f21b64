"""The upstream caller: CloudEvents over HTTP to the app server's event handlers (spec 5).

``connect`` and user events are blocking (their answers matter); ``connected`` and
``disconnected`` are fire-and-forget with bounded retries, and never hold up delivery. Every
handler URL is validated once with the abuse-protection OPTIONS request before first use.

Nothing a handler or a client does may wedge this module: answers are read with a size cap
(``max_connect_response_size`` for ``connect``, ``max_message_size`` for user events), the
bytes of queued user events are capped per node (``max_pending_event_bytes``), and any
unexpected exception of one call is logged and turned into that call's failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import httpx

from ..core import mqtt as mqtt_rules
from ..core.connection import CloseCode, Connection
from ..core.errors import InternalServerError, ServiceUnavailable, Throttled
from ..core.events import (
    SYSTEM_CONTENT_TYPE,
    ConnectResult,
    EventContext,
    EventHandlerSettings,
    EventKind,
    HubSettings,
    InvokeResult,
    UpstreamRejected,
    cloud_event_headers,
    connect_body,
    invoke_result,
    origin_host,
    parse_connect_response,
    reply_message,
    updated_state,
    user_event_content_type,
)
from ..core.message import DataType, Message, Source
from ..core.metadata import MetadataError, from_headers, to_headers
from ..core.names import event_name_problem
from ..core.requests import CancelInvocation, Invoke, SendEvent
from ..core.tunnels import TUNNEL_HANDLER, socketio_open
from ..protocols.json import encode_invoke_response
from .tunnel import AnswerTooLarge as TunnelAnswerTooLarge
from .tunnel import Tunnels, TunnelUnavailable

if TYPE_CHECKING:
    from ..core.node import Node
    from ..protocols.mqtt.connection import MqttConnection
    from ..protocols.mqtt.packets import Connect, Publish
    from .client_endpoint import MqttUpgrade, Pending
    from .config import Settings

log = logging.getLogger("webpubsub.upstream")

MAX_INVOCATIONS = 100  # pending invocations per connection (spec-next 1.7)
MAX_NOTICES = 4096  # non-blocking events waiting per connection (joined/left bursts)
RETRY_DELAYS = (1.0, 3.0, 5.0)  # non-blocking events: up to 4 attempts, as the emulator does
VALIDATION_FAILURE_TTL = 10.0


class UpstreamFailure(Exception):
    """A call that did not produce a usable answer (network error, timeout, bad status).

    ``kind`` names the failure for metrics (``timeout``, ``too_large``, an exception name).
    """

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind or message


@dataclass(frozen=True, slots=True)
class Answer:
    """What an event handler answered; ``content`` holds at most the call's size cap."""

    status_code: int
    headers: httpx.Headers
    content: bytes


@dataclass(slots=True)
class Backlog:
    """The user events of one connection waiting for the handler; ``events[0]`` is in flight."""

    events: deque[SendEvent] = field(default_factory=deque)
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # set once all are sent


# A non-blocking event waiting to be sent: handler, context, kind, body.
Notice = tuple[EventHandlerSettings, EventContext, EventKind, bytes]


def event_size(request: SendEvent) -> int:
    """The bytes a queued user event holds on to (its data and name; the rest is small)."""
    return len(request.data) + len(request.event)


# Answers are read as they are, never decompressed: a small compressed answer must not
# turn into gigabytes before the cap can see it.
ACCEPT_IDENTITY = ("Accept-Encoding", "identity")


class Upstream:
    """Calls the event handlers configured for each hub."""

    def __init__(
        self,
        node: Node,
        settings: Settings,
        hub_settings: Callable[[str], HubSettings],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.node = node
        self.settings = settings
        self.hub_settings = hub_settings
        limits = settings.limits
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                limits.upstream_timeout, connect=min(10.0, limits.upstream_timeout)
            ),
            transport=transport,
            follow_redirects=False,
        )
        self.retry_delays = RETRY_DELAYS
        self._validated: dict[str, float] = {}  # validation URL -> expiry (inf when allowed)
        self._validating: dict[str, asyncio.Task[bool]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._queues: dict[Connection, Backlog] = {}
        self._notices: dict[Connection, deque[Notice]] = {}  # non-blocking events, in order
        self._invocations: dict[Connection, dict[str, asyncio.Task[None]]] = {}
        self._mqtt_events: dict[Connection, deque[tuple[str, Publish]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pending_bytes = 0  # bytes of user events queued or in flight, on this node
        self._throttling = False  # the node's byte cap was hit (logged once per episode)
        # The app servers' tunnels (socketio spec 4.3): handlers with tunnel:/// URLs, and
        # every event of a connection pinned to an app server, go there instead of HTTP.
        self.tunnels: Tunnels | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def reset_validation(self) -> None:
        """Forget abuse-protection results (after a settings reload)."""
        self._validated.clear()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start a supervised task: kept referenced, cancelled on close, its failure logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("upstream task failed", exc_info=task.exception())

    # -- connect (blocking) ---------------------------------------------------------------

    async def connect(self, pending: Pending) -> ConnectResult:
        """Call ``connect``; raises UpstreamRejected with the status for the client.

        The caller cancels this when the client goes away: the wait for a concurrency slot
        and the HTTP call end with it, so an abandoned handshake costs the handler nothing.
        """
        handler = pending.handler
        assert handler is not None
        ctx = EventContext(pending.hub, pending.connection_id, pending.user_id, None, None, 0)
        body = connect_body(
            pending.claims,
            pending.request.query,
            pending.request.headers,
            pending.offered,
        )
        cap = self.settings.limits.max_connect_response_size
        try:
            try:
                response = await self._call(
                    handler, ctx, "connect", EventKind.CONNECT, SYSTEM_CONTENT_TYPE, body, cap
                )
            except UpstreamFailure as exc:
                # No app server on the tunnel: the service cannot serve it now (spec 4.6 [I]).
                status = 503 if exc.kind == "no_tunnel" else 500
                raise UpstreamRejected(status, f"The connect event handler failed: {exc}") from None
            return parse_connect_response(
                response.status_code, response.content, pending.offered, response.headers
            )
        except BaseException:
            self.unpin(pending.hub, pending.connection_id)  # no connection: no app server
            raise

    async def socketio_connect(self, pending: Pending) -> dict[str, Any]:
        """The ``connect`` of a Socket.IO client, to an app server over its tunnel (socketio
        spec 3 step 2, 4.3); returns the open packet's object (``sid``, ``pingInterval``...).

        Raises UpstreamRejected with the status for the client: 503 without an app server,
        the app server's refusal (400 "EIO server refused connection..."), 500 otherwise.
        Pins the connection to the app server that answered (unpinned on failure).
        """
        pending.handler = TUNNEL_HANDLER
        ctx = EventContext(pending.hub, pending.connection_id, pending.user_id, None, None, 0)
        # [I] access_token is the client's credential, not the app's business.
        query = {k: v for k, v in pending.request.query.items() if k != "access_token"}
        body = connect_body(pending.claims, query, pending.request.headers, [])
        cap = self.settings.limits.max_connect_response_size
        if self.tunnels is None or not self.tunnels.own(pending.hub, pending.connection_id):
            raise UpstreamRejected(503, "No app server is connected for the hub.")
        try:
            try:
                response = await self._call(
                    TUNNEL_HANDLER,
                    ctx,
                    "connect",
                    EventKind.CONNECT,
                    SYSTEM_CONTENT_TYPE,
                    body,
                    cap,
                )
            except UpstreamFailure as exc:
                status = 503 if exc.kind == "no_tunnel" else 500
                raise UpstreamRejected(status, f"The app server failed: {exc}") from None
            return socketio_open(response.status_code, response.content)
        except BaseException:
            self.unpin(pending.hub, pending.connection_id)
            raise

    def unpin(self, hub: str, connection_id: str) -> None:
        """Forget which app server a connection belonged to (it is over)."""
        if self.tunnels is not None:
            self.tunnels.unpin(hub, connection_id)

    def handler_for(
        self, hub: str, connection_id: str, event: str, kind: EventKind
    ) -> EventHandlerSettings | None:
        """The handler of one connection's event: the hub's, except for a connection that
        belongs to an app server whole (a Socket.IO client): its app server's tunnel."""
        if self.tunnels is not None and self.tunnels.owned(hub, connection_id):
            return TUNNEL_HANDLER if TUNNEL_HANDLER.handles(event, kind) else None
        return self.hub_settings(hub).handler_for(event, kind)

    async def mqtt_connect(
        self, conn: MqttConnection, upgrade: MqttUpgrade, packet: Connect
    ) -> tuple[ConnectResult | mqtt_rules.ConnectRefusal, mqtt_rules.UserProperties]:
        """The ``connect`` event of an MQTT client, on its CONNECT (mqtt spec 5.2)."""
        version = packet.protocol_level
        unavailable = mqtt_rules.ConnectRefusal(
            mqtt_rules.SERVER_UNAVAILABLE if version == 5 else mqtt_rules.V311_REFUSED_UNAVAILABLE
        )
        body = json.loads(
            connect_body(
                upgrade.claims,
                upgrade.request.query,
                upgrade.request.headers,
                upgrade.offered,
            )
        )
        body["mqtt"] = mqtt_rules.connect_event_mqtt(
            version,
            packet.clean_start,
            packet.username,
            packet.password,
            packet.properties.user_properties,
        )
        data = json.dumps(body, separators=(",", ":")).encode()
        cap = self.settings.limits.max_connect_response_size
        try:
            response = await self._call(
                upgrade.handler,
                self._context(conn),
                "connect",
                EventKind.CONNECT,
                SYSTEM_CONTENT_TYPE,
                data,
                cap,
            )
        except UpstreamFailure as exc:
            log.info("MQTT connect event failed for %s: %s", conn.connection_id, exc)
            return unavailable, ()
        status, content = response.status_code, response.content
        if not 200 <= status < 300:
            return mqtt_rules.connect_refusal(version, status, content), ()
        user_properties: mqtt_rules.UserProperties = ()
        try:
            answer = json.loads(content) if content.strip() else None
        except (ValueError, RecursionError):
            return unavailable, ()
        if isinstance(answer, dict):
            if isinstance(answer.get("mqtt"), dict):
                user_properties = mqtt_rules.user_properties_of(
                    answer["mqtt"].get("userProperties")
                )
            answer.pop("subprotocol", None)  # always mqtt here; anything else is ignored
            content = json.dumps(answer).encode()
        try:
            result = parse_connect_response(200, content, ["mqtt"], response.headers)
        except UpstreamRejected:
            return unavailable, ()
        return result, user_properties

    def mqtt_event(self, conn: MqttConnection, event: str, publish: Publish) -> bool:
        """Queue a PUBLISH to ``$webpubsub/server/events/{event}`` (mqtt spec 5.5); events of
        one client go one at a time, in order. False when too many wait already."""
        chain = self._mqtt_events.get(conn)
        if chain is None:
            chain = self._mqtt_events[conn] = deque([(event, publish)])
            self._spawn(self._drain_mqtt_events(conn, chain))
            return True
        if len(chain) >= self.settings.limits.max_pending_events:
            return False
        chain.append((event, publish))
        return True

    async def _drain_mqtt_events(
        self, conn: MqttConnection, chain: deque[tuple[str, Publish]]
    ) -> None:
        try:
            while chain and not conn.closed:
                event, publish = chain[0]
                try:
                    await self._mqtt_event(conn, event, publish)
                except Exception:
                    log.exception("MQTT event %r of %s failed", event, conn.connection_id)
                chain.popleft()
        finally:
            if self._mqtt_events.get(conn) is chain:
                del self._mqtt_events[conn]

    async def _mqtt_event(self, conn: MqttConnection, event: str, publish: Publish) -> None:
        props = publish.properties
        handler = self.hub_settings(conn.hub).handler_for(event, EventKind.USER)
        if handler is None:
            conn.event_answer(event, publish, 404, None, b"", ())
            return
        extra = [
            (f"mqtt-{name}", value)
            for name, value in props.user_properties
            if mqtt_rules.is_header_token(name) and mqtt_rules.is_header_value(value)
        ]
        try:
            response = await self._call(
                handler,
                self._context(conn),
                event,
                EventKind.USER,
                props.content_type or "application/octet-stream",
                publish.payload,
                self.settings.limits.max_message_size,
                extra,
            )
        except UpstreamFailure as exc:
            status = 504 if exc.kind == "timeout" else 502
            conn.event_answer(event, publish, status, None, b"", ())
            return
        conn.state = updated_state(conn.state, response.headers)
        user_properties = tuple(
            (name[5:], value)
            for name, value in response.headers.multi_items()
            if name.lower().startswith("mqtt-") and len(name) > 5
        )
        conn.event_answer(
            event,
            publish,
            response.status_code,
            response.headers.get("content-type"),
            response.content,
            user_properties,
        )

    # -- connected / disconnected (non-blocking) -----------------------------------------

    def connected(self, conn: Connection) -> None:
        """``connected``, then ``joined`` for the groups the connection started in."""
        settings = self.hub_settings(conn.hub)
        handler = self.handler_for(conn.hub, conn.connection_id, "connected", EventKind.CONNECTED)
        if handler is not None:
            self._notice(conn, handler, EventKind.CONNECTED, b"{}")
        if conn.groups and settings.wants_presence:
            for group in sorted(conn.groups):
                self.presence(conn, group, True)

    def presence(self, conn: Connection, group: str, joined: bool) -> None:
        """``joined``/``left`` (spec-next 6): a membership of ``conn`` really changed."""
        kind = EventKind.JOINED if joined else EventKind.LEFT
        handler = self.handler_for(conn.hub, conn.connection_id, group, kind)
        if handler is not None:
            body = json.dumps({"group": group}, ensure_ascii=False).encode()
            self._notice(conn, handler, kind, body)

    def disconnected(self, conn: Connection, reason: str) -> None:
        if self.tunnels is None or not self.tunnels.owned(conn.hub, conn.connection_id):
            self._drop_backlog(conn)
        # else a Socket.IO client: what it sent before it went (a DISCONNECT packet, say)
        # still goes to its app server, before ``disconnected`` (see _send_notices).
        for task in self._invocations.pop(conn, {}).values():
            task.cancel()  # the logical connection ended: abort its invocations
        handler = self.handler_for(
            conn.hub, conn.connection_id, "disconnected", EventKind.DISCONNECTED
        )
        if handler is None:
            self.unpin(conn.hub, conn.connection_id)
        else:
            event: dict[str, Any] = {"reason": reason}
            mqtt = getattr(conn, "disconnect_event", None)
            if mqtt is not None:
                event["mqtt"] = mqtt  # mqtt spec 5.4
            body = json.dumps(event).encode()
            self._notice(conn, handler, EventKind.DISCONNECTED, body)

    def _notice(
        self, conn: Connection, handler: EventHandlerSettings, kind: EventKind, body: bytes
    ) -> None:
        """Queue a non-blocking event: one connection's go out one at a time, in order
        (``connected``, ``joined``/``left`` as they happen, ``disconnected`` last), each
        retried as :meth:`_notify` does. At most ``MAX_NOTICES`` wait per connection;
        past that, presence events are dropped and logged (``disconnected`` never is)."""
        item = (handler, self._context(conn), kind, body)
        chain = self._notices.get(conn)
        if chain is None:
            chain = self._notices[conn] = deque([item])
            self._spawn(self._send_notices(conn, chain))
        elif len(chain) < MAX_NOTICES or kind is EventKind.DISCONNECTED:
            chain.append(item)
        else:
            log.warning(
                "%s event for %s dropped: %d events wait for the handler",
                kind.value,
                conn.connection_id,
                len(chain),
            )

    async def _send_notices(self, conn: Connection, chain: deque[Notice]) -> None:
        try:
            engine = self.node.engine
            if engine is not None:
                # In a cluster, not before the other nodes can see the connection: the app
                # server's answer to ``connected`` may reach any of them.
                await engine.registered(conn.connection_id)
            while chain:
                _, ctx, kind, _ = chain[0]
                backlog = self._queues.get(conn)
                if kind is EventKind.DISCONNECTED and backlog is not None:
                    await backlog.drained.wait()  # its user events first, in order
                try:
                    await self._notify(*chain[0])
                finally:
                    if kind is EventKind.DISCONNECTED:
                        self.unpin(ctx.hub, ctx.connection_id)  # its last event
                chain.popleft()
        finally:
            if self._notices.get(conn) is chain:
                del self._notices[conn]

    async def _notify(
        self, handler: EventHandlerSettings, ctx: EventContext, kind: EventKind, body: bytes
    ) -> None:
        for attempt, delay in enumerate((*self.retry_delays, None)):
            try:
                response = await self._call(
                    handler, ctx, kind.value, kind, SYSTEM_CONTENT_TYPE, body, None
                )
            except UpstreamFailure as exc:
                failure = str(exc)
            else:
                if response.status_code < 500 and response.status_code != 408:
                    if response.status_code >= 300:
                        log.warning(
                            "%s event for %s answered %d",
                            kind.value,
                            ctx.connection_id,
                            response.status_code,
                        )
                    return
                failure = f"status {response.status_code}"
            if delay is None:
                log.warning(
                    "giving up %s event for %s after %d attempts: %s",
                    kind.value,
                    ctx.connection_id,
                    attempt + 1,
                    failure,
                )
                return
            await asyncio.sleep(delay)

    # -- user events (blocking, in order per connection) ---------------------------------

    def user_event(self, conn: Connection, request: SendEvent) -> None:
        """Queue a user event; events of one connection go upstream one at a time, in order.

        Raises Throttled when the connection already has ``limits.max_pending_events``
        events waiting, or when the events waiting on this node already hold
        ``limits.max_pending_event_bytes``: clients must not queue unbounded work (or
        memory) behind a slow handler.
        """
        limits = self.settings.limits
        backlog = self._queues.get(conn)
        if backlog is not None and len(backlog.events) >= limits.max_pending_events:
            raise Throttled(
                f"{limits.max_pending_events} events are already waiting for the event handler; "
                "retry later."
            )
        size = event_size(request)
        if self.pending_bytes + size > limits.max_pending_event_bytes:
            if not self._throttling:
                self._throttling = True
                log.warning(
                    "throttling user events: %d bytes of events wait for event handlers "
                    "on this node (limits.max_pending_event_bytes)",
                    self.pending_bytes,
                )
            raise Throttled("Too many events are waiting for the event handler; retry later.")
        self.pending_bytes += size
        if backlog is not None:
            backlog.events.append(request)
            return
        backlog = self._queues[conn] = Backlog(deque([request]))
        self._spawn(self._drain(conn, backlog))

    def _drop_backlog(self, conn: Connection) -> None:
        """A connection left: its waiting events go, and their bytes are released at once.

        The one in flight (``events[0]``) is left to its drain, which releases it when done.
        """
        backlog = self._queues.pop(conn, None)
        if backlog is None:
            return
        while len(backlog.events) > 1:
            self._release(backlog.events.pop())

    def _release(self, request: SendEvent) -> None:
        self.pending_bytes -= event_size(request)
        if self._throttling and self.pending_bytes == 0:
            self._throttling = False
            log.info("user events are no longer throttled: nothing waits for event handlers")

    async def _drain(self, conn: Connection, backlog: Backlog) -> None:
        """Send one connection's events in order; no failure of one event stops the rest."""
        events = backlog.events
        try:
            while events:
                request = events[0]
                try:
                    if self._queues.get(conn) is backlog:  # not if the connection left
                        await self._user_event(conn, request)
                except Exception:
                    log.exception(
                        "user event %r of %s failed unexpectedly",
                        request.event,
                        conn.connection_id,
                    )
                    self._event_failed(conn, request, "The event could not be handled.")
                finally:
                    events.popleft()
                    self._release(request)
            if self._queues.get(conn) is backlog:
                del self._queues[conn]
        finally:
            backlog.drained.set()

    async def _user_event(self, conn: Connection, request: SendEvent) -> None:
        kind = EventKind.USER
        handler = self.handler_for(conn.hub, conn.connection_id, request.event, kind)
        error: str | None = None
        if handler is None:
            error = f"No event handler is configured for the event '{request.event}'."
        else:
            try:
                response = await self._call(
                    handler,
                    self._context(conn),
                    request.event,
                    kind,
                    user_event_content_type(request.data_type),
                    request.data,
                    self.settings.limits.max_message_size,
                    to_headers(request.metadata),
                )
            except UpstreamFailure as exc:
                error = f"The event handler failed: {exc}"
            else:
                conn.state = updated_state(conn.state, response.headers)
                if 200 <= response.status_code < 300:
                    try:
                        metadata = from_headers(response.headers.multi_items())
                    except MetadataError as exc:
                        error = f"The event handler answered invalid metadata: {exc}"
                        log.info(
                            "user event %r of %s failed: %s",
                            request.event,
                            conn.connection_id,
                            error,
                        )
                        self._event_failed(conn, request, error)
                        return
                    reply = None
                    if response.status_code == 200:
                        reply = reply_message(
                            response.headers.get("content-type"), response.content
                        )
                    if metadata is not None:
                        # An answer with metadata and no body is an empty text message.
                        reply = reply or Message(b"", DataType.TEXT, Source.SERVER)
                        reply = replace(reply, metadata=metadata)
                    if reply is not None and not conn.closed:
                        conn.deliver(conn.codec.encode_message(reply))
                    if request.ack_id is not None:
                        self.node.ack(conn, request.ack_id, None)
                    return
                error = f"The event handler answered {response.status_code}."
        log.info("user event %r of %s failed: %s", request.event, conn.connection_id, error)
        self._event_failed(conn, request, error)

    def _event_failed(self, conn: Connection, request: SendEvent, error: str) -> None:
        """Tell the client: an ack with the error, or (simple client, no acks) a close."""
        if conn.closed:
            return  # gone (a Socket.IO client's last packets go up after it left)
        try:
            if not conn.codec.is_pubsub:
                # A simple client whose message cannot be handled is dropped (spec 4.2).
                self.node.close(conn, CloseCode.INTERNAL_ERROR, "The event could not be handled.")
            elif request.ack_id is not None:
                self.node.ack(conn, request.ack_id, InternalServerError(error))
        except Exception:
            log.exception("could not report the failed event of %s", conn.connection_id)

    # -- invocations (blocking, concurrent per connection) ------------------------------------

    def invoke(self, conn: Connection, request: Invoke | CancelInvocation) -> None:
        """``invoke``: call the event handler, answer with ``invokeResponse``;
        ``cancelInvocation``: abort a pending call and answer nothing (spec-next 1.4, 1.5)."""
        calls = self._invocations.setdefault(conn, {})
        invocation_id = request.invocation_id
        if isinstance(request, CancelInvocation):
            task = calls.pop(invocation_id, None)
            if task is not None:
                task.cancel()
                self.node.observer.invocation_done(conn, "", "cancelled", 0.0)
            return
        if invocation_id in calls:
            return  # a duplicate of a pending call: an answer would settle the original
        error: tuple[str, str] | None = None
        handler = None
        if request.error is not None:
            error = (request.error_name, request.error)
        elif problem := event_name_problem(request.event):
            error = ("BadRequest", problem)
        elif len(calls) >= MAX_INVOCATIONS:
            error = ("BadRequest", f"Too many concurrent invocations (at most {MAX_INVOCATIONS}).")
        else:
            handler = self.hub_settings(conn.hub).handler_for(request.event, EventKind.USER)
            if handler is None:
                error = (
                    "NotFound",
                    f"No event handler is configured for event '{request.event}'.",
                )
        if error is not None or handler is None:
            conn.send(_invoke_response(conn)(invocation_id, error=error))
            outcome = error[0] if error is not None else "BadRequest"
            self.node.observer.invocation_done(conn, request.event, outcome, 0.0)
            return
        calls[invocation_id] = self._spawn(self._invoke(conn, request, handler, conn.transport))

    async def _invoke(
        self,
        conn: Connection,
        request: Invoke,
        handler: EventHandlerSettings,
        transport: object,
    ) -> None:
        result: InvokeResult
        metadata = None
        started = time.monotonic()
        try:
            data_type = request.data_type
            response = await self._call(
                handler,
                self._context(conn),
                request.event,
                EventKind.USER,
                user_event_content_type(data_type) if data_type else "text/plain",
                request.data,
                self.settings.limits.max_message_size,
                to_headers(request.metadata),
            )
        except UpstreamFailure as exc:
            name = "Timeout" if exc.kind == "timeout" else "InternalServerError"
            result = InvokeResult(error=(name, f"The event handler failed: {exc}"))
        else:
            result = invoke_result(
                response.status_code, response.headers.get("content-type"), response.content
            )
            if 200 <= response.status_code < 300:
                conn.state = updated_state(conn.state, response.headers)
                try:
                    metadata = from_headers(response.headers.multi_items())
                except MetadataError as exc:
                    result = InvokeResult(error=("InternalServerError", f"Invalid metadata: {exc}"))
        finally:
            calls = self._invocations.get(conn)
            if calls is not None and calls.get(request.invocation_id) is asyncio.current_task():
                del calls[request.invocation_id]
        encode = _invoke_response(conn)
        frame = encode(
            request.invocation_id,
            data=result.data,
            data_type=result.data_type,
            error=result.error,
            metadata=metadata,
        )
        if len(frame) > self.settings.limits.max_message_size + 16:
            frame = encode(
                request.invocation_id,
                error=("InternalServerError", "The event handler's answer is too large."),
            )
        outcome = result.error[0] if result.error is not None else "success"
        self.node.observer.invocation_done(conn, request.event, outcome, time.monotonic() - started)
        # Only to the socket that asked: after a recovery the client has given up the call.
        if conn.transport is transport:
            conn.send(frame)

    # -- HTTP -------------------------------------------------------------------------------

    def _context(self, conn: Connection) -> EventContext:
        conn.event_id += 1
        return EventContext(
            conn.hub,
            conn.connection_id,
            conn.user_id,
            conn.subprotocol,
            conn.state,
            conn.event_id,
            getattr(conn, "physical_connection_id", None),
            getattr(conn, "session_id", None),
        )

    async def _call(
        self,
        handler: EventHandlerSettings,
        ctx: EventContext,
        event: str,
        kind: EventKind,
        content_type: str,
        body: bytes,
        cap: int | None,
        extra: list[tuple[str, str]] | None = None,
    ) -> Answer:
        """One event handler call. Every failure, expected or not, is an UpstreamFailure.

        ``cap`` bounds the answer's body; ``None`` means the body is not wanted (non-blocking
        events) and is not read at all.
        """
        if not handler.is_tunnel and not await self._validate(handler, ctx.hub):
            raise UpstreamFailure("the handler did not pass abuse protection validation")
        url = handler.url(ctx.hub, event)
        try:
            headers = cloud_event_headers(
                ctx,
                event,
                kind,
                keys=self.settings.access_keys,
                origin=origin_host(self.settings.endpoint),
                content_type=content_type,
            )
            headers.setdefault(*ACCEPT_IDENTITY)
            if extra:
                headers.update(extra)
            if handler.auth_header is not None:
                headers[handler.auth_header[0]] = handler.auth_header[1]
        except Exception as exc:
            log.exception("%s event to %s could not be built", event, url)
            raise UpstreamFailure(type(exc).__name__) from None
        slots = self._slots.get(ctx.hub.lower())
        if slots is None:
            slots = self._slots[ctx.hub.lower()] = asyncio.Semaphore(
                self.settings.limits.upstream_concurrency
            )
        async with slots:
            return await self._post(ctx, event, url, headers, body, cap)

    async def _post(
        self,
        ctx: EventContext,
        event: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        cap: int | None,
    ) -> Answer:
        """POST an event; a failure is logged, observed and raised as UpstreamFailure."""
        started = time.perf_counter()
        observer = self.node.observer
        hub = ctx.hub
        try:
            answer = await self._fetch("POST", url, headers, body, cap, ctx)
        except UpstreamFailure as exc:
            seconds = time.perf_counter() - started
            log.warning("%s event to %s failed: %s", event, url, exc)
            observer.upstream_call(hub, event, url, None, seconds, exc.kind)
            raise
        seconds = time.perf_counter() - started
        observer.upstream_call(hub, event, url, answer.status_code, seconds, None)
        if answer.status_code >= 400:
            log.warning("%s event to %s answered %d", event, url, answer.status_code)
        log.debug("%s event to %s -> %d (%.1f ms)", event, url, answer.status_code, seconds * 1000)
        return answer

    async def _fetch(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        cap: int | None,
        ctx: EventContext | None = None,
    ) -> Answer:
        """One HTTP exchange within ``upstream_timeout`` for the whole of it, not per read
        (an answer that trickles in must not hold a slot forever), its body read with a cap:
        past ``cap`` bytes it fails; with ``cap`` None the body is not wanted, and is read
        only while it stays small (so the connection can be reused), else dropped unread.

        A ``tunnel:`` URL is the same exchange as HttpRequest/HttpResponse frames on the
        tunnel of the app server that owns ``ctx``'s connection (socketio spec 4.3)."""
        if url.startswith("tunnel:"):
            return await self._tunnel_fetch(method, url, headers, body, cap, ctx)
        try:
            async with asyncio.timeout(self.settings.limits.upstream_timeout):
                async with self.client.stream(method, url, content=body, headers=headers) as r:
                    if cap is None:
                        limit = self.settings.limits.max_connect_response_size
                        content = await _read_capped(r, limit, required=False)
                    else:
                        content = await _read_capped(r, cap)
                    return Answer(r.status_code, r.headers, content)
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamFailure("timed out", "timeout") from None
        except httpx.HTTPError as exc:
            raise UpstreamFailure(type(exc).__name__) from None
        except AnswerTooLarge as exc:
            raise UpstreamFailure(str(exc), "too_large") from None
        except Exception as exc:
            log.exception("%s %s failed unexpectedly", method, url)
            raise UpstreamFailure(type(exc).__name__) from None

    async def _tunnel_fetch(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        cap: int | None,
        ctx: EventContext | None,
    ) -> Answer:
        if self.tunnels is None or ctx is None:
            raise UpstreamFailure("no app server is connected for the hub", "no_tunnel")
        try:
            async with asyncio.timeout(self.settings.limits.upstream_timeout):
                answer = await self.tunnels.fetch(
                    ctx.hub, ctx.connection_id, method, url, headers, body, cap
                )
        except TimeoutError:
            raise UpstreamFailure("timed out", "timeout") from None
        except TunnelUnavailable as exc:
            raise UpstreamFailure(str(exc), exc.kind) from None
        except TunnelAnswerTooLarge as exc:
            raise UpstreamFailure(str(exc), "too_large") from None
        except ServiceUnavailable as exc:  # a call relayed to another node: Redis is down
            raise UpstreamFailure(exc.message, "redis") from None
        except Exception as exc:
            log.exception("a call over the tunnel to %s failed unexpectedly", url)
            raise UpstreamFailure(type(exc).__name__) from None
        return Answer(answer.status_code, httpx.Headers(answer.headers), answer.content)

    async def _validate(self, handler: EventHandlerSettings, hub: str) -> bool:
        """Abuse protection (spec 5.2): OPTIONS with WebHook-Request-Origin, cached.

        The probe runs in a task of its own that callers share: a caller cancelled (a client
        that left during its ``connect``) must not cancel the probe others wait for.
        """
        url = handler.url(hub, "validate")
        expiry = self._validated.get(url)
        if expiry is not None and (expiry == float("inf") or expiry > time.monotonic()):
            return expiry == float("inf")
        probe = self._validating.get(url)
        if probe is None:
            probe = self._validating[url] = self._spawn(self._validate_once(handler, url))
        return await asyncio.shield(probe)

    async def _validate_once(self, handler: EventHandlerSettings, url: str) -> bool:
        try:
            allowed = await self._probe(handler, url)
        except Exception:
            log.exception("event handler %s refused: validation failed unexpectedly", url)
            allowed = False
        finally:
            self._validating.pop(url, None)
        self._validated[url] = (
            float("inf") if allowed else time.monotonic() + VALIDATION_FAILURE_TTL
        )
        return allowed

    async def _probe(self, handler: EventHandlerSettings, url: str) -> bool:
        origin = origin_host(self.settings.endpoint)
        headers = {"WebHook-Request-Origin": origin, "ce-awpsversion": "1.0"}
        if handler.auth_header is not None:
            headers[handler.auth_header[0]] = handler.auth_header[1]
        try:
            response = await self._fetch("OPTIONS", url, headers, b"", None)
            if response.status_code == 404:
                response = await self._fetch("GET", url, headers, b"", None)
        except UpstreamFailure as exc:
            log.warning("event handler %s refused: validation request failed (%s)", url, exc)
            return False
        allowed = response.headers.get("webhook-allowed-origin", "")
        names = {name.strip().lower() for name in allowed.split(",")}
        if 200 <= response.status_code < 300 and ("*" in names or origin.lower() in names):
            log.info("event handler %s validated", url)
            return True
        log.warning(
            "event handler %s refused: validation answered %d with WebHook-Allowed-Origin %r "
            "(expected '*' or %r); its events are not sent",
            url,
            response.status_code,
            allowed,
            origin,
        )
        return False


class AnswerTooLarge(Exception):
    """An event handler answer over its cap (or compressed, so its size is unknown)."""


async def _read_capped(response: httpx.Response, cap: int, *, required: bool = True) -> bytes:
    """The body of an answer, read only while it stays within ``cap`` bytes.

    A declared ``Content-Length`` over the cap fails before a byte of the body is read;
    otherwise the body is read in chunks and the call fails as soon as it passes the cap
    (the connection is then closed, not reused), so a huge answer costs at most ``cap`` plus
    one chunk. When the body is not ``required`` (an answer only its status matters for),
    going over the cap just stops the reading and gives ``b""``.
    """
    try:
        return await _read_within(response, cap)
    except AnswerTooLarge:
        if required:
            raise
        return b""


async def _read_within(response: httpx.Response, cap: int) -> bytes:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise AnswerTooLarge(f"the answer is compressed ({encoding}); identity was asked for")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise AnswerTooLarge(f"the answer declares {int(declared)} bytes, over the cap of {cap}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > cap:
            raise AnswerTooLarge(f"the answer is over the cap of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _invoke_response(conn: Connection) -> Callable[..., bytes]:
    """The connection's ``invokeResponse`` encoder (JSON or protobuf, spec-next 1.1 and 8)."""
    codec = conn.codec

    def encode(invocation_id: str, **answer: Any) -> bytes:
        frame = codec.encode_invoke_response(invocation_id, **answer)
        return frame if frame is not None else encode_invoke_response(invocation_id, **answer)

    return encode
