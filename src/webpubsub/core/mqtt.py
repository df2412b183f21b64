"""Rules for MQTT clients (mqtt spec 2-4), pure: names, permissions, data types, QoS.

Reason codes are plain ints (MQTT 5.0 section 2.4) so the core needs no packet types; the
codec in ``webpubsub.protocols.mqtt`` turns decisions into packets. Each function returns
the 5.0 code; ``v311_code`` maps it for 3.1.1 clients where that version has one.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
from collections import deque
from dataclasses import dataclass, field

from .errors import BadRequest
from .message import DataType, check_json
from .names import group_name_problem
from .roles import Permission, is_allowed

SERVER_MESSAGES = "$webpubsub/server/messages"
EVENTS_PREFIX = "$webpubsub/server/events/"
CLIENT_ID = re.compile(r"[0-9A-Za-z]{1,128}")
MAX_KEEP_ALIVE = 180  # seconds, mqtt spec 3.2
MAX_WILL_PAYLOAD = 2000
MAX_WILL_TOPIC = 1024

SUCCESS = 0x00
UNSPECIFIED_ERROR = 0x80
CLIENT_ID_NOT_VALID = 0x85
NOT_AUTHORIZED = 0x87
TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90
QUOTA_EXCEEDED = 0x97
RETAIN_NOT_SUPPORTED = 0x9A
SHARED_NOT_SUPPORTED = 0x9E
WILDCARD_NOT_SUPPORTED = 0xA2
IMPLEMENTATION_SPECIFIC = 0x83
BAD_AUTHENTICATION_METHOD = 0x8C
# A 3.1.1 keep alive out of range has no 5.0 twin: 0x88 Server unavailable, which is
# 3.1.1's 0x03 (mqtt spec 3.2 [I]).
V311_UNAVAILABLE_AS_5 = 0x88

# 3.1.1 CONNACK return codes (MQTT 3.1.1 3.2.2.3)
V311_REFUSED_VERSION = 0x01
V311_REFUSED_IDENTIFIER = 0x02
V311_REFUSED_UNAVAILABLE = 0x03
V311_REFUSED_NOT_AUTHORIZED = 0x05


def v311_connack(code: int) -> int:
    """A 5.0 CONNACK reason as a 3.1.1 return code."""
    if code == SUCCESS:
        return 0
    if code == 0x84:
        return V311_REFUSED_VERSION
    if code == CLIENT_ID_NOT_VALID:
        return V311_REFUSED_IDENTIFIER
    if code in (NOT_AUTHORIZED, 0x86, 0x8A):
        return V311_REFUSED_NOT_AUTHORIZED if code != 0x86 else 0x04
    return V311_REFUSED_UNAVAILABLE


def v311_suback(code: int) -> int:
    """3.1.1 SUBACK codes are the granted QoS or 0x80 Failure."""
    return code if code < 0x80 else 0x80


# -- CONNECT (mqtt spec 3.2) ----------------------------------------------------------------


def new_client_id() -> str:
    """An assigned client id (5.0, empty id in CONNECT) that passes the client id rule."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


@dataclass(frozen=True, slots=True)
class WillSpec:
    topic: str
    payload: bytes
    qos: int
    retain: bool


def connect_problem(
    version: int, client_id: str, keep_alive: int, will: WillSpec | None, auth_method: bool
) -> int:
    """The 5.0 CONNACK reason that refuses a CONNECT, or SUCCESS (mqtt spec 3.2)."""
    if client_id and not CLIENT_ID.fullmatch(client_id):
        return CLIENT_ID_NOT_VALID
    if not client_id and version != 5:
        return CLIENT_ID_NOT_VALID
    if version == 4 and not 1 <= keep_alive <= MAX_KEEP_ALIVE:
        return V311_UNAVAILABLE_AS_5
    if auth_method:
        return BAD_AUTHENTICATION_METHOD
    if will is not None:
        if not will.topic.strip() or len(will.topic) > MAX_WILL_TOPIC:
            return TOPIC_NAME_INVALID
        if topic_kind(will.topic) != "group":
            return TOPIC_NAME_INVALID
        if len(will.payload) > MAX_WILL_PAYLOAD:
            return QUOTA_EXCEEDED
        if will.retain and version == 5:
            return RETAIN_NOT_SUPPORTED
    return SUCCESS


