"""MQTT control packets as frozen values, with ``encode`` and ``decode`` (MQTT 3.1.1 / 5.0 ch. 3).

One dataclass per packet type, named as in the standard. ``version`` is the protocol level:
4 for MQTT 3.1.1, 5 for MQTT 5.0; 3.1.1 encodings drop reason codes and properties where
that version has none. AUTH (enhanced authentication) is not supported by the service and
decodes to a protocol error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .wire import (
    NO_PROPERTIES,
    MqttError,
    Properties,
    Reader,
    Reason,
    encode_bin,
    encode_properties,
    encode_str,
    encode_varint,
    malformed,
    read_properties,
)

V311 = 4
V5 = 5

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    protocol_level: int = V5
    clean_start: bool = True
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = NO_PROPERTIES
    protocol_name: str = "MQTT"


@dataclass(frozen=True, slots=True)
class ConnAck:
    reason_code: int = 0
    session_present: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRec:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRel:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubComp:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Subscription:
    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubAck:
    packet_id: int
    reason_codes: tuple[int, ...] = ()  # 5.0 only; 3.1.1 UNSUBACK carries none
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PingReq:
    pass


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
)
Ack = PubAck | PubRec | PubRel | PubComp
_ACK_TYPES: dict[type, int] = {PubAck: PUBACK, PubRec: PUBREC, PubRel: PUBREL, PubComp: PUBCOMP}
_ACK_CLASSES: dict[int, type[PubAck] | type[PubRec] | type[PubRel] | type[PubComp]] = {
    PUBACK: PubAck,
    PUBREC: PubRec,
    PUBREL: PubRel,
    PUBCOMP: PubComp,
}


# -- encoding ------------------------------------------------------------------------------------


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def _props(version: int, props: Properties) -> bytes:
    return encode_properties(props) if version == V5 else b""


def encode(packet: Packet, version: int) -> bytes:
    """The bytes of ``packet`` for a connection speaking protocol level ``version``."""
    if isinstance(packet, Publish):
        head, tail = publish_parts(packet, version)
        if packet.qos:
            if packet.packet_id is None:
                raise ValueError("QoS 1/2 PUBLISH needs a packet id")
            return head + struct.pack("!H", packet.packet_id) + tail
        return head + tail
    if isinstance(packet, PubAck | PubRec | PubRel | PubComp):
        first = _ACK_TYPES[type(packet)] << 4 | (0x02 if isinstance(packet, PubRel) else 0)
        body = struct.pack("!H", packet.packet_id)
        if version == V5 and (packet.reason_code or packet.properties is not NO_PROPERTIES):
            body += bytes((packet.reason_code,))
            if packet.properties is not NO_PROPERTIES:
                body += encode_properties(packet.properties)
        return _frame(first, body)
    if isinstance(packet, Connect):
        return _frame(CONNECT << 4, _connect_body(packet))
    if isinstance(packet, ConnAck):
        body = bytes((int(packet.session_present), packet.reason_code))
        return _frame(CONNACK << 4, body + _props(version, packet.properties))
    if isinstance(packet, Subscribe):
        body = struct.pack("!H", packet.packet_id) + _props(version, packet.properties)
        for sub in packet.subscriptions:
            options = sub.qos
            if version == V5:
                options |= sub.no_local << 2 | sub.retain_as_published << 3
                options |= sub.retain_handling << 4
            body += encode_str(sub.topic_filter) + bytes((options,))
        return _frame(SUBSCRIBE << 4 | 0x02, body)
    if isinstance(packet, SubAck):
        body = struct.pack("!H", packet.packet_id) + _props(version, packet.properties)
        return _frame(SUBACK << 4, body + bytes(packet.reason_codes))
    if isinstance(packet, Unsubscribe):
        body = struct.pack("!H", packet.packet_id) + _props(version, packet.properties)
        body += b"".join(encode_str(t) for t in packet.topic_filters)
        return _frame(UNSUBSCRIBE << 4 | 0x02, body)
    if isinstance(packet, UnsubAck):
        body = struct.pack("!H", packet.packet_id)
        if version == V5:
            body += encode_properties(packet.properties) + bytes(packet.reason_codes)
        return _frame(UNSUBACK << 4, body)
    if isinstance(packet, PingReq):
        return bytes((PINGREQ << 4, 0))
    if isinstance(packet, PingResp):
        return bytes((PINGRESP << 4, 0))
    if isinstance(packet, Disconnect):
        if version != V5 or (not packet.reason_code and packet.properties is NO_PROPERTIES):
            return bytes((DISCONNECT << 4, 0))
        body = bytes((packet.reason_code,))
        if packet.properties is not NO_PROPERTIES:
            body += encode_properties(packet.properties)
        return _frame(DISCONNECT << 4, body)
    raise TypeError(f"not an MQTT packet: {packet!r}")


def publish_parts(packet: Publish, version: int) -> tuple[bytes, bytes]:
    """A PUBLISH split around its packet id: ``head + pack('!H', id) + tail``.

    The fan-out encodes a message once per (version, QoS) and splices each subscriber's
    packet id in between; for QoS 0 there is no id and ``head + tail`` is the packet.
    """
    first = PUBLISH << 4 | packet.dup << 3 | packet.qos << 1 | int(packet.retain)
    topic = encode_str(packet.topic)
    tail = _props(version, packet.properties) + packet.payload
    length = len(topic) + len(tail) + (2 if packet.qos else 0)
    return bytes((first,)) + encode_varint(length) + topic, tail


def _connect_body(packet: Connect) -> bytes:
    version = packet.protocol_level
    flags = int(packet.clean_start) << 1
    if packet.will is not None:
        flags |= 0x04 | packet.will.qos << 3 | int(packet.will.retain) << 5
    if packet.password is not None:
        flags |= 0x40
    if packet.username is not None:
        flags |= 0x80
    body = encode_str(packet.protocol_name) + bytes((version, flags))
    body += struct.pack("!H", packet.keep_alive) + _props(version, packet.properties)
    body += encode_str(packet.client_id)
    if packet.will is not None:
        body += _props(version, packet.will.properties)
        body += encode_str(packet.will.topic) + encode_bin(packet.will.payload)
    if packet.username is not None:
        body += encode_str(packet.username)
    if packet.password is not None:
        body += encode_bin(packet.password)
    return body


# -- decoding ------------------------------------------------------------------------------------

# Fixed-header flags each type must carry (MQTT 5.0 2.1.3); PUBLISH's are checked apart.
_FLAGS = {PUBREL: 0x02, SUBSCRIBE: 0x02, UNSUBSCRIBE: 0x02}


def decode(first: int, body: bytes, version: int) -> Packet:
    """One packet from its first byte and body; ``version`` is ignored for CONNECT.

    Raises:
        MqttError: malformed or unsupported, with the reason code to answer with.
    """
    kind, flags = first >> 4, first & 0x0F
    if kind == PUBLISH:
        return _decode_publish(flags, Reader(body), version)
    if flags != _FLAGS.get(kind, 0):
        raise malformed(f"invalid fixed header flags for packet type {kind}")
    r = Reader(body)
    packet: Packet
    if kind == CONNECT:
        return _decode_connect(r)
    if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        packet_id = r.u16()
        reason, props = 0, NO_PROPERTIES
        if version == V5 and r.remaining():
            reason = r.byte()
            if r.remaining():
                props = read_properties(r)
        packet = _ACK_CLASSES[kind](packet_id, reason, props)
    elif kind == CONNACK:
        session_present, reason = r.byte(), r.byte()
        if session_present & 0xFE:
            raise malformed("CONNACK reserved flags set")
        props = read_properties(r) if version == V5 else NO_PROPERTIES
        packet = ConnAck(reason, bool(session_present), props)
    elif kind == SUBSCRIBE:
        packet = _decode_subscribe(r, version)
    elif kind == SUBACK:
        packet_id = r.u16()
        props = read_properties(r) if version == V5 else NO_PROPERTIES
        packet = SubAck(packet_id, tuple(r.take(r.remaining())), props)
    elif kind == UNSUBSCRIBE:
        packet_id = r.u16()
        props = read_properties(r) if version == V5 else NO_PROPERTIES
        filters = []
        while r.remaining():
            filters.append(r.str())
        if not filters:
            raise MqttError(Reason.PROTOCOL_ERROR, "UNSUBSCRIBE without topic filters")
        packet = Unsubscribe(packet_id, tuple(filters), props)
    elif kind == UNSUBACK:
        packet_id = r.u16()
        if version == V5:
            props = read_properties(r)
            packet = UnsubAck(packet_id, tuple(r.take(r.remaining())), props)
        else:
            packet = UnsubAck(packet_id)
    elif kind == PINGREQ:
        packet = PingReq()
    elif kind == PINGRESP:
        packet = PingResp()
    elif kind == DISCONNECT:
        reason, props = 0, NO_PROPERTIES
        if version == V5 and r.remaining():
            reason = r.byte()
            if r.remaining():
                props = read_properties(r)
        packet = Disconnect(reason, props)
    elif kind == AUTH:
        raise MqttError(Reason.PROTOCOL_ERROR, "enhanced authentication (AUTH) is not supported")
    else:
        raise malformed(f"reserved packet type {kind}")
    if r.remaining():
        raise malformed("bytes left over after the packet")
    return packet


def _decode_publish(flags: int, r: Reader, version: int) -> Publish:
    qos = flags >> 1 & 0x03
    if qos == 3:
        raise malformed("PUBLISH with QoS 3")
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise malformed("PUBLISH with DUP set at QoS 0")
    topic = r.str()
    packet_id = None
    if qos:
        packet_id = r.u16()
        if packet_id == 0:
            raise malformed("packet id 0")
    props = read_properties(r) if version == V5 else NO_PROPERTIES
    payload = r.take(r.remaining())
    return Publish(topic, payload, qos, bool(flags & 0x01), dup, packet_id, props)


def _decode_subscribe(r: Reader, version: int) -> Subscribe:
    packet_id = r.u16()
    if packet_id == 0:
        raise malformed("packet id 0")
    props = read_properties(r) if version == V5 else NO_PROPERTIES
    subs = []
    while r.remaining():
        topic_filter = r.str()
        options = r.byte()
        qos = options & 0x03
        if qos == 3 or options & (0xC0 if version == V5 else 0xFC):
            raise malformed("invalid subscription options")
        retain_handling = options >> 4 & 0x03
        if retain_handling == 3:
            raise malformed("invalid retain handling")
        subs.append(
            Subscription(
                topic_filter, qos, bool(options & 0x04), bool(options & 0x08), retain_handling
            )
        )
    if not subs:
        raise MqttError(Reason.PROTOCOL_ERROR, "SUBSCRIBE without topic filters")
    return Subscribe(packet_id, tuple(subs), props)


def _decode_connect(r: Reader) -> Connect:
    name = r.str()
    level = r.byte()
    if name not in ("MQTT", "MQIsdp"):
        raise MqttError(Reason.UNSUPPORTED_PROTOCOL_VERSION, f"protocol name {name!r}")
    if name != "MQTT" or level not in (V311, V5):
        raise MqttError(Reason.UNSUPPORTED_PROTOCOL_VERSION, f"protocol level {level}")
    flags = r.byte()
    if flags & 0x01:
        raise malformed("CONNECT reserved flag set")
    will_flag, will_qos, will_retain = flags & 0x04, flags >> 3 & 0x03, bool(flags & 0x20)
    if will_qos == 3 or (not will_flag and (will_qos or will_retain)):
        raise malformed("invalid will flags")
    if level == V311 and flags & 0x40 and not flags & 0x80:
        raise malformed("password without user name")
    keep_alive = r.u16()
    props = read_properties(r) if level == V5 else NO_PROPERTIES
    client_id = r.str()
    will = None
    if will_flag:
        will_props = read_properties(r) if level == V5 else NO_PROPERTIES
        will = Will(r.str(), r.bin(), will_qos, will_retain, will_props)
    username = r.str() if flags & 0x80 else None
    password = r.bin() if flags & 0x40 else None
    if r.remaining():
        raise malformed("bytes left over after CONNECT")
    return Connect(
        client_id, level, bool(flags & 0x02), keep_alive, username, password, will, props, name
    )
