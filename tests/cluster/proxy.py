"""A round-robin TCP load balancer for tests: no sticky sessions, and a way to cut links.

Each accepted connection goes to the next backend in turn, so a client that reconnects lands
on another node than the one it left; ``cut`` aborts a random live link on both sides, as a
network failure would.
"""

from __future__ import annotations

import asyncio
import itertools
import random


class RoundRobinProxy:
    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self._turn = itertools.count()
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0
        self.routed: list[int] = []  # the backend of each connection, in order

    async def __aenter__(self) -> RoundRobinProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            self._abort(link)
        await self._server.wait_closed()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def links(self) -> int:
        return len(self._links)

    def cut(self, rng: random.Random) -> bool:
        """Abort one live link (False when there is none)."""
        if not self._links:
            return False
        self._abort(rng.choice(sorted(self._links, key=id)))
        return True

    def _abort(self, link: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        self._links.discard(link)
        for writer in link:
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self.backends[next(self._turn) % len(self.backends)]
        self.routed.append(backend)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                self._abort(link)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
