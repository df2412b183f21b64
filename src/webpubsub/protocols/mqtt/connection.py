"""An MQTT client as a connection of its hub: packets in, node calls and packets out.

Sans-I/O like the other codecs: ``receive`` is fed the bytes of WebSocket messages (in any
split), decisions come from ``core.mqtt`` and the node, and answers go to the transport as
WebSocket binary frames. The connection is registered with the node only when its CONNECT
is accepted, because its connection id is the MQTT client id (mqtt spec 3.1).
"""

from __future__ import annotations

import logging
import secrets
import struct
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ...core import commands as c
from ...core import mqtt as rules
from ...core.connection import (
    GONE,
    OTHER_SUBPROTOCOL,
    CloseCode,
    Connection,
    NullTransport,
    Transport,
    WithoutExtras,
)
from ...core.events import ConnectResult
from ...core.message import DataType, Message, MqttExtras, Source
from ...core.ratelimit import MessageRate, Verdict
from ...core.requests import JoinGroup, SendToGroup
from ..frames import OP_BINARY, binary_frame, header
from .packets import (
    V5,
    V311,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    encode,
    publish_parts,
)
from .parser import Parser
from .wire import NO_PROPERTIES, MqttError, Properties, Reason

if TYPE_CHECKING:
    from ...core.errors import ClientError
    from ...core.handover import Snapshot
    from ...core.node import Node
    from ...core.requests import ClientRequest

log = logging.getLogger("webpubsub.mqtt")


class MqttCodec(WithoutExtras):
    """The ``Codec`` face of MQTT for the node: only the goodbye is encoded here."""

    subprotocol: str | None = "mqtt"
    is_pubsub = True
    is_reliable = False
    per_message = True  # Hub.deliver hands messages to MqttConnection.deliver_message

    def __init__(self, version: int) -> None:
        self.version = version

    def encode_message(self, message: Message) -> bytes:
        raise NotImplementedError("MQTT connections encode through deliver_message")

    def encode_ack(self, ack_id: int, error: ClientError | None) -> bytes | None:
        return None

    def encode_connected(
        self, connection_id: str, user_id: str | None, reconnection_token: str | None
    ) -> bytes | None:
        return None  # the CONNACK is written by the connection itself

    def encode_disconnected(self, reason: str) -> bytes | None:
        """REST close: 5.0 DISCONNECT 0x98 Administrative action (mqtt spec 6.1)."""
        if self.version != V5:
            return None  # 3.1.1 has no server DISCONNECT
        props = Properties(reason_string=reason[:200]) if reason else NO_PROPERTIES
        return binary_frame(encode(Disconnect(Reason.ADMINISTRATIVE_ACTION, props), V5))

    def encode_pong(self) -> bytes | None:
        return None

    def decode(self, data: bytes, is_text: bool) -> ClientRequest:
        raise NotImplementedError("MQTT connections read through MqttConnection.receive")

    def peek_ack_id(self, data: bytes, is_text: bool) -> int | None:
        return None

    def sequence(self, encoded: bytes, sequence_id: int) -> tuple[bytes, ...]:
        raise NotImplementedError


class SharedMqttCodec(MqttCodec):
    """The codec of an MQTT connection whose subscriptions all take a group message as is:
    granted QoS 0, no No Local, no subscription identifier (memberships made by token or
    REST too). A group message's PUBLISH is then the same bytes for every such connection
    of a version, so the first one's ``deliver_message`` caches it on the message under
    this codec, and ``Hub.deliver`` sends it to the others in its plain loop, as it does
    for any codec's frame (issue 15 item 8)."""


MQTT_CODECS = {V311: MqttCodec(V311), V5: MqttCodec(V5)}
SHARED_MQTT_CODECS = {V311: SharedMqttCodec(V311), V5: SharedMqttCodec(V5)}
PLAIN_SUBSCRIPTION = (0, False, None)  # (granted QoS, No Local, subscription identifier)
_GROUP = Source.GROUP  # a global, not an enum attribute, on the fan-out's path
# The frame-cache key of the common case (QoS 0, no subscription identifier) by version: a
# string, whose hash Python keeps, where a tuple would be hashed for every subscriber.
_QOS0 = {V311: "mqtt 3.1.1 qos 0", V5: "mqtt 5 qos 0"}
MAX_HELD = 100  # packets a client may send while its connect event is answered


