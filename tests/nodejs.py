"""Drive Node scripts of tests/node (the official JS SDKs) from Python tests.

Each script speaks JSON lines on stdin/stdout (see ``tests/node/common.mjs``); output is
buffered until a test consumes it, and every wait is bounded.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node")
TIMEOUT = 10.0

Line = dict[str, Any]
Predicate = Callable[[Line], bool]


def node_missing() -> str | None:
    """Why the Node-driven tests cannot run here, or None."""
    if NODE is None:
        return "node is not installed: the JS SDK tests need Node.js"
    if not (NODE_DIR / "node_modules").is_dir():
        return "tests/node/node_modules is missing: run `npm ci` in tests/node (or `make install`)"
    return None


# -- value encoding shared with tests/node/common.mjs -----------------------------------------


def to_wire(value: Any) -> Any:
    """JSON-safe form of a value for the drivers: bytes become {"$binary": base64}."""
    if isinstance(value, bytes | bytearray):
        return {"$binary": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def from_wire(value: Any) -> Any:
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$binary"}:
            return base64.b64decode(value["$binary"])
        return {k: from_wire(v) for k, v in value.items()}
    return value


# -- the Node driver process -------------------------------------------------------------------


class JsError(Exception):
    """An SDK call that threw; ``error`` holds what the driver reported about the error."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('name')}: {error.get('message')}")
        self.error = error

    @property
    def status_code(self) -> int | None:
        return self.error.get("statusCode")

    @property
    def detail_name(self) -> str | None:
        """``error.name`` of a failed ack (SendMessageError.errorDetail)."""
        return (self.error.get("errorDetail") or {}).get("name")


class NodeDriver:
    """A Node script speaking JSON lines; output is buffered until a test consumes it."""

    def __init__(self, script: str, env: dict[str, str] | None = None) -> None:
        assert NODE is not None
        self.script = script
        self._proc = subprocess.Popen(
            [NODE, script],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            env={**os.environ, **(env or {})},
        )
        self._cond = threading.Condition()
        self._unread: list[Line] = []
        self._transcript: list[Line] = []
        self._stderr: list[str] = []
        self._eof = False
        self._ids = itertools.count(1)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            ready = self.wait_for(lambda line: line.get("type") == "ready", f"{script} to start")
        except BaseException:
            self.close()
            raise
        self.versions: dict[str, str] = ready["versions"]

    def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        for text in self._proc.stdout:
            try:
                line = from_wire(json.loads(text))
            except ValueError:
                line = {"type": "unparsed", "text": text.rstrip("\n")}
            with self._cond:
                self._unread.append(line)
                self._transcript.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for text in self._proc.stderr:
            with self._cond:
                self._stderr.append(text.rstrip("\n"))

    def wait_for(self, predicate: Predicate, what: str, timeout: float = TIMEOUT) -> Line:
        """Consume and return the first unread line matching ``predicate``, or fail the test."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, line in enumerate(self._unread):
                    if predicate(line):
                        del self._unread[index]
                        return line
                remaining = deadline - time.monotonic()
                if self._eof:
                    pytest.fail(self._report(f"{self.script} exited while waiting for {what}"))
                if remaining <= 0:
                    pytest.fail(self._report(f"timed out after {timeout}s waiting for {what}"))
                self._cond.wait(remaining)

    def unread(self, predicate: Predicate) -> list[Line]:
        """Lines received but not consumed yet that match ``predicate`` (left unread)."""
        with self._cond:
            return [line for line in self._unread if predicate(line)]

    def _report(self, headline: str) -> str:
        shown = self._transcript[-60:]
        lines = [headline, f"--- last {len(shown)} lines from {self.script} ---"]
        lines += [json.dumps(to_wire(line))[:600] for line in shown]
        if self._stderr:
            lines += ["--- stderr ---", *self._stderr[-30:]]
        return "\n".join(lines)

    def request(self, op: str, **params: Any) -> Any:
        """Run one command and wait for its result; raise JsError when the SDK threw."""
        command_id = next(self._ids)
        command = json.dumps(to_wire({"id": command_id, "op": op, **params}))
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pytest.fail(self._report(f"{self.script} is gone; could not send {op}"))
        result = self.wait_for(
            lambda line: line.get("type") == "result" and line.get("id") == command_id,
            f"the result of {op} {json.dumps(to_wire(params))[:300]}",
        )
        if not result["ok"]:
            raise JsError(result["error"])
        return result["value"]

    def close(self) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
