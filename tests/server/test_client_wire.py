"""The client JSON wire over real sockets: data relayed as sent, refusals in the protocol's
own form, crash safety, and absolute-form request targets.

Receivers are raw WebSocket clients, so what is checked is the exact bytes on the wire.
Absence is proven with a marker: a receiver gets messages in the order the service handled
them, so what has not arrived before the marker was not delivered.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.hardening.support import (
    JOIN,
    SEND,
    TEXT,
    RawWebSocket,
    frame,
    running,
)
from tests.server.helpers import (
    JSON_SUBPROTOCOL,
    parse_http_response,
    raw_http,
    rest_call,
    rest_url,
    sign_rest,
)
from webpubsub.core.jsontext import MAX_DEPTH
from webpubsub.testing import ServiceThread

MARKER = b'"marker"'


def send_frame(data: bytes, ack_id: int | None = None, data_type: bytes = b"json") -> bytes:
    ack = b"" if ack_id is None else b',"ackId":%d' % ack_id
    return (
        b'{"type":"sendToGroup","group":"room"'
        + ack
        + b',"dataType":"'
        + data_type
        + b'","data":'
        + data
        + b',"noEcho":false}'
    )


class Room:
    """A sender, a JSON receiver and a simple-client receiver in group ``room``."""

    def __init__(self, service: ServiceThread, hub: str) -> None:
        self.sender = RawWebSocket(service, hub, subprotocol=JSON_SUBPROTOCOL, roles=[SEND])
        self.json = RawWebSocket(service, hub, subprotocol=JSON_SUBPROTOCOL, roles=[JOIN])
        self.simple = RawWebSocket(service, hub, user_id="simple")
        added = rest_call(service, "PUT", f"/api/hubs/{hub}/users/simple/groups/room")
        assert added.status_code == 200, added.text
        for ws in (self.sender, self.json):
            assert json.loads(ws.next_data().payload)["event"] == "connected"  # type: ignore[union-attr]
        self.json.send_message(b'{"type":"joinGroup","group":"room","ackId":1}')
        assert json.loads(self.json.next_data().payload)["success"]  # type: ignore[union-attr]

    def close(self) -> None:
        for ws in (self.sender, self.json, self.simple):
            ws.close()

    def ack(self, ack_id: int) -> dict[str, object]:
        received = self.sender.next_data()
        assert received is not None, "the sender was closed"
        ack: dict[str, object] = json.loads(received.payload)
        assert ack.get("type") == "ack" and ack.get("ackId") == ack_id, ack
        return ack

    def publish(self, data: bytes, ack_id: int, data_type: bytes = b"json") -> dict[str, object]:
        self.sender.send_message(send_frame(data, ack_id, data_type))
        return self.ack(ack_id)

    def received_before_marker(self) -> tuple[list[bytes], list[bytes]]:
        """(JSON receiver payloads, simple receiver payloads) before the marker message."""
        assert self.publish(MARKER, 999_999)["success"]
        found: tuple[list[bytes], list[bytes]] = ([], [])
        for ws, payloads, end in (
            (self.json, found[0], b',"data":' + MARKER + b"}"),
            (self.simple, found[1], MARKER),
        ):
            while (received := ws.next_data()) is not None and not received.payload.endswith(end):
                payloads.append(received.payload)
            assert received is not None, "a receiver was closed"
        return found


@pytest.fixture
def room(service: ServiceThread, hub: str) -> object:
    room = Room(service, hub)
    yield room
    room.close()


def test_numbers_and_duplicate_keys_are_relayed_byte_for_byte(room: Room) -> None:
    data = b'{"price":1.10,"big":12345678901234567.5,"k":1,"k":[1.0E+2, -0.0],"s":"\\u00e9"}'
    assert room.publish(data, 2)["success"]
    json_payloads, simple_payloads = room.received_before_marker()
    assert json_payloads == [
        b'{"type":"message","from":"group","group":"room","dataType":"json","data":' + data + b"}"
    ]
    assert simple_payloads == [data]


@pytest.mark.parametrize("data", [b"NaN", b"Infinity", b"-Infinity", b"[1e999]", b'{"x":-1E400}'])
def test_nan_and_infinity_are_refused_with_an_ack_error(room: Room, data: bytes) -> None:
    ack = room.publish(data, 3)
    assert ack["success"] is False
    assert ack["error"]["name"] == "BadRequest", ack  # type: ignore[index]
    assert room.received_before_marker() == ([], [])


def test_a_thousand_levels_are_accepted_and_deeper_is_refused(room: Room) -> None:
    deepest = b"[" * MAX_DEPTH + b"1" + b"]" * MAX_DEPTH
    assert MAX_DEPTH >= 1000
    assert room.publish(deepest, 4)["success"]
    too_deep = b"[" + deepest + b"]"
    ack = room.publish(too_deep, 5)
    assert ack["success"] is False
    assert f"deeper than {MAX_DEPTH}" in ack["error"]["message"]  # type: ignore[index]
    json_payloads, simple_payloads = room.received_before_marker()
    assert simple_payloads == [deepest]
    assert [p.endswith(b',"data":' + deepest + b"}") for p in json_payloads] == [True]


@pytest.mark.parametrize(
    ("data", "data_type"),
    [(b'"a\\ud800"', b"text"), (b'"\\udc00"', b"json"), (b'{"k":["\\ud83d!"]}', b"json")],
)
def test_lone_surrogates_are_refused_and_the_socket_stays(
    room: Room, data: bytes, data_type: bytes
) -> None:
    ack = room.publish(data, 6, data_type)
    assert ack["success"] is False and ack["error"]["name"] == "BadRequest", ack  # type: ignore[index]
    event = b'{"type":"event","event":"e","ackId":7,"dataType":"%s","data":%s}' % (data_type, data)
    room.sender.send_message(event)
    assert room.ack(7)["success"] is False
    assert room.received_before_marker() == ([], [])  # nothing forwarded, simple client alive
    room.sender.send_message(b'{"type":"ping"}')
    assert room.sender.next_data().payload == b'{"type":"pong"}'  # type: ignore[union-attr]


def test_refused_data_without_an_ack_id_is_dropped_quietly(room: Room) -> None:
    room.sender.send_message(send_frame(b"NaN"))
    room.sender.send_message(send_frame(b'"\\ud800"', data_type=b"text"))
    assert room.received_before_marker() == ([], [])


def test_an_unexpected_error_closes_the_client_with_1011_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing the client sends should raise; if our code does, the client gets 1011."""
    with running() as service:

        def broken(conn: object, request: object) -> None:
            raise RuntimeError("a bug in an event handler")

        service.call(lambda: setattr(service.service.node, "on_user_event", broken))
        with (
            caplog.at_level(logging.ERROR, logger="webpubsub.server"),
            RawWebSocket(service, "crash", subprotocol=JSON_SUBPROTOCOL) as ws,
        ):
            assert ws.next_data() is not None  # connected
            ws.send_message(b'{"type":"event","event":"e","dataType":"text","data":"x"}')
            code, _ = ws.until_closed()
        assert code == 1011
        errors = [r for r in caplog.records if r.exc_info and "a bug" in str(r.exc_info[1])]
        assert errors, caplog.records


