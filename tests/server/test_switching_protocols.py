"""The hand-written 101 (server/client_endpoint.py ``switching_protocols``) is what websockets
would answer, byte for byte but the date, and it is only used where websockets would accept."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.server import ServerProtocol

from webpubsub.server.client_endpoint import switching_protocols
from webpubsub.server.http import HttpRequest

KEY = base64.b64encode(b"0123456789abcdef").decode()
PLAIN = [
    ("host", "127.0.0.1:8080"),
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", KEY),
    ("sec-websocket-version", "13"),
]


def websockets_answer(headers: list[tuple[str, str]], chosen: str | None) -> bytes | None:
    """What websockets writes for these headers (None: it refuses)."""
    ws = ServerProtocol(
        subprotocols=[chosen] if chosen else None,  # type: ignore[list-item]
        select_subprotocol=(lambda _p, _o: chosen) if chosen else None,  # type: ignore[arg-type,return-value]
    )
    response = ws.accept(Request("/client/hubs/chat", Headers(headers)))
    if response.status_code != 101:
        return None
    ws.send_response(response)
    return b"".join(ws.data_to_send())


def without_date(head: bytes) -> bytes:
    return b"\r\n".join(line for line in head.split(b"\r\n") if not line.startswith(b"Date: "))


def test_a_plain_upgrade_gets_websockets_own_answer() -> None:
    for chosen in (None, "json.reliable.webpubsub.azure.v1"):
        extra = [("sec-websocket-protocol", chosen)] if chosen else []
        headers = PLAIN + extra
        ours = switching_protocols(HttpRequest("GET", "/client/hubs/chat", headers), chosen)
        theirs = websockets_answer(headers, chosen)
        assert ours is not None and theirs is not None
        assert without_date(ours) == without_date(theirs)
        assert ours.count(b"\r\nDate: ") == 1


VARIANTS = {
    "upgrade": ["websocket", "WebSocket", "websocket, h2c", "h2c", "", "websocket "],
    "connection": ["Upgrade", "keep-alive, Upgrade", "upgrade", "keep-alive", "", "Upgrade,"],
    "sec-websocket-key": [KEY, KEY[:-1], KEY + "=", "!" * 24, base64.b64encode(b"x" * 17).decode()],
    "sec-websocket-version": ["13", "8", "13, 8", ""],
    "sec-websocket-extensions": ["permessage-deflate", ""],
}


def mostly_valid(values: list[str]) -> st.SearchStrategy[list[str]]:
    """The valid single value most of the time, so that one header off decides."""
    return st.one_of(
        st.just(values[:1]), st.just(values[:1]), st.lists(st.sampled_from(values), max_size=2)
    )


@settings(max_examples=600, deadline=None)
@given(
    choices=st.fixed_dictionaries({name: mostly_valid(values) for name, values in VARIANTS.items()})
)
def test_the_fast_path_accepts_only_what_websockets_accepts(
    choices: dict[str, list[str]],
) -> None:
    headers = [("host", "127.0.0.1:8080")]
    for name, values in choices.items():
        headers += [(name, value) for value in values]
    ours = switching_protocols(HttpRequest("GET", "/client/hubs/chat", headers), None)
    if ours is not None:
        theirs = websockets_answer(headers, None)
        assert theirs is not None, headers
        assert without_date(ours) == without_date(theirs)


def test_websockets_protocols_still_get_distinct_version_4_uuids() -> None:
    ids = {ServerProtocol().id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.version == 4 for i in ids)
