"""The workers of one ``serve --workers N`` see each other: ``/metrics`` and Live Trace of all.

A scrape or a Live Trace stream lands on one worker (the kernel spreads connections over
the workers' ``SO_REUSEPORT`` sockets). So that it shows the whole machine, each worker also
listens on a Unix socket, ``worker-<index>.sock``, in a private (0700) directory the
supervisor made, and answers one request line:

* ``METRICS``: its own Prometheus exposition, then it closes the connection;
* ``TRACE <query>``: batches of its trace records that pass the Live Trace filter in
  ``<query>``, one JSON array per line, for as long as the reader stays;
* ``SESSION <token>``: the Live Trace session ``<token>`` if it knows it (seconds left and
  key digest, JSON), so that a browser signed in on one worker is signed in on all;
* ``END <token>``: forget that session (the browser signed out on another worker).

``/metrics`` on any worker asks the others and merges (:func:`merge_expositions`); a Live
Trace stream follows the others (:class:`Feeds`) only while it is open, so nobody watching
costs nothing. Workers on other machines are other services to this: scrape every machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, parse_qsl, urlencode

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ._trace import LiveTrace, TraceFilter, Viewer

if TYPE_CHECKING:
    from ._livetrace import Sessions

log = logging.getLogger("webpubsub.workers")

ASK_TIMEOUT = 2.0
"""Seconds a scrape waits for another worker's numbers (a stuck worker is left out)."""
POLL_INTERVAL = 0.25
"""Seconds between checks that a trace reader is still there."""
REFRESH_INTERVAL = 1.0
"""Seconds between looks for workers a Live Trace stream does not follow yet."""

# How to combine one sample of several workers; anything not named here is summed.
_MIN = {"process_start_time_seconds", "webpubsub_cluster_redis_up"}
_MAX = {
    "process_max_fds",
    "python_info",
    "webpubsub_info",
    "webpubsub_cluster_enabled",
    "webpubsub_reliable_buffer_max_bytes",
    "webpubsub_livetrace_observing",
}


