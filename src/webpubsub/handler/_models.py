"""The values the event handler passes to your handlers and the answers they return (spec 5).

Requests (``ConnectRequest``, ``ConnectedRequest``, ``UserEventRequest``,
``DisconnectedRequest``) are built from one CloudEvents HTTP request each; every one carries a
``ConnectionContext`` that says which connection the event is about and holds its connection
state. Answers (``ConnectResponse``, ``UserEventResponse``) are plain values that the handler
turns into the HTTP response the service expects.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from ..core.metadata import MetadataError, check_pairs

__all__ = [
    "ClientCertificate",
    "ConnectRequest",
    "ConnectResponse",
    "ConnectedRequest",
    "ConnectionContext",
    "DataType",
    "DisconnectedRequest",
    "GroupJoinedRequest",
    "GroupLeftRequest",
    "UserEventRequest",
    "UserEventResponse",
    "decode_states",
    "encode_states",
]


class DataType(StrEnum):
    """How the body of a user event, or of its answer, is to be read (spec 5.8)."""

    TEXT = "text"
    JSON = "json"
    BINARY = "binary"

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` the service maps to this data type."""
        return _CONTENT_TYPES[self]


_CONTENT_TYPES = {
    DataType.TEXT: "text/plain; charset=utf-8",
    DataType.JSON: "application/json; charset=utf-8",
    DataType.BINARY: "application/octet-stream",
}


def encode_states(states: Mapping[str, Any]) -> str:
    """Encode connection states the way the SDKs do: base64 of a JSON object (spec 5.9).

    Args:
        states: JSON-serialisable values by name.

    Returns:
        The ``ce-connectionState`` header value.

    Raises:
        TypeError: if a value cannot be serialised to JSON.
    """
    text = json.dumps(dict(states), separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_states(value: str | None) -> dict[str, Any]:
    """Decode a ``ce-connectionState`` header; anything but base64 of a JSON object gives ``{}``.

    The service stores the state as an opaque string, so a value some other app wrote (or no
    value at all) is not an error: like ``@azure/web-pubsub-express`` it reads as no states.

    Args:
        value: the header value, or None when the header is absent.

    Returns:
        The states by name (a new dict).
    """
    if not value:
        return {}
    try:
        decoded = json.loads(base64.b64decode(value.strip(), validate=True).decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


class ConnectionContext:
    """The connection an event is about, and its connection state.

    One context comes with every request. Its identity attributes are read from the CloudEvents
    headers (spec 5.3); its states are the ``ce-connectionState`` header decoded as base64 JSON
    (spec 5.9). While answering ``connect`` or a user event, ``set_state``, ``delete_state`` and
    ``clear_states`` change the states, and the answer carries them back to the service, which
    sends them with every later event of the connection.

    Attributes:
        hub: the hub (``ce-hub``).
        connection_id: the connection (``ce-connectionId``).
        event_name: ``connect``, ``connected``, ``disconnected`` or the user event's name.
        user_id: the user (``ce-userId``), or None for an anonymous connection.
        subprotocol: the subprotocol the connection uses, or None (never set on ``connect``).
        origin: the service host (``WebHook-Request-Origin``).
        signature: the ``ce-signature`` header as received, or None.
        event_id: the CloudEvents id (``ce-id``), or None.
    """

    def __init__(
        self,
        *,
        hub: str,
        connection_id: str,
        event_name: str,
        user_id: str | None = None,
        subprotocol: str | None = None,
        origin: str = "",
        signature: str | None = None,
        event_id: str | None = None,
        states: Mapping[str, Any] | None = None,
        writable: bool = True,
    ) -> None:
        """Build a context (the event handler does this; tests of your handlers may too).

        Args:
            hub: the hub.
            connection_id: the connection.
            event_name: the event's name.
            user_id: the user, if any.
            subprotocol: the connection's subprotocol, if any.
            origin: the service host.
            signature: the ``ce-signature`` value.
            event_id: the CloudEvents id.
            states: the current connection states.
            writable: whether the answer to this event can change the states (only
                ``connect`` and user events can, spec 5.9).
        """
        self.hub = hub
        self.connection_id = connection_id
        self.event_name = event_name
        self.user_id = user_id
        self.subprotocol = subprotocol
        self.origin = origin
        self.signature = signature
        self.event_id = event_id
        self._states: dict[str, Any] = dict(states or {})
        self._writable = writable
        self._states_changed = False

    def __repr__(self) -> str:
        return (
            f"ConnectionContext(hub={self.hub!r}, connection_id={self.connection_id!r}, "
            f"event_name={self.event_name!r}, user_id={self.user_id!r}, "
            f"states={self._states!r})"
        )

    @property
    def states(self) -> Mapping[str, Any]:
        """The connection states by name (a read-only view; change them with ``set_state``)."""
        return MappingProxyType(self._states)

    @property
    def states_changed(self) -> bool:
        """Whether a handler changed the states, so the answer must carry them."""
        return self._states_changed

    def get_state(self, name: str, default: Any = None) -> Any:
        """Read one connection state.

        Args:
            name: the state's name.
            default: what to return when the state is not set.

        Returns:
            The state's value, or ``default``.
        """
        return self._states.get(name, default)

    def set_state(self, name: str, value: Any) -> None:
        """Set one connection state, kept by the service for the connection's lifetime.

        Args:
            name: the state's name.
            value: any JSON-serialisable value.

        Raises:
            TypeError: if ``name`` is not a string or ``value`` is not JSON-serialisable.
            RuntimeError: when answering ``connected`` or ``disconnected``, whose answers
                cannot change the state.
        """
        self._check_writable()
        if not isinstance(name, str):
            raise TypeError(f"a state name must be a str, not {type(name).__name__}")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"state {name!r} must be JSON-serialisable: {exc}") from None
        self._states[name] = value
        self._states_changed = True

    def delete_state(self, name: str) -> None:
        """Remove one connection state (nothing happens if it is not set).

        Args:
            name: the state's name.

        Raises:
            RuntimeError: when answering ``connected`` or ``disconnected``.
        """
        self._check_writable()
        if name in self._states:
            del self._states[name]
            self._states_changed = True

    def clear_states(self) -> None:
        """Remove every connection state.

        Raises:
            RuntimeError: when answering ``connected`` or ``disconnected``.
        """
        self._check_writable()
        self._states.clear()
        self._states_changed = True

    def _check_writable(self) -> None:
        if not self._writable:
            raise RuntimeError(
                f"the connection state cannot change in answer to {self.event_name!r}: "
                "only connect and user events can set it (spec 5.9)"
            )


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A client certificate presented to the service (``connect`` with mTLS enabled).

    Attributes:
        thumbprint: the certificate's SHA-1 thumbprint.
        content: the PEM text, or "" when the service did not send it.
    """

    thumbprint: str
    content: str = ""


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A client is connecting: accept it (and say who it is) or refuse it (spec 5.5).

    Attributes:
        context: the connection and its state.
        claims: the claims of the client's access token, each a list of strings.
        query: the query parameters of the client's URL, each a list of strings (the access
            token may be among them).
        headers: the headers of the client's WebSocket upgrade request, each a list.
        subprotocols: the subprotocols the client offered, in its order.
        client_certificates: the client's certificates, when mTLS is enabled.
        body: the whole JSON body, for fields not modelled here (e.g. ``mqtt``).
    """

    context: ConnectionContext
    claims: Mapping[str, list[str]] = field(default_factory=dict)
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, list[str]] = field(default_factory=dict)
    subprotocols: list[str] = field(default_factory=list)
    client_certificates: list[ClientCertificate] = field(default_factory=list)
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConnectedRequest:
    """A client finished connecting (spec 5.6). The answer cannot affect the client.

    Attributes:
        context: the connection and its state.
    """

    context: ConnectionContext


