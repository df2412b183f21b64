"""Enable logs.

JS: export AZURE_LOG_LEVEL=verbose

The Python SDK logs through the standard `logging` module (logger "webpubsub.sdk", a child of
"webpubsub"). Either set an environment variable, with no code change:

    AZURE_LOG_LEVEL=verbose python samples/enable_logs.py
    WEBPUBSUB_LOG_LEVEL=debug python samples/enable_logs.py

or configure logging in code, as below when neither variable is set. Authorization headers,
access keys and tokens are never logged.
"""

from __future__ import annotations

import logging
import os

from sample_settings import HUB, connection_string

from webpubsub import WebPubSubServiceClient


def main() -> None:
    if not (os.environ.get("AZURE_LOG_LEVEL") or os.environ.get("WEBPUBSUB_LOG_LEVEL")):
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("webpubsub").setLevel(logging.DEBUG)

    with WebPubSubServiceClient.from_connection_string(connection_string(), hub=HUB) as client:
        client.send_to_all({"message": "Hello world!"})
        client.user_exists("user1")


if __name__ == "__main__":
    main()
