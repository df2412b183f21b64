"""The client endpoint ``GET /client/hubs/{hub}``: the handshake policy (spec 3, 4.1, 4.2).

Order: path and hub -> access token (query or header) -> claims -> subprotocol -> the
websockets handshake. Failures are HTTP statuses with an ``ErrorDetail`` body, never a socket.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import websockets.protocol
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..auth.tokens import TokenValidator, bearer_token, claim_list
from ..core.commands import Command
from ..core.connection import Codec, Connection, Transport, new_connection_id
from ..core.errors import BadRequest, RequestError, TooManyRequests, Unauthorized
from ..core.events import ConnectResult, EventHandlerSettings, EventKind, HubSettings
from ..core.handover import Snapshot
from ..core.names import check_hub, role_problem, user_id_problem
from ..core.randomness import random_bytes
from ..core.roles import Permission, is_allowed
from ..protocols import CODECS, RAW, select_codec
from ..protocols.mqtt.connection import MqttConnection
from .http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from ..core.node import Node
    from .config import Limits

log = logging.getLogger("webpubsub.server.client")


class _BatchedUuid:
    """websockets names every protocol with ``uuid.uuid4()`` (for its logs): one
    ``getrandom`` system call per connection, 6% of a handshake. The same version-4 UUIDs,
    from batched CSPRNG bytes (core/randomness.py); the rest of ``uuid`` as it is."""

    UUID = uuid.UUID

    @staticmethod
    def uuid4() -> uuid.UUID:
        return uuid.UUID(bytes=random_bytes(16), version=4)

    def __getattr__(self, name: str) -> Any:
        return getattr(uuid, name)


_websockets_protocol: Any = websockets.protocol
if _websockets_protocol.uuid is uuid:
    _websockets_protocol.uuid = _BatchedUuid()


# Room for an MQTT packet's fixed header, topic and properties above the payload limit.
MQTT_HEADROOM = 64 * 1024
ws_log = logging.getLogger("webpubsub.websocket")


@dataclass
class Accepted:
    """An upgraded client: a new connection to register, or a recovery to resume.

    ``refusal`` is set when the upgrade is accepted only to be closed at once with 1008,
    which is how a refused reliable recovery is told to stop retrying (spec 4.7).
    """

    ws: ServerProtocol
    conn: Connection | None = None
    groups: list[str] = field(default_factory=list)
    resume: tuple[str, str, str] | None = None  # hub, connection id, reconnection token
    refusal: str | None = None
    # A recovery of a connection another node of the cluster holds: the codec it speaks.
    moving: Codec | None = None
    adopted: tuple[Snapshot, list[Command]] | None = None  # what the move brought
    retry: bool = False  # a refusal the client may retry (1013), not 1008

    mqtt: MqttUpgrade | None = None  # an MQTT client whose hub has a connect handler


@dataclass
class MqttUpgrade:
    """What the ``connect`` event of an MQTT client needs from its upgrade (mqtt spec 5.2)."""

    request: HttpRequest
    claims: dict[str, Any]
    offered: list[str]
    handler: EventHandlerSettings


@dataclass
class Pending:
    """A handshake waiting for the hub's blocking ``connect`` event (spec 5.5)."""

    request: HttpRequest
    hub: str
    hub_name: str
    claims: dict[str, Any]
    user_id: str | None
    roles: list[str]
    groups: list[str]
    offered: list[str]
    handler: EventHandlerSettings | None
    connection_id: str = field(default_factory=new_connection_id)


