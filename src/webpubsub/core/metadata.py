"""Message metadata (spec-next 3): a small string map that travels with a message.

One set of rules wherever metadata enters: client frames (``metadata`` object),
REST sends and upstream answers (``X-WebPubSub-Metadata-<key>`` headers). Limits are the
emulator's (3.2): keys are HTTP tokens of 1..256 characters, values ASCII of at most 1,024
characters with no control character but tab (they become header values upstream), keys and
values together at most 8,192 characters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

HEADER_PREFIX = "x-webpubsub-metadata-"
MAX_KEY = 256
MAX_VALUE = 1024
MAX_TOTAL = 8192

_TOKEN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~")

Metadata = Mapping[str, str]


class MetadataError(ValueError):
    """Metadata that breaks a rule; the message says which."""


def _check_pair(key: Any, value: Any) -> None:
    if not isinstance(key, str) or not key:
        raise MetadataError("metadata keys must be non-empty strings")
    if len(key) > MAX_KEY:
        raise MetadataError(f"metadata key {key[:40]!r}... is longer than {MAX_KEY} characters")
    if not _TOKEN.issuperset(key):
        raise MetadataError(
            f"metadata key {key[:64]!r} may hold only letters, digits and !#$%&'*+-.^_`|~"
        )
    if not isinstance(value, str):
        raise MetadataError(f"metadata value of {key!r} must be a string")
    if len(value) > MAX_VALUE:
        raise MetadataError(f"metadata value of {key!r} is longer than {MAX_VALUE} characters")
    if not value.isascii() or any((c < " " and c != "\t") or c == "\x7f" for c in value):
        raise MetadataError(
            f"metadata value of {key!r} must be printable ASCII (no control characters)"
        )


def check_pairs(pairs: Iterable[tuple[Any, Any]]) -> dict[str, str] | None:
    """Validate key/value pairs (in order, duplicates refused); None when there are none."""
    result: dict[str, str] = {}
    total = 0
    for key, value in pairs:
        _check_pair(key, value)
        if key in result:
            raise MetadataError(f"metadata key {key!r} appears twice")
        result[key] = value
        total += len(key) + len(value)
        if total > MAX_TOTAL:
            raise MetadataError(f"metadata is longer than {MAX_TOTAL} characters in all")
    return result or None


def from_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str] | None:
    """Metadata from ``X-WebPubSub-Metadata-*`` headers (spec-next 3.3): keys lowercased,
    the last header of a name wins, and of a value folded with commas the last part, trimmed.

    Raises MetadataError for a bad key or value (an empty key from a bare prefix included).
    """
    found: dict[str, str] = {}
    for name, value in headers:
        if len(name) >= len(HEADER_PREFIX) and name[: len(HEADER_PREFIX)].lower() == HEADER_PREFIX:
            key = name[len(HEADER_PREFIX) :].lower()
            if not key:
                raise MetadataError("a metadata header needs a key after X-WebPubSub-Metadata-")
            found[key] = value.rsplit(",", 1)[-1].strip()
    return check_pairs(found.items())


def to_headers(metadata: Metadata | None) -> list[tuple[str, str]]:
    """``X-WebPubSub-Metadata-<key lowercased>`` headers; keys equal but for case collapse,
    the last one wins (spec-next 3.5)."""
    if not metadata:
        return []
    lowered = {key.lower(): value for key, value in metadata.items()}
    return [(f"X-WebPubSub-Metadata-{key}", value) for key, value in lowered.items()]
