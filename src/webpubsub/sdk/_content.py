"""Turning a message into a REST send body and its Content-Type (spec 1.3)."""

from __future__ import annotations

import json
from typing import Any, Protocol, TypeGuard, runtime_checkable

__all__ = ["JSON", "OCTET_STREAM", "TEXT", "encode_message", "is_readable"]

JSON = "application/json"
TEXT = "text/plain"
OCTET_STREAM = "application/octet-stream"
MEDIA_TYPES = (JSON, TEXT, OCTET_STREAM)


@runtime_checkable
class Readable(Protocol):
    """A file-like object: anything with ``read()``."""

    def read(self) -> Any: ...


def is_readable(message: object) -> TypeGuard[Readable]:
    """True for file-like messages (read in full before sending)."""
    return not isinstance(message, str | bytes | bytearray | memoryview) and callable(
        getattr(message, "read", None)
    )


def media_type(content_type: str | None) -> str | None:
    """The media type of ``content_type`` without parameters, checked against the three the
    service maps to data types.

    Raises:
        ValueError: for any other type.
    """
    if content_type is None:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise ValueError(
            f"Unsupported content_type {content_type!r}: use 'application/json', "
            "'text/plain' or 'application/octet-stream'."
        )
    return media


def encode_message(message: object, content_type: str | None) -> tuple[bytes, str]:
    """The body and Content-Type of a send.

    * ``bytes`` / ``bytearray`` / ``memoryview``: sent as is, ``application/octet-stream``
      unless ``content_type`` says otherwise (e.g. pre-serialised JSON);
    * ``str`` with ``content_type="text/plain"`` or ``"application/octet-stream"``: its UTF-8;
    * anything else (dicts, lists, numbers, ``None``, ``str`` by default): JSON text.

    File-like messages are read by the client first (see :func:`is_readable`).

    Raises:
        TypeError: when the message cannot be encoded as the content type asks.
        ValueError: for an unsupported content type.
    """
    media = media_type(content_type)
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message), content_type or OCTET_STREAM
    if media in (TEXT, OCTET_STREAM):
        if isinstance(message, str):
            return message.encode("utf-8"), content_type or TEXT
        raise TypeError(
            f"A {media} message must be str or bytes-like, not {type(message).__name__}."
        )
    try:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"The message is not JSON-serialisable ({exc}); pass bytes with "
            "content_type='application/octet-stream' or a str with content_type='text/plain'."
        ) from None
    return text.encode("utf-8"), content_type or JSON


def read_body(data: object) -> bytes | str:
    """Check what a file-like object's ``read()`` returned."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        return data
    raise TypeError(f"read() of a file-like message returned {type(data).__name__}, not bytes.")
