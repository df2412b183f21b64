"""Upstream events: hub settings, handler matching, CloudEvents requests and their answers.

Pure decisions for spec section 5; the HTTP calls themselves live in ``server/upstream.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlsplit

from .errors import BadRequest
from .message import CONTENT_TYPE_OF, DataType, Message, Source, check_json
from .names import group_name_problem, role_problem, user_id_problem
from .roles import compile_pattern

SYSTEM_EVENTS = ("connect", "connected", "disconnected")
PRESENCE_EVENTS = ("joined", "left")


class EventKind(StrEnum):
    CONNECT = "connect"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    USER = "user"
    JOINED = "joined"  # group presence (spec-next 6)
    LEFT = "left"


@dataclass(frozen=True)
class EventHandlerSettings:
    """One entry of a hub's ``eventHandlers`` (spec 5.1)."""

    url_template: str
    user_event_pattern: str = "*"
    system_events: tuple[str, ...] = SYSTEM_EVENTS
    auth_header: tuple[str, str] | None = None  # (name, value) sent with every call
    # Azure's groupPresenceEvents: eventNames and groupFilters (spec-next 6); empty: none.
    group_presence_events: tuple[str, ...] = ()
    group_filters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parts = urlsplit(self.url_template.replace("{hub}", "h").replace("{event}", "e"))
        if parts.scheme == "tunnel":
            pass  # tunnel:///path: to the hub's app servers, over their tunnels (socketio 4.3)
        elif parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(
                f"event handler URL must be http(s) or tunnel:///path: {self.url_template!r}"
            )
        host = urlsplit(self.url_template).netloc
        if "{" in host:
            raise BadRequest("{hub} and {event} are not allowed in the host of a URL template")
        for event in self.system_events:
            if event not in SYSTEM_EVENTS:
                raise BadRequest(f"unknown system event {event!r}; use {', '.join(SYSTEM_EVENTS)}")
        for event in self.group_presence_events:
            if event not in PRESENCE_EVENTS:
                raise BadRequest(
                    f"unknown group presence event {event!r}; use {', '.join(PRESENCE_EVENTS)}"
                )
        for pattern in self.group_filters:
            if compile_pattern(pattern) is None:
                raise BadRequest(f"invalid group filter {pattern!r}")

    def handles(self, event: str, kind: EventKind) -> bool:
        if kind is EventKind.JOINED or kind is EventKind.LEFT:
            return self.announces(kind, event)
        if kind is not EventKind.USER:
            return kind.value in self.system_events
        pattern = self.user_event_pattern.strip()
        if pattern == "*":
            return True
        names = {name.strip().lower() for name in pattern.split(",") if name.strip()}
        return event.lower() in names

    def announces(self, kind: EventKind, group: str) -> bool:
        """Whether this handler wants ``joined``/``left`` for this group."""
        if kind.value not in self.group_presence_events:
            return False
        if not self.group_filters:
            return True
        return any(
            (pattern := compile_pattern(f)) is not None and pattern.fullmatch(group)
            for f in self.group_filters
        )

    @property
    def is_tunnel(self) -> bool:
        """Whether events go over the hub's app-server tunnels, not HTTP."""
        return self.url_template.startswith("tunnel:")

    def url(self, hub: str, event: str) -> str:
        """The handler URL for an event; the event name is one percent-encoded path segment,
        so a name with ``/``, ``?``, ``#`` or non-ASCII letters cannot change the URL's shape."""
        return self.url_template.replace("{hub}", hub).replace("{event}", quote(event, safe=""))


@dataclass(frozen=True)
class HubSettings:
    """Per-hub behaviour: event handlers and the anonymous-connect policy."""

    event_handlers: tuple[EventHandlerSettings, ...] = ()
    allow_anonymous: bool = False

    @property
    def wants_presence(self) -> bool:
        """Whether any handler takes ``joined`` or ``left`` (else membership costs nothing)."""
        return any(handler.group_presence_events for handler in self.event_handlers)

    def handler_for(self, event: str, kind: EventKind) -> EventHandlerSettings | None:
        """The first handler that takes this event (handlers are ordered, spec 5.1).

        For ``joined``/``left``, ``event`` is the group name.
        """
        for handler in self.event_handlers:
            if handler.handles(event, kind):
                return handler
        return None

    def describe(self) -> str:
        parts = [f"anonymous={'allow' if self.allow_anonymous else 'deny'}"]
        for handler in self.event_handlers:
            auth = f" auth={handler.auth_header[0]}" if handler.auth_header else ""
            presence = ""
            if handler.group_presence_events:
                presence = f" presence={','.join(handler.group_presence_events)}"
                if handler.group_filters:
                    presence += f" groups={','.join(handler.group_filters)}"
            parts.append(
                f"handler {handler.url_template} user={handler.user_event_pattern} "
                f"system={','.join(handler.system_events) or '-'}{presence}{auth}"
            )
        return "; ".join(parts)


def ce_type(event: str, kind: EventKind) -> str:
    if kind is EventKind.USER:
        return f"azure.webpubsub.user.{event}"
    if kind is EventKind.JOINED or kind is EventKind.LEFT:
        return f"azure.webpubsub.gp.{kind.value}"
    return f"azure.webpubsub.sys.{kind.value}"


