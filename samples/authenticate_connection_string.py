"""Create and authenticate a WebPubSubServiceClient from a connection string.

JS: new WebPubSubServiceClient("<ConnectionString>", "<hubName>")
"""

from __future__ import annotations

from sample_settings import HUB, connection_string

from webpubsub import WebPubSubServiceClient


def main() -> None:
    with WebPubSubServiceClient.from_connection_string(connection_string(), hub=HUB) as client:
        print(f"Client for hub {client.hub!r} at {client.endpoint}")
        # Any call proves the key works: is anyone called "user1" connected?
        print("user1 connected:", client.user_exists("user1"))


if __name__ == "__main__":
    main()
