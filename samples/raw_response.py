"""Access the raw HTTP response for an operation.

JS: function onResponse(rawResponse) { console.log(rawResponse); }
    await serviceClient.sendToAll({ message: "Hello world!" }, { onResponse });
"""

from __future__ import annotations

from sample_settings import HUB, connection_string

from webpubsub import RawResponse, WebPubSubServiceClient


def on_response(raw_response: RawResponse) -> None:
    print(f"{raw_response.request.method} {raw_response.request.url}")
    print(f"  -> {raw_response.status_code} {raw_response.reason_phrase}")
    for name, value in raw_response.headers.items():
        print(f"     {name}: {value}")


def main() -> None:
    with WebPubSubServiceClient.from_connection_string(connection_string(), hub=HUB) as client:
        client.send_to_all({"message": "Hello world!"}, on_response=on_response)
        # Checks get it too: a HEAD answered 404 means "no such group".
        client.group_exists("no-such-group", on_response=on_response)


if __name__ == "__main__":
    main()
