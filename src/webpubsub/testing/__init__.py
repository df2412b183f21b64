"""Helpers to run the service inside a test process, and clients that record what they get.

* :class:`ServiceThread` runs a complete service on a free loopback port in a background
  thread, so synchronous SDKs (which block) and asyncio tests can both talk to it.
* :class:`ClientFactory` connects :class:`RecordingClient` objects: WebSocket clients that
  keep every message and hand them out with ``await client.receive(timeout=...)``.
* ``webpubsub.testing.plugin`` is the pytest plugin (fixtures ``webpubsub_service``,
  ``webpubsub_connection_string``, ``webpubsub_service_client``,
  ``webpubsub_client_factory``...), registered through the ``pytest11`` entry point.

See ``docs/testing.md``.
"""

from __future__ import annotations

from ..protocols.downstream import GroupMessage, ServerMessage
from ..server.config import Settings
from ._client import (
    JSON,
    AckError,
    ClientClosedError,
    ClientFactory,
    Message,
    RawMessage,
    RecordingClient,
)
from ._thread import ServiceThread

__all__ = [
    "JSON",
    "AckError",
    "ClientClosedError",
    "ClientFactory",
    "GroupMessage",
    "Message",
    "RawMessage",
    "RecordingClient",
    "ServerMessage",
    "ServiceThread",
    "Settings",
]
