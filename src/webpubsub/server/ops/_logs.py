"""Structured logs: one line per connection opened or closed, as text or as JSON.

:class:`ConnectionLog` is an observer that logs each connection's start and end at INFO on
the ``webpubsub.connections`` logger, with the facts as ``extra`` fields (hub, connectionId,
userId, subprotocol, peer, reason). The text format shows them as ``key=value`` pairs in the
message; :class:`JsonFormatter` writes one JSON object per line with every extra field, which
log shippers index without parsing.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ...core.observe import Observer

if TYPE_CHECKING:
    from ...core.connection import Connection

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_text:  # first: a RedactingFilter may have masked secrets in it
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``--log-format`` (``text`` or ``json``)."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")


class ConnectionLog(Observer):
    """Logs one INFO line per connection opened and closed (``webpubsub.connections``)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("webpubsub.connections")

    def connection_opened(self, conn: Connection, peer: str) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        fields = _fields(conn)
        fields["peer"] = peer
        self.log.info("connection opened %s", _pairs(fields), extra=fields)

    def connection_closed(self, conn: Connection, reason: str) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        fields = _fields(conn)
        fields["reason"] = reason
        self.log.info("connection closed %s", _pairs(fields), extra=fields)

    def connection_moved(self, conn: Connection, arrived: bool) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        fields = _fields(conn)
        fields["direction"] = "in" if arrived else "out"
        what = "recovered here from another node" if arrived else "recovered through another node"
        self.log.info("connection %s %s", what, _pairs(fields), extra=fields)


def _fields(conn: Connection) -> dict[str, Any]:
    return {
        "hub": conn.hub,
        "connectionId": conn.connection_id,
        "userId": conn.user_id,
        "subprotocol": conn.subprotocol,
    }


def _pairs(fields: dict[str, Any]) -> str:
    """``key=value`` pairs; values with spaces or quotes are JSON-quoted, None is ``-``."""
    parts = []
    for key, value in fields.items():
        text = "-" if value is None or value == "" else str(value)
        if any(ch in text for ch in ' "=\n'):
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return " ".join(parts)