def test_many_messages_in_one_read_then_a_close_are_all_handled_in_order() -> None:
    """Past one turn's budget the messages wait for the next turn; the close after them in
    the same segment still waits for them."""
    count = 3000  # a dozen turns' worth
    with running(client_message_burst=count) as service:
        with RawWebSocket(service, "batch", subprotocol=JSON_SUBPROTOCOL) as ws:
            assert ws.next_data() is not None
            pings = frame(TEXT, b'{"type":"ping"}') * count
            ws.send(pings + frame(0x8, b"\x03\xe8"))
            code, frames = ws.until_closed()
        assert code == 1000
        assert [f.payload for f in frames] == [b'{"type":"pong"}'] * count


# -- absolute-form request targets (RFC 9112 3.2.2) ---------------------------------------


def test_an_absolute_form_target_is_routed_by_its_path(service: ServiceThread) -> None:
    host = f"{service.settings.host}:{service.settings.port}"
    head = f"GET http://{host}/api/health HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n"
    raw = raw_http(service, head.encode())
    assert parse_http_response(raw).status == 200


def test_an_absolute_form_rest_call_checks_the_audience_by_path(
    service: ServiceThread, hub: str
) -> None:
    url = rest_url(service, f"/api/hubs/{hub}/groups/g/:send")
    body = b"hello"

    def post(token: str) -> int:
        head = (
            f"POST {url} HTTP/1.1\r\nHost: {service.settings.host}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return parse_http_response(raw_http(service, head.encode() + body)).status

    assert post(sign_rest(url)) == 202
    other = rest_url(service, f"/api/hubs/{hub}/groups/other/:send")
    assert post(sign_rest(other)) == 401
