"""``webpubsub serve --workers N``: N processes on one port, each a node of the cluster.

The supervisor (the process you started) serves nothing itself. It reserves the port with
an ``SO_REUSEPORT`` socket that never listens (so ``--port 0`` picks one port for all, and
nothing else takes it while a worker restarts), then starts N workers: ``python -m webpubsub
serve ... --workers 1`` with ``WEBPUBSUB_WORKER`` naming their number, the supervisor's pid
and a private directory for the workers' own sockets (``ops._workers``). Each worker binds
the port with ``SO_REUSEPORT`` and joins the cluster over Redis; the kernel spreads new
connections over them.

* A worker writes ``READY`` to its stdout once it serves; the supervisor prints the usual
  "listening on" lines when all have, and copies anything else workers print.
* A worker that exits is restarted, at once if it had run for ``STABLE_AFTER`` seconds,
  else after a growing delay; after ``MAX_QUICK_EXITS`` quick exits in a row the supervisor
  stops the others and exits 1. A worker that cannot start at all (Redis unreachable, bad
  certificate) fails the supervisor with its exit status.
* SIGTERM and SIGINT are passed on: every worker drains as a lone node does; those still
  running ``shutdown_grace`` + ``KILL_MARGIN`` seconds later are killed. SIGHUP is passed
  on too (each worker reloads its settings).
* Workers ask the kernel for SIGTERM when the supervisor dies (Linux), so a supervisor
  killed with SIGKILL leaves no worker behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import Settings

log = logging.getLogger("webpubsub.workers")

WORKER_ENV = "WEBPUBSUB_WORKER"
READY = b"webpubsub-worker-ready"
STABLE_AFTER = 10.0
"""Seconds a worker must have run for its exit to count as a one-off, not a crash loop."""
MAX_QUICK_EXITS = 8
"""Quick exits of one worker in a row before the supervisor gives up (the delays between
restarts double from 0.1 s to at most 5 s: about 15 s of trying, e.g. through a short Redis
outage a restarting worker cannot join)."""
KILL_MARGIN = 10.0
"""Seconds past ``shutdown_grace`` the supervisor waits for draining workers to finish."""
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerIdentity:
    """Who a worker is: its number, its supervisor's pid, the directory of worker sockets."""

    index: int
    parent: int
    directory: str

    def encode(self) -> str:
        return f"{self.index}:{self.parent}:{self.directory}"

    @classmethod
    def from_env(cls) -> WorkerIdentity | None:
        value = os.environ.get(WORKER_ENV)
        if not value:
            return None
        index, parent, directory = value.split(":", 2)
        return cls(int(index), int(parent), directory)


