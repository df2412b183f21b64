"""Run ``python -m webpubsub serve`` as a child process, as an operator would."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.server.helpers import TIMEOUT

ENDPOINT = re.compile(r"listening on (\S+)")


class ServiceProcess:
    """``webpubsub serve --port 0`` with extra arguments; stdout is read for the endpoint."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = ["--port", "0", "--log-level", "info", *args]
        self.env = {**os.environ, **(env or {})}
        self.env.pop("WEBPUBSUB_CONFIG", None)
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.stderr_text = ""

    def start(self) -> ServiceProcess:
        src = str(Path(__file__).resolve().parents[2] / "src")
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, self.env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webpubsub", "serve", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
        )
        assert self.proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 4 * TIMEOUT
        try:
            while time.monotonic() < deadline:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    break
                if found := ENDPOINT.search(line):
                    self.endpoint = found.group(1)
                    return self
        finally:
            selector.close()
        self.stop()
        raise AssertionError(f"the service did not start: {self.stderr_text[-2000:]}")

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; returns its exit status."""
        assert self.proc is not None
        _, self.stderr_text = self.proc.communicate(timeout=timeout)
        return self.proc.returncode

    def stop(self) -> None:
        """Kill the process if it still runs, and collect what it wrote to stderr."""
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        _, self.stderr_text = self.proc.communicate(timeout=TIMEOUT)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
