"""What the client tells its application: lifecycle events and the results of operations.

One frozen dataclass per event of the official JS client (``connected``, ``disconnected``,
``stopped``, ``rejoin-group-failed``); messages are the codecs' own
:class:`~webpubsub.protocols.downstream.GroupMessage` and
:class:`~webpubsub.protocols.downstream.ServerMessage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.message import DataType
from ..protocols.downstream import GroupMessage, GroupStates, ServerMessage
from ._errors import SendMessageError


@dataclass(frozen=True, slots=True)
class ConnectedEvent:
    """A new connection is ready, and the groups it had joined before are rejoined.

    Fired once per connection: not after a reliable connection recovers (it is the same
    connection), but again after a reconnect, which gets a new ``connection_id``.
    """

    connection_id: str
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class DisconnectedEvent:
    """The connection ended and could not be recovered (or the client is stopping).

    Attributes:
        connection_id: the connection that ended (None if it never got one).
        message: the reason from the service's ``disconnected`` message, if it sent one.
        close_code: the WebSocket close code (1006 when the TCP connection just dropped).
    """

    connection_id: str | None
    message: str | None = None
    close_code: int | None = None


@dataclass(frozen=True, slots=True)
class StoppedEvent:
    """The client stopped: :meth:`stop` was called, or it gave up reconnecting."""


@dataclass(frozen=True, slots=True)
class RejoinGroupFailedEvent:
    """A group could not be rejoined after a reconnect (``auto_rejoin_groups``)."""

    group: str
    error: SendMessageError


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """The answer to :meth:`~webpubsub.client.WebPubSubClient.invoke_event`.

    Attributes:
        invocation_id: the id the client gave the invocation.
        data: the event handler's answer, decoded as for messages (None: it answered
            nothing).
        data_type: its type (None with no answer).
        metadata: string pairs the handler sent back (``X-WebPubSub-Metadata-*``), if any.
    """

    invocation_id: str
    data: Any = None
    data_type: DataType | None = None
    metadata: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class AckResult:
    """The outcome of an operation the service acknowledged.

    Attributes:
        ack_id: the ackId of the request (None for a fire-and-forget send).
        is_duplicated: the service had already processed this ackId: the request was
            resent after a lost connection, and it had gone through the first time.
    """

    ack_id: int | None
    is_duplicated: bool = False


ClientEvent = (
    ConnectedEvent
    | DisconnectedEvent
    | StoppedEvent
    | RejoinGroupFailedEvent
    | GroupMessage
    | ServerMessage
    | GroupStates
)
"""Every event an application can subscribe to."""

EVENT_TYPES: dict[str, type[ClientEvent]] = {
    "connected": ConnectedEvent,
    "disconnected": DisconnectedEvent,
    "stopped": StoppedEvent,
    "group-message": GroupMessage,
    "server-message": ServerMessage,
    "rejoin-group-failed": RejoinGroupFailedEvent,
    "group-states-changed": GroupStates,
}
"""Event names, as the JS client spells them, and the type their handlers receive."""
