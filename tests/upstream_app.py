"""A recording event-handler app over real HTTP (stdlib server in a thread), for tests.

Each rule answers one event (by ce-eventName, percent-decoded) with a status, body, headers
and an optional delay, hold or endless stream; every request is recorded and waiters are
woken as requests arrive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

STREAM_CHUNK = b"x" * 65536


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hold: threading.Event | None = None  # answer only once this is set (at most 10 s)
    stream: int = 0  # then this many more body bytes, written 64 KiB at a time
    chunked: bool = False  # send the body chunked, without a Content-Length


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> str:
        return unquote(self.headers.get("ce-eventname", ""))


class UpstreamApp:
    """Serve ``/{hub}/{event}``; ``rules[event]`` is a Reply or a list consumed in order."""

    def __init__(self, allowed_origin: str | None = "*") -> None:
        self.allowed_origin = allowed_origin
        self.rules: dict[str, Reply | list[Reply]] = {}
        self.requests: list[Recorded] = []
        self.streamed: list[int] = []  # body bytes written by each streamed answer, when done
        self._cond = threading.Condition()
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _record(self) -> Recorded:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorded = Recorded(self.command, self.path, headers, body)
                with app._cond:
                    app.requests.append(recorded)
                    app._cond.notify_all()
                return recorded

            def _answer(self, reply: Reply) -> None:
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.hold is not None:
                    reply.hold.wait(10)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if reply.chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                    else:
                        self.send_header("Content-Length", str(len(reply.body) + reply.stream))
                    self.end_headers()
                    self._write(reply, reply.body)
                    if reply.stream:
                        self._stream(reply)
                    if reply.chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the service gave up waiting (a timeout test)

            def _write(self, reply: Reply, data: bytes) -> None:
                if reply.chunked and data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                elif data:
                    self.wfile.write(data)

            def _stream(self, reply: Reply) -> None:
                written = 0
                try:
                    while written < reply.stream:
                        chunk = STREAM_CHUNK[: reply.stream - written]
                        self._write(reply, chunk)
                        written += len(chunk)
                finally:
                    with app._cond:
                        app.streamed.append(written)
                        app._cond.notify_all()

            def do_OPTIONS(self) -> None:
                self._record()
                headers = {}
                if app.allowed_origin is not None:
                    headers["WebHook-Allowed-Origin"] = app.allowed_origin
                self._answer(Reply(200, headers=headers))

            def do_POST(self) -> None:
                recorded = self._record()
                self._answer(app.reply_for(recorded.event))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/{{hub}}/{{event}}"

    def reply_for(self, event: str) -> Reply:
        with self._cond:
            rule = self.rules.get(event)
            if isinstance(rule, list):
                return rule.pop(0) if len(rule) > 1 else rule[0]
        return rule or Reply(204)

    def wait_for(
        self, predicate: Callable[[list[Recorded]], bool], timeout: float = 10.0
    ) -> list[Recorded]:
        """Block until ``predicate(requests)`` holds; fail with what arrived otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.requests), timeout):
                seen = [(r.method, r.path) for r in self.requests]
                raise AssertionError(f"upstream never saw the expected requests; saw {seen}")
            return list(self.requests)

    def wait_streamed(self, count: int = 1, timeout: float = 10.0) -> list[int]:
        """Block until ``count`` streamed answers ended (written in full or cut off)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.streamed) >= count, timeout):
                raise AssertionError(f"only {len(self.streamed)} streamed answers ended")
            return list(self.streamed)

    def events(self, name: str) -> list[Recorded]:
        with self._cond:
            return [r for r in self.requests if r.method == "POST" and r.event == name]

    def __enter__(self) -> UpstreamApp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
