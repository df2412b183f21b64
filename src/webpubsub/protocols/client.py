"""The client side of the PubSub subprotocols: the same codec objects, seen from a client.

The service's codecs (:data:`~webpubsub.protocols.JSON`, ``RELIABLE_JSON``, ``PROTOBUF``,
``RELIABLE_PROTOBUF``) also encode client requests (``encode_request``) and decode service
messages (``decode_downstream``), so one class per subprotocol holds both directions and the
two ends cannot drift apart. :class:`ClientCodec` is that client-facing view.
"""

from __future__ import annotations

from typing import Protocol

from ..core.requests import ClientRequest
from .downstream import Downstream
from .json import JSON, RELIABLE_JSON
from .protobuf import PROTOBUF, RELIABLE_PROTOBUF


class ClientCodec(Protocol):
    """What a client needs from a subprotocol codec."""

    @property
    def subprotocol(self) -> str | None:
        """The ``Sec-WebSocket-Protocol`` value the client offers."""

    @property
    def is_reliable(self) -> bool:
        """Whether the subprotocol has sequence ids and recovery (spec 4.7)."""

    @property
    def text_frames(self) -> bool:
        """Whether requests go in text frames (JSON) rather than binary ones (protobuf)."""

    def encode_request(self, request: ClientRequest) -> bytes:
        """The frame payload for one request."""
        ...

    def decode_downstream(self, data: bytes | str) -> Downstream | None:
        """One service message, or None for a message the client does not know."""
        ...


CLIENT_CODECS: dict[str, ClientCodec] = {
    codec.subprotocol or "": codec for codec in (RELIABLE_JSON, JSON, RELIABLE_PROTOBUF, PROTOBUF)
}
"""Client codecs by subprotocol name, the SDKs' default (reliable JSON) first."""


def client_codec(subprotocol: str) -> ClientCodec:
    """The codec of a PubSub subprotocol.

    Args:
        subprotocol: one of ``json.reliable.webpubsub.azure.v1``, ``json.webpubsub.azure.v1``,
            ``protobuf.reliable.webpubsub.azure.v1``, ``protobuf.webpubsub.azure.v1``.

    Returns:
        The codec.

    Raises:
        ValueError: for any other name.
    """
    try:
        return CLIENT_CODECS[subprotocol]
    except KeyError:
        known = ", ".join(CLIENT_CODECS)
        raise ValueError(f"unknown subprotocol {subprotocol!r} (known: {known})") from None


__all__ = ["CLIENT_CODECS", "ClientCodec", "client_codec"]
