"""Settings shared by the samples: where the service is, and a client to watch messages.

Every sample reads the connection string from ``WEBPUBSUB_CONNECTION_STRING`` (what
``webpubsub serve`` prints, or the one on the Azure portal's "Keys" page) and the hub from
``WEBPUBSUB_HUB`` (default ``sample_hub``).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any

from websockets.sync.client import ClientConnection, connect

HUB = os.environ.get("WEBPUBSUB_HUB", "sample_hub")


def connection_string() -> str:
    """The connection string, or exit with a hint when it is not set."""
    value = os.environ.get("WEBPUBSUB_CONNECTION_STRING")
    if not value:
        sys.exit(
            "Set WEBPUBSUB_CONNECTION_STRING first, e.g. to the 'Connection string:' line "
            "printed by `webpubsub serve`."
        )
    return value


class Listener:
    """A WebSocket client on the ``json.webpubsub.azure.v1`` subprotocol.

    The samples use it to show what the server SDK's calls deliver; a real app would use a
    client SDK (``@azure/web-pubsub-client``, ``azure-messaging-webpubsubclient``).
    """

    def __init__(self, url: str) -> None:
        self._ws: ClientConnection = connect(
            url,
            subprotocols=["json.webpubsub.azure.v1"],  # type: ignore[list-item]
        )
        connected = self.receive()
        self.connection_id: str = connected["connectionId"]
        self.user_id: str | None = connected.get("userId")

    def receive(self, timeout: float = 5) -> dict[str, Any]:
        """The next message from the service (raises TimeoutError after ``timeout`` s)."""
        message: dict[str, Any] = json.loads(self._ws.recv(timeout=timeout))
        return message

    def show(self, count: int) -> None:
        """Print the next ``count`` messages."""
        for _ in range(count):
            message = self.receive()
            data_type, data = message["dataType"], message["data"]
            shown = f"{len(base64.b64decode(data))} bytes" if data_type == "binary" else data
            print(f"  {self.user_id or self.connection_id} received {data_type}: {shown!r}")

    def close(self) -> None:
        self._ws.close()
