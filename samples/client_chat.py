"""A terminal chat room on ``webpubsub.client``: type a line, everyone in the room sees it.

Start the service and two chatters (or one chatter and any client on the same hub and room,
such as a browser or Node app on ``@azure/web-pubsub-client``)::

    webpubsub serve    # prints "Connection string: Endpoint=...;AccessKey=...;Version=1.0;"
    export WEBPUBSUB_CONNECTION_STRING="Endpoint=http://127.0.0.1:8080;AccessKey=...;Version=1.0;"
    python samples/client_chat.py alice
    python samples/client_chat.py bob lobby    # user and room (default: lobby)

Lines starting with ``/`` are commands: ``/join ROOM`` (and talk there), ``/leave ROOM``,
``/quit``. End of input quits too.

The app server's part, handing out a client access URL per connection, is played here by the
server SDK; a real client would fetch the URL from its app server over HTTP. Passing a
function rather than a URL lets the client fetch a fresh token whenever it reconnects.
"""

from __future__ import annotations

import asyncio
import json
import sys

from sample_settings import HUB, connection_string

from webpubsub.aio import WebPubSubServiceClient
from webpubsub.client import Forbidden, GroupMessage, WebPubSubClient

ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


def show(message: GroupMessage) -> None:
    """Print one chat line: text as is, JSON as JSON, anything else by its size."""
    if isinstance(message.data, str):
        text = message.data
    elif isinstance(message.data, bytes):
        text = f"<{len(message.data)} bytes of {message.data_type}>"
    else:
        text = json.dumps(message.data, ensure_ascii=False)
    print(f"[{message.group}] {message.from_user_id or '?'}: {text}", flush=True)


async def chat(user: str, room: str) -> None:
    async with WebPubSubServiceClient.from_connection_string(
        connection_string(), hub=HUB
    ) as app_server:

        async def client_access_url() -> str:
            token = await app_server.get_client_access_token(user_id=user, roles=ROLES)
            return token["url"]

        client = WebPubSubClient(client_access_url)
        client.on("group-message", show)
        client.on("disconnected", lambda e: print(f"* disconnected: {e.message or e.close_code}"))
        client.on("connected", lambda e: print(f"* connected as {e.user_id} ({e.connection_id})"))
        client.on("rejoin-group-failed", lambda e: print(f"* could not rejoin {e.group}"))

        async with client:
            await client.join_group(room)
            print(f"* joined {room} as {user}; type to chat, /quit to leave", flush=True)
            while line := await asyncio.to_thread(sys.stdin.readline):
                line = line.strip()
                command, _, argument = line.partition(" ")
                try:
                    if command == "/quit":
                        break
                    elif command == "/join" and argument:
                        await client.join_group(argument)
                        room = argument
                        print(f"* now talking in {room}", flush=True)
                    elif command == "/leave" and argument:
                        await client.leave_group(argument)
                    elif line:
                        # no_echo: the others see it, we already have it on screen.
                        await client.send_to_group(room, line, "text", no_echo=True)
                except Forbidden as exc:
                    print(f"* not allowed: {exc.message}", flush=True)


if __name__ == "__main__":
    user = sys.argv[1] if len(sys.argv) > 1 else "alice"
    room = sys.argv[2] if len(sys.argv) > 2 else "lobby"
    asyncio.run(chat(user, room))
