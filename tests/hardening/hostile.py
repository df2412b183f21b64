"""Hostile strings for the unicode fuzzers, and the raw upgrade they are thrown through.

:data:`hostile_text` draws the strings that break names: lone surrogates alone and embedded
(``\\ud800``: valid in JSON escapes and JWT claims, not text), characters outside the BMP,
right-to-left text and bidi controls (U+202E), NUL and the other C0 controls, combining
marks, whitespace only, noncharacters, strings of 1,023 to 1,025 characters around the limit,
and things that look like escapes in a URL (``%00``, ``%ED%A0%80``, ``%zz``, ``/``).

The oracle for every name is the one rule of :mod:`webpubsub.core.names`: what it accepts
must work, what it refuses must be refused in the protocol's own form.

:func:`upgrade` sends a WebSocket handshake with any token over a raw socket and returns
the service's answer, and on a 101 a :class:`RawWebSocket` to go on with.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import re
import socket
import string
from typing import Any
from urllib.parse import quote, unquote

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.hardening.support import RawWebSocket
from tests.server.helpers import TIMEOUT, parse_http_response
from webpubsub.core.names import MAX_NAME
from webpubsub.testing import ServiceThread

fuzz = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "50")),
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
"""Bounded and deterministic: ``FUZZ_EXAMPLES`` per test (default 50, for CI time)."""

# -- atoms --------------------------------------------------------------------------------

lone_surrogates = st.integers(0xD800, 0xDFFF).map(chr)
non_bmp = st.sampled_from(
    [
        "\U0001f600",  # emoji
        "\U0001d54f",  # mathematical double-struck X
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a ZWJ family
        "\U0001f1eb\U0001f1f7",  # a flag: two regional indicators
        "\U00020b9f",  # a CJK ideograph of plane 2
        "\U000e0001",  # a tag character
        "\U0010ffff",  # the last code point
    ]
) | st.integers(0x10000, 0x10FFFF).map(chr)
right_to_left = st.sampled_from(
    [
        "\u202e",  # RIGHT-TO-LEFT OVERRIDE
        "\u202b",  # RIGHT-TO-LEFT EMBEDDING
        "\u202c",  # POP DIRECTIONAL FORMATTING
        "\u200f",  # RIGHT-TO-LEFT MARK
        "\u2067",  # RIGHT-TO-LEFT ISOLATE
        "\u2069",  # POP DIRECTIONAL ISOLATE
        "\u061c",  # ARABIC LETTER MARK
        "\u05e9\u05dc\u05d5\u05dd",  # Hebrew
        "\u0645\u0631\u062d\u0628\u0627",  # Arabic
        "abc\u202edcb",
    ]
)
controls = st.integers(0, 0x1F).map(chr) | st.sampled_from(["\x00", "\x7f", "\x85", "\x9b"])
combining = st.sampled_from(
    ["\u0301", "e\u0301", "\u0336" * 30, "\u20dd", "Z\u0351\u0352\u0353" * 8, "\u0e49" * 5]
)
spaces = st.sampled_from(
    [" ", "\t", "\u00a0", "\u2028", "\u2029", "\u3000", "\u200b", "\ufeff", "\u180e"]
)
specials = st.sampled_from(["\ufffd", "\uffff", "\ufffe", "\U0001fffe", "\ufdd0", "\u00e9"])
url_like = st.sampled_from(
    ["/", "%", "%00", "%2F", "%ED%A0%80", "%C3", "%zz", "?", "#", "&", "=", "+", ".", "..", '"']
)
ascii_words = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=8)

atoms = st.one_of(
    ascii_words,
    lone_surrogates,
    non_bmp,
    right_to_left,
    controls,
    combining,
    spaces,
    specials,
    url_like,
)
joined = st.lists(atoms, min_size=1, max_size=6).map("".join)


def _around_the_limit(fill: str, length: int, tail: str) -> str:
    """``length`` characters (code points, as the rule counts them) ending in ``tail``."""
    return (fill * length)[: length - len(tail)] + tail if len(tail) < length else tail


long_names = st.builds(
    _around_the_limit,
    st.sampled_from(["a", "\u00e9", "\U0001f600", "\u202e", "\u0301", " "]),
    st.sampled_from([MAX_NAME - 1, MAX_NAME, MAX_NAME + 1]),
    st.sampled_from(["", "z", "\ud800", "\x00", "\U0001d54f"]),
)

hostile_text = st.one_of(joined, joined, joined, long_names, st.just(""), st.text(max_size=12))
"""Any string, mostly hostile; no size limit beyond the rule's (1,025 characters)."""

