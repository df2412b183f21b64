"""Send messages to all connections in a group.

JS: const groupClient = serviceClient.group("<groupName>");
    await groupClient.addUser("user1");
    await groupClient.sendToAll({ message: "Hello world!" });
    await groupClient.sendToAll("Hi there!", { contentType: "text/plain" });
    await groupClient.sendToAll(payload.buffer);
"""

from __future__ import annotations

from sample_settings import HUB, Listener, connection_string

from webpubsub import WebPubSubServiceClient


def main() -> None:
    with WebPubSubServiceClient.from_connection_string(connection_string(), hub=HUB) as client:
        # add_user adds the user's current connections, so connect user1 first.
        listener = Listener(client.get_client_access_token(user_id="user1")["url"])

        group_client = client.group("sample-group")
        group_client.add_user("user1")
        group_client.send_to_all({"message": "Hello world!"})
        group_client.send_to_all("Hi there!", content_type="text/plain")
        payload = bytes(10)
        group_client.send_to_all(payload)

        listener.show(3)
        members = [m.connection_id for m in group_client.list_connections()]
        print("Connections in sample-group:", len(members))
        group_client.remove_user("user1")
        listener.close()


if __name__ == "__main__":
    main()
