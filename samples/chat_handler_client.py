"""Talk to the ``chat_handler.py`` sample: connect, send a ``message`` event, print the answer.

With the service and ``chat_handler.py`` running (see that file)::

    export WEBPUBSUB_CONNECTION_STRING="Endpoint=http://127.0.0.1:8080;AccessKey=$KEY;Version=1.0;"
    python samples/chat_handler_client.py alice "hello there"

The client speaks the ``json.webpubsub.azure.v1`` subprotocol directly; a real app would use a
client SDK (``@azure/web-pubsub-client``, ``azure-messaging-webpubsubclient``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from urllib.parse import quote

import jwt
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

HUB = os.environ.get("WEBPUBSUB_HUB", "chat")


def client_url(connection_string: str, hub: str, name: str) -> str:
    """A client URL with an access token signed by the connection string's key (spec 3)."""
    parts = {}
    for segment in connection_string.split(";"):
        key, sep, value = segment.partition("=")
        if sep:
            parts[key.strip().lower()] = value.strip()
    endpoint = parts["endpoint"].rstrip("/")
    if "port" in parts:
        scheme, _, host = endpoint.partition("://")
        endpoint = f"{scheme}://{host.split(':')[0]}:{parts['port']}"
    audience = f"{endpoint}/client/hubs/{hub}"
    token = jwt.encode(
        {"aud": audience, "exp": int(time.time()) + 3600}, parts["accesskey"], "HS256"
    )
    ws_url = "ws" + audience[len("http") :]  # http -> ws, https -> wss
    return f"{ws_url}?access_token={token}&name={quote(name)}"


def main() -> None:
    connection_string = os.environ.get("WEBPUBSUB_CONNECTION_STRING")
    if not connection_string:
        sys.exit("Set WEBPUBSUB_CONNECTION_STRING (see samples/chat_handler.py).")
    name = sys.argv[1] if len(sys.argv) > 1 else "alice"
    text = sys.argv[2] if len(sys.argv) > 2 else "hello"
    url = client_url(connection_string, HUB, name)
    try:
        ws = connect(url, subprotocols=["json.webpubsub.azure.v1"])  # type: ignore[list-item]
    except InvalidStatus as exc:
        # handle_connect's EventHandlerError status comes back on the upgrade (spec 5.5).
        sys.exit(f"the app refused the connection: HTTP {exc.response.status_code}")
    with ws:
        connected = json.loads(ws.recv(timeout=5))
        print(f"connected as {connected['userId']} ({connected['connectionId']})")

        # An event for the app server: chat_handler.py answers it.
        ws.send(json.dumps({"type": "event", "event": "message", "dataType": "text", "data": text}))
        print("the app answered:", json.loads(ws.recv(timeout=5))["data"])

        # handle_connect put us in the lobby and allowed us to send there.
        ws.send(
            json.dumps({"type": "sendToGroup", "group": "lobby", "dataType": "text", "data": text})
        )
        message = json.loads(ws.recv(timeout=5))
        print(f"the lobby got from {message.get('fromUserId')}: {message['data']}")


if __name__ == "__main__":
    main()