short_hostile = st.one_of(joined, st.just(""), st.text(max_size=12))
"""The same without the long strings, where several go into one request."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def without_surrogates(text: str) -> str:
    return "".join(ch for ch in text if not 0xD800 <= ord(ch) <= 0xDFFF)


def json_bytes(value: Any, *, ascii_only: bool) -> bytes:
    """JSON text as bytes: lone surrogates travel as ``\\udXXX`` escapes; with
    ``ascii_only`` False, everything else goes as raw UTF-8."""
    if ascii_only:
        return json.dumps(value).encode()
    text = json.dumps(value, ensure_ascii=False)
    # A raw lone surrogate can only stand in a string literal: escape it there.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text).encode("utf-8")


def encode(text: str, encoding: str) -> bytes:
    """One path segment or query value, as the bytes that go on the wire."""
    data = text.encode("utf-8", "surrogatepass")
    if encoding == "percent":
        return quote(data, safe="").encode("ascii")
    if encoding == "raw":
        return b"".join(
            bytes([b]) if b >= 0x80 else quote(bytes([b]), safe="").encode() for b in data
        )
    return quote(data, safe="%").encode("ascii")


def decoded(wire: bytes) -> str | None:
    """What the service reads from a segment or query value: the bytes as Latin-1, then
    ``%XX`` escapes decoded as UTF-8; None when they are not UTF-8 (a 400)."""
    try:
        return unquote(wire.decode("latin-1"), errors="strict")
    except UnicodeDecodeError:
        return None


def compact_token(claims: dict[str, Any], key: str) -> str:
    """An HS256 JWT whose claims are raw UTF-8 JSON (escapes only for lone surrogates):
    a quarter of the length PyJWT's ASCII escapes give non-BMP names."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    payload = b64(json_bytes(claims, ascii_only=False))
    signing_input = f"{header}.{payload}"
    signature = hmac.new(key.encode("utf-8"), signing_input.encode("ascii"), hashlib.sha256)
    return f"{signing_input}.{b64(signature.digest())}"


# -- a raw upgrade ------------------------------------------------------------------------


@dataclasses.dataclass
class Upgrade:
    """The service's answer to a handshake: a status, and the socket on a 101."""

    status: int
    headers: dict[str, str]
    body: bytes
    ws: RawWebSocket | None

    def json(self) -> Any:
        return json.loads(self.body)


def upgrade(
    service: ServiceThread,
    hub: str,
    token: str,
    *,
    subprotocol: str | None = "json.webpubsub.azure.v1",
    timeout: float = TIMEOUT,
    in_header: bool = False,
    query: str = "",
) -> Upgrade:
    """Send ``GET /client/hubs/{hub}?access_token=token`` (or the token in an
    ``Authorization`` header) with an upgrade and read the answer. A hang fails (socket
    timeout); a socket closed before a full answer fails."""
    sock = socket.create_connection((service.settings.host, service.settings.port), timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    target = f"/client/hubs/{hub}" if in_header else f"/client/hubs/{hub}?access_token={token}"
    if query:
        target += ("&" if "?" in target else "?") + query
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: 127.0.0.1:{service.settings.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    if in_header:
        lines.append(f"Authorization: Bearer {token}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    ws = RawWebSocket.adopt(sock)
    head = ws.read_head()
    status = int(head.split(b" ", 2)[1])
    if status == 101:
        return Upgrade(status, {}, b"", ws)
    # A refusal ends the connection: read the body to EOF.
    while ws.fill():
        pass
    ws.close()
    response = parse_http_response(head + b"\r\n\r\n" + ws.buffered())
    return Upgrade(response.status, response.headers, response.body, None)


def assert_json_error(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """An ``ErrorDetail`` body with ``x-ms-error-code`` (spec 1.1)."""
    detail = json.loads(body)
    assert isinstance(detail, dict), body
    assert isinstance(detail.get("code"), str) and detail["code"], detail
    assert isinstance(detail.get("message"), str) and detail["message"], detail
    assert headers.get("x-ms-error-code") == detail["code"], (status, headers)
    return detail
