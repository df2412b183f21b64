"""CloudEvents over HTTP, app side: which requests are ours, signatures, bodies, answers (spec 5).

Pure functions and values, no sockets and no event loop: the ASGI and WSGI adapters in
``_handler.py`` feed them a method, lower-cased headers and a body, and write back the
``HttpResponse`` they return. Every decision about the wire is made here, so it is tested
without a server.

The order of checks follows ``@azure/web-pubsub-express``: first whether the request is ours at
all (else it goes to the next app), then the abuse-protection preflight, then the identity and
signature (before the body is read), then the body.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit

from ..core.metadata import HEADER_PREFIX, to_headers
from ._errors import EventHandlerError
from ._models import (
    ClientCertificate,
    ConnectedRequest,
    ConnectionContext,
    ConnectRequest,
    ConnectResponse,
    DataType,
    DisconnectedRequest,
    GroupJoinedRequest,
    GroupLeftRequest,
    UserEventRequest,
    UserEventResponse,
    decode_states,
    encode_states,
)

CE_TYPE_PREFIX = "azure.webpubsub."
SYSTEM_TYPE_PREFIX = "azure.webpubsub.sys."
USER_TYPE_PREFIX = "azure.webpubsub.user."
PRESENCE_TYPE_PREFIX = "azure.webpubsub.gp."
STATE_HEADER = "ce-connectionState"
ALLOWED_ORIGIN_HEADER = "WebHook-Allowed-Origin"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


class EventKind(StrEnum):
    """The kinds of event the service sends (spec 5.5-5.8, and group presence)."""

    CONNECT = "connect"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    USER = "user"
    JOINED = "joined"
    LEFT = "left"

    @property
    def blocking(self) -> bool:
        """Whether the service waits for the answer (and applies its connection state)."""
        return self in (EventKind.CONNECT, EventKind.USER)


Request = (
    ConnectRequest
    | ConnectedRequest
    | DisconnectedRequest
    | GroupJoinedRequest
    | GroupLeftRequest
    | UserEventRequest
)


def attribute(headers: Mapping[str, str], name: str) -> str:
    """A CloudEvents attribute from its header: one round of percent-decoding (UTF-8).

    The service percent-encodes attributes that can be non-ASCII (user ids, event names),
    as the CloudEvents HTTP binding requires (1.0.2, 3.1.3.2). A sender that puts raw UTF-8
    in the header is understood too: ASGI and WSGI servers hand header bytes over as
    latin-1, so such a value is re-read as UTF-8 before decoding.

    Args:
        headers: the request headers with lower-case names.
        name: the lower-case header name.

    Returns:
        The decoded value, or "" when the header is absent.
    """
    value = headers.get(name, "")
    if not value.isascii():
        # Not raw UTF-8 after all (or not latin-1 text): keep what the server gave.
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            value = value.encode("latin-1").decode("utf-8")
    return unquote(value, errors="replace") if "%" in value else value


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An HTTP answer for the adapters to write: status, headers and body."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @classmethod
    def text(
        cls, status: int, text: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> HttpResponse:
        return cls(status, (*headers, ("Content-Type", TEXT_CONTENT_TYPE)), text.encode("utf-8"))


EMPTY_OK = HttpResponse.text(200, "")
NOT_FOUND = HttpResponse.text(404, "Not Found")
PAYLOAD_TOO_LARGE = HttpResponse.text(413, "Payload Too Large")
INTERNAL_ERROR = HttpResponse.text(500, "Internal Server Error")


@dataclass(frozen=True, slots=True)
class Route:
    """A request known to be ours: the preflight, or one event of a known kind."""

    kind: EventKind | None  # None for the abuse-protection preflight
    event_name: str = ""

    @property
    def preflight(self) -> bool:
        return self.kind is None


PREFLIGHT = Route(None)


def classify(method: str, headers: Mapping[str, str], hub: str) -> Route | None:
    """Say whether a request is for this handler and what it is; None passes it on.

    A request is ours when it has ``ce-awpsversion`` and ``WebHook-Request-Origin`` and is
    either an ``OPTIONS`` preflight (spec 5.2) or a ``POST`` whose ``ce-type`` is a Web PubSub
    event and whose ``ce-hub`` is this hub, compared case-insensitively (spec 5.3).

    Args:
        method: the HTTP method, upper-case.
        headers: the request headers with lower-case names.
        hub: the handler's hub.

    Returns:
        The route, or None for a request to leave to the next app.
    """
    if "ce-awpsversion" not in headers or "webhook-request-origin" not in headers:
        return None
    if method == "OPTIONS":
        return PREFLIGHT
    if method != "POST":
        return None
    ce_type = headers.get("ce-type", "")
    if not ce_type.startswith(CE_TYPE_PREFIX):
        return None
    if attribute(headers, "ce-hub").lower() != hub.lower():
        return None
    if ce_type.startswith(USER_TYPE_PREFIX):
        name = attribute(headers, "ce-eventname") or unquote(ce_type[len(USER_TYPE_PREFIX) :])
        return Route(EventKind.USER, name) if name else None
    if ce_type in (PRESENCE_TYPE_PREFIX + "joined", PRESENCE_TYPE_PREFIX + "left"):
        kind = EventKind(ce_type[len(PRESENCE_TYPE_PREFIX) :])
        return Route(kind, kind.value)
    if not ce_type.startswith(SYSTEM_TYPE_PREFIX):
        return None
    try:
        kind = EventKind(ce_type[len(SYSTEM_TYPE_PREFIX) :])
    except ValueError:
        return None  # a system event this handler does not know (e.g. a newer one)
    if kind in (EventKind.USER, EventKind.JOINED, EventKind.LEFT):
        return None
    return Route(kind, kind.value)


# -- abuse protection (spec 5.2) ------------------------------------------------------------


def host_of(endpoint: str) -> str:
    """The lower-case bare host of an endpoint URL or host (``https://x.com:443/`` -> ``x.com``).

    Args:
        endpoint: a URL, ``host:port`` or a bare host.

    Returns:
        The host, or "" when there is none.
    """
    text = endpoint.strip()
    if not text:
        return ""
    try:
        host = urlsplit(text if "://" in text else "//" + text).hostname
    except ValueError:
        return ""
    return (host or "").lower()


def allowed_hosts(endpoints: Sequence[str] | None) -> frozenset[str] | None:
    """The hosts a preflight may come from; None (or a ``*`` among them) allows any origin.

    Args:
        endpoints: service endpoints as URLs (``https://x.webpubsub.azure.com``) or hosts.

    Returns:
        The lower-case hosts, or None for any.

    Raises:
        ValueError: if an endpoint has no host.
    """
    if endpoints is None:
        return None
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    hosts = set()
    for endpoint in endpoints:
        if endpoint.strip() == "*":
            return None
        host = host_of(endpoint)
        if not host:
            raise ValueError(f"allowed endpoint {endpoint!r} has no host")
        hosts.add(host)
    return frozenset(hosts)


def preflight(origin_header: str, allowed: frozenset[str] | None) -> HttpResponse:
    """Answer the abuse-protection ``OPTIONS`` request (spec 5.2).

    ``WebHook-Request-Origin`` is the bare host of the service (a comma-separated list is
    accepted). An allowed origin gets 200 with ``WebHook-Allowed-Origin`` set to ``*`` or to
    the allowed origins it named; any other gets 400, as express answers.

    Args:
        origin_header: the ``WebHook-Request-Origin`` value.
        allowed: the allowed hosts, or None for any.

    Returns:
        The answer.
    """
    if allowed is None:
        return HttpResponse.text(200, "", ((ALLOWED_ORIGIN_HEADER, "*"),))
    matched = [host for host in map(host_of, origin_header.split(",")) if host in allowed]
    if not matched:
        return HttpResponse.text(400, "The WebHook-Request-Origin is not allowed.")
    return HttpResponse.text(200, "", ((ALLOWED_ORIGIN_HEADER, ",".join(dict.fromkeys(matched))),))


# -- signature (spec 5.4) ---------------------------------------------------------------------


def sign(key: str, connection_id: str) -> str:
    """One signature: lower-case hex of HMAC-SHA256(UTF-8 key, UTF-8 connection id).

    Args:
        key: an access key.
        connection_id: the connection the event is about.

    Returns:
        64 hex digits (without the ``sha256=`` prefix).
    """
    return hmac.new(key.encode("utf-8"), connection_id.encode("utf-8"), hashlib.sha256).hexdigest()


def signature_valid(header: str | None, connection_id: str, keys: Sequence[str]) -> bool:
    """Check ``ce-signature``: any ``sha256=<hex>`` in it matching any key passes.

    The service lists one signature per access key it has, so a handler that knows only one
    of the keys still finds a match. Hex is compared case-insensitively (spec 5.4).

    Args:
        header: the ``ce-signature`` value, or None when absent.
        connection_id: the ``ce-connectionId`` value.
        keys: the access keys to accept.

    Returns:
        Whether the request is signed with one of the keys.
    """
    if not header:
        return False
    expected = [sign(key, connection_id).encode("ascii") for key in keys]
    for part in header.split(","):
        algorithm, sep, value = part.strip().partition("=")
        if not sep or algorithm.strip().lower() != "sha256":
            continue
        given = value.strip().lower().encode("utf-8", "surrogateescape")
        # compare_digest against every key, so timing does not tell which one matched.
        if any([hmac.compare_digest(given, candidate) for candidate in expected]):
            return True
    return False


# -- requests (spec 5.3, 5.5-5.8) -------------------------------------------------------------


def context_of(route: Route, headers: Mapping[str, str]) -> ConnectionContext:
    """The connection context of an event, from its CloudEvents headers (spec 5.3, 5.9).

    Args:
        route: what the request is (not the preflight).
        headers: the request headers with lower-case names.

    Returns:
        The context; its states are writable for blocking events only.

    Raises:
        EventHandlerError: 400 when ``ce-connectionId`` is missing.
    """
    assert route.kind is not None
    connection_id = attribute(headers, "ce-connectionid")
    if not connection_id:
        raise EventHandlerError(400, "The ce-connectionId header is missing.")
    return ConnectionContext(
        hub=attribute(headers, "ce-hub"),
        connection_id=connection_id,
        event_name=route.event_name,
        user_id=attribute(headers, "ce-userid") or None,
        subprotocol=attribute(headers, "ce-subprotocol") or None,
        origin=headers.get("webhook-request-origin", ""),
        signature=headers.get("ce-signature"),
        event_id=headers.get("ce-id"),
        states=decode_states(attribute(headers, "ce-connectionstate") or None),
        writable=route.kind.blocking,
    )


def parse_request(
    route: Route,
    context: ConnectionContext,
    content_type: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
) -> Request:
    """Build the typed request of an event from its body.

    Args:
        route: what the request is (not the preflight).
        context: its connection context.
        content_type: the ``Content-Type`` header ("" if absent).
        body: the whole body.
        headers: the request headers with lower-case names (for metadata).

    Returns:
        A ``ConnectRequest``, ``ConnectedRequest``, ``DisconnectedRequest``,
        ``GroupJoinedRequest``, ``GroupLeftRequest`` or ``UserEventRequest``.

    Raises:
        EventHandlerError: 400 for a body that does not fit the event.
    """
    if route.kind is EventKind.CONNECT:
        return _connect_request(context, body)
    if route.kind is EventKind.CONNECTED:
        return ConnectedRequest(context)
    if route.kind is EventKind.JOINED or route.kind is EventKind.LEFT:
        group = _json_object(body, route.kind.value).get("group")
        if not isinstance(group, str) or not group:
            raise EventHandlerError(400, f"The {route.kind.value} event needs a 'group' string.")
        if route.kind is EventKind.JOINED:
            return GroupJoinedRequest(context, group)
        return GroupLeftRequest(context, group)
    if route.kind is EventKind.DISCONNECTED:
        data = _json_object(body, "disconnected")
        reason = data.get("reason")
        return DisconnectedRequest(
            context, reason if isinstance(reason, str) and reason else None, data
        )
    metadata = None
    if headers is not None:
        prefix = HEADER_PREFIX
        metadata = {
            name[len(prefix) :].lower(): value.rsplit(",", 1)[-1].strip()
            for name, value in headers.items()
            if name.lower().startswith(prefix) and len(name) > len(prefix)
        }
    return _user_event_request(context, content_type, body, metadata)


def _connect_request(context: ConnectionContext, body: bytes) -> ConnectRequest:
    data = _json_object(body, "connect")
    subprotocols = data.get("subprotocols") or []
    if not isinstance(subprotocols, list) or not all(isinstance(s, str) for s in subprotocols):
        raise EventHandlerError(400, "'subprotocols' in the connect event must be strings.")
    certificates = data.get("clientCertificates") or []
    if not isinstance(certificates, list) or not all(isinstance(c, dict) for c in certificates):
        raise EventHandlerError(400, "'clientCertificates' in the connect event must be objects.")
    return ConnectRequest(
        context,
        claims=_string_lists(data, "claims"),
        query=_string_lists(data, "query"),
        headers=_string_lists(data, "headers"),
        subprotocols=list(subprotocols),
        client_certificates=[
            ClientCertificate(str(c.get("thumbprint") or ""), str(c.get("content") or ""))
            for c in certificates
        ],
        body=data,
    )


def _user_event_request(
    context: ConnectionContext,
    content_type: str,
    body: bytes,
    metadata: Mapping[str, str] | None,
) -> UserEventRequest:
    # Spec 5.8: the media type alone decides, parameters after ';' do not matter.
    media = content_type.split(";", 1)[0].strip().lower()
    data: Any
    if media == "text/plain":
        data_type = DataType.TEXT
        try:
            data = body.decode("utf-8")
        except UnicodeDecodeError:
            raise EventHandlerError(400, "The text body is not valid UTF-8.") from None
    elif media == "application/json":
        data_type = DataType.JSON
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise EventHandlerError(400, "The JSON body is not valid JSON.") from None
    else:
        # Binary frames, and types express ignores (application/x-protobuf, none): raw bytes.
        data_type = DataType.BINARY
        data = body
    return UserEventRequest(context, data, data_type, body, content_type, metadata or {})


def _json_object(body: bytes, event: str) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise EventHandlerError(400, f"The {event} event body is not valid JSON.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EventHandlerError(400, f"The {event} event body is not a JSON object.")
    return data


def _string_lists(data: Mapping[str, Any], name: str) -> dict[str, list[str]]:
    """A ``string -> string[]`` map of the connect body (spec 5.5), tolerating scalars."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventHandlerError(400, f"'{name}' in the connect event must be an object.")
    result: dict[str, list[str]] = {}
    for key, items in value.items():
        values = items if isinstance(items, list) else [items]
        result[key] = [item if isinstance(item, str) else json.dumps(item) for item in values]
    return result


# -- answers (spec 5.5-5.9) -------------------------------------------------------------------


def answer(request: Request, result: object) -> HttpResponse:
    """Turn what a handler returned into the HTTP answer the service expects.

    Args:
        request: the request the handler was given.
        result: what it returned.

    Returns:
        The answer: 204 or 200 JSON for ``connect``; 204 or 200 data for user events; an
        empty 200 for ``connected`` and ``disconnected``. Changed connection states go in a
        ``ce-connectionState`` header (blocking events only).

    Raises:
        TypeError: for a result of the wrong type (a bug in the handler).
        ValueError: for a ``ConnectResponse`` choosing a subprotocol the client did not offer.
    """
    headers = _state_headers(request.context)
    if isinstance(request, ConnectRequest):
        if result is None:
            return HttpResponse(204, headers)
        if not isinstance(result, ConnectResponse):
            raise TypeError(
                f"handle_connect must return a ConnectResponse or None, not {type(result).__name__}"
            )
        if result.subprotocol is not None and result.subprotocol not in request.subprotocols:
            raise ValueError(
                f"handle_connect chose subprotocol {result.subprotocol!r}, which the client did "
                f"not offer (it offered {request.subprotocols!r})"
            )
        body = json.dumps(result.to_json(), separators=(",", ":")).encode("utf-8")
        return HttpResponse(200, (*headers, ("Content-Type", JSON_CONTENT_TYPE)), body)
    if isinstance(request, UserEventRequest):
        if result is None:
            return HttpResponse(204, headers)
        if isinstance(result, str):
            result = UserEventResponse.text(result)
        elif isinstance(result, bytes | bytearray | memoryview):
            result = UserEventResponse.binary(result)
        elif not isinstance(result, UserEventResponse):
            raise TypeError(
                "handle_user_event must return a UserEventResponse, str, bytes or None, "
                f"not {type(result).__name__}"
            )
        if result.metadata:
            headers = (*headers, *to_headers(result.metadata))
        return HttpResponse(200, (*headers, ("Content-Type", result.content_type)), result.content)
    # connected / disconnected / joined / left: the service ignores the answer (spec 5.6, 5.7).
    return EMPTY_OK


def error_answer(error: EventHandlerError) -> HttpResponse:
    """The answer to a refused event: its status and text detail (spec 5.5, 5.8).

    Args:
        error: the refusal.

    Returns:
        The answer.
    """
    return HttpResponse.text(error.status, error.detail)


def _state_headers(context: ConnectionContext) -> tuple[tuple[str, str], ...]:
    if not context.states_changed:
        return ()  # an absent header keeps the state the service has (spec 5.9)
    return ((STATE_HEADER, encode_states(context.states)),)
