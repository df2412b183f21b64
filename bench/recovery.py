"""Recovery across nodes under a steady broadcast: the clients half of ``bench.cluster``.

Run by ``bench/cluster.py`` with the project's .venv Python (it needs ``websockets``):

    .venv/bin/python -m bench.recovery --from PORT --to PORT --key KEY [--clients 500]

N reliable JSON clients connect to the first node and are in one group; a publisher sends
numbered messages to the group through the second node at a steady rate. Then every client's
socket is cut at once and each recovers through the second node (another node than the one
holding it). Prints one JSON line: the seconds until every client was back (and the median),
the messages lost and duplicated over the whole run (both must be 0), and the p99
publish-to-receive latency of the messages sent while the clients were away or recovering.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from webpubsub.auth.tokens import client_audience, mint_client_token, mint_rest_token

HUB = "benchrecovery"
GROUP = "feed"
RELIABLE = "json.reliable.webpubsub.azure.v1"


class Client:
    def __init__(self, index: int) -> None:
        self.index = index
        self.ws: ClientConnection | None = None
        self.connection_id = ""
        self.token = ""
        self.last = 0
        self.received: list[int] = []
        self.latencies: list[tuple[float, float]] = []  # (sent at, latency)
        self.ended = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None

    async def open(self, url: str) -> None:
        self.ws = await websockets.connect(
            url,
            subprotocols=[RELIABLE],  # type: ignore[list-item]
            max_queue=None,
            open_timeout=30,
        )
        connected = json.loads(await self.ws.recv())
        self.connection_id = connected["connectionId"]
        self.token = connected["reconnectionToken"]
        self.reader = asyncio.create_task(self.read(self.ws))

    async def read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") != "message":
                    continue
                sequence = frame["sequenceId"]
                if sequence <= self.last:
                    continue
                self.last = sequence
                data = frame["data"]
                if data == "end":
                    self.ended.set()
                else:
                    self.received.append(data["n"])
                    self.latencies.append((data["t"], time.time() - data["t"]))
                await ws.send(json.dumps({"type": "sequenceAck", "sequenceId": sequence}))
        except websockets.ConnectionClosed:
            pass

    def cut(self) -> None:
        assert self.ws is not None and self.reader is not None
        self.ws.transport.abort()
        self.reader.cancel()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    source = f"http://127.0.0.1:{args.from_port}"
    target = f"http://127.0.0.1:{args.to_port}"
    clients = [Client(i) for i in range(args.clients)]
    audience = client_audience(source, HUB)
    token = mint_client_token(args.key, audience, groups=[GROUP])
    url = audience.replace("http://", "ws://") + f"?access_token={token}"
    for start in range(0, len(clients), 100):
        await asyncio.gather(*(c.open(url) for c in clients[start : start + 100]))

    sent: list[int] = []
    stop = asyncio.Event()
    send_url = f"{target}/api/hubs/{HUB}/groups/{GROUP}/:send?api-version=2024-12-01"
    headers = {
        "Authorization": f"Bearer {mint_rest_token(args.key, send_url.split('?')[0])}",
        "Content-Type": "application/json",
    }

    async with httpx.AsyncClient(timeout=30) as http:

        async def publish() -> None:
            interval = 1 / args.rate
            next_at = time.monotonic()
            while not stop.is_set():
                n = len(sent)
                body = json.dumps({"n": n, "t": time.time()})
                response = await http.post(send_url, content=body, headers=headers)
                if response.status_code != 202:
                    raise RuntimeError(f"send answered {response.status_code}")
                sent.append(n)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        publisher = asyncio.create_task(publish())
        await asyncio.sleep(args.before)
        cut_at = time.monotonic()
        cut_wall = time.time()
        for client in clients:
            client.cut()
        back: list[float] = []

        async def recover(client: Client) -> None:
            query = f"?awps_connection_id={client.connection_id}"
            query += f"&awps_reconnection_token={client.token}"
            first = client.connection_id
            await client.open(client_audience(target, HUB).replace("http://", "ws://") + query)
            if client.connection_id != first:
                raise RuntimeError("a client got a new connection instead of recovering")
            back.append(time.monotonic() - cut_at)

        await asyncio.gather(*(recover(c) for c in clients))
        recovered_wall = time.time()
        await asyncio.sleep(args.after)
        stop.set()
        await publisher
        await http.post(send_url, content=json.dumps("end"), headers=headers)  # the last word
    with contextlib.suppress(TimeoutError):  # what did not arrive is counted as lost
        await asyncio.wait_for(asyncio.gather(*(c.ended.wait() for c in clients)), 30)
    expected = set(sent)
    lost = sum(len(expected - set(c.received)) for c in clients)
    duplicated = sum(len(c.received) - len(set(c.received)) for c in clients)
    out_of_order = sum(c.received != sorted(c.received) for c in clients)
    during = sorted(
        latency
        for c in clients
        for sent_at, latency in c.latencies
        if cut_wall <= sent_at <= recovered_wall
    )
    for client in clients:
        if client.ws is not None:
            await client.ws.close()
    return {
        "clients": len(clients),
        "messages": len(sent),
        "rate_per_s": args.rate,
        "recovered_all_s": round(max(back), 3),
        "recovered_median_s": round(statistics.median(back), 3),
        "lost": lost,
        "duplicated": duplicated,
        "clients_out_of_order": out_of_order,
        "latency_ms_p99_while_recovering": (
            round(1000 * during[int(0.99 * (len(during) - 1))], 1) if during else None
        ),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.recovery")
    parser.add_argument("--from", dest="from_port", type=int, required=True)
    parser.add_argument("--to", dest="to_port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0, help="publishes per second")
    parser.add_argument("--before", type=float, default=2.0)
    parser.add_argument("--after", type=float, default=2.0)
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["lost"] == 0 and result["duplicated"] == 0 else 1)
