"""Send messages to all connections for a user.

JS: await serviceClient.sendToUser("user1", { message: "Hello world!" });
    await serviceClient.sendToUser("user1", "Hi there!", { contentType: "text/plain" });
    await serviceClient.sendToUser("user1", payload.buffer);
"""

from __future__ import annotations

from sample_settings import HUB, Listener, connection_string

from webpubsub import WebPubSubServiceClient


def main() -> None:
    with WebPubSubServiceClient.from_connection_string(connection_string(), hub=HUB) as client:
        # A user may have several connections (tabs, devices): each one gets the messages.
        phone = Listener(client.get_client_access_token(user_id="user1")["url"])
        laptop = Listener(client.get_client_access_token(user_id="user1")["url"])

        client.send_to_user("user1", {"message": "Hello world!"})
        client.send_to_user("user1", "Hi there!", content_type="text/plain")
        payload = bytes(10)
        client.send_to_user("user1", payload)

        for listener in (phone, laptop):
            listener.show(3)
            listener.close()


if __name__ == "__main__":
    main()
