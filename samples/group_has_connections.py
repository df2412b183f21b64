"""Check if the group has any connection.

JS: const groupClient = serviceClient.group("<groupName>");
    await groupClient.closeAllConnections({ reason: "<closeReason>" });
    const hasConnections = await serviceClient.groupExists("<groupName>");
"""

from __future__ import annotations

from sample_settings import HUB, Listener, connection_string

from webpubsub import WebPubSubServiceClient


def main() -> None:
    with WebPubSubServiceClient.from_connection_string(connection_string(), hub=HUB) as client:
        # Like the JS sample's `ws` client: a connection that joins the group on connect.
        token = client.get_client_access_token(groups=["closing-group"])
        listener = Listener(token["url"])
        print("Group has connections:", client.group_exists("closing-group"))

        group_client = client.group("closing-group")
        group_client.close_all_connections(reason="<closeReason>")
        print("Client was told:", listener.receive()["message"])

        has_connections = client.group_exists("closing-group")
        print("Group has connections after closing:", has_connections)


if __name__ == "__main__":
    main()