class WorkerLink:
    """This worker's Unix socket, and the way to its siblings' sockets.

    Args:
        index: this worker's number (0 to N-1; a restarted worker keeps its number).
        directory: the supervisor's private directory of worker sockets.
        exposition: this worker's own metrics, in the text format.
        trace: this worker's live trace.
    """

    def __init__(
        self, index: int, directory: str, exposition: Callable[[], bytes], trace: LiveTrace
    ) -> None:
        self.index = index
        self.directory = Path(directory)
        self.path = self.directory / f"worker-{index}.sock"
        self._exposition = exposition
        self._trace = trace
        self._server: asyncio.Server | None = None
        self.sessions: Sessions | None = None  # the Live Trace sessions, once installed

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by this worker's previous life (killed)
        self._server = await asyncio.start_unix_server(self._handle, str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def siblings(self) -> list[Path]:
        """The sockets of the other workers (those running now, or killed before cleanup)."""
        return sorted(p for p in self.directory.glob("worker-*.sock") if p != self.path)

    # -- asking the others ------------------------------------------------------------------

    async def expositions(self) -> list[bytes]:
        """Every other worker's own exposition (workers that do not answer are left out)."""
        answers = await asyncio.gather(*(self._ask(p) for p in self.siblings()))
        return [a for a in answers if a is not None]

    async def find_session(self, token: str) -> tuple[float, str] | None:
        """A Live Trace session another worker opened: (seconds left, key digest), or None."""
        if not token.isascii() or not token.isprintable() or " " in token:
            return None
        request = f"SESSION {token}\n".encode()
        for answer in await asyncio.gather(*(self._ask(p, request) for p in self.siblings())):
            if answer:
                with contextlib.suppress(ValueError, TypeError):
                    seconds, digest = json.loads(answer)
                    return float(seconds), str(digest)
        return None

    async def end_session(self, token: str) -> None:
        request = f"END {token}\n".encode()
        await asyncio.gather(*(self._ask(p, request) for p in self.siblings()))

    async def _ask(self, path: Path, request: bytes = b"METRICS\n") -> bytes | None:
        try:
            async with asyncio.timeout(ASK_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(str(path))
                try:
                    writer.write(request)
                    return await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            log.debug("worker socket %s did not answer: %s", path.name, exc)
            return None

    def follow(self, viewer: Viewer, query: str) -> Feeds:
        """Feed the other workers' records that ``query`` selects to ``viewer``."""
        return Feeds(self, viewer, query)

    # -- answering them ---------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(ASK_TIMEOUT):
                line = (await reader.readline()).decode("utf-8", "replace").strip()
            verb, _, query = line.partition(" ")
            if verb == "METRICS":
                writer.write(self._exposition())
                await writer.drain()
            elif verb == "TRACE":
                await self._stream(query, reader, writer)
            elif verb == "SESSION" and self.sessions is not None:
                found = self.sessions.export(query)
                if found is not None:
                    writer.write(json.dumps(found).encode())
                    await writer.drain()
            elif verb == "END" and self.sessions is not None:
                self.sessions.end(query)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _stream(
        self, query: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        values = parse_qs(query, keep_blank_values=True)
        preview = (values.get("preview") or [""])[0] in ("1", "true", "on")
        viewer = Viewer(TraceFilter.from_query(values), preview=preview)
        wake = asyncio.Event()
        viewer.wake = wake.set
        gone = asyncio.get_running_loop().create_task(reader.read())  # EOF: the reader left
        self._trace.subscribe(viewer)
        try:
            while not gone.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), POLL_INTERVAL)
                wake.clear()
                records = viewer.take()
                if records:
                    writer.write(json.dumps(records, ensure_ascii=False).encode() + b"\n")
                    await writer.drain()
        finally:
            self._trace.unsubscribe(viewer)
            gone.cancel()


class Feeds:
    """One Live Trace viewer's followers of the other workers; :meth:`refresh` finds new
    (or restarted) workers, :meth:`close` stops following."""

    def __init__(self, link: WorkerLink, viewer: Viewer, query: str) -> None:
        self._link = link
        self._viewer = viewer
        # The filters only: the stream's own credential stays with the worker it was sent to.
        pairs = parse_qsl(query, keep_blank_values=True)
        self._query = urlencode([(k, v) for k, v in pairs if k != "access_token"])
        self._tasks: dict[Path, asyncio.Task[None]] = {}
        self._next = 0.0
        self.refresh()

    def refresh(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._next:
            return
        self._next = loop.time() + REFRESH_INTERVAL
        for path in self._link.siblings():
            task = self._tasks.get(path)
            if task is None or task.done():
                self._tasks[path] = loop.create_task(self._follow(path))

    async def _follow(self, path: Path) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError:
            return  # not running (yet): the next refresh tries again
        try:
            writer.write(f"TRACE {self._query}\n".encode())
            while line := await reader.readline():
                for record in json.loads(line):
                    self._viewer.offer(record, None)
        except (OSError, ValueError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()


def merge_expositions(texts: Iterable[bytes]) -> list[Metric]:
    """One set of metric families from several workers' expositions.

    Samples with the same name and labels are summed (counters, histograms, gauges of
    state), except start times and ``*_created`` (earliest), and limits and flags such as
    ``process_max_fds`` or ``webpubsub_info`` (largest). Series with a ``worker`` label stay
    apart, since each worker reports its own.
    """
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode("utf-8", "replace")):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = samples.get(key)
                samples[key] = (
                    sample.value if old is None else _combine(family.name, old, sample.value)
                )
    for name, merged in families.items():
        for (sample_name, labels), value in values[name].items():
            merged.add_sample(sample_name, dict(labels), value)
    return list(families.values())


def _combine(family: str, old: float, new: float) -> float:
    if family in _MIN or family.endswith("_created"):
        return min(old, new)
    if family in _MAX:
        return max(old, new)
    return old + new
