"""The public names of ``webpubsub.client``: a change here is a change of the public API."""

from __future__ import annotations

import webpubsub.client
from webpubsub.client import WebPubSubClient, WebPubSubClientError
from webpubsub.core.errors import WebPubSubError

EXPORTED = {
    "AckError",
    "AckResult",
    "ClientCredential",
    "ClientEvent",
    "ClientOptions",
    "ClientCore",
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
    "USE_CLIENT_DEFAULT",
    "UseClientDefault",
    "WebPubSubClient",
    "WebPubSubClientError",
}


def test_exported_names() -> None:
    assert set(webpubsub.client.__all__) == EXPORTED
    for name in EXPORTED:
        assert hasattr(webpubsub.client, name), name


def test_every_error_is_a_webpubsub_error() -> None:
    errors = [
        getattr(webpubsub.client, name)
        for name in EXPORTED
        if isinstance(getattr(webpubsub.client, name), type)
        and issubclass(getattr(webpubsub.client, name), BaseException)
    ]
    assert len(errors) == 12
    assert all(issubclass(error, WebPubSubClientError) for error in errors)
    assert issubclass(WebPubSubClientError, WebPubSubError)


def test_public_methods_are_documented() -> None:
    for name in dir(WebPubSubClient):
        member = getattr(WebPubSubClient, name)
        if not name.startswith("_") and callable(member):
            assert member.__doc__, name
    for name in ("join_group", "leave_group", "send_to_group", "send_event", "start"):
        doc = getattr(WebPubSubClient, name).__doc__
        assert "Raises:" in doc, name