class MqttConnection(Connection):
    """One MQTT session over one WebSocket."""

    __slots__ = (
        "clean_exit",
        "connack_user_properties",
        "disconnect_event",
        "groups_at_connect",
        "held",
        "keep_alive",
        "last_packet",
        "new_session",
        "node",
        "on_event",
        "parser",
        "pending_connect",
        "pending_move",
        "physical_connection_id",
        "rate",
        "resumed",
        "session",
        "session_id",
        "upstream_connect",
        "will",
        "will_due",
    )

    per_message = True

    def __init__(
        self,
        hub: str,
        transport: Transport,
        node: Node,
        *,
        user_id: str | None = None,
        roles: Iterable[str] = (),
        groups: Iterable[str] = (),
        max_packet_size: int | None = None,
    ) -> None:
        super().__init__(hub, MQTT_CODECS[V5], transport, user_id=user_id, roles=roles)
        self.node = node
        self.parser = Parser(max_packet_size=max_packet_size) if max_packet_size else Parser()
        self.session: rules.Session | None = None
        self.will: Publish | None = None
        self.will_due: float | None = None  # when a delayed will goes (5.0 Will Delay)
        self.rate: MessageRate | None = None  # client_message_rate, charged per PUBLISH
        self.clean_exit = False
        self.groups_at_connect = list(groups)
        self.keep_alive = 0  # seconds agreed at CONNECT; 0: none
        self.last_packet = 0.0  # when bytes last arrived (the edge's clock)
        # The session this socket resumed (mqtt spec 3.6): the edge hands its bytes there.
        self.resumed: MqttConnection | None = None
        # Upstream events (mqtt spec 5): opaque ids, and the ``mqtt`` of ``disconnected``.
        self.physical_connection_id = secrets.token_hex(16)
        self.session_id: str | None = None
        self.new_session = False  # set at a new session's CONNACK; the edge sends `connected`
        self.upstream_connect = False  # the hub has a connect handler (mqtt spec 5.2)
        self.pending_connect: Connect | None = None  # waiting for the handler's answer
        self.held: list[Packet] = []  # packets that came meanwhile
        # In a cluster: a CONNECT waiting to learn whether another node holds the session
        # (the edge asks the engine, then calls finish_move); packets wait in ``held``.
        self.pending_move: Connect | None = None
        self.connack_user_properties: rules.UserProperties = ()
        # Where user events go (the edge sets it: the upstream); False when too many wait.
        self.on_event: Callable[[MqttConnection, str, Publish], bool] | None = None
        self.disconnect_event: dict[str, Any] = {
            "initiatedByClient": False,
            "disconnectPacket": None,
        }

    @property
    def version(self) -> int:
        return self.parser.version or V5

    # -- bytes in --------------------------------------------------------------------------

    def receive(self, data: bytes, is_text: bool, now: float = 0.0) -> None:
        """The payload of one WebSocket message: any number of (partial) packets."""
        if self.closed:
            return
        self.last_packet = now
        if is_text:
            self.fail(Reason.MALFORMED_PACKET, "MQTT needs binary WebSocket frames.")
            return
        try:
            packets = self.parser.feed(data)
            self._handle_all(packets)
            if self.parser.error is not None:
                self.parser.feed(b"")  # raises the error found after those packets
        except MqttError as exc:
            owner = self.resumed or self
            if owner.closed:
                return
            if owner is not self:
                owner.fail(exc.reason, str(exc))
                return
            if exc.reason == Reason.UNSUPPORTED_PROTOCOL_VERSION and self.session is None:
                self._send(ConnAck(rules.V311_REFUSED_VERSION), V311)
                self._close(CloseCode.NORMAL, str(exc))
                return
            self.fail(exc.reason, str(exc))

    def _handle_all(self, packets: list[Packet]) -> None:
        for packet in packets:
            owner = self.resumed or self
            if owner.closed:
                return
            if owner.pending_connect is not None or owner.pending_move is not None:
                if len(owner.held) >= MAX_HELD:
                    owner.fail(Reason.RECEIVE_MAXIMUM_EXCEEDED, "Too many packets before CONNACK.")
                    return
                owner.held.append(packet)
                continue
            owner._handle(packet)

    def _handle(self, packet: Packet) -> None:
        if self.session is None:
            if isinstance(packet, Connect):
                self._on_connect(packet)
            else:
                self.fail(Reason.PROTOCOL_ERROR, "The first packet must be CONNECT.")
            return
        match packet:
            case Publish():
                self._on_publish(packet)
            case PubRel(packet_id):
                self.session.received_qos2.discard(packet_id)
                self._send(PubComp(packet_id))
            case PubAck(packet_id) | PubComp(packet_id):
                self.session.outgoing.pop(packet_id, None)
                self._release_waiting()
            case PubRec(packet_id, reason):
                if reason >= 0x80:
                    self.session.outgoing.pop(packet_id, None)
                    self._release_waiting()
                elif packet_id in self.session.outgoing:
                    frame = binary_frame(encode(PubRel(packet_id), self.version))
                    self.session.outgoing[packet_id] = frame  # resent if the socket drops
                    self.transport.send(frame)
            case Subscribe():
                self._on_subscribe(packet)
            case Unsubscribe():
                self._on_unsubscribe(packet)
            case PingReq():
                self._send(PingResp())
            case Disconnect(reason, props):
                self.clean_exit = reason != Reason.DISCONNECT_WITH_WILL
                self.disconnect_event = {
                    "initiatedByClient": True,
                    "disconnectPacket": {
                        "code": reason,
                        "userProperties": [
                            {"name": n, "value": v} for n, v in props.user_properties
                        ]
                        or None,
                    },
                }
                if props.session_expiry_interval is not None and self.session.expiry:
                    self.session.expiry = rules.session_expiry(
                        5, False, props.session_expiry_interval
                    )
                why = props.reason_string or "The client disconnected."
                if self.session.expiry:
                    self._detach(self.last_packet)
                    self.transport.close(CloseCode.NORMAL, why)
                    self.transport = DETACHED
                else:
                    self._end(CloseCode.NORMAL, why)
            case _:
                self.fail(Reason.PROTOCOL_ERROR, f"Unexpected {type(packet).__name__}.")

    # -- CONNECT (mqtt spec 3.2) -------------------------------------------------------------

    def _on_connect(self, packet: Connect) -> None:
        version = packet.protocol_level
        self.codec = SHARED_MQTT_CODECS[version]  # no subscriptions yet
        props = packet.properties
        will = packet.will
        spec = rules.WillSpec(will.topic, will.payload, will.qos, will.retain) if will else None
        code = rules.connect_problem(
            version,
            packet.client_id,
            packet.keep_alive,
            spec,
            props.authentication_method is not None,
        )
        if code:
            self._refuse(version, code)
            return
        client_id = packet.client_id or rules.new_client_id()
        self.connection_id = client_id  # not registered yet: the node learns it on accept
        if self.upstream_connect:
            # The hub's connect handler decides first (mqtt spec 5.2); the edge calls it and
            # then finish_connect(). Packets that follow wait in ``held``.
            self.pending_connect = packet
            return
        self._accept_connect(packet)

    def finish_connect(
        self,
        result: ConnectResult | rules.ConnectRefusal,
        user_properties: rules.UserProperties = (),
    ) -> None:
        """The upstream ``connect`` answered: refuse with its CONNACK code, or go on with
        its user id, roles and groups (used only by a new session, mqtt spec 2.2)."""
        packet, self.pending_connect = self.pending_connect, None
        if packet is None or self.closed:
            return
        version = packet.protocol_level
        if isinstance(result, rules.ConnectRefusal):
            props = NO_PROPERTIES
            if version == V5 and (result.reason or result.user_properties):
                props = Properties(
                    reason_string=result.reason, user_properties=result.user_properties
                )
            self._send(ConnAck(result.code, False, props), version)
            self._close(CloseCode.NORMAL, f"CONNECT refused by the handler ({result.code}).")
            return
        if result.user_id is not None:
            self.user_id = result.user_id
        if result.roles is not None:
            self.roles = set(result.roles)
        self.groups_at_connect = list(dict.fromkeys([*self.groups_at_connect, *result.groups]))
        self.state = result.state
        self.connack_user_properties = user_properties
        self._accept_connect(packet)
        self._handle_held()

    def _handle_held(self) -> None:
        """Handle the packets that came while the CONNECT waited (unless it waits still)."""
        if self.pending_move is not None:
            return
        held, self.held = self.held, []
        for later in held:
            owner = self.resumed or self
            if owner.closed:
                return
            owner._handle(later)

    def _refuse(self, version: int, code: int) -> None:
        answer = code if version == V5 else rules.v311_connack(code)
        self._send(ConnAck(answer), version)
        self._close(CloseCode.NORMAL, f"CONNECT refused (0x{code:02x}).")

    def _accept_connect(self, packet: Connect, located: bool = False) -> None:
        version = packet.protocol_level
        client_id = self.connection_id
        existing = self.node.find_connection(self.hub, client_id)
        if existing is not None and not isinstance(existing, MqttConnection):
            self._refuse(version, Reason.CLIENT_IDENTIFIER_NOT_VALID)  # a Web PubSub client's
            return
        if existing is None and not located and self.node.engine is not None:
            # Another node may hold this client id's session: the edge asks (finish_move).
            self.pending_move = packet
            return
        expiry = rules.session_expiry(
            version, packet.clean_start, packet.properties.session_expiry_interval
        )
        if isinstance(existing, MqttConnection):
            session = existing.session
            if not packet.clean_start and session is not None and session.version == version:
                existing._resume(self, packet, expiry)
                self.resumed = existing
                return
            existing.take_over()
        self.session = rules.Session(
            version, expiry=expiry, receive_maximum=packet.properties.receive_maximum or 65535
        )
        self.session_id = secrets.token_hex(16)
        self.new_session = True
        self.keep_alive = rules.server_keep_alive(version, packet.keep_alive) or packet.keep_alive
        will = packet.will
        if will is not None:
            self.will = Publish(will.topic, will.payload, will.qos, properties=will.properties)
        self.node.connect(self, self.groups_at_connect)
        assigned = None if packet.client_id else client_id
        self._send(ConnAck(0, False, self._connack_properties(packet, assigned)))

    def _connack_properties(self, packet: Connect, assigned: str | None) -> Properties:
        if packet.protocol_level != V5:
            return NO_PROPERTIES
        session = self.session
        requested = packet.properties.session_expiry_interval
        granted = int(session.expiry) if session is not None else 0
        return Properties(
            receive_maximum=rules.RECEIVE_MAXIMUM,
            retain_available=0,
            wildcard_subscription_available=0,
            shared_subscription_available=0,
            assigned_client_identifier=assigned,
            server_keep_alive=rules.server_keep_alive(V5, packet.keep_alive),
            session_expiry_interval=granted if (requested or 0) > granted else None,
            maximum_packet_size=self.parser.max_packet_size,
            user_properties=self.connack_user_properties,
        )

    def _resume(self, new: MqttConnection, packet: Connect, expiry: float) -> None:
        """CONNECT with clean start 0 for this session: move it to ``new``'s socket, answer
        Session Present 1, resend what was not acknowledged (mqtt spec 3.6)."""
        session = self.session
        assert session is not None
        if self.transport is not DETACHED:
            self._send(Disconnect(Reason.SESSION_TAKEN_OVER))
            self._publish_will()
            self.transport.close(CloseCode.NORMAL, "Session taken over.")
        self.transport = new.transport
        self.physical_connection_id = new.physical_connection_id
        self.parser = new.parser
        self.codec = new.codec
        self._update_codec()  # the session's subscriptions, not the new socket's none
        self.keep_alive = rules.server_keep_alive(packet.protocol_level, packet.keep_alive) or (
            packet.keep_alive
        )
        self.last_packet = new.last_packet
        self.clean_exit = False
        will = packet.will
        self.will = (
            Publish(will.topic, will.payload, will.qos, properties=will.properties)
            if will is not None
            else None
        )
        session.expiry = expiry
        session.receive_maximum = packet.properties.receive_maximum or 65535
        session.detached_until = None
        self.will_due = None  # resumed within the Will Delay Interval: no will
        self._send(ConnAck(0, True, self._connack_properties(packet, None)))
        for frame in session.outgoing.values():
            if frame:
                self.transport.send(_with_dup(frame))
        self._release_waiting()

    # -- a session on another node of the cluster (mqtt spec 3.6; engine/handover.py) --------

    def move_token(self) -> str:
        """What the move request says of the waiting CONNECT: resume a session of its
        version (clean start 0), or end the other node's session for a new one."""
        packet = self.pending_move
        assert packet is not None
        return "new" if packet.clean_start else f"resume:{packet.protocol_level}"

    def finish_move(
        self,
        outcome: Snapshot | str | None,
        later: Iterable[c.Command] = (),
        now: float = 0.0,
    ) -> None:
        """The cluster answered the waiting CONNECT: ``outcome`` is the session another node
        handed over (resume it here, Session Present 1, with ``later``: the commands its
        snapshot lacks), None (no other node holds one: go on as a single node would), or
        why the CONNECT is refused ("unavailable": 0x88, anything else: 0x85)."""
        packet, self.pending_move = self.pending_move, None
        if packet is None:
            return
        if isinstance(outcome, str):
            unavailable = outcome == "unavailable"
            code = rules.SERVER_UNAVAILABLE if unavailable else rules.CLIENT_ID_NOT_VALID
            self._refuse(packet.protocol_level, code)
            return
        if outcome is None:
            self._accept_connect(packet, located=True)
        else:
            self._adopt(packet, outcome, later)
        if self.transport is DETACHED and not self.closed:
            # The client left while its CONNECT waited: keep the session as any other.
            if self.session is not None and self.session.expiry and self._registered():
                self._detach(now)
            else:
                self._end(None, "The connection was lost.")
            return
        self._handle_held()

    def _adopt(self, packet: Connect, snapshot: Snapshot, later: Iterable[c.Command]) -> None:
        """Resume the session another node let go of, on this socket (mqtt spec 3.6)."""
        try:
            session, session_id = rules.Session.from_json(snapshot.session or {})
        except ValueError as exc:
            log.error("the MQTT session of %s could not be read: %s", snapshot.connection_id, exc)
            self._accept_connect(packet, located=True)  # a new session rather than none
            return
        version = packet.protocol_level
        self.user_id = snapshot.user_id
        self.roles = set(snapshot.roles)
        self.state = snapshot.state
        self.event_id = snapshot.event_id
        session.expiry = rules.session_expiry(
            version, packet.clean_start, packet.properties.session_expiry_interval
        )
        session.receive_maximum = packet.properties.receive_maximum or 65535
        self.session = session
        self._update_codec()  # shared or not, by the session's subscriptions
        self.session_id = session_id or secrets.token_hex(16)
        self.keep_alive = rules.server_keep_alive(version, packet.keep_alive) or packet.keep_alive
        will = packet.will
        if will is not None:
            self.will = Publish(will.topic, will.payload, will.qos, properties=will.properties)
        self._send(ConnAck(0, True, self._connack_properties(packet, None)))
        for frame in session.outgoing.values():
            if frame:
                self.transport.send(_with_dup(frame))
        self._release_waiting()
        self.node.adopt_connection(self, snapshot.groups, later)

    def session_state(self) -> dict[str, Any] | None:
        session = self.session
        return None if session is None else session.to_json(self.session_id)

    def prepare_move(self, token: str, subprotocol: str) -> str:
        """A CONNECT with this client id reached another node (``move_token`` says how):
        to resume, let go of the socket (DISCONNECT 0x8E, the will) and move; for a new
        session, end this one here as a takeover does, and say so."""
        session = self.session
        if subprotocol != "mqtt":
            return OTHER_SUBPROTOCOL
        if self.closed or session is None or not self._registered():
            return GONE
        if token != f"resume:{session.version}":
            self.take_over()
            return "the session ended"
        if self.transport is not DETACHED:
            self._send(Disconnect(Reason.SESSION_TAKEN_OVER))
            self._publish_will()
            self.transport.close(CloseCode.NORMAL, "Session taken over.")
            self.transport = DETACHED
        self.will = None  # resumed within any Will Delay Interval: no will (5.0 3.1.3.2)
        self.will_due = None
        return ""

    def _detach(self, now: float) -> None:
        """Keep the session without a socket for its expiry (mqtt spec 3.6)."""
        session = self.session
        assert session is not None
        session.detached_until = now + session.expiry
        if self.clean_exit or self.will is None:
            self.will = None
            return
        delay = self.will.properties.will_delay_interval or 0
        if delay > 0:  # 5.0 Will Delay Interval: unless the session resumes first
            self.will_due = now + min(float(delay), session.expiry)
        else:
            self._publish_will()

    def tick(self, now: float) -> bool:
        """Once a second: end an expired offline session, or a silent client (keep alive).

        Returns True when this connection is over and need not be ticked again.
        """
        if self.closed:
            return True
        session = self.session
        if session is not None and session.detached_until is not None:
            if self.will_due is not None and now >= self.will_due:
                self.will_due = None
                self._publish_will()
            if now < session.detached_until:
                return False
            if self.will_due is not None:  # the session ends first: the will goes now
                self.will_due = None
                self._publish_will()
            self.clean_exit = True
            self._end(None, "The session expired.")
            return True
        return self.check_keep_alive(now)

    def check_keep_alive(self, now: float) -> bool:
        """Close a client silent for 1.5 x its keep alive (MQTT 5.0 3.1.2.10): 0x8D."""
        if self.closed or self.session is None or not self.keep_alive:
            return False
        if now - self.last_packet <= 1.5 * self.keep_alive:
            return False
        self.fail(Reason.KEEP_ALIVE_TIMEOUT, "Keep alive timeout.")
        return self.closed

    def take_over(self) -> None:
        """Another CONNECT with this client id arrived: 5.0 DISCONNECT 0x8E, then close."""
        if self.closed:
            return
        self._send(Disconnect(Reason.SESSION_TAKEN_OVER))
        self._server_disconnect(Reason.SESSION_TAKEN_OVER)
        self._publish_will()
        self.node.disconnect(self, "Session taken over.")
        self.transport.close(CloseCode.NORMAL, "Session taken over.")

    # -- PUBLISH (mqtt spec 3.5) ----------------------------------------------------------

    def _on_publish(self, packet: Publish) -> None:
        session = self.session
        assert session is not None
        version = self.version
        if packet.retain and version == V5:
            self.fail(Reason.RETAIN_NOT_SUPPORTED, "Retained messages are not supported.")
            return
        if packet.properties.topic_alias is not None:
            self.fail(Reason.TOPIC_ALIAS_INVALID, "Topic aliases are not supported.")
            return
        packet_id = packet.packet_id or 0
        if self.rate is not None:
            verdict = self.rate.take(self.last_packet)
            if verdict is Verdict.CUT:
                self.fail(Reason.MESSAGE_RATE_TOO_HIGH, "The client ignored throttling.")
                return
            if verdict is Verdict.THROTTLE:
                # Not executed: QoS 0 dropped; QoS 1/2 refused with 0x97 (3.1.1: dropped
                # after an ack, it has no failure code) so the client may resend later.
                refused = Reason.QUOTA_EXCEEDED if version == V5 else 0
                if packet.qos == 1:
                    self._send(PubAck(packet_id, refused))
                elif packet.qos == 2:
                    self._send(PubRec(packet_id, refused))
                return
        if packet.qos == 2 and packet_id in session.received_qos2:
            self._send(PubRec(packet_id))  # a resent QoS 2 PUBLISH: delivered once already
            return
        if packet.qos == 2 and len(session.received_qos2) >= rules.RECEIVE_MAXIMUM:
            self.fail(Reason.RECEIVE_MAXIMUM_EXCEEDED, "Too many QoS 2 messages unreleased.")
            return
        reason = rules.publish_reason(packet.topic, self.roles)
        content_type = packet.properties.content_type
        if (
            reason == rules.SUCCESS
            and content_type is not None
            and rules.topic_kind(packet.topic) == "event"
            and not rules.valid_content_type(content_type)
        ):
            # It would be the event's Content-Type header (mqtt spec 5.5 [I]).
            if packet.qos == 0:
                return  # dropped
            reason = rules.PAYLOAD_FORMAT_INVALID
        if reason == rules.SUCCESS and rules.topic_kind(packet.topic) == "event":
            # A user event (mqtt spec 5.5): acknowledged on receipt, answered on .../succeeded
            # or .../failed when the handler answers.
            accepted = self.on_event is not None and self.on_event(
                self, rules.event_name(packet.topic), packet
            )
            if not accepted:
                reason = Reason.QUOTA_EXCEEDED if self.on_event else Reason.UNSPECIFIED_ERROR
            if not reason:
                self._ack_publish(packet)
                return
        if reason:
            if packet.qos == 0:
                self.fail(Reason(reason), f"PUBLISH to '{packet.topic[:100]}' refused.")
                return
            ack_reason = reason if version == V5 else 0
            self._send(
                PubAck(packet_id, ack_reason) if packet.qos == 1 else PubRec(packet_id, ack_reason)
            )
            return
        if self.node.observer:  # metrics and Live Trace count it as a send to the group
            request = SendToGroup(packet.topic, packet.payload, DataType.BINARY, packet.packet_id)
            self.node.observer.request_received(self, request, len(packet.payload))
        self.publish(packet)
        self._ack_publish(packet)

    def _ack_publish(self, packet: Publish) -> None:
        session = self.session
        assert session is not None
        packet_id = packet.packet_id or 0
        if packet.qos == 1:
            self._send(PubAck(packet_id))
        elif packet.qos == 2:
            session.received_qos2.add(packet_id)
            self._send(PubRec(packet_id))

    def event_answer(
        self,
        event: str,
        request: Publish,
        status: int,
        content_type: str | None,
        body: bytes,
        user_properties: rules.UserProperties,
    ) -> None:
        """The handler's answer to a user event, as a PUBLISH to this client (mqtt spec 5.5):
        on ``.../succeeded`` or ``.../failed``, the request's QoS and Correlation Data."""
        session = self.session
        if self.closed or session is None:
            return
        props = NO_PROPERTIES
        if session.version == V5:
            props = Properties(
                content_type=content_type or None,
                correlation_data=request.properties.correlation_data,
                user_properties=(("azure-status-code", str(status)), *user_properties),
            )
        topic = rules.event_answer_topic(event, status)
        qos = request.qos
        packet_id = session.take_packet_id() if qos else None
        if qos and packet_id is None:
            return  # too many unacknowledged; the answer is dropped
        frame = binary_frame(
            encode(Publish(topic, body, qos, False, False, packet_id, props), session.version)
        )
        if packet_id is not None:
            session.outgoing[packet_id] = frame
        self.transport.send(frame)

    def publish(self, packet: Publish) -> None:
        """A PUBLISH to a group topic: send it to the group (every protocol, every node)."""
        props = packet.properties
        data_type = rules.data_type_of(props.content_type, packet.payload)
        expires = None
        if props.message_expiry_interval is not None:
            expires = time.time() + props.message_expiry_interval
        extras = MqttExtras(
            props.user_properties,
            props.correlation_data,
            props.response_topic,
            props.payload_format_indicator,
            self.connection_id,
            props.content_type,
        )
        message = Message(
            packet.payload,
            data_type,
            Source.GROUP,
            packet.topic,
            self.user_id,
            None,
            expires,
            qos=packet.qos,
            mqtt=extras,
        )
        self.node.execute(self.hub, c.Send(c.ToGroup(packet.topic), message))

    # -- SUBSCRIBE / UNSUBSCRIBE (mqtt spec 3.4) ---------------------------------------------

    def _on_subscribe(self, packet: Subscribe) -> None:
        session = self.session
        assert session is not None
        codes = []
        sub_id = (packet.properties.subscription_identifiers or (None,))[0]
        for sub in packet.subscriptions:
            code = rules.subscribe_reason(sub.topic_filter, sub.qos, self.roles)
            limit = self.node.max_groups_per_connection
            if code < 0x80 and sub.topic_filter not in self.groups and len(self.groups) >= limit:
                code = rules.QUOTA_EXCEEDED  # the service's groups-per-connection limit [I]
            if code < 0x80 and not rules.is_server_topic(sub.topic_filter):
                if self.node.observer:
                    joined = JoinGroup(sub.topic_filter, packet.packet_id)
                    self.node.observer.request_received(self, joined, len(sub.topic_filter))
                self._join(sub.topic_filter)
                session.subscriptions[sub.topic_filter] = (sub.qos, sub.no_local, sub_id)
            codes.append(code if self.version == V5 else rules.v311_suback(code))
        self._update_codec()
        self._send(SubAck(packet.packet_id, tuple(codes)))

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        session = self.session
        assert session is not None
        codes = []
        for topic_filter in packet.topic_filters:
            if topic_filter in self.groups:
                session.subscriptions.pop(topic_filter, None)
                self._leave(topic_filter)
                codes.append(0)
            else:
                codes.append(Reason.NO_SUBSCRIPTION_EXISTED)
        self._update_codec()
        self._send(UnsubAck(packet.packet_id, tuple(codes)))

    def _update_codec(self) -> None:
        """Shared when every subscription takes group messages as is (SharedMqttCodec)."""
        session = self.session
        if session is None:
            return  # not connected: set at CONNECT
        plain = all(sub == PLAIN_SUBSCRIPTION for sub in session.subscriptions.values())
        self.codec = (SHARED_MQTT_CODECS if plain else MQTT_CODECS)[session.version]

    def _join(self, group: str) -> None:
        hub = self.node.hubs[self.hub]
        hub.join(self, group)
        if self.node.engine is not None:
            self.node.engine.record_soon(
                self.hub, c.AddToGroup(c.ToConnection(self.connection_id), group)
            )

    def _leave(self, group: str) -> None:
        self.node.hubs[self.hub].leave(self, group)
        if self.node.engine is not None:
            self.node.engine.record_soon(
                self.hub, c.RemoveFromGroup(c.ToConnection(self.connection_id), group)
            )

    # -- messages out (mqtt spec 4.3-4.5) ---------------------------------------------------

    def deliver_message(self, message: Message) -> bool:
        """Queue ``message`` as a PUBLISH: encoded once per (version, QoS, subscription id)
        per message (its topic is the message's own), the frame shared at QoS 0.

        Hub.deliver calls this for the MQTT recipients it has no frame for: the first
        shared connection of a version (SharedMqttCodec), which caches the frame for the
        others, and every connection whose subscription needs bytes of its own."""
        session = self.session
        if session is None or self.closed:
            return True
        group = message.group
        sub_id = None
        to_group = group is not None and message.source is _GROUP
        if to_group:
            assert group is not None
            topic = group
            subscription = session.subscriptions.get(topic)
            if subscription is None:
                qos = 0  # joined without SUBSCRIBE (token, REST): default options (4.3)
            else:
                granted, no_local, sub_id = subscription
                if no_local:
                    extras = message.mqtt
                    if extras is not None and extras.origin == self.connection_id:
                        return True  # No Local: not back to the publisher (mqtt spec 3.4)
                sent = message.qos
                if sent is None:
                    sent = 1  # REST and Web PubSub clients: QoS 1 at most (mqtt spec 4.3)
                qos = granted if granted < sent else sent  # rules.delivered_qos, inlined
        else:
            topic, qos = rules.SERVER_MESSAGES, 1
        frames = message.frames
        version = session.version
        key = _QOS0[version] if qos == 0 and sub_id is None else (version, qos, sub_id)
        if qos == 0:
            # The whole frame, shared: every QoS 0 subscriber of this version is sent the
            # same bytes object, as a simple WebSocket client is (no copy per subscriber).
            frame = frames.get(key)
            if frame is None:
                head, tail = _publish_frame_parts(message, topic, 0, version, sub_id)
                frame = frames[key] = head + tail
            codec = self.codec
            if to_group and message.expires is None and codec is SHARED_MQTT_CODECS[version]:
                # The next shared connections of this version get it in Hub.deliver's loop
                # (a TTL message takes its other path, Connection.deliver: not for MQTT).
                frames[codec] = frame
            self.transport.send(frame)
            return True
        cached = frames.get(key)
        if cached is None:
            head, tail = _publish_frame_parts(message, topic, qos, version, sub_id)
            frames[key] = head
            frames[(*key, "tail")] = tail
        else:
            head, tail = cached, frames[(*key, "tail")]
        if session.buffer_full():
            return False  # too many unacknowledged: a consumer this slow must go
        if session.window_full():
            session.waiting.append((head, tail))  # the client's Receive Maximum (5.0 4.9)
            return True
        self._send_numbered(head, tail)
        return True

    def _send_numbered(self, head: bytes, tail: bytes) -> None:
        session = self.session
        assert session is not None
        packet_id = session.take_packet_id()
        assert packet_id is not None
        frame = head + struct.pack("!H", packet_id) + tail
        session.outgoing[packet_id] = frame  # kept until acknowledged, resent on resume
        self.transport.send(frame)

    def _release_waiting(self) -> None:
        """An ack freed room in the client's window: send what waits, in order."""
        session = self.session
        assert session is not None
        while session.waiting and len(session.outgoing) < session.receive_maximum:
            head, tail = session.waiting.popleft()
            self._send_numbered(head, tail)

    # -- endings (mqtt spec 6) ----------------------------------------------------------------

    def fail(self, reason: int, message: str) -> None:
        """A protocol error: 5.0 DISCONNECT with ``reason``, then close; the will is sent."""
        log.info("closing MQTT client %s: %s", self.connection_id, message)
        if self.session is not None:
            self._send(Disconnect(reason))
            self._server_disconnect(reason)
        self._end(CloseCode.PROTOCOL_ERROR if reason in (0x81, 0x82) else CloseCode.NORMAL, message)

    def _server_disconnect(self, reason: int) -> None:
        """Record a DISCONNECT the service sent, for the ``disconnected`` event (5.4)."""
        packet = {"code": reason, "userProperties": None} if self.version == V5 else None
        self.disconnect_event = {"initiatedByClient": False, "disconnectPacket": packet}

    def close(self, code: int, reason: str) -> None:
        """The node closes this client (mqtt spec 6.1): 5.0 DISCONNECT 0x98 for a REST close,
        0x8B at shutdown, 0x97 for a consumer too slow for its buffer; then close."""
        if self.closed:
            return
        if code == CloseCode.GOING_AWAY:
            why = Reason.SERVER_SHUTTING_DOWN
        elif code == CloseCode.POLICY_VIOLATION:
            why = Reason.QUOTA_EXCEEDED
        else:
            why = Reason.ADMINISTRATIVE_ACTION
        if self.session is not None:
            self._server_disconnect(why)
            if self.version == V5:
                props = Properties(reason_string=reason[:200]) if reason else NO_PROPERTIES
                self._send(Disconnect(why, props))
            self.will_due = None
            self._publish_will()  # the client did not say goodbye (mqtt spec 6.1 [I])
        self.closed = True
        self.transport.close(code, reason)

    def socket_lost(self, transport: Transport, now: float) -> bool:
        """The WebSocket ``transport`` ended: publish the will; keep a persistent session for
        its expiry, end any other. Returns True when the connection is over."""
        if transport is not self.transport:
            return self.closed  # the session moved to another socket (resume, detach)
        if self.pending_move is not None:
            self.transport = DETACHED  # the cluster's answer decides (finish_move)
            return False
        session = self.session
        if self.closed or session is None or not session.expiry:
            self._end(None, "The connection was lost.")
            return True
        self._detach(now)
        self.transport = DETACHED
        return False

    def _end(self, code: int | None, reason: str) -> None:
        """End the session: will (unless a clean exit), leave the hub, close the socket."""
        if not self.clean_exit:
            self._publish_will()
        if self._registered():
            self.node.disconnect(self, reason)
        if code is not None:
            self._close(code, reason)
        self.closed = True

    def _registered(self) -> bool:
        """Whether the node knows this connection (not before CONNECT, not after a takeover)."""
        return (
            self.session is not None
            and self.node.find_connection(self.hub, self.connection_id) is self
        )

    def _publish_will(self) -> None:
        will, self.will = self.will, None
        if will is None or self.session is None:
            return
        # Will: needs sendToGroup rights on its topic, checked now (mqtt spec 2.3 [I]).
        allowed = rules.publish_reason(will.topic, self.roles) == rules.SUCCESS
        if allowed and rules.topic_kind(will.topic) == "group":
            self.publish(will)

    def _send(self, packet: Packet, version: int | None = None) -> None:
        self.transport.send(binary_frame(encode(packet, version or self.version)))

    def _close(self, code: int, reason: str) -> None:
        self.closed = True
        self.transport.close(code, reason)


