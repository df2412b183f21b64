"""The message model: what travels from a publisher to connections (spec 1.3, 4.4).

A :class:`Message` holds the payload once, as bytes, with its data type. Codecs in
``webpubsub.protocols`` turn it into one frame per (subprotocol, data type), so a broadcast
encodes each variant once whatever the number of recipients.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from . import jsontext
from .errors import BadRequest, UnsupportedMediaType
from .streams import StreamMark


class DataType(StrEnum):
    """``dataType`` of the JSON protocols."""

    TEXT = "text"
    JSON = "json"
    BINARY = "binary"
    PROTOBUF = "protobuf"


class Source(StrEnum):
    """``from`` of a downstream ``message``: REST send/upstream reply, or a group."""

    SERVER = "server"
    GROUP = "group"


CONTENT_TYPES = {
    "text/plain": DataType.TEXT,
    "application/json": DataType.JSON,
    "application/octet-stream": DataType.BINARY,
}
CONTENT_TYPE_OF = {
    DataType.TEXT: "text/plain",
    DataType.JSON: "application/json",
    DataType.BINARY: "application/octet-stream",
    DataType.PROTOBUF: "application/x-protobuf",
}


def data_type_for(content_type: str | None) -> DataType:
    """Map a REST ``Content-Type`` to a data type (spec 1.3); parameters such as charset ignored."""
    if not content_type:
        raise UnsupportedMediaType(
            "Content-Type is required: use text/plain, application/json or "
            "application/octet-stream.",
            target="Content-Type",
        )
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        return CONTENT_TYPES[media]
    except KeyError:
        raise UnsupportedMediaType(
            f"Unsupported Content-Type '{content_type[:100]}': use text/plain, "
            "application/json or application/octet-stream.",
            target="Content-Type",
        ) from None


@dataclass(frozen=True, slots=True)
class MqttExtras:
    """What an MQTT 5.0 PUBLISH carries to other MQTT clients only (mqtt spec 4.6)."""

    user_properties: tuple[tuple[str, str], ...] = ()
    correlation_data: bytes | None = None
    response_topic: str | None = None
    payload_format_indicator: int | None = None
    origin: str | None = None  # the publishing client id, for No Local (mqtt spec 3.4)
    content_type: str | None = None  # as the publisher set it, not derived from the data type


@dataclass(frozen=True, slots=True)
class Message:
    """One payload addressed to connections.

    ``data`` is the payload as it travels to a simple (raw) client: UTF-8 text for ``text``,
    the JSON text for ``json``, bytes for ``binary``/``protobuf``.
    """

    data: bytes
    data_type: DataType
    source: Source = Source.SERVER
    group: str | None = None
    from_user_id: str | None = None
    # Metadata (spec-next 3), validated where it entered; None when the message has none.
    metadata: Mapping[str, str] | None = None
    # TTL (spec-next 4): wall-clock time (time.time()) after which the message is not
    # written to a connection any more; None: never expires.
    expires: float | None = None
    # A group stream's fragment or terminal frame (spec-next 2.2): its ``stream`` descriptor.
    stream: StreamMark | None = None
    # The QoS of an MQTT PUBLISH (mqtt spec 4.3); None: sent by REST or a Web PubSub client,
    # which MQTT subscribers receive at QoS 1 at most.
    qos: int | None = None
    mqtt: MqttExtras | None = None
    # Encoded frames by codec key; filled lazily while fanning out (see protocols.frame_for).
    frames: dict[object, bytes] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_rest(cls, body: bytes, content_type: str | None) -> Message:
        """Build a message from a REST send body, checking it matches its type (spec 1.3)."""
        data_type = data_type_for(content_type)
        if data_type is DataType.JSON:
            check_json(body)
        elif data_type is DataType.TEXT:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("A text/plain body must be valid UTF-8.") from None
        return cls(body, data_type)

    def with_source(self, source: Source, group: str | None) -> Message:
        """The same payload addressed from another source (frames are not shared)."""
        return dataclasses.replace(self, source=source, group=group, frames={})


def check_json(body: bytes) -> None:
    """Refuse a body that is not JSON every client can read (the same rule as client frames:
    no NaN or Infinity, no number that overflows, no lone surrogate escape, bounded depth)."""
    try:
        jsontext.check(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("A JSON body must be valid UTF-8.", code="Error.InvalidJson") from None
    except jsontext.Refused as exc:
        raise BadRequest(
            f"The body is not JSON every client can read: {exc}", code="Error.InvalidJson"
        ) from None
    except (ValueError, RecursionError):
        raise BadRequest("The body is not valid JSON.", code="Error.InvalidJson") from None