def bind_to_parent(identity: WorkerIdentity) -> bool:
    """Ask for SIGTERM when the supervisor dies; False if it is already gone."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return os.getppid() == identity.parent


def leave(identity: WorkerIdentity) -> None:
    """A worker's last act: if its supervisor died (SIGKILL), the last worker out removes
    the socket directory the supervisor could not."""
    if os.getppid() != identity.parent:
        with contextlib.suppress(OSError):
            os.rmdir(identity.directory)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, never listening ``SO_REUSEPORT`` socket: the port the workers will share.

    Raises OSError when the port is taken (by anything not sharing it this way).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host or "0.0.0.0", port))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    started: float
    ready: asyncio.Event
    output: asyncio.Task[None]


class Supervisor:
    """Runs ``count`` workers until SIGTERM/SIGINT; see the module docstring.

    Args:
        settings: the loaded settings (port already chosen, key generated if none).
        command: the worker command line (``python -m webpubsub serve ... --workers 1``).
        count: how many workers.
        announce: prints the "listening on" lines, once every worker serves.
    """

    def __init__(
        self,
        settings: Settings,
        command: list[str],
        count: int,
        announce: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.command = command
        self.count = count
        self.announce = announce
        self.workers: dict[int, _Worker] = {}
        self.directory = ""
        self._stop = asyncio.Event()
        self._stopping = False
        self._failed = False

    async def run(self) -> int:
        """Start, supervise, stop; returns the exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        self.directory = tempfile.mkdtemp(prefix="webpubsub-workers-")
        try:
            status = await self._start_all()
            if status is not None:
                await self._shutdown()
                return status
            self.announce()
            log.info("%d workers serving on port %d", self.count, self.settings.port)
            keepers = [loop.create_task(self._keep(i)) for i in range(self.count)]
            await self._stop.wait()
            await self._shutdown()
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            return 1 if self._failed else 0
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def _start_all(self) -> int | None:
        """Start every worker and wait until each serves; an exit status if one failed."""
        for index in range(self.count):
            self.workers[index] = await self._start(index)
        for worker in self.workers.values():
            ready = asyncio.ensure_future(worker.ready.wait())
            exited = asyncio.ensure_future(worker.process.wait())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({ready, exited, stop}, return_when=asyncio.FIRST_COMPLETED)
            for future in (ready, exited, stop):
                future.cancel()
            if self._stop.is_set():
                return 0
            if not worker.ready.is_set():
                code = worker.process.returncode
                log.error("worker %d could not start (exit status %s)", worker.index, code)
                return code if code and code > 0 else 1
        return None

    async def _start(self, index: int) -> _Worker:
        identity = WorkerIdentity(index, os.getpid(), self.directory)
        env = {**os.environ, WORKER_ENV: identity.encode()}
        if self.settings.generated_key:
            # One generated key for the whole service; the environment keeps it off `ps`.
            env["WEBPUBSUB_ACCESS_KEY"] = self.settings.access_keys[0]
        process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        ready = asyncio.Event()
        output = asyncio.get_running_loop().create_task(self._relay(process, ready))
        log.info("worker %d started (pid %d)", index, process.pid)
        return _Worker(index, process, time.monotonic(), ready, output)

    @staticmethod
    async def _relay(process: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
        """Notice the worker's READY line; pass anything else it prints to our stdout."""
        assert process.stdout is not None
        while line := await process.stdout.readline():
            if line.rstrip() == READY:
                ready.set()
                continue
            sys.stdout.buffer.write(line)
            sys.stdout.flush()

    async def _keep(self, index: int) -> None:
        """Restart worker ``index`` whenever it exits, until stopping or it crash-loops."""
        quick = 0
        while True:
            worker = self.workers[index]
            status = await worker.process.wait()
            if self._stopping:
                return
            quick = quick + 1 if time.monotonic() - worker.started < STABLE_AFTER else 0
            if quick >= MAX_QUICK_EXITS:
                log.error(
                    "worker %d exited %d times in a row within %g s of starting (last status "
                    "%s): giving up",
                    index,
                    quick,
                    STABLE_AFTER,
                    status,
                )
                self._failed = True
                self._stop.set()
                return
            delay = 0.0 if quick == 0 else min(0.1 * 2 ** (quick - 1), 5.0)
            log.warning(
                "worker %d (pid %d) exited with status %s; restarting it in %.1f s",
                index,
                worker.process.pid,
                status,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stopping or self._stop.is_set():
                return
            self.workers[index] = await self._start(index)

    def _forward(self, sig: signal.Signals) -> None:
        for worker in self.workers.values():
            if worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(sig)

    async def _shutdown(self) -> None:
        """SIGTERM every worker; kill those still running after the grace and margin."""
        self._stopping = True
        running = [w for w in self.workers.values() if w.process.returncode is None]
        log.info("stopping %d worker(s)", len(running))
        self._forward(signal.SIGTERM)
        waits = [w.process.wait() for w in running]
        grace = self.settings.limits.shutdown_grace + KILL_MARGIN
        try:
            await asyncio.wait_for(asyncio.gather(*waits), grace)
        except TimeoutError:
            log.error("workers still running %g s after SIGTERM: killing them", grace)
            self._failed = True
            for worker in running:
                if worker.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
            await asyncio.gather(*(w.process.wait() for w in running))
        for worker in self.workers.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.output, 1.0)
        failed = [w.index for w in running if w.process.returncode not in (0, -signal.SIGTERM)]
        if failed:
            log.warning("worker(s) %s did not exit cleanly", failed)