class ClientEndpoint:
    def __init__(
        self,
        node: Node,
        validator: TokenValidator,
        limits: Limits,
        hub_settings: Callable[[str], HubSettings],
        scheme: str = "http",
    ) -> None:
        self.node = node
        self.hub_settings = hub_settings
        self.validator = validator
        self.limits = limits
        self.scheme = scheme
        # The hub's client connections on the other nodes of a cluster (0 on its own).
        self.peer_hub_connections: Callable[[str], int] = lambda _hub: 0

    def matches(self, path: str) -> bool:
        return path.startswith(("/client/", "/clients/")) or path == "/client"

    def handshake(
        self, request: HttpRequest, transport: Transport
    ) -> HttpResponse | Accepted | Pending:
        """Accept the upgrade (websockets protocol, connection, initial groups) or refuse it."""
        try:
            return self._handshake(request, transport)
        except RequestError as exc:
            log.info(
                "refused client %s %s: %s %s", request.client, request.path, exc.status, exc.message
            )
            return HttpResponse.error(exc)

    def _handshake(
        self, request: HttpRequest, transport: Transport
    ) -> HttpResponse | Accepted | Pending:
        hub_name = self._hub_name(request)
        hub = check_hub(hub_name)
        offered = [
            p.strip()
            for value in request.header_all("sec-websocket-protocol")
            for p in value.split(",")
            if p.strip()
        ]
        if _is_mqtt(request.path):
            return self._mqtt(request, hub, hub_name, offered, transport)
        connection_id = request.query_one("awps_connection_id")
        token = request.query_one("awps_reconnection_token")
        if connection_id and token:
            return self._recover(request, offered, (hub, connection_id, token))
        settings = self.hub_settings(hub)
        claims = self._claims(request, f"/client/hubs/{hub_name}", settings.allow_anonymous)
        user_id, roles, groups = self._identity(claims)
        pending = Pending(
            request=request,
            hub=hub,
            hub_name=hub_name,
            claims=claims,
            user_id=user_id,
            roles=roles,
            groups=groups,
            offered=offered,
            handler=settings.handler_for("connect", EventKind.CONNECT),
        )
        if pending.handler is not None:
            return pending  # the edge calls the connect event, then finish()
        return self._finish(pending, transport, None)

    def finish(
        self, pending: Pending, transport: Transport, result: ConnectResult | None
    ) -> HttpResponse | Accepted:
        """Complete a handshake after the ``connect`` event answered (spec 4.1, 5.5)."""
        try:
            return self._finish(pending, transport, result)
        except RequestError as exc:
            return HttpResponse.error(exc)

    def _finish(
        self, pending: Pending, transport: Transport, result: ConnectResult | None
    ) -> HttpResponse | Accepted:
        user_id, roles, groups = pending.user_id, pending.roles, pending.groups
        codec = select_codec(pending.offered)
        if result is not None:
            if result.user_id is not None:
                user_id = result.user_id
            if result.roles is not None:
                roles = result.roles
            groups = list(dict.fromkeys([*groups, *result.groups]))
            if result.subprotocol is not None:
                codec = CODECS.get(result.subprotocol, RAW)
        if codec is None:
            raise BadRequest(
                "None of the offered subprotocols is supported: "
                f"{', '.join(pending.offered)[:200]}.",
                code="Error.UnsupportedSubprotocol",
            )
        self._check_quotas(pending.hub, groups)
        conn = Connection(
            pending.hub,
            codec,
            transport,
            user_id=user_id,
            roles=roles,
            connection_id=pending.connection_id,
        )
        if result is not None:
            conn.state = result.state
        self._simple_mode(pending.request, conn)
        ws = self._upgrade(pending.request, codec.subprotocol)
        if isinstance(ws, HttpResponse):
            return ws
        log.debug(
            "client connected %s hub=%s user=%s subprotocol=%s",
            conn.connection_id,
            pending.hub,
            user_id,
            codec.subprotocol,
        )
        return Accepted(ws, conn, groups)

    def _mqtt(
        self,
        request: HttpRequest,
        hub: str,
        hub_name: str,
        offered: list[str],
        transport: Transport,
    ) -> HttpResponse | Accepted:
        """``/clients/mqtt/hubs/{hub}`` (mqtt spec 1): token at the upgrade, MQTT after it.

        The connection registers with the node when its CONNECT is accepted.
        """
        if offered and "mqtt" not in offered:
            raise BadRequest(
                "The MQTT endpoint needs the 'mqtt' WebSocket subprotocol.",
                code="Error.UnsupportedSubprotocol",
            )
        settings = self.hub_settings(hub)
        claims = self._claims(request, f"/clients/mqtt/hubs/{hub_name}", settings.allow_anonymous)
        user_id, roles, groups = self._identity(claims)
        self._check_quotas(hub, groups)
        conn = MqttConnection(
            hub,
            transport,
            self.node,
            user_id=user_id,
            roles=roles,
            groups=groups,
            max_packet_size=self.limits.max_message_size + MQTT_HEADROOM,
        )
        # A WebSocket message may hold a whole packet: the payload limit plus its headers.
        ws = self._upgrade(
            request, "mqtt" if offered else None, self.limits.max_message_size + MQTT_HEADROOM
        )
        if isinstance(ws, HttpResponse):
            return ws
        handler = settings.handler_for("connect", EventKind.CONNECT)
        upgrade = None
        if handler is not None:
            conn.upstream_connect = True
            upgrade = MqttUpgrade(request, claims, offered or ["mqtt"], handler)
        return Accepted(ws, conn, groups, mqtt=upgrade)

    def _check_quotas(self, hub: str, groups: list[str]) -> None:
        """Refuse a connection over the hub's connection limit or with too many groups."""
        limits = self.limits
        found = self.node.hub(hub)
        here = len(found.connections) if found is not None else 0
        if here + self.peer_hub_connections(hub) >= limits.max_connections_per_hub:
            raise TooManyRequests(
                f"The hub has reached its limit of {limits.max_connections_per_hub} "
                "connections; retry later.",
                code="Error.TooManyConnections",
            )
        if len(groups) > limits.max_groups_per_connection:
            raise BadRequest(
                f"A connection may join at most {limits.max_groups_per_connection} groups.",
                target="webpubsub.group",
            )
        for group in groups:
            problem = self.node.group_name_problem(group)
            if problem:
                raise BadRequest(f"Invalid group: {problem}", target="webpubsub.group")

    def _recover(
        self, request: HttpRequest, offered: list[str], resume: tuple[str, str, str]
    ) -> HttpResponse | Accepted:
        """A reliable client coming back (spec 4.7): the token in the query is the proof."""
        hub, connection_id, _ = resume
        codec = select_codec(offered)
        chosen = codec.subprotocol if codec is not None else None
        ws = self._upgrade(request, chosen)
        if isinstance(ws, HttpResponse):
            return ws
        if not _plausible_id(connection_id):
            # Not an id this service hands out (NUL, spaces, a megabyte...): nobody holds it.
            return Accepted(ws, refusal="The connection cannot be recovered.")
        conn = self.node.find_connection(hub, connection_id)
        engine = self.node.engine
        if conn is None and engine is not None and codec is not None and codec.is_reliable:
            return Accepted(ws, resume=resume, moving=codec)  # another node may hold it
        if conn is None or conn.codec is not codec:
            return Accepted(ws, refusal="The connection cannot be recovered.")
        return Accepted(ws, resume=resume)

    def upgrade(
        self, request: HttpRequest, chosen: str | None, max_size: int | None = None
    ) -> ServerProtocol | HttpResponse:
        """Accept a WebSocket upgrade another endpoint decided on (the app-server tunnel)."""
        return self._upgrade(request, chosen, max_size)

    def _upgrade(
        self, request: HttpRequest, chosen: str | None, max_size: int | None = None
    ) -> ServerProtocol | HttpResponse:
        """Run the websockets handshake; returns the open protocol or the refusal."""
        head = switching_protocols(request, chosen)
        if head is not None:
            # A plain, valid upgrade (every SDK's): the 101 is written by hand, as websockets
            # would write it, and the protocol starts open. Anything else is websockets' to
            # judge and answer (its objects were a sixth of a handshake).
            ws = ServerProtocol(
                state=State.OPEN, max_size=max_size or self.limits.max_message_size, logger=ws_log
            )
            ws.writes.append(head)
            return ws
        ws = ServerProtocol(
            subprotocols=[chosen] if chosen else None,  # type: ignore[list-item]
            select_subprotocol=(lambda _p, _o: chosen) if chosen else None,  # type: ignore[arg-type,return-value]
            max_size=max_size or self.limits.max_message_size,
            logger=ws_log,
        )
        ws_request = Request(request.path + _query_suffix(request), Headers(request.headers))
        response = ws.accept(ws_request)
        if response.status_code != 101:
            body = (response.body or b"").decode("utf-8", "replace").strip()
            error = RequestError(
                body or response.reason_phrase,
                code="Error.BadHandshake",
                status=response.status_code,
            )
            refusal = HttpResponse.error(error)
            refusal.headers.extend(
                (k, v) for k, v in response.headers.raw_items() if k.lower() in ("upgrade", "allow")
            )
            return refusal
        ws.send_response(response)
        # The request was parsed by httptools; go straight to frames.
        ws.parser = ws.parse()
        next(ws.parser)
        return ws

    def _hub_name(self, request: HttpRequest) -> str:
        segments = [unquote(s) for s in request.path.strip("/").split("/")]
        if len(segments) == 3 and segments[:2] == ["client", "hubs"]:
            return segments[2]
        if segments == ["client"]:
            hub = request.query_one("hub")
            if hub:
                return hub
            raise BadRequest("The 'hub' query parameter is required on /client/.", target="hub")
        if len(segments) == 4 and segments[:3] == ["clients", "mqtt", "hubs"]:
            return segments[3]
        if segments[:1] == ["clients"] and len(segments) >= 2:
            raise BadRequest(
                f"The '{segments[1][:40]}' client protocol is not supported by this service.",
                code="Error.UnsupportedClientProtocol",
            )
        raise _not_found(request.path)

    def _identity(self, claims: dict[str, Any]) -> tuple[str | None, list[str], list[str]]:
        """The user, roles and groups a client token names, each checked as it enters."""
        user_id = claims.get("sub")
        if user_id is not None and not isinstance(user_id, str):
            raise Unauthorized("The 'sub' claim must be a single string.")
        problem = user_id_problem(user_id) if user_id else None
        if problem:
            raise BadRequest(f"Invalid 'sub' in the token: {problem}", target="sub")
        roles = claim_list(claims, "role")
        for role in roles:
            problem = role_problem(role)
            if problem:
                raise BadRequest(f"Invalid role in the token: {problem}", target="role")
        groups = claim_list(claims, "webpubsub.group")
        for group in groups:
            problem = self.node.group_name_problem(group)
            if problem:
                raise BadRequest(f"Invalid group in the token: {problem}", target="webpubsub.group")
        return user_id, roles, groups

    def _claims(
        self, request: HttpRequest, audience_path: str, allow_anonymous: bool = False
    ) -> dict[str, Any]:
        query_tokens = set(request.query.get("access_token", []))
        headers = request.header_all("authorization")
        if len(query_tokens) > 1 or len(headers) > 1:
            raise Unauthorized(
                "Send one access token: one access_token parameter or one Authorization header.",
                code="Error.Unauthorized.AmbiguousToken",
            )
        query_token = request.query_one("access_token")
        header_token = bearer_token(request.header("authorization"))
        if query_token and header_token and query_token != header_token:
            raise Unauthorized(
                "Two different access tokens were sent (query and Authorization header).",
                code="Error.Unauthorized.AmbiguousToken",
            )
        token = query_token or header_token
        if not token and allow_anonymous:
            return {}
        if not token:
            raise Unauthorized(
                "An access token is required: pass it as the access_token query parameter or "
                "an Authorization: Bearer header.",
                code="Error.Unauthorized.NoToken",
            )
        claims = self.validator.decode(token)
        # The audience is the endpoint's path: /client/hubs/{hub} serves the bare /client too,
        # and a Socket.IO client asks for the path with a trailing slash.
        bare = request.path.rstrip("/")
        path = audience_path if bare in ("/client", audience_path) else request.path
        self.validator.check_audience(claims, path, request.header("host"), self.scheme)
        return claims

    def _simple_mode(self, request: HttpRequest, conn: Connection) -> None:
        """``webpubsub_mode=sendToGroup&group=g`` for simple clients (spec 4.2)."""
        mode = request.query_one("webpubsub_mode")
        if mode is None or mode == "sendEvent":
            return
        if mode != "sendToGroup":
            raise BadRequest(f"Unknown webpubsub_mode '{mode[:40]}'.", target="webpubsub_mode")
        groups = request.query.get("group", [])
        if len(groups) != 1 or self.node.group_name_problem(groups[0]):
            raise BadRequest(
                "webpubsub_mode=sendToGroup needs exactly one valid group.", target="group"
            )
        if not is_allowed(conn.roles, Permission.SEND_TO_GROUP, groups[0]):
            raise Unauthorized(f"The token has no permission to send to group '{groups[0]}'.")
        conn.raw_group = groups[0]
        conn.raw_no_echo = request.query_one("noEcho") in ("true", "True", "1")


