"""An asyncio client of the Web PubSub client protocols (spec 4), for apps, bots and tests.

It speaks the four PubSub subprotocols with the codecs the service itself uses, and behaves
like the official JS client (``@azure/web-pubsub-client``): acks, recovery of dropped
connections on the reliable protocols, reconnection with backoff, automatic rejoin::

    from webpubsub.client import WebPubSubClient

    async with WebPubSubClient(client_access_url) as client:
        client.on("group-message", lambda m: print(m.from_user_id, m.data))
        await client.join_group("chat")
        await client.send_to_group("chat", {"text": "hi"}, "json")

See ``docs/client.md`` for the whole story.
"""

from ..core.message import DataType
from ..protocols.downstream import (
    GroupMessage,
    GroupStateEntry,
    GroupStates,
    Payload,
    ServerMessage,
)
from ._client import USE_CLIENT_DEFAULT, ClientCredential, UseClientDefault, WebPubSubClient
from ._core import ClientCore, ClientOptions, ReconnectPolicy, State
from ._errors import (
    AckError,
    ClientStoppedError,
    ConnectError,
    Forbidden,
    InternalServerError,
    InvalidMessage,
    InvocationError,
    MessageStreamOverflow,
    SendMessageError,
    SendTimeoutError,
    WebPubSubClientError,
)
from ._events import (
    AckResult,
    ClientEvent,
    ConnectedEvent,
    DisconnectedEvent,
    InvokeResult,
    RejoinGroupFailedEvent,
    StoppedEvent,
)
from ._stream import MessageStream
from ._streams import GroupStream, GroupStreamError, GroupStreams, GroupStreamWriter

__all__ = [
    "USE_CLIENT_DEFAULT",
    "AckError",
    "AckResult",
    "ClientCore",
    "ClientCredential",
    "ClientEvent",
    "ClientOptions",
    "ClientStoppedError",
    "ConnectError",
    "ConnectedEvent",
    "DataType",
    "DisconnectedEvent",
    "Forbidden",
    "GroupMessage",
    "GroupStateEntry",
    "GroupStates",
    "GroupStream",
    "GroupStreamError",
    "GroupStreamWriter",
    "GroupStreams",
    "InternalServerError",
    "InvalidMessage",
    "InvocationError",
    "InvokeResult",
    "MessageStream",
    "MessageStreamOverflow",
    "Payload",
    "ReconnectPolicy",
    "RejoinGroupFailedEvent",
    "SendMessageError",
    "SendTimeoutError",
    "ServerMessage",
    "State",
    "StoppedEvent",
    "UseClientDefault",
    "WebPubSubClient",
    "WebPubSubClientError",
]