def signature(keys: Sequence[str], connection_id: str) -> str:
    """``ce-signature``: one ``sha256=<hex>`` per access key (spec 5.4)."""
    return ",".join(
        "sha256="
        + hmac.new(key.encode("utf-8"), connection_id.encode("utf-8"), hashlib.sha256).hexdigest()
        for key in keys
    )


def origin_host(endpoint: str) -> str:
    """``WebHook-Request-Origin``: the bare host of the service endpoint (spec 5.2)."""
    return urlsplit(endpoint).hostname or "localhost"


# CloudEvents HTTP binding 1.0.2, 3.1.3.2: printable ASCII except space, '"' and '%' stays.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def header_value(value: str) -> str:
    """A CloudEvents attribute as an HTTP header value: percent-encoded UTF-8 (binding 3.1.3.2).

    Header values are ASCII on the wire, but user ids and event names are any string: encoded
    this way a value is ASCII, unambiguous (``%`` itself is encoded) and unchanged for the
    usual ids. A receiver recovers it with one round of percent-decoding
    (``decodeURIComponent`` in JavaScript, ``urllib.parse.unquote`` in Python).
    """
    return quote(value, safe=_HEADER_SAFE, errors="replace")


@dataclass
class EventContext:
    """Who an event is about (the connection's identity and state)."""

    hub: str
    connection_id: str
    user_id: str | None
    subprotocol: str | None
    state: str | None
    event_id: int
    # MQTT (mqtt spec 5.1): the WebSocket's and the session's opaque ids.
    physical_connection_id: str | None = None
    session_id: str | None = None