def _is_mqtt(path: str) -> bool:
    return path.startswith("/clients/mqtt/")


def _query_suffix(request: HttpRequest) -> str:
    return "?" + request.query_string if request.query_string else ""


def _not_found(path: str) -> RequestError:
    return RequestError(f"No endpoint at {path[:200]}.", code="Error.NotFound", status=404)


_ID_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _plausible_id(connection_id: str) -> bool:
    """Whether a recovery names a connection id of the shape ``new_connection_id`` makes."""
    return 0 < len(connection_id) <= 128 and _ID_CHARACTERS.issuperset(connection_id)


# -- the 101 of a plain upgrade (RFC 6455 4.2.2) ------------------------------------------

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # RFC 9110 5.6.2
_date: tuple[int, bytes] = (0, b"")


def switching_protocols(request: HttpRequest, chosen: str | None) -> bytes | None:
    """The 101 response to a valid upgrade with nothing unusual, byte for byte what
    websockets' ``ServerProtocol.accept`` writes; None: let websockets decide (and refuse).

    It checks what websockets checks (RFC 6455 4.2.1): one ``Upgrade: websocket``, an
    ``upgrade`` token in ``Connection``, one ``Sec-WebSocket-Key`` of 16 bytes in base64,
    one ``Sec-WebSocket-Version: 13``. Extensions offered get no answer, as from websockets
    without extensions configured.
    """
    keys = request.header_all("sec-websocket-key")
    upgrades = request.header_all("upgrade")
    connection = [
        token.strip().lower()
        for value in request.header_all("connection")
        for token in value.split(",")
    ]
    if (
        len(keys) != 1
        or request.header_all("sec-websocket-version") != ["13"]
        or len(upgrades) != 1
        or upgrades[0].strip().lower() != "websocket"
        or "upgrade" not in connection
        or not all(map(_TOKEN.fullmatch, connection))  # (an odd list: websockets judges)
    ):
        return None
    key = keys[0].strip()
    if len(key) != 24 or not key.isascii():
        return None
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest())
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True).encode())
    protocol = b"Sec-WebSocket-Protocol: " + chosen.encode() + b"\r\n" if chosen else b""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nDate: "
        + _date[1]
        + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        + accept
        + b"\r\n"
        + protocol
        + b"\r\n"
    )