@dataclass(frozen=True, slots=True)
class GroupJoinedRequest:
    """The connection joined a group (``azure.webpubsub.gp.joined``): a notification sent
    only when the hub's event handler asks for group presence events.

    Attributes:
        context: the connection and its state.
        group: the group it joined.
    """

    context: ConnectionContext
    group: str


@dataclass(frozen=True, slots=True)
class GroupLeftRequest:
    """The connection left a group (``azure.webpubsub.gp.left``), also once per group when the
    connection ends; sent only when the hub's event handler asks for it.

    Attributes:
        context: the connection and its state.
        group: the group it left.
    """

    context: ConnectionContext
    group: str


@dataclass(frozen=True, slots=True)
class DisconnectedRequest:
    """A connection ended (spec 5.7). The answer cannot affect the client.

    Attributes:
        context: the connection and its state.
        reason: why it ended, or None (a normal close often gives no reason).
        body: the whole JSON body, for fields not modelled here (e.g. ``mqtt``).
    """

    context: ConnectionContext
    reason: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UserEventRequest:
    """A client sent an event; the answer's data goes back to that client (spec 5.8).

    Attributes:
        context: the connection and its state; ``context.event_name`` names the event
            (``message`` for simple WebSocket clients).
        data: the data, decoded by ``data_type``: a ``str`` for text, the parsed value for
            JSON, ``bytes`` for binary.
        data_type: text, JSON or binary, from the request's ``Content-Type``.
        content: the body as received.
        content_type: the request's ``Content-Type`` as received ("" if absent); a type
            other than text, JSON or binary (e.g. ``application/x-protobuf``) arrives as
            binary data with this set.
        metadata: the message's metadata (``X-WebPubSub-Metadata-*`` headers), keys
            lowercased; empty when it has none.
    """

    context: ConnectionContext
    data: Any
    data_type: DataType
    content: bytes = b""
    content_type: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The body as UTF-8 text (undecodable bytes become U+FFFD)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """Parse the body as JSON, whatever its data type.

        Returns:
            The parsed value.

        Raises:
            ValueError: if the body is not JSON.
        """
        return json.loads(self.content)


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    """Accept a connection and say who it is (spec 5.5). Every field is optional.

    Returning None from ``handle_connect`` accepts the connection with what its access token
    says; returning a ``ConnectResponse`` overrides parts of it.

    Attributes:
        user_id: the connection's user, replacing the token's ``sub``.
        groups: groups the connection joins right after connecting.
        roles: roles (permissions) replacing the token's roles; an empty list removes them all,
            None keeps the token's.
        subprotocol: the subprotocol to use; it must be one of ``request.subprotocols``.

    Raises:
        TypeError: if a field has the wrong type.
        ValueError: if ``user_id`` or ``subprotocol`` is empty, or a group name is empty.
    """

    user_id: str | None = None
    groups: Iterable[str] | None = None
    roles: Iterable[str] | None = None
    subprotocol: str | None = None

    def __post_init__(self) -> None:
        for name in ("user_id", "subprotocol"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
            if not value:
                raise ValueError(f"{name} must not be empty (leave it None instead)")
        for name in ("groups", "roles"):
            values = getattr(self, name)
            if values is None:
                continue
            if isinstance(values, str | bytes):
                raise TypeError(
                    f"{name} must be a list of str, not a single {type(values).__name__}"
                )
            items = tuple(values)
            if not all(isinstance(item, str) for item in items):
                raise TypeError(f"{name} must hold only str")
            if name == "groups" and not all(items):
                raise ValueError("group names must not be empty")
            object.__setattr__(self, name, items)

    def to_json(self) -> dict[str, Any]:
        """The response body the service expects: camelCase keys, unset fields left out.

        Returns:
            A JSON-serialisable dict.
        """
        body: dict[str, Any] = {}
        if self.user_id is not None:
            body["userId"] = self.user_id
        if self.groups is not None:
            body["groups"] = list(self.groups)
        if self.roles is not None:
            body["roles"] = list(self.roles)
        if self.subprotocol is not None:
            body["subprotocol"] = self.subprotocol
        return body


@dataclass(frozen=True, slots=True)
class UserEventResponse:
    """Data to send back to the client that sent a user event (spec 5.8).

    Build one with ``UserEventResponse.text(...)``, ``.json(...)`` or ``.binary(...)``.
    Returning None from ``handle_user_event`` sends nothing back; returning a ``str`` or
    ``bytes`` is short for ``text`` or ``binary``.

    Attributes:
        content: the body to send.
        data_type: how the client is to read it.
    """

    content: bytes = b""
    data_type: DataType = DataType.BINARY
    metadata: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.content, bytes | bytearray | memoryview):
            raise TypeError(f"content must be bytes, not {type(self.content).__name__}")
        object.__setattr__(self, "content", bytes(self.content))
        object.__setattr__(self, "data_type", DataType(self.data_type))
        if self.metadata is not None:
            try:
                checked = check_pairs(dict(self.metadata).items())
            except MetadataError as exc:
                raise ValueError(f"invalid metadata: {exc}") from None
            if checked and any("," in value for value in checked.values()):
                raise ValueError("metadata values cannot hold a comma (they travel as headers)")
            object.__setattr__(self, "metadata", checked)

    def with_metadata(self, metadata: Mapping[str, str]) -> UserEventResponse:
        """The same answer with metadata: the client receives it with the message (keys
        lowercased). An empty ``content`` with metadata still sends the client a message
        (empty text).

        Args:
            metadata: string pairs (letters, digits and ``!#$%&'*+-.^_`|~`` in keys; ASCII
                values without commas).

        Returns:
            The answer.

        Raises:
            ValueError: for metadata the service would refuse.
        """
        return UserEventResponse(self.content, self.data_type, metadata)

    @classmethod
    def text(cls, text: str) -> UserEventResponse:
        """Answer with text (``text/plain``; the client receives ``dataType: text``).

        Args:
            text: the text.

        Returns:
            The answer.

        Raises:
            TypeError: if ``text`` is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        return cls(text.encode("utf-8"), DataType.TEXT)

    @classmethod
    def json(cls, value: Any) -> UserEventResponse:
        """Answer with JSON (``application/json``; the client receives ``dataType: json``).

        Args:
            value: any JSON-serialisable value.

        Returns:
            The answer.

        Raises:
            TypeError: if ``value`` is not JSON-serialisable.
        """
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        except ValueError as exc:
            raise TypeError(f"the value is not JSON-serialisable: {exc}") from None
        return cls(text.encode("utf-8"), DataType.JSON)

    @classmethod
    def binary(cls, data: bytes | bytearray | memoryview) -> UserEventResponse:
        """Answer with bytes (``application/octet-stream``; ``dataType: binary``).

        Args:
            data: the bytes.

        Returns:
            The answer.

        Raises:
            TypeError: if ``data`` is not bytes-like.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        return cls(bytes(data), DataType.BINARY)

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` of the answer."""
        return self.data_type.content_type
