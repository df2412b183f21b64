"""Broadcast messages to all connections in a hub.

JS: await serviceClient.sendToAll({ message: "Hello world!" });
    await serviceClient.sendToAll("Hi there!", { contentType: "text/plain" });
    await serviceClient.sendToAll(payload.buffer);
"""

from __future__ import annotations

from sample_settings import HUB, Listener, connection_string

from webpubsub import WebPubSubServiceClient


def main() -> None:
    with WebPubSubServiceClient.from_connection_string(connection_string(), hub=HUB) as client:
        listener = Listener(client.get_client_access_token()["url"])

        client.send_to_all({"message": "Hello world!"})  # JSON
        client.send_to_all("Hi there!", content_type="text/plain")  # text
        payload = bytes(10)
        client.send_to_all(payload)  # binary (application/octet-stream)

        listener.show(3)
        listener.close()


if __name__ == "__main__":
    main()