def cloud_event_headers(
    ctx: EventContext,
    event: str,
    kind: EventKind,
    *,
    keys: Sequence[str],
    origin: str,
    content_type: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """The CloudEvents binary-mode headers of spec 5.3.

    Every attribute that can carry a client's text (user id, event name, connection state) is
    percent-encoded with :func:`header_value`; hub and connection ids are ASCII already.
    """
    timestamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    headers = {
        "WebHook-Request-Origin": origin,
        "ce-specversion": "1.0",
        "ce-awpsversion": "1.0",
        "ce-type": header_value(ce_type(event, kind)),
        "ce-source": f"/hubs/{ctx.hub}/client/{ctx.connection_id}"
        + (f"/{ctx.physical_connection_id}" if ctx.physical_connection_id else ""),
        "ce-id": str(ctx.event_id),
        "ce-time": timestamp,
        "ce-signature": signature(keys, ctx.connection_id),
        "ce-hub": ctx.hub,
        "ce-connectionId": ctx.connection_id,
        "ce-eventName": header_value(event if kind is EventKind.USER else kind.value),
        "Content-Type": content_type,
    }
    if ctx.user_id is not None:
        headers["ce-userId"] = header_value(ctx.user_id)
    if ctx.subprotocol and (kind is not EventKind.CONNECT or ctx.physical_connection_id):
        headers["ce-subprotocol"] = header_value(ctx.subprotocol)
    if ctx.physical_connection_id:
        headers["ce-physicalConnectionId"] = ctx.physical_connection_id
    if ctx.session_id:
        headers["ce-sessionId"] = ctx.session_id
    if ctx.state:
        headers["ce-connectionState"] = header_value(ctx.state)
    return headers


SYSTEM_CONTENT_TYPE = "application/json; charset=utf-8"


def connect_body(
    claims: Mapping[str, Any],
    query: Mapping[str, list[str]],
    headers: Sequence[tuple[str, str]],
    subprotocols: Sequence[str],
) -> bytes:
    """The ``connect`` event body: every map is string -> string[] (spec 5.5)."""
    claim_map: dict[str, list[str]] = {}
    for name, value in claims.items():
        values = value if isinstance(value, list) else [value]
        claim_map[name] = [v if isinstance(v, str) else json.dumps(v) for v in values]
    header_map: dict[str, list[str]] = {}
    for name, value in headers:
        header_map.setdefault(name, []).append(value)
    body = {
        "claims": claim_map,
        "query": {k: list(v) for k, v in query.items()},
        "headers": header_map,
        "subprotocols": list(subprotocols),
        "clientCertificates": [],
    }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class ConnectResult:
    """What a successful ``connect`` response changes (all optional, spec 5.5)."""

    user_id: str | None = None
    groups: list[str] = field(default_factory=list)
    roles: list[str] | None = None
    subprotocol: str | None = None
    state: str | None = None  # ce-connectionState of the answer: the connection's first state


class UpstreamRejected(Exception):
    """The upstream refused or failed: ``status`` goes back to the client (spec 5.5)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_connect_response(
    status: int,
    body: bytes,
    offered: Sequence[str],
    headers: Mapping[str, str] | None = None,
) -> ConnectResult:
    """Interpret the ``connect`` answer; raises UpstreamRejected for a refusal or bad body.

    A ``ce-connectionState`` header on a successful answer becomes the connection's state,
    exactly as on a user-event answer (the express ``res.setState`` in ``handleConnect``).
    """
    result = _parse_connect_body(status, body, offered)
    if headers is not None:
        result.state = updated_state(None, headers)
    return result


def _parse_connect_body(status: int, body: bytes, offered: Sequence[str]) -> ConnectResult:
    if status >= 400:
        raise UpstreamRejected(status, f"The connect event handler answered {status}.")
    if status not in (200, 204) and not 200 <= status < 300:
        raise UpstreamRejected(500, f"The connect event handler answered {status}.")
    if status == 204 or not body.strip():
        return ConnectResult()
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise UpstreamRejected(500, "The connect event handler answered invalid JSON.") from None
    if data is None:
        return ConnectResult()
    if not isinstance(data, dict):
        raise UpstreamRejected(500, "The connect event handler answered a non-object.")
    result = ConnectResult()
    user_id = data.get("userId")
    if user_id is not None:
        if not isinstance(user_id, str):
            raise UpstreamRejected(500, "'userId' in the connect response must be a string.")
        problem = user_id_problem(user_id) if user_id else None
        if problem:
            raise UpstreamRejected(500, f"'userId' in the connect response: {problem}")
        result.user_id = user_id or None
    groups = data.get("groups")
    if groups is not None:
        result.groups = _names(groups, "groups", group_name_problem)
    roles = data.get("roles")
    if roles is not None:
        result.roles = _names(roles, "roles", role_problem)
    subprotocol = data.get("subprotocol")
    if subprotocol:
        if not isinstance(subprotocol, str) or subprotocol not in offered:
            raise UpstreamRejected(
                500, "'subprotocol' in the connect response was not offered by the client."
            )
        result.subprotocol = subprotocol
    return result


def _names(value: object, member: str, problem_of: Callable[[object], str | None]) -> list[str]:
    """A list of names in a connect answer, or the first problem with it (a 500 refusal)."""
    if not isinstance(value, list):
        raise UpstreamRejected(500, f"'{member}' in the connect response must be a list.")
    for name in value:
        problem = problem_of(name)
        if problem:
            raise UpstreamRejected(500, f"'{member}' in the connect response: {problem}")
    return list(value)


def user_event_content_type(data_type: DataType) -> str:
    """Content-Type of a user event body by the data type the client sent (spec 5.8)."""
    return CONTENT_TYPE_OF[data_type]


def reply_message(content_type: str | None, body: bytes) -> Message | None:
    """The message a 200 user-event answer sends back to the client, if any (spec 5.8)."""
    if not body:
        return None
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "text/plain":
        data_type = DataType.TEXT
    elif media == "application/json":
        data_type = DataType.JSON
        try:
            json.loads(body)
        except (ValueError, RecursionError):
            data_type = DataType.TEXT
    else:
        data_type = DataType.BINARY
    if data_type is DataType.TEXT:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            data_type = DataType.BINARY
    return Message(body, data_type, Source.SERVER)


def updated_state(current: str | None, headers: Mapping[str, str]) -> str | None:
    """``ce-connectionState`` on a response sets the state; absent keeps it, empty clears it."""
    for name, value in headers.items():
        if name.lower() == "ce-connectionstate":
            return value or None
    return current


def encode_state(states: Mapping[str, Any]) -> str:
    """The SDK convention for connection state: base64 of a JSON object (spec 5.9)."""
    return base64.b64encode(json.dumps(dict(states)).encode()).decode()


@dataclass(frozen=True)
class InvokeResult:
    """What an ``invokeResponse`` says (spec-next 1.3): a payload, or an error."""

    data: bytes | None = None
    data_type: DataType | None = None
    error: tuple[str, str] | None = None  # (name, message)


INVOKE_ERROR_NAMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}
INVOKE_ERROR_NAMES[408] = "Timeout"


def invoke_result(status: int, content_type: str | None, body: bytes) -> InvokeResult:
    """Map an event handler's answer to an invocation (spec-next 1.3)."""
    if not 200 <= status < 300:
        if status in INVOKE_ERROR_NAMES:
            name = INVOKE_ERROR_NAMES[status]
        else:
            name = "BadRequest" if 400 <= status < 500 else "InternalServerError"
        text = body.decode("utf-8", "replace")[:1024]
        return InvokeResult(error=(name, text or f"Upstream returned {status}."))
    if not body:
        return InvokeResult()
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json":
        try:
            check_json(body)
        except BadRequest:
            return InvokeResult(
                error=("InternalServerError", "The upstream answered invalid JSON.")
            )
        if body.strip() == b"null":
            return InvokeResult()  # JSON null: no payload (the JS client drops json null)
        return InvokeResult(body, DataType.JSON)
    if media == "text/plain":
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return InvokeResult(error=("InternalServerError", "The upstream text is not UTF-8."))
        return InvokeResult(body, DataType.TEXT)
    if media in ("application/octet-stream", ""):
        return InvokeResult(body, DataType.BINARY)
    if media == "application/x-protobuf":
        return InvokeResult(body, DataType.PROTOBUF)
    return InvokeResult(
        error=("InternalServerError", f"Unsupported upstream Content-Type '{media[:100]}'.")
    )
