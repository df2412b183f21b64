"""The node: the facade over this process's hubs, the engine, and client request handling.

REST routes and client endpoints call the node; the node decides (permissions, acks,
duplicates, membership) and the edges only move bytes. A node without an engine is a
single in-memory service; with one (e.g. Redis) every command reaches every node and the
membership that REST asks about is shared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from . import commands as c
from .connection import CloseCode, Codec, Connection, Transport
from .errors import (
    ClientError,
    Duplicate,
    Forbidden,
    InternalServerError,
    InvalidMessage,
    InvalidRequest,
    ProtocolViolation,
    Throttled,
)
from .groupstate import GroupStates, StateItem
from .handover import Snapshot, restore, take
from .hub import BUFFER_FULL, Batcher, Hub, PresenceHook
from .message import DataType, Message, Source
from .names import MAX_GROUP_NAME, event_name_problem, group_name_problem
from .observe import Observers
from .ratelimit import MessageRate, Verdict
from .reliable import RECOVERY_WINDOW
from .requests import (
    CancelInvocation,
    ClientRequest,
    Invoke,
    JoinGroup,
    LeaveGroup,
    Ping,
    SendEvent,
    SendToGroup,
    SequenceAck,
    SetGroupState,
    StreamData,
    StreamEnd,
    StreamInvalid,
    StreamStart,
    SubscribeGroupState,
    Unsupported,
)
from .roles import Permission, has_permission, is_allowed
from .streams import Ack as StreamAck
from .streams import Closed as StreamClosed
from .streams import Outcome as StreamOutcome
from .streams import Publish as StreamPublish
from .streams import StreamError, Streams

log = logging.getLogger("webpubsub.node")


class RecoveryRefused(Exception):
    """A reliable reconnection that cannot be honoured (spec 4.7: close with 1008).

    ``why`` is the holding node's reason when a move was refused ("" when no node holds
    the connection): an MQTT CONNECT tells "start a new session" from "refuse" by it."""

    def __init__(self, message: str, why: str = "") -> None:
        super().__init__(message)
        self.why = why


class Engine(Protocol):
    """What a node needs from a cluster engine (see ``webpubsub.engine``).

    Guarantees: commands from one node to one hub are applied in publish order on every
    other node, each at most once; a command published while Redis is reachable reaches them
    unless Redis stays unreachable past the engine's retry window. The node applies its own
    commands locally first, so ``publish`` only has to reach the others.
    """

    def publish(self, hub: str, command: c.Command) -> None:
        """Send a command to the other nodes serving ``hub``."""

    def record_soon(self, hub: str, command: c.Command) -> None:
        """Mirror a membership change of this node's own connections in shared state."""

    def connection_added(self, conn: Connection, groups: Iterable[str]) -> None: ...

    async def registered(self, connection_id: str) -> None:
        """Return once the other nodes can see this node's connection (its registration
        reached the shared state), or the engine gave up waiting; at once when nothing is
        pending. The upstream's events wait for it, so an app server that reacts to
        ``connected`` through another node finds the connection."""

    def connection_removed(self, conn: Connection) -> None: ...

    def hub_added(self, hub: str) -> None: ...

    def hub_removed(self, hub: str) -> None: ...


class UserEventHandler(Protocol):
    """Receives user events (``event`` requests, simple-client frames) for the upstream.

    Raises Throttled when the connection has too many events waiting already.
    """

    def __call__(self, conn: Connection, request: SendEvent) -> None: ...


DisconnectHook = Callable[[Connection, str], None]