def server_keep_alive(version: int, keep_alive: int) -> int | None:
    """5.0: the Server Keep Alive to announce when the client's is 0 or over 180 (mqtt 3.2)."""
    if version == 5 and not 1 <= keep_alive <= MAX_KEEP_ALIVE:
        return MAX_KEEP_ALIVE
    return None


# -- topics and filters (mqtt spec 3.4, 3.5) ------------------------------------------------


def topic_kind(topic: str) -> str:
    """``group``, ``event`` (a user event), ``server`` (a reserved topic) or ``invalid``."""
    if topic.startswith("$webpubsub/"):
        if topic.startswith(EVENTS_PREFIX):
            name = topic[len(EVENTS_PREFIX) :]
            if name and "/" not in name:
                return "event"
        return "invalid"
    if "+" in topic or "#" in topic or group_name_problem(topic):
        return "invalid"
    return "group"


def event_name(topic: str) -> str:
    return topic[len(EVENTS_PREFIX) :]


def is_server_topic(topic_filter: str) -> bool:
    """Topics delivered without SUBSCRIBE; subscribing to them is granted as a no-op."""
    if topic_filter == SERVER_MESSAGES:
        return True
    if topic_filter.startswith(EVENTS_PREFIX):
        rest = topic_filter[len(EVENTS_PREFIX) :]
        name, _, outcome = rest.partition("/")
        return bool(name) and outcome in ("succeeded", "failed")
    return False


def subscribe_reason(topic_filter: str, qos: int, roles: set[str]) -> int:
    """The SUBACK reason for one filter: the granted QoS, or why it fails (mqtt spec 3.4)."""
    if topic_filter.startswith("$share/"):
        return SHARED_NOT_SUPPORTED
    if "+" in topic_filter or "#" in topic_filter:
        return WILDCARD_NOT_SUPPORTED
    if is_server_topic(topic_filter):
        return qos
    if topic_filter.startswith("$webpubsub/") or group_name_problem(topic_filter):
        return TOPIC_FILTER_INVALID
    if not is_allowed(roles, Permission.JOIN_LEAVE_GROUP, topic_filter):
        return NOT_AUTHORIZED
    return qos


def publish_reason(topic: str, roles: set[str]) -> int:
    """SUCCESS, or the PUBACK/PUBREC (or QoS 0 DISCONNECT) reason refusing a PUBLISH."""
    kind = topic_kind(topic)
    if kind == "invalid":
        return TOPIC_NAME_INVALID
    if kind == "event":
        return SUCCESS  # no role needed to send events (mqtt spec 2.3)
    if not is_allowed(roles, Permission.SEND_TO_GROUP, topic):
        return NOT_AUTHORIZED
    return SUCCESS


# -- content type <-> data type (mqtt spec 4.2) ----------------------------------------------

_DATA_TYPES = {
    "application/json": DataType.JSON,
    "text/plain": DataType.TEXT,
    "application/x-protobuf": DataType.PROTOBUF,
    "application/octet-stream": DataType.BINARY,
}
CONTENT_TYPES = {data_type: media for media, data_type in _DATA_TYPES.items()}


def data_type_of(content_type: str | None, payload: bytes) -> DataType:
    """The data type of an MQTT payload; text/json that is not valid UTF-8 (or JSON) is binary."""
    if not content_type:
        return DataType.BINARY
    data_type = _DATA_TYPES.get(content_type.split(";", 1)[0].strip().lower(), DataType.BINARY)
    if data_type in (DataType.TEXT, DataType.JSON):
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return DataType.BINARY
        if data_type is DataType.JSON:
            try:
                check_json(text.encode("utf-8"))
            except BadRequest:
                return DataType.BINARY
    return data_type


def delivered_qos(sent_qos: int, granted_qos: int) -> int:
    """MQTT to MQTT: the lower of the publish QoS and the subscription's (mqtt spec 4.3)."""
    return min(sent_qos, granted_qos)


# -- session state (mqtt spec 3.6) ---------------------------------------------------------


MAX_SESSION_EXPIRY = 30.0  # seconds a session outlives its socket at most (mqtt spec 3.6)
MAX_IN_FLIGHT = 1000  # unacknowledged QoS 1/2 messages per session, as the reliable buffer
# The service's own Receive Maximum (5.0 CONNACK): QoS 2 PUBLISHes a client may have
# unreleased (no PUBREL yet) at once; QoS 1 is acknowledged at once. One more: 0x93.
RECEIVE_MAXIMUM = 1000
RECEIVE_MAXIMUM_EXCEEDED = 0x93
PAYLOAD_FORMAT_INVALID = 0x99
_MIME_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MIME_PARAMETER = rf"[ \t]*;[ \t]*{_MIME_TOKEN}=(?:{_MIME_TOKEN}|\"[^\"\\\x00-\x1f\x7f]*\")"
_MEDIA_TYPE = re.compile(rf"{_MIME_TOKEN}/{_MIME_TOKEN}(?:{_MIME_PARAMETER})*")


