"""A handshake floor: the least a Python server on uvloop must do per WebSocket handshake.

    .venv/bin/python -m bench.handshake_floor PORT KEY

Accepts TCP connections on 127.0.0.1:PORT, reads the upgrade request, checks the client
token as the service does (HS256 signature with the access key, constant-time; ``exp``;
``aud`` equal to the endpoint's URL for the path), computes ``Sec-WebSocket-Accept`` and
writes the 101, then holds the connection (discarding what it sends) until the peer
closes. No routing, no connection object, no greeting: what ``make bench`` measures for
webpubsub minus everything but the handshake, on the same event loop, so
webpubsub / floor says how much of a handshake is ours. Prints "listening on" when ready.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import time
from typing import Any
from urllib.parse import parse_qs

import uvloop

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handshake(asyncio.Protocol):
    def __init__(self, key: bytes, origin: str) -> None:
        self.key = key
        self.origin = origin
        self.buffer = b""
        self.open = False
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # (uvloop's, not an asyncio.Transport subclass)

    def data_received(self, data: bytes) -> None:
        if self.open:
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        assert self.transport is not None
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        self.buffer = b""
        target = head[0].split(" ")[1]
        path, _, query = target.partition("?")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        token = parse_qs(query).get("access_token", [""])[0]
        if not self.valid(token, self.origin + path):
            self.transport.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return
        accept = base64.b64encode(
            hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest()
        )
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.open = True

    def valid(self, token: str, audience: str) -> bool:
        try:
            signing_input, _, signature = token.rpartition(".")
            expected = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            mac = hmac.new(self.key, signing_input.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(mac, expected):
                return False
            payload = signing_input.partition(".")[2]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return bool(claims["exp"] > time.time() and claims["aud"] == audience)
        except (ValueError, KeyError, TypeError):
            return False


async def main(port: int, key: str) -> None:
    loop = asyncio.get_running_loop()
    origin = f"http://127.0.0.1:{port}"
    server = await loop.create_server(
        lambda: Handshake(key.encode(), origin), "127.0.0.1", port, backlog=4096
    )
    print(f"listening on {origin}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