class Node:
    """All hubs of this process and the operations REST and clients ask for."""

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        max_groups_per_connection: int = 1000,
        max_group_name_length: int = MAX_GROUP_NAME,
        recovery_window: float = RECOVERY_WINDOW,
        message_rate: float | None = None,
        message_burst: int = 1,
    ):
        self.hubs: dict[str, Hub] = {}
        self.engine = engine
        # The edge's once-per-turn writer of hub-wide broadcasts (core/hub.py Batcher);
        # without one, every delivery goes through its connection's transport.
        self.batcher: Batcher | None = None
        self.max_groups_per_connection = max_groups_per_connection
        self.max_group_name_length = max_group_name_length
        self.recovery_window = recovery_window
        # Client messages per second and burst per connection; None: unlimited.
        self.message_rate = message_rate
        self.message_burst = message_burst
        # Reliable connections whose socket dropped, waiting for the client (spec 4.7).
        self.recovering: set[Connection] = set()
        self.on_user_event: UserEventHandler | None = None
        # invoke / cancelInvocation (spec-next 1), answered by the upstream edge.
        self.on_invoke: Callable[[Connection, Invoke | CancelInvocation], None] | None = None
        # Group state (spec-next 5) of this node's connections, by hub key.
        self.group_states: dict[str, GroupStates] = {}
        self.observer = Observers()
        self.on_disconnected: list[DisconnectHook] = []
        # joined/left of a connection to a group; set before the first connection.
        self.on_presence: PresenceHook | None = None
        # Connections with open group streams (idle timeouts), and the clock streams use.
        self.streaming: set[Connection] = set()
        self.clock: Callable[[], float] = time.monotonic

    # -- hubs and connections -----------------------------------------------------------

    def hub(self, key: str) -> Hub | None:
        """The hub with this key (lower-case name), or None when it has no connection here."""
        return self.hubs.get(key)

    def _hub_for(self, key: str) -> Hub:
        hub = self.hubs.get(key)
        if hub is None:
            hub = self.hubs[key] = Hub(key)
            hub.presence = self._presence
            hub.batcher = self.batcher
            if self.engine is not None:
                self.engine.hub_added(key)
        return hub

    def connect(self, conn: Connection, groups: Iterable[str] = ()) -> None:
        """Register an accepted connection, join its initial groups, greet it (spec 4.1)."""
        hub = self._hub_for(conn.hub)
        hub.add(conn)
        groups = list(groups)
        for group in groups:
            # Announced by the upstream right after ``connected`` (spec-next 6).
            hub.join(conn, group, announce=False)
        if self.engine is not None:
            self.engine.connection_added(conn, groups)
        token = conn.recovery.token if conn.recovery else None
        conn.send(conn.codec.encode_connected(conn.connection_id, conn.user_id, token))
        self.observer.connection_opened(conn, getattr(conn.transport, "peer", ""))

    def connection_lost(self, conn: Connection, transport: Transport, now: float) -> None:
        """The socket under ``conn`` is gone: keep a reliable connection for its recovery
        window, forget any other at once."""
        if conn.transport is not transport:
            return  # a recovery already moved the connection to a new socket
        recovery = conn.recovery
        if recovery is not None and not conn.closed and self._is_registered(conn):
            recovery.attached = False
            recovery.deadline = now + self.recovery_window
            self.recovering.add(conn)
            return
        self.disconnect(conn)

    def resume(
        self, hub: str, connection_id: str, token: str, transport: Transport, now: float
    ) -> Connection:
        """Move a reliable connection to a new socket and replay what was not acknowledged.

        Raises RecoveryRefused when the connection is unknown, closed or the token is wrong;
        the edge then closes the new socket with 1008 so the client stops retrying.
        """
        conn = self.find_connection(hub, connection_id)
        recovery = conn.recovery if conn is not None else None
        if conn is None or recovery is None or conn.closed:
            raise RecoveryRefused("The connection cannot be recovered: it no longer exists.")
        if not recovery.check_token(token):
            raise RecoveryRefused("The reconnection token is invalid.")
        if recovery.attached:
            # The client came back before we noticed the old socket die.
            conn.transport.close(CloseCode.POLICY_VIOLATION, "Replaced by a recovered socket.")
        conn.transport = transport
        recovery.attached = True
        recovery.deadline = None
        self.recovering.discard(conn)
        conn.send(conn.codec.encode_connected(conn.connection_id, conn.user_id, recovery.token))
        for pieces, expires in recovery.buffer.pending():
            if expires is None:
                for piece in pieces:
                    transport.send(piece)
            else:
                transport.send_expiring(pieces, expires)  # dropped if its TTL has passed
        return conn

    def release(self, conn: Connection, now: float) -> Snapshot:
        """Let another node adopt a reliable connection: its snapshot, and this node forgets
        it without an event (the connection goes on there; see ``core/handover.py``)."""
        snapshot = take(conn, now, self.recovery_window)
        self.recovering.discard(conn)
        if conn.attached:
            conn.transport.close(CloseCode.POLICY_VIOLATION, "Replaced by a recovered socket.")
        conn.closed = True
        hub = self.hubs.get(conn.hub)
        if hub is not None and hub.remove(conn, announce=False):
            self._forget_hub_if_empty(hub)
        self._forget_state(conn)  # group state is per node: it does not move (compatibility.md)
        self.observer.connection_moved(conn, arrived=False)
        return snapshot

    def adopt(
        self,
        snapshot: Snapshot,
        codec: Codec,
        transport: Transport,
        now: float,
        later: Iterable[c.Command] = (),
    ) -> Connection:
        """Take over a connection another node released, on ``transport``: greet it, replay
        what it has not acknowledged, then apply ``later`` (the commands its snapshot does
        not reflect, in order) to it alone, and register it."""
        conn = restore(snapshot, codec, transport)
        conn.send(codec.encode_connected(conn.connection_id, conn.user_id, snapshot.token))
        for _, data, expires in snapshot.messages:
            if expires is None:
                transport.send(data)
            else:
                transport.send_expiring((data,), expires)
        return self.adopt_connection(conn, snapshot.groups, later)

    def adopt_connection(
        self, conn: Connection, groups: Iterable[str], later: Iterable[c.Command] = ()
    ) -> Connection:
        """Register a connection restored from another node's snapshot (already greeted on
        its socket), in ``groups``, after applying ``later`` to it alone."""
        # The later commands see this connection alone: the others here had them already.
        alone = Hub(conn.hub)
        alone.presence = self._presence
        alone.add(conn)
        for group in groups:
            alone.join(conn, group, announce=False)
        for command in later:
            applied = alone.apply(command)
            if applied.closed:
                reason = command.reason if isinstance(command, c.CloseConnections) else BUFFER_FULL
                self.observer.connection_moved(conn, arrived=True)
                self._disconnected(conn, reason)
                return conn
            if self.engine is not None and isinstance(command, c.AddToGroups | c.RemoveFromGroups):
                many = c.AddToGroup if isinstance(command, c.AddToGroups) else c.RemoveFromGroup
                for group in command.groups if applied.targets else ():
                    self.engine.record_soon(
                        conn.hub, many(c.ToConnection(conn.connection_id), group)
                    )
        groups = sorted(conn.groups)
        conn.groups.clear()
        hub = self._hub_for(conn.hub)
        hub.add(conn)
        for group in groups:
            hub.join(conn, group, announce=False)
        if self.engine is not None:
            self.engine.connection_added(conn, groups)
        self.observer.connection_moved(conn, arrived=True)
        return conn

    def expire(self, now: float) -> None:
        """End the reliable connections whose recovery window has passed, and the group
        streams idle past their timeout."""
        self._expire_streams(self.clock())
        expired = [
            conn
            for conn in self.recovering
            if conn.recovery is not None
            and conn.recovery.deadline is not None
            and conn.recovery.deadline <= now
        ]
        for conn in expired:
            self.recovering.discard(conn)
            conn.closed = True
            self.disconnect(conn, "The connection was not recovered in time.")

    def _is_registered(self, conn: Connection) -> bool:
        return self.find_connection(conn.hub, conn.connection_id) is conn

    def disconnect(self, conn: Connection, reason: str = "") -> None:
        """Forget a connection that went away; runs the disconnect hooks once."""
        self.recovering.discard(conn)
        hub = self.hubs.get(conn.hub)
        if hub is None or not hub.remove(conn):
            return
        conn.closed = True
        self._forget_hub_if_empty(hub)
        self._disconnected(conn, reason)

    def _forget_hub_if_empty(self, hub: Hub) -> None:
        if not hub.connections and self.hubs.get(hub.name) is hub:
            del self.hubs[hub.name]
            if self.engine is not None:
                self.engine.hub_removed(hub.name)

    def _disconnected(self, conn: Connection, reason: str) -> None:
        self._cancel_streams(conn)
        self._forget_state(conn)
        if self.engine is not None:
            self.engine.connection_removed(conn)
        self.observer.connection_closed(conn, reason)
        for hook in self.on_disconnected:
            try:
                hook(conn, reason)
            except Exception:
                log.exception("disconnect hook failed for %s", conn.connection_id)

    # -- commands -----------------------------------------------------------------------

    def execute(self, hub: str, command: c.Command) -> None:
        """Carry out a command here and on every other node (through the engine, if any)."""
        self.apply(hub, command)
        if self.engine is not None:
            self.engine.publish(hub, command)

    def apply(self, hub_key: str, command: c.Command) -> None:
        """Apply a command to this node's connections (the engine calls this for others')."""
        hub = self.hubs.get(hub_key)
        if hub is None:
            return
        applied = hub.apply(command)
        engine = self.engine
        if engine is not None and isinstance(command, c.AddToGroups | c.RemoveFromGroups):
            # A filter is evaluated where the connections live: each owner records its own.
            many = c.AddToGroup if isinstance(command, c.AddToGroups) else c.RemoveFromGroup
            for conn in applied.targets:
                for group in command.groups:
                    engine.record_soon(hub_key, many(c.ToConnection(conn.connection_id), group))
        self.observer.command_applied(hub_key, command, applied.recipients)
        for conn in applied.closed:
            self.recovering.discard(conn)
            reason = command.reason if isinstance(command, c.CloseConnections) else BUFFER_FULL
            self._disconnected(conn, reason)
        self._forget_hub_if_empty(hub)

    # -- queries (local; a cluster engine answers these from shared state) ---------------

    def find_connection(self, hub: str, connection_id: str) -> Connection | None:
        found = self.hubs.get(hub)
        return found.connections.get(connection_id) if found else None

    def connection_exists(self, hub: str, connection_id: str) -> bool:
        return self.find_connection(hub, connection_id) is not None

    def user_exists(self, hub: str, user_id: str) -> bool:
        found = self.hubs.get(hub)
        return bool(found and user_id in found.users)

    def group_exists(self, hub: str, group: str) -> bool:
        found = self.hubs.get(hub)
        return bool(found and group in found.groups)

    def group_members(
        self, hub: str, group: str, after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, str | None]]:
        """(connection id, user id) of a group's members ordered by id, after ``after``."""
        found = self.hubs.get(hub)
        if found is None:
            return []
        members = sorted((m.connection_id, m.user_id) for m in found.group_members(group))
        if after is not None:
            members = [m for m in members if m[0] > after]
        return members if limit is None else members[:limit]

    def has_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool:
        conn = self.find_connection(hub, connection_id)
        return conn is not None and has_permission(conn.roles, permission, target)

    # -- client requests (spec 4.3-4.6) ---------------------------------------------------

    def new_rate(self, now: float) -> MessageRate | None:
        """A fresh message-rate bucket for a connection opening at ``now`` (None: unlimited).

        The edge keeps one per socket and passes it to :meth:`receive` with the time.
        """
        if self.message_rate is None:
            return None
        return MessageRate(self.message_rate, self.message_burst, now)

    def admit(
        self, conn: Connection, data: bytes, is_text: bool, rate: MessageRate | None, now: float
    ) -> bool:
        """Charge one complete client message to its connection's ``rate`` at ``now``:
        True when it may be decoded and handled.

        Called before anything else looks at the message, so a refused one costs next to
        nothing: over the rate it is answered ``Throttled`` when an ackId can be read from its
        head (not executed, its ackId not recorded, so it may be retried) and dropped
        otherwise; a client that goes on regardless is closed with 1008.
        """
        if rate is None:
            return True
        verdict = rate.take(now)
        if verdict is Verdict.ALLOW:
            return True
        if verdict is Verdict.CUT:
            log.info("closing %s: it ignored throttling", conn.connection_id)
            self.close(
                conn,
                CloseCode.POLICY_VIOLATION,
                "Too many messages: the client ignored throttling.",
            )
            return False
        limit = f"Too many messages: at most {rate.rate:g} per second; retry later."
        ack_id = conn.codec.peek_ack_id(data, is_text)
        if ack_id is not None:
            self.ack(conn, ack_id, Throttled(limit))
            return False
        invocation_id = conn.codec.peek_invocation_id(data)
        if invocation_id is not None and self.on_invoke is not None:
            # An invoke has no ackId; its caller waits for an invokeResponse (spec-next 1.6).
            self.on_invoke(conn, Invoke(invocation_id, "", error=limit, error_name="Throttled"))
        return False

    def receive(
        self,
        conn: Connection,
        data: bytes,
        is_text: bool,
        *,
        rate: MessageRate | None = None,
        now: float = 0.0,
    ) -> None:
        """One complete client message (all frames joined): decode it and act on it.

        With a ``rate`` (and the time ``now``) the message is first charged to it (see
        :meth:`admit`); the edge calls :meth:`admit` itself, before it checks the UTF-8.
        """
        if rate is not None and not self.admit(conn, data, is_text, rate, now):
            return
        try:
            request = conn.codec.decode(data, is_text)
        except ProtocolViolation as exc:
            self.close(conn, exc.code, exc.message)
            return
        except InvalidRequest as exc:
            if exc.ack_id is not None:
                self.ack(conn, exc.ack_id, InvalidMessage(exc.message))
            return
        self.observer.request_received(conn, request, len(data))
        self.handle(conn, request)

    def handle(self, conn: Connection, request: ClientRequest) -> None:
        """Act on one client request and answer it (ack, pong) through its codec."""
        ack_id = getattr(request, "ack_id", None)
        if ack_id is not None and conn.seen_ack(ack_id):
            self.ack(conn, ack_id, Duplicate(f"Message with ack-id: {ack_id} has been processed"))
            return
        try:
            self._dispatch(conn, request)
        except ClientError as error:
            if ack_id is not None:
                if isinstance(error, Throttled):
                    conn.forget_ack(ack_id)  # not executed: a retry is not a Duplicate
                self.ack(conn, ack_id, error)
            return
        if ack_id is not None and not isinstance(request, SendEvent):
            self.ack(conn, ack_id, None)
        if isinstance(request, SubscribeGroupState) and request.subscribe:
            # The snapshot follows the ack (spec-next 5).
            states = self.group_states[conn.hub]
            self._deliver_state(
                conn, "groupStateSnapshot", request.group, states.snapshot(request.group)
            )

    def _forget_state(self, conn: Connection) -> None:
        """The connection is gone from here: its entries (watchers are told) and watches."""
        states = self.group_states.get(conn.hub)
        if states is not None:
            for group, item in states.forget(conn.connection_id, _epoch_ms()):
                self._state_update(conn.hub, group, item)
            if not states:
                del self.group_states[conn.hub]

    def _presence(self, conn: Connection, group: str, joined: bool) -> None:
        """Every join and leave of a local connection (client, REST, initial groups)."""
        if not joined and conn.hub in self.group_states:
            self._set_state(conn, group, None)  # a member that leaves has no state (spec-next 5)
        if self.on_presence is not None:
            self.on_presence(conn, group, joined)

    def _set_state(self, conn: Connection, group: str, state: Mapping[str, str] | None) -> None:
        states = self.group_states.get(conn.hub)
        if states is None:
            if state is None:
                return
            states = self.group_states[conn.hub] = GroupStates()
        item = states.set(group, conn.connection_id, conn.user_id, state, _epoch_ms())
        if item is not None:
            self._state_update(conn.hub, group, item)

    def _state_update(self, hub_key: str, group: str, item: StateItem) -> None:
        """One changed entry to the group's local subscribers (``groupStateUpdate``)."""
        states, hub = self.group_states.get(hub_key), self.hubs.get(hub_key)
        if states is None or hub is None:
            return
        for connection_id in states.watchers(group):
            watcher = hub.connections.get(connection_id)
            if watcher is not None:
                self._deliver_state(watcher, "groupStateUpdate", group, [item])

    def _deliver_state(
        self, conn: Connection, kind: str, group: str, items: list[StateItem]
    ) -> None:
        codec = conn.codec
        frame = codec.encode_group_state(kind, group, items)
        if frame is None:
            return  # a subprotocol without group state

        def sequence(encoded: bytes, sequence_id: int) -> tuple[bytes, ...]:
            own = codec.sequence_group_state(kind, encoded, sequence_id)
            return own if own is not None else codec.sequence(encoded, sequence_id)

        if not conn.deliver(frame, None, sequence):
            self.close(conn, CloseCode.POLICY_VIOLATION, BUFFER_FULL)

    def ack(self, conn: Connection, ack_id: int, error: ClientError | None) -> None:
        """Answer a request that carried ``ackId`` (success when ``error`` is None)."""
        conn.send(conn.codec.encode_ack(ack_id, error))

    def _dispatch(self, conn: Connection, request: ClientRequest) -> None:
        match request:
            case JoinGroup(group):
                self._check_group(group)
                self._require(conn, Permission.JOIN_LEAVE_GROUP, group, "join")
                hub = self.hubs[conn.hub]
                if group not in conn.groups and len(conn.groups) >= self.max_groups_per_connection:
                    raise InvalidMessage(
                        f"The connection is already in {self.max_groups_per_connection} groups."
                    )
                hub.join(conn, group)
                if self.engine is not None:
                    self.engine.record_soon(
                        conn.hub, c.AddToGroup(c.ToConnection(conn.connection_id), group)
                    )
            case LeaveGroup(group):
                self._check_group(group)
                self._require(conn, Permission.JOIN_LEAVE_GROUP, group, "leave")
                self.hubs[conn.hub].leave(conn, group)
                if self.engine is not None:
                    self.engine.record_soon(
                        conn.hub, c.RemoveFromGroup(c.ToConnection(conn.connection_id), group)
                    )
            case SetGroupState(group, state):
                self._check_group(group)
                if group not in conn.groups:
                    raise InvalidMessage(f"Join group '{group}' before setting its state.")
                self._set_state(conn, group, state)
            case SubscribeGroupState(group, _, subscribe):
                self._check_group(group)
                self._require(conn, Permission.JOIN_LEAVE_GROUP, group, "watch the state of")
                states = self.group_states.setdefault(conn.hub, GroupStates())
                if subscribe:
                    states.subscribe(group, conn.connection_id)
                else:
                    states.unsubscribe(group, conn.connection_id)
            case SendToGroup(group, data, data_type, _, no_echo, metadata, ttl):
                self._check_group(group)
                self._require(conn, Permission.SEND_TO_GROUP, group, "send message to")
                expires = time.time() + ttl if ttl else None
                message = Message(
                    data, data_type, Source.GROUP, group, conn.user_id, metadata, expires
                )
                excluded = frozenset((conn.connection_id,)) if no_echo else frozenset()
                self.execute(conn.hub, c.Send(c.ToGroup(group), message, excluded))
            case SendEvent(event):
                problem = event_name_problem(event)
                if problem:
                    raise InvalidMessage(problem)
                self._user_event(conn, request)
            case Invoke() | CancelInvocation():
                if self.on_invoke is None:
                    raise InvalidMessage("Invocations need an event handler.")
                self.on_invoke(conn, request)
            case StreamStart() | StreamData() | StreamEnd() | StreamInvalid():
                self._stream(conn, request, self.clock())
            case Ping():
                conn.send(conn.codec.encode_pong())
            case SequenceAck(sequence_id):
                if conn.recovery is not None:
                    conn.recovery.buffer.ack(sequence_id)
            case Unsupported(kind):
                raise InvalidMessage(f"The message type '{kind}' is not supported.")

    # -- group streams (spec-next 2; the state machine is core/streams.py) ------------------

    def _stream(
        self,
        conn: Connection,
        request: StreamStart | StreamData | StreamEnd | StreamInvalid,
        now: float,
    ) -> None:
        streams = conn.streams
        if streams is None:
            streams = conn.streams = Streams()
        answer: StreamAck | StreamClosed | None
        match request:
            case StreamStart(group, stream_id, no_echo, idle_ms):
                problem = self.group_name_problem(group)
                if problem is not None:
                    answer = StreamClosed(stream_id, StreamError("BadRequest", problem))
                elif not is_allowed(conn.roles, Permission.SEND_TO_GROUP, group):
                    message = f"No permission to send a stream to group '{group[:128]}'."
                    answer = StreamClosed(stream_id, StreamError("Forbidden", message))
                else:
                    answer = streams.start(stream_id, group, no_echo, idle_ms, now)
                    if isinstance(answer, StreamAck):
                        self.streaming.add(conn)
                        self.observer.stream_changed(conn, group, stream_id, True, None)
                self._stream_answer(conn, answer)
            case StreamData(stream_id, None):
                self._stream_answer(conn, streams.keepalive(stream_id, now))
            case StreamData(stream_id, sequence_id, data, data_type):
                assert sequence_id is not None
                stream = streams.open.get(stream_id)
                if stream is not None and not is_allowed(
                    conn.roles, Permission.SEND_TO_GROUP, stream.group
                ):
                    forbidden = StreamError("Forbidden", "The send permission was revoked.")
                    self._stream_outcome(conn, streams.fail(stream_id, forbidden, forbidden))
                    return
                outcome = streams.fragment(stream_id, sequence_id, data, data_type.value, now)
                self._stream_outcome(conn, outcome)
            case StreamEnd(stream_id, error):
                user_error = (
                    StreamError("UserError", error[0], error[1]) if error is not None else None
                )
                self._stream_outcome(conn, streams.end(stream_id, user_error))
            case StreamInvalid(stream_id, problem, start):
                bad = StreamError("BadRequest", problem)
                if start:
                    self._stream_answer(conn, StreamClosed(stream_id, bad))
                else:
                    cancelled = StreamError("Cancelled", problem)
                    self._stream_outcome(conn, streams.fail(stream_id, cancelled, bad))
        if not streams.open:
            self.streaming.discard(conn)

    def _stream_answer(self, conn: Connection, answer: StreamAck | StreamClosed | None) -> None:
        if answer is not None:
            conn.send(conn.codec.encode_stream_answer(answer))

    def _stream_outcome(self, conn: Connection, outcome: StreamOutcome) -> None:
        publish = outcome.publish
        if publish is not None:
            self._stream_publish(conn, publish)
        self._stream_answer(conn, outcome.answer)

    def _stream_publish(self, conn: Connection, publish: StreamPublish) -> None:
        stream = publish.stream
        mark = publish.mark
        if mark.end:
            error = mark.error.name if mark.error is not None else None
            self.observer.stream_changed(conn, stream.group, mark.stream_id, False, error)
        data_type = DataType(publish.data_type)
        message = Message(
            publish.data, data_type, Source.GROUP, stream.group, conn.user_id, stream=publish.mark
        )
        excluded = frozenset((conn.connection_id,)) if stream.no_echo else frozenset()
        self.execute(conn.hub, c.Send(c.ToGroup(stream.group), message, excluded))

    def _expire_streams(self, now: float) -> None:
        for conn in list(self.streaming):
            streams = conn.streams
            if streams is None or not streams.open:
                self.streaming.discard(conn)
                continue
            for outcome in streams.expire(now):
                self._stream_outcome(conn, outcome)
            if not streams.open:
                self.streaming.discard(conn)

    def _cancel_streams(self, conn: Connection) -> None:
        """The publisher's logical connection ended: its open streams end ``Cancelled``."""
        self.streaming.discard(conn)
        if conn.streams is not None and conn.streams.open:
            for publish in conn.streams.cancel_all():
                self._stream_publish(conn, publish)

    def _user_event(self, conn: Connection, request: SendEvent) -> None:
        if conn.raw_group is not None:
            # Simple client in webpubsub_mode=sendToGroup (spec 4.2).
            self.handle(
                conn,
                SendToGroup(
                    conn.raw_group, request.data, request.data_type, None, conn.raw_no_echo
                ),
            )
            return
        if self.on_user_event is not None:
            try:
                self.on_user_event(conn, request)
            except Throttled:
                if not conn.codec.is_pubsub:
                    # A simple client cannot be told to slow down (no acks): it goes.
                    self.close(conn, CloseCode.TRY_AGAIN_LATER, "Too many events waiting upstream.")
                    return
                raise
            return
        if not conn.codec.is_pubsub:
            # Simple clients are dropped when no handler takes their frames (spec 4.2).
            self.close(conn, CloseCode.INTERNAL_ERROR, "No event handler is configured.")
            return
        raise InternalServerError(
            f"No event handler is configured for the event '{request.event}'."
        )

    def group_name_problem(self, group: object) -> str | None:
        """What is wrong with a group name under this node's length limit, or None."""
        return group_name_problem(group, self.max_group_name_length)

    def _check_group(self, group: str) -> None:
        problem = self.group_name_problem(group)
        if problem:
            raise InvalidMessage(problem)

    @staticmethod
    def _require(conn: Connection, permission: Permission, group: str, verb: str) -> None:
        if not is_allowed(conn.roles, permission, group):
            raise Forbidden(f"The client has no permission to {verb} group '{group}'.")

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Close one local connection now (protocol violation, shutdown)."""
        conn.close(code, reason)
        self.disconnect(conn, reason)

    def close_all(self, code: int, reason: str) -> None:
        for hub in list(self.hubs.values()):
            for conn in list(hub.connections.values()):
                self.close(conn, code, reason)


def _epoch_ms() -> int:
    """``updatedAt`` of group state: Unix epoch milliseconds (spec-next 5)."""
    return int(time.time() * 1000)
