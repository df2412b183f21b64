"""Create and authenticate a WebPubSubServiceClient with an endpoint and an AzureKeyCredential.

JS: new WebPubSubServiceClient("<Endpoint>", new AzureKeyCredential("<Key>"), "<hubName>")

The credential can be updated in place when keys are rotated; the next request is signed
with the new key.
"""

from __future__ import annotations

from sample_settings import HUB, connection_string

from webpubsub import AzureKeyCredential, WebPubSubServiceClient, parse_connection_string


def main() -> None:
    # The endpoint and key usually come from configuration; here we take them from the
    # connection string so the sample runs against `webpubsub serve` as is.
    parts = parse_connection_string(connection_string())
    endpoint, key = parts.endpoint, parts.access_key

    credential = AzureKeyCredential(key)
    with WebPubSubServiceClient(endpoint, credential, hub=HUB) as client:
        client.send_to_all({"message": "signed with the key"})
        print("Sent a message signed with the access key.")

        # Key rotation: switch to the other key (here the same one) without a new client.
        credential.update(key)
        client.send_to_all({"message": "signed with the updated key"})
        print("Sent a message after credential.update().")


if __name__ == "__main__":
    main()
