"""Pure codecs of the client subprotocols (spec 4).

Bytes in, requests out; messages in, frames out.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.connection import Codec
from .json import JSON, RELIABLE_JSON
from .protobuf import PROTOBUF, RELIABLE_PROTOBUF
from .raw import RAW

# Predefined PubSub subprotocols (spec 4.1), and the codecs this service implements.
PUBSUB_SUBPROTOCOLS = (
    "json.webpubsub.azure.v1",
    "json.reliable.webpubsub.azure.v1",
    "protobuf.webpubsub.azure.v1",
    "protobuf.reliable.webpubsub.azure.v1",
)
CODECS: dict[str, Codec] = {
    codec.subprotocol or "": codec for codec in (JSON, RELIABLE_JSON, PROTOBUF, RELIABLE_PROTOBUF)
}


def select_codec(offered: Sequence[str]) -> Codec | None:
    """The codec for the first supported PubSub subprotocol offered; RAW when none is predefined.

    Returns None when the client offers only predefined subprotocols that this service does
    not implement, so the handshake can be refused with a clear error.
    """
    predefined = [name for name in offered if name in PUBSUB_SUBPROTOCOLS]
    for name in predefined:
        codec = CODECS.get(name)
        if codec is not None:
            return codec
    return None if predefined else RAW


__all__ = [
    "CODECS",
    "JSON",
    "PROTOBUF",
    "PUBSUB_SUBPROTOCOLS",
    "RAW",
    "RELIABLE_JSON",
    "RELIABLE_PROTOBUF",
    "select_codec",
]
