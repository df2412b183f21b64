"""Plain-socket Redis and Sentinel probes, for the Sentinel benchmark and its tests.

No client library: these only ask a running server or sentinel a question (who is master,
what does INFO say) while the project's own engine is the thing being measured or tested.
"""

from __future__ import annotations

import shutil
import socket


def sentinel_command() -> list[str] | None:
    """Debian's redis-sentinel, or redis-server in sentinel mode (None: neither here)."""
    if shutil.which("redis-sentinel"):
        return ["redis-sentinel"]
    if shutil.which("redis-server"):
        return ["redis-server", "--sentinel"]
    return None


def ask(port: int, *command: str, timeout: float = 2.0) -> list[str]:
    """One command to a Redis or a sentinel on 127.0.0.1 (RESP), the reply as lines."""
    request = f"*{len(command)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in command)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        sock.settimeout(0.3)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace").split("\r\n")


def reply_field(lines: list[str], name: str) -> str | None:
    """A field of a flat reply (SENTINEL MASTER: name, value, ...; INFO: name:value)."""
    for i, line in enumerate(lines):
        if line == name and i + 2 < len(lines):
            return lines[i + 2]
        if line.startswith(name + ":"):
            return line.split(":", 1)[1]
    return None
