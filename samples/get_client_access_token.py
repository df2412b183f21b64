"""Get the access token for a client to start the WebSocket connection.

JS: await serviceClient.getClientAccessToken();
    await serviceClient.getClientAccessToken({ userId: "user1" });
"""

from __future__ import annotations

from sample_settings import HUB, Listener, connection_string

from webpubsub import WebPubSubServiceClient


def main() -> None:
    with WebPubSubServiceClient.from_connection_string(connection_string(), hub=HUB) as client:
        token = client.get_client_access_token()
        print("Anonymous client URL:", token["baseUrl"] + "?access_token=...")

        token = client.get_client_access_token(user_id="user1")
        print("Client URL for user1:", token["baseUrl"] + "?access_token=...")

        # Roles, initial groups, lifetime and the MQTT / Socket.IO endpoints:
        client.get_client_access_token(
            user_id="user1",
            roles=["webpubsub.joinLeaveGroup.room1", "webpubsub.sendToGroup.room1"],
            groups=["room1"],
            minutes_to_expire=5,
        )
        mqtt = client.get_client_access_token(client_protocol="mqtt")
        print("MQTT clients connect to:", mqtt["baseUrl"])

        # A WebSocket client connects with token["url"].
        listener = Listener(token["url"])
        print(f"Connected as {listener.user_id} (connection {listener.connection_id})")
        listener.close()


if __name__ == "__main__":
    main()