def valid_content_type(value: str) -> bool:
    """A 5.0 Content Type that is a MIME type (RFC 9110 8.3.1), so it can be the event's
    ``Content-Type`` header (mqtt spec 5.5: otherwise PUBACK 0x99)."""
    return len(value) <= 1024 and _MEDIA_TYPE.fullmatch(value) is not None


def session_expiry(version: int, clean_start: bool, requested: int | None) -> float:
    """How long a session outlives its socket (mqtt spec 3.6): 3.1.1 clean session 0 keeps
    it 30 s; 5.0 keeps it min(Session Expiry Interval, 30 s)."""
    if version != 5:
        return 0.0 if clean_start else MAX_SESSION_EXPIRY
    return min(float(requested or 0), MAX_SESSION_EXPIRY)


@dataclass
class Session:
    """What an MQTT session keeps: subscription options and packet-id bookkeeping."""

    version: int
    # group -> (granted QoS, no local, subscription identifier or None)
    subscriptions: dict[str, tuple[int, bool, int | None]] = field(default_factory=dict)
    # QoS 2 ids received from the client and not yet released (PUBREL)
    received_qos2: set[int] = field(default_factory=set)
    # packets we sent and wait for an ack of, in order: packet id -> the frame (a PUBLISH,
    # or the PUBREL that follows a PUBREC), resent when the session resumes
    outgoing: dict[int, bytes] = field(default_factory=dict)
    next_id: int = 1
    max_outgoing: int = MAX_IN_FLIGHT
    # The client's Receive Maximum (5.0): QoS 1/2 messages in flight at once; the rest wait
    # (head, tail) here, in order, within max_outgoing in all (MQTT 5.0 4.9).
    receive_maximum: int = 65535
    waiting: deque[tuple[bytes, bytes]] = field(default_factory=deque)
    expiry: float = 0.0  # seconds the session outlives its socket
    detached_until: float | None = None  # set while no socket carries the session

    def take_packet_id(self) -> int | None:
        """A free packet id for an outgoing QoS 1/2 PUBLISH; None when too many are in flight."""
        if len(self.outgoing) >= self.max_outgoing:
            return None
        while self.next_id in self.outgoing:
            self.next_id = self.next_id % 65535 + 1
        packet_id = self.next_id
        self.next_id = self.next_id % 65535 + 1
        self.outgoing[packet_id] = b""
        return packet_id

    def window_full(self) -> bool:
        """Whether the client's Receive Maximum is reached (a QoS 1/2 message must wait)."""
        return len(self.outgoing) >= self.receive_maximum or bool(self.waiting)

    def buffer_full(self) -> bool:
        return len(self.outgoing) + len(self.waiting) >= self.max_outgoing

    def granted(self, group: str) -> int:
        """The QoS of the subscription to ``group``; 0 for memberships made by token/REST."""
        found = self.subscriptions.get(group)
        return found[0] if found is not None else 0

    def to_json(self, session_id: str | None) -> dict[str, object]:
        """What moves with the session to another node (``core/handover.py``): everything
        but the socket's own settings (Receive Maximum, expiry: the new CONNECT sets them)."""

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode("ascii")

        return {
            "v": self.version,
            "id": session_id,
            "subs": [[g, q, nl, sid] for g, (q, nl, sid) in self.subscriptions.items()],
            "qos2": sorted(self.received_qos2),
            "out": [[pid, b64(frame)] for pid, frame in self.outgoing.items()],
            "next": self.next_id,
            "wait": [[b64(head), b64(tail)] for head, tail in self.waiting],
        }

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> tuple[Session, str | None]:
        """Read :meth:`to_json` back (with its session id); ValueError on anything else."""
        try:
            session = cls(int(raw["v"]))  # type: ignore[call-overload]
            for group, qos, no_local, sub_id in raw["subs"]:  # type: ignore[attr-defined]
                session.subscriptions[str(group)] = (
                    int(qos),
                    bool(no_local),
                    None if sub_id is None else int(sub_id),
                )
            session.received_qos2 = {int(p) for p in raw["qos2"]}  # type: ignore[attr-defined]
            for packet_id, frame in raw["out"]:  # type: ignore[attr-defined]
                session.outgoing[int(packet_id)] = base64.b64decode(frame, validate=True)
            session.next_id = int(raw["next"])  # type: ignore[call-overload]
            for head, tail in raw["wait"]:  # type: ignore[attr-defined]
                session.waiting.append(
                    (base64.b64decode(head, validate=True), base64.b64decode(tail, validate=True))
                )
            session_id = raw["id"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed MQTT session: {exc!r}") from None
        if session.version not in (4, 5) or not 1 <= session.next_id <= 65535:
            raise ValueError("malformed MQTT session: version or packet id out of range")
        return session, None if session_id is None else str(session_id)


# -- the upstream connect event (mqtt spec 5.2) ------------------------------------------------

SERVER_UNAVAILABLE = 0x88
V5_CONNACK_FAILURES = frozenset(
    {0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
     0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)  # fmt: skip
_V311_TO_V5 = {1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}
_STATUS_CODES = {400: (4, 0x86), 401: (5, 0x87), 403: (5, 0x8A), 429: (3, 0x97), 503: (3, 0x88)}

UserProperties = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ConnectRefusal:
    """A refused ``connect``: the CONNACK code for the client's version, and 5.0 extras."""

    code: int
    reason: str | None = None
    user_properties: UserProperties = ()


def connect_event_mqtt(
    version: int,
    clean_start: bool,
    username: str | None,
    password: bytes | None,
    user_properties: UserProperties,
) -> dict[str, object]:
    """The ``mqtt`` member of the ``connect`` event body (mqtt spec 5.2)."""
    return {
        "protocolVersion": version,
        "cleanStart": clean_start,
        "username": username,
        "password": base64.b64encode(password).decode() if password is not None else None,
        "userProperties": [{"name": n, "value": v} for n, v in user_properties]
        if version == 5
        else None,
    }


def connack_code_for(version: int, code: object) -> int:
    """A handler's ``mqtt.code`` as a CONNACK code of ``version`` (mqtt spec 5.2): codes of
    the other version are translated, anything else is "unspecified" (5.0 0x80, 3.1.1 3)."""
    if isinstance(code, bool) or not isinstance(code, int):
        return UNSPECIFIED_ERROR if version == 5 else V311_REFUSED_UNAVAILABLE
    if version == 5:
        if code in V5_CONNACK_FAILURES:
            return code
        return _V311_TO_V5.get(code, UNSPECIFIED_ERROR)
    if 1 <= code <= 5:
        return code
    if code in V5_CONNACK_FAILURES:
        return v311_connack(code)
    return V311_REFUSED_UNAVAILABLE


def connect_refusal(version: int, status: int, body: bytes) -> ConnectRefusal:
    """A non-2xx ``connect`` answer as a CONNACK (mqtt spec 5.2): ``mqtt.code`` of the body,
    else a code derived from the status."""
    try:
        data = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError):
        data = None
    mqtt = data.get("mqtt") if isinstance(data, dict) else None
    if isinstance(mqtt, dict) and "code" in mqtt:
        reason = mqtt.get("reason")
        return ConnectRefusal(
            connack_code_for(version, mqtt.get("code")),
            reason if isinstance(reason, str) else None,
            user_properties_of(mqtt.get("userProperties")),
        )
    v311, v5 = _STATUS_CODES.get(status, (3, UNSPECIFIED_ERROR))
    return ConnectRefusal(v5 if version == 5 else v311)


def user_properties_of(value: object) -> UserProperties:
    """``[{"name","value"}]`` from a handler as MQTT user properties; bad entries skipped."""
    if not isinstance(value, list):
        return ()
    found = []
    for item in value:
        if isinstance(item, dict):
            name, text = item.get("name"), item.get("value")
            if isinstance(name, str) and isinstance(text, str):
                found.append((name, text))
    return tuple(found)


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def is_header_token(name: str) -> bool:
    """Whether a user property name can be an HTTP header name (``mqtt-{name}``, spec 5.5)."""
    return bool(_TOKEN.fullmatch(name))


def is_header_value(value: str) -> bool:
    return value.isprintable() and value.isascii()


def event_answer_topic(event: str, status: int) -> str:
    """Where the answer to a user event goes (mqtt spec 5.5)."""
    outcome = "succeeded" if 200 <= status < 300 else "failed"
    return f"{EVENTS_PREFIX}{event}/{outcome}"