# The transport of a session without a socket: what is sent is dropped (QoS 1/2 messages
# wait in the session's in-flight table and are sent on resume).
DETACHED: Transport = NullTransport()


def _with_dup(frame: bytes) -> bytes:
    """A saved frame to resend: a PUBLISH gets DUP=1 (MQTT 5.0 4.4); a PUBREL stays as is."""
    second = frame[1] & 0x7F
    offset = 2 if second < 126 else 4 if second == 126 else 10
    first = frame[offset]
    if first >> 4 != 3:
        return frame
    return frame[:offset] + bytes((first | 0x08,)) + frame[offset + 1 :]


def _publish_frame_parts(
    message: Message, topic: str, qos: int, version: int, sub_id: int | None = None
) -> tuple[bytes, bytes]:
    """A WebSocket frame holding the PUBLISH, split where the packet id goes (QoS 1/2).

    5.0: Content Type from the data type, the remaining expiry, the subscription's
    identifier, and what an MQTT publisher set for MQTT receivers (mqtt spec 4.2, 4.6).
    """
    props = NO_PROPERTIES
    if version == V5:
        extras = message.mqtt
        if extras is not None:  # from an MQTT client: its own Content Type, or none
            content_type = extras.content_type
        else:
            content_type = rules.CONTENT_TYPES.get(message.data_type)
            extras = MqttExtras()
        expiry = None
        if message.expires is not None:
            expiry = max(0, int(message.expires - time.time()))
        props = Properties(
            content_type=content_type,
            message_expiry_interval=expiry,
            user_properties=extras.user_properties,
            correlation_data=extras.correlation_data,
            response_topic=extras.response_topic,
            payload_format_indicator=extras.payload_format_indicator,
            subscription_identifiers=(sub_id,) if sub_id is not None else (),
        )
    head, tail = publish_parts(Publish(topic, message.data, qos, properties=props), version)
    size = len(head) + len(tail) + (2 if qos else 0)
    return header(OP_BINARY, size) + head, tail
