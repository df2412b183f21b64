"""A read-only dashboard on ``webpubsub.client``: watch groups and tally what is published.

Devices or services publish readings to groups; the dashboard joins them, reads every message
from an async iterator, and keeps a running summary per group::

    export WEBPUBSUB_CONNECTION_STRING="Endpoint=http://127.0.0.1:8080;AccessKey=...;Version=1.0;"
    python samples/client_dashboard.py telemetry alerts     # the groups to watch
    python samples/client_dashboard.py --count 3 telemetry  # stop after 3 messages

Publish something to watch, e.g. with the server SDK::

    python -c "from webpubsub import WebPubSubServiceClient as C; import os; \\
    C.from_connection_string(os.environ['WEBPUBSUB_CONNECTION_STRING'], hub='sample_hub') \\
    .group('telemetry').send_to_all({'sensor': 't1', 'value': 21.5})"

The token grants joining the groups and nothing else: a dashboard cannot publish. The
reliable protobuf subprotocol is used to show it is only a setting; the stream and the
messages look the same on every protocol. A dashboard that drops off the network recovers
its connection with nothing lost or repeated, and if it cannot, it reconnects and rejoins.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from typing import Any

from sample_settings import HUB, connection_string

from webpubsub.aio import WebPubSubServiceClient
from webpubsub.client import GroupMessage, ServerMessage, WebPubSubClient


def describe(data: Any) -> str:
    if isinstance(data, bytes):
        return f"<{len(data)} bytes>"
    return data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)


async def watch(groups: list[str], count: int | None) -> Counter[str]:
    async with WebPubSubServiceClient.from_connection_string(
        connection_string(), hub=HUB
    ) as app_server:
        roles = [f"webpubsub.joinLeaveGroup.{group}" for group in groups]
        token = await app_server.get_client_access_token(user_id="dashboard", roles=roles)

    totals: Counter[str] = Counter()
    client = WebPubSubClient(token["url"], protocol="protobuf.reliable.webpubsub.azure.v1")
    async with client, client.messages() as stream:
        for group in groups:
            await client.join_group(group)
        print(f"watching {', '.join(groups)} on hub {HUB}", flush=True)
        async for message in stream:
            if isinstance(message, GroupMessage):
                totals[message.group] += 1
                where = f"{message.group} #{totals[message.group]}"
            else:
                assert isinstance(message, ServerMessage)
                totals["(server)"] += 1
                where = "server"
            print(f"[{where}] {message.data_type}: {describe(message.data)}", flush=True)
            if count is not None and totals.total() >= count:
                break
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="+", help="groups to watch")
    parser.add_argument("--count", type=int, help="stop after this many messages")
    args = parser.parse_args()
    totals = asyncio.run(watch(args.groups, args.count))
    print("summary: " + ", ".join(f"{group}={n}" for group, n in sorted(totals.items())))


if __name__ == "__main__":
    main()
