"""Authenticate a WebPubSubServiceClient with Microsoft Entra ID (Azure Active Directory).

JS: new WebPubSubServiceClient("<Endpoint>", new DefaultAzureCredential(), "<hubName>")

Against Azure, install azure-identity (`pip install azure-identity`), set WEBPUBSUB_ENDPOINT to
your resource's URL and sign in (`az login`, a managed identity, ...): the sample then uses
DefaultAzureCredential, which the SDK asks for the scope https://webpubsub.azure.com/.default.

`webpubsub serve` does not talk to Entra ID, so without WEBPUBSUB_ENDPOINT the sample uses a
stand-in credential with the same get_token(*scopes) shape that signs with the access key of
WEBPUBSUB_CONNECTION_STRING. Everything else (client tokens come from the service through
:generateToken, bearer tokens are cached) behaves as with Entra ID.
"""

from __future__ import annotations

import os
import time

from sample_settings import HUB, Listener, connection_string

from webpubsub import AccessToken, TokenCredential, WebPubSubServiceClient, parse_connection_string
from webpubsub.auth.tokens import mint_rest_token


class LocalServiceCredential:
    """A stand-in for DefaultAzureCredential that the local service accepts."""

    def __init__(self, endpoint: str, access_key: str) -> None:
        self._endpoint = endpoint
        self._key = access_key

    def get_token(self, *scopes: str) -> AccessToken:
        print("  get_token called for scopes", scopes)
        lifetime = 3600
        token = mint_rest_token(self._key, self._endpoint, lifetime_seconds=lifetime)
        return AccessToken(token, int(time.time()) + lifetime)


def make_credential() -> tuple[str, TokenCredential]:
    endpoint = os.environ.get("WEBPUBSUB_ENDPOINT")
    if endpoint:
        from azure.identity import DefaultAzureCredential  # optional dependency

        return endpoint, DefaultAzureCredential()
    parts = parse_connection_string(connection_string())
    return parts.endpoint, LocalServiceCredential(parts.endpoint, parts.access_key)


def main() -> None:
    endpoint, credential = make_credential()
    with WebPubSubServiceClient(endpoint, credential, hub=HUB) as client:
        # With a token credential the service mints client tokens (POST :generateToken).
        token = client.get_client_access_token(user_id="entra-user")
        listener = Listener(token["url"])
        client.send_to_user("entra-user", {"message": "Hello from an Entra ID client!"})
        listener.show(1)
        listener.close()


if __name__ == "__main__":
    main()
