"""Hostile and malformed input: HTTP, REST parameters and WebSocket frames.

Each refusal has the documented status (or close code), and the service keeps serving: the
last test of the module checks it still answers REST and WebSocket clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from urllib.parse import quote

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from tests.server.helpers import (
    TIMEOUT,
    assert_error_detail,
    assert_raw_error,
    async_wait_until,
    close_all,
    connect_json,
    connect_raw,
    connection_exists,
    group_exists,
    health_ok,
    http,
    hub_snapshot,
    parse_http_response,
    raw_http,
    rest_call,
    rest_url,
    sign_rest,
    user_exists,
)
from webpubsub.testing import ServiceThread

MB = 1024 * 1024
BLANK_GROUPS = ["   ", "\t", "g" * 1025]
BLANK_IDS = ["spaces", "tab", "1025_chars"]


def request_head(service: ServiceThread, method: str, path: str, *headers: str) -> bytes:
    """A request head (no body) with a valid bearer token for ``path``."""
    token = sign_rest(service.endpoint + path)
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{service.settings.port}",
        f"Authorization: Bearer {token}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_text(service: ServiceThread, path: str, query: list[tuple[str, str]]) -> httpx.Response:
    return rest_call(
        service, "POST", path, query=query, content=b"payload", content_type="text/plain"
    )


# -- malformed HTTP -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02\xff garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /api/health HTTP/9.9\r\n\r\n",
        b"G=T /api/health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /api/health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Content-Length: 6\r\n\r\nabcdef",
    ],
    ids=[
        "binary",
        "no_target",
        "bad_version",
        "bad_method",
        "bad_header",
        "bad_length",
        "bad_chunk",
        "length_and_chunked",
        "two_lengths",
    ],
)
def test_malformed_http_gives_400(service: ServiceThread, garbage: bytes) -> None:
    response = parse_http_response(raw_http(service, garbage))
    assert_raw_error(response, 400)
    assert health_ok(service)


def test_malformed_request_after_a_good_one_on_the_same_connection(
    service: ServiceThread,
) -> None:
    with socket.create_connection(
        (service.settings.host, service.settings.port), timeout=TIMEOUT
    ) as sock:
        sock.sendall(b"HEAD /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        sock.sendall(b"\x00garbage\r\n\r\n")
        received = b""
        while data := sock.recv(65536):
            received += data
    assert_raw_error(parse_http_response(received), 400)
    assert health_ok(service)


def test_pipelined_good_request_is_answered_before_the_malformed_one(
    service: ServiceThread,
) -> None:
    good = b"HEAD /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = raw_http(service, good + b"\x00garbage\r\n\r\n")
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), first
    assert_raw_error(parse_http_response(rest), 400)


def test_url_and_headers_too_large(service: ServiceThread) -> None:
    long_url = b"GET /api/" + b"x" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert 400 <= parse_http_response(raw_http(service, long_url)).status < 500
    many = b"".join(b"X-H-%d: v\r\n" % i for i in range(500))
    raw = b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    assert 400 <= parse_http_response(raw_http(service, raw)).status < 500
    assert health_ok(service)


NOT_UTF8 = ["%ED%A0%80", "a%ED%B0%80b", "%C3", "%FF", "%F0%9F%98"]
"""Escapes whose bytes are not UTF-8: a lone surrogate's 3 bytes, a truncated sequence."""


@pytest.mark.parametrize("escape", NOT_UTF8)
def test_path_escapes_that_are_not_utf8_are_refused(
    service: ServiceThread, hub: str, escape: str
) -> None:
    """Refused with 400, not read as U+FFFD (two broken names would become one group)."""
    for path in (
        f"/api/hubs/{hub}/groups/{escape}/:send",
        f"/api/hubs/{hub}/users/{escape}/groups/g",
        f"/api/hubs/{hub}/connections/{escape}",
    ):
        method = "POST" if path.endswith(":send") else "PUT"
        head = request_head(
            service,
            method,
            path,
            "Content-Type: text/plain",
            "Content-Length: 1",
            "Connection: close",
        )
        body = assert_raw_error(parse_http_response(raw_http(service, head + b"x")), 400)
        assert body.get("target") == "path", body
    assert not group_exists(service, hub, "\ufffd\ufffd\ufffd")


@pytest.mark.parametrize("escape", NOT_UTF8)
def test_query_escapes_that_are_not_utf8_are_refused(
    service: ServiceThread, hub: str, escape: str
) -> None:
    for query in (f"userId={escape}", f"group={escape}", f"role=a&role={escape}"):
        path = f"/api/hubs/{hub}/:generateToken?{query}"
        head = request_head(service, "POST", path, "Connection: close")
        body = assert_raw_error(parse_http_response(raw_http(service, head)), 400)
        assert body.get("target") == "query", body


def test_valid_escapes_still_name_unicode(service: ServiceThread, hub: str) -> None:
    """The same decoding keeps every valid name: U+FFFD itself, non-BMP, RTL."""
    for group in ("\ufffd", "\U0001d54f\u202e", "%ED"):
        response = post_text(service, f"/api/hubs/{hub}/groups/{quote(group, safe='')}/:send", [])
        assert response.status_code == 202, (group, response.text)


def test_http_1_0_request_is_answered_and_closed(service: ServiceThread) -> None:
    response = parse_http_response(raw_http(service, b"GET /api/health HTTP/1.0\r\n\r\n"))
    assert response.status == 200


def test_connection_close_is_honoured(service: ServiceThread) -> None:
    request = b"HEAD /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = parse_http_response(raw_http(service, request, timeout=1))
    assert response.status == 200


def test_half_sent_request_then_disconnect(service: ServiceThread) -> None:
    with socket.create_connection((service.settings.host, service.settings.port)) as sock:
        sock.sendall(b"POST /api/hubs/h/:send HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
    assert health_ok(service)


# -- body size and type -------------------------------------------------------------------


def test_body_over_one_megabyte(service: ServiceThread, hub: str) -> None:
    response = rest_call(
        service,
        "POST",
        f"/api/hubs/{hub}/:send",
        content=os.urandom(MB + 1),
        content_type="application/octet-stream",
    )
    assert_error_detail(response, 413)
    assert health_ok(service)


def test_body_of_exactly_one_megabyte_is_accepted(service: ServiceThread, hub: str) -> None:
    response = rest_call(
        service,
        "POST",
        f"/api/hubs/{hub}/:send",
        content=os.urandom(MB),
        content_type="application/octet-stream",
    )
    assert response.status_code == 202


def test_chunked_body_over_one_megabyte(service: ServiceThread, hub: str) -> None:
    path = f"/api/hubs/{hub}/:send"
    head = request_head(
        service, "POST", path, "Content-Type: text/plain", "Transfer-Encoding: chunked"
    )
    chunk = b"10000\r\n" + b"y" * 0x10000 + b"\r\n"
    raw = raw_http(service, head, *([chunk] * 20), b"0\r\n\r\n")
    assert_raw_error(parse_http_response(raw), 413)
    assert health_ok(service)


def test_content_length_over_limit_is_refused_before_the_body(
    service: ServiceThread, hub: str
) -> None:
    """Only the head is sent: the answer must come without waiting for 2 MB that never come."""
    path = f"/api/hubs/{hub}/:send"
    head = request_head(
        service, "POST", path, "Content-Type: text/plain", f"Content-Length: {2 * MB}"
    )
    assert_raw_error(parse_http_response(raw_http(service, head)), 413)
    assert health_ok(service)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/xml",
        "text/html",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "application/jsonx",
        None,
    ],
)
def test_unsupported_content_type(
    service: ServiceThread, hub: str, content_type: str | None
) -> None:
    response = rest_call(
        service, "POST", f"/api/hubs/{hub}/:send", content=b"<a/>", content_type=content_type
    )
    assert_error_detail(response, 415)


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "TEXT/PLAIN", "text/plain;charset=UTF-8"]
)
def test_content_type_parameters_and_case(
    service: ServiceThread, hub: str, content_type: str
) -> None:
    response = rest_call(
        service, "POST", f"/api/hubs/{hub}/:send", content=b'"x"', content_type=content_type
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("body", [b"{bad", b"[1,", b"", b"NaN", b"{'a': 1}", b"\xff\xfe"])
def test_invalid_json_body(service: ServiceThread, hub: str, body: bytes) -> None:
    for path in (f"/api/hubs/{hub}/:send", f"/api/hubs/{hub}/groups/g/:send"):
        response = rest_call(service, "POST", path, content=body, content_type="application/json")
        assert_error_detail(response, 400)


@pytest.mark.parametrize(
    "body",
    [b"{bad", b"[]", b'{"groups": "g"}', b'{"groups": ["g"], "extra": 1}', b'{"groups": [1]}'],
)
def test_invalid_add_to_groups_body(service: ServiceThread, hub: str, body: bytes) -> None:
    for operation in (":addToGroups", ":removeFromGroups"):
        response = rest_call(
            service,
            "POST",
            f"/api/hubs/{hub}/{operation}",
            content=body,
            content_type="application/json",
        )
        assert_error_detail(response, 400)


# -- names and parameters -----------------------------------------------------------------


@pytest.mark.parametrize("group", BLANK_GROUPS, ids=BLANK_IDS)
def test_invalid_group_names(service: ServiceThread, hub: str, group: str) -> None:
    g = quote(group, safe="")
    for method, path in [
        ("POST", f"/api/hubs/{hub}/groups/{g}/:send"),
        ("POST", f"/api/hubs/{hub}/groups/{g}/:closeConnections"),
        ("GET", f"/api/hubs/{hub}/groups/{g}/connections"),
        ("PUT", f"/api/hubs/{hub}/groups/{g}/connections/c1"),
        ("DELETE", f"/api/hubs/{hub}/groups/{g}/connections/c1"),
        ("PUT", f"/api/hubs/{hub}/users/u1/groups/{g}"),
        ("DELETE", f"/api/hubs/{hub}/users/u1/groups/{g}"),
    ]:
        response = rest_call(service, method, path, content=b"x", content_type="text/plain")
        assert_error_detail(response, 400)
    response = rest_call(service, "HEAD", f"/api/hubs/{hub}/groups/{g}")
    assert response.status_code == 400
    body = f'{{"groups": ["ok", "{group}"]}}'.encode()
    response = rest_call(
        service,
        "POST",
        f"/api/hubs/{hub}/:addToGroups",
        content=body,
        content_type="application/json",
    )
    assert_error_detail(response, 400)
    response = rest_call(
        service,
        "PUT",
        f"/api/hubs/{hub}/permissions/sendToGroup/connections/c1",
        query=[("targetName", group)],
    )
    assert_error_detail(response, 400)


def test_group_name_of_1024_characters_is_valid(service: ServiceThread, hub: str) -> None:
    group = quote("g" * 1024, safe="")
    response = rest_call(service, "HEAD", f"/api/hubs/{hub}/groups/{group}")
    assert response.status_code == 404


@pytest.mark.parametrize("name", ["1hub", "_hub", "h" * 129, "hub-with-dash", "hub%20x"])
def test_invalid_hub_names(service: ServiceThread, name: str) -> None:
    response = post_text(service, f"/api/hubs/{name}/:send", [])
    assert_error_detail(response, 400)


@pytest.mark.parametrize("ttl", ["-1", "301", "x", "1.5", "99999999999999999999"])
def test_bad_message_ttl(service: ServiceThread, hub: str, ttl: str) -> None:
    for path in (
        f"/api/hubs/{hub}/:send",
        f"/api/hubs/{hub}/groups/g/:send",
        f"/api/hubs/{hub}/users/u/:send",
        f"/api/hubs/{hub}/connections/c/:send",
    ):
        assert_error_detail(post_text(service, path, [("messageTtlSeconds", ttl)]), 400)


@pytest.mark.parametrize("ttl", ["0", "1", "300"])
def test_valid_message_ttl(service: ServiceThread, hub: str, ttl: str) -> None:
    response = post_text(service, f"/api/hubs/{hub}/:send", [("messageTtlSeconds", ttl)])
    assert response.status_code == 202


@pytest.mark.parametrize(
    "odata",
    [
        "userId eq",
        "userId eq 'a' and",
        "userId eq 'unterminated",
        "userId === 'a'",
        "(userId eq 'a'",
        "nosuchfield eq 'a'",
        "nosuchfunction(userId) eq 'a'",
        "not length(userId) gt 5",
        "userId",
        " or ".join(["userId eq 'a'"] * 150),  # above the ~100-clause limit, under 4 KB
    ],
)
def test_bad_filter(service: ServiceThread, hub: str, odata: str) -> None:
    for path in (
        f"/api/hubs/{hub}/:send",
        f"/api/hubs/{hub}/groups/g/:send",
        f"/api/hubs/{hub}/users/u/:send",
    ):
        body = assert_error_detail(post_text(service, path, [("filter", odata)]), 400)
        assert len(body["message"]) > 10
    body = json.dumps({"groups": ["g"], "filter": odata}).encode()
    response = rest_call(
        service,
        "POST",
        f"/api/hubs/{hub}/:addToGroups",
        content=body,
        content_type="application/json",
    )
    assert_error_detail(response, 400)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("maxpagesize", "0"),
        ("maxpagesize", "201"),
        ("maxpagesize", "x"),
        ("top", "0"),
        ("top", "-5"),
    ],
)
def test_bad_list_paging_parameters(
    service: ServiceThread, hub: str, name: str, value: str
) -> None:
    response = rest_call(
        service, "GET", f"/api/hubs/{hub}/groups/g/connections", query=[(name, value)]
    )
    assert_error_detail(response, 400)


def test_unknown_permission(service: ServiceThread, hub: str) -> None:
    response = rest_call(service, "PUT", f"/api/hubs/{hub}/permissions/superUser/connections/c1")
    assert_error_detail(response, 400)


@pytest.mark.parametrize(
    "path",
    [
        "/api/hubs/{hub}/unknown",
        "/api/hubs/{hub}/:publish",
        "/api/hubs/{hub}/groups/g/members",
        "/api/nothing",
        "/api",
        "/",
        "/favicon.ico",
        "/api/hubs/{hub}/users/u/groups/g/extra",
    ],
)
def test_unknown_route(service: ServiceThread, hub: str, path: str) -> None:
    for method in ("GET", "POST"):
        response = rest_call(service, method, path.format(hub=hub))
        assert_error_detail(response, 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/hubs/{hub}/:send"),
        ("PUT", "/api/hubs/{hub}/:send"),
        ("PATCH", "/api/hubs/{hub}/users/u/groups/g"),
        ("POST", "/api/hubs/{hub}/users/u"),
        ("GET", "/api/hubs/{hub}/connections/c"),
        ("POST", "/api/hubs/{hub}/groups/g/connections"),
        ("DELETE", "/api/hubs/{hub}/groups/g"),
    ],
)
def test_wrong_method(service: ServiceThread, hub: str, method: str, path: str) -> None:
    assert_error_detail(rest_call(service, method, path.format(hub=hub)), 405)


# -- WebSocket frames ---------------------------------------------------------------------


async def assert_gone(service: ServiceThread, hub: str, connection_id: str) -> None:
    await async_wait_until(
        lambda: connection_id not in hub_snapshot(service, hub).connections,
        f"connection {connection_id} to be removed",
    )


@pytest.mark.parametrize(
    "frame",
    ["{not json", "[1, 2]", '"just a string"', "{}", '{"type": 5}', "null"],
    ids=["broken", "array", "string", "no_type", "type_not_string", "null"],
)
async def test_invalid_json_frame_closes_with_1008(
    service: ServiceThread, hub: str, frame: str
) -> None:
    client = await connect_json(service, hub, user_id="bad")
    await client.ws.send(frame)
    code, _, frames = await client.until_closed()
    assert code == 1008
    assert frames[-1:] and frames[-1].get("type") == "system"
    assert frames[-1].get("event") == "disconnected"
    await assert_gone(service, hub, client.connection_id)


async def test_json_in_a_binary_frame_is_accepted(service: ServiceThread, hub: str) -> None:
    async with await connect_json(service, hub, roles=["webpubsub.joinLeaveGroup"]) as client:
        await client.ws.send(b'{"type": "joinGroup", "group": "g", "ackId": 7}')
        assert (await client.ack(7))["success"] is True


@pytest.mark.parametrize("kind", ["bogus", "subscribeGroupState", "setGroupState"])
async def test_unknown_message_type_with_ack_id(
    service: ServiceThread, hub: str, kind: str
) -> None:
    async with await connect_json(service, hub) as client:
        ack = await client.request({"type": kind, "streamId": "s", "invocationId": "i"})
        assert ack["success"] is False
        assert isinstance(ack["error"]["name"], str) and ack["error"]["name"]
        assert isinstance(ack["error"]["message"], str) and ack["error"]["message"]
        # The connection stays usable.
        await client.send({"type": "ping"})
        assert await client.receive() == {"type": "pong"}


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "streamData", "streamId": "s", "ackId": 1},
        {"type": "streamData", "streamId": "\ud800", "streamSequenceId": 1},
        {"type": "streamEnd", "streamId": "x" * 5000},
        {"type": "sendToGroup", "group": "g\u0000", "stream": {"streamId": "s"}},
        {"type": "sendToGroup", "group": "g", "stream": {"streamId": "s", "idleTimeoutMs": -1}},
        {
            "type": "streamData",
            "streamId": "s",
            "streamSequenceId": 2**70,
            "dataType": "text",
            "data": "",
        },
    ],
)
async def test_bad_stream_frames_get_a_stream_closed(
    service: ServiceThread, hub: str, frame: dict[str, object]
) -> None:
    """A stream frame with a bad value is answered streamClosed; one whose stream id cannot
    be read (a lone surrogate: not JSON any client reads) is dropped like any request
    without an ackId. Either way the connection goes on."""
    async with await connect_json(service, hub, roles=["webpubsub.sendToGroup"]) as client:
        await client.send(frame)
        await client.send({"type": "ping"})
        answers = []
        while (answer := await client.receive()) != {"type": "pong"}:
            answers.append(answer)
        unreadable = frame.get("streamId") == "\ud800"
        assert len(answers) == (0 if unreadable else 1), answers
        for answer in answers:
            assert answer["type"] == "streamClosed", answer
            assert answer["error"]["name"] in ("BadRequest", "StreamNotFound")


@pytest.mark.parametrize(
    "request_body",
    [
        {"type": "joinGroup", "group": ""},
        {"type": "joinGroup", "group": "   "},
        {"type": "joinGroup", "group": "g" * 1025},
        {"type": "joinGroup"},
        {"type": "sendToGroup", "group": "g", "dataType": "binary", "data": "***"},
        {"type": "sendToGroup", "group": "g", "dataType": "weird", "data": "x"},
        {"type": "event", "event": "", "dataType": "text", "data": "x"},
    ],
    ids=["empty", "blank", "too_long", "missing", "bad_base64", "bad_type", "empty_event"],
)
async def test_bad_argument_with_ack_id(
    service: ServiceThread, hub: str, request_body: dict[str, str]
) -> None:
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    async with await connect_json(service, hub, roles=roles) as client:
        ack = await client.request(request_body)
        assert ack["success"] is False, ack
        assert ack["error"]["name"] and ack["error"]["message"]


def frame_head(opcode: Opcode, length: int, *, fin: bool = True) -> bytes:
    """The masked head of a client frame announcing ``length`` payload bytes.

    Tests send only the head of an oversized frame: the service must refuse it from the
    announced length, and as nothing else is in flight the close frame reaches us intact.
    """
    first = (0x80 if fin else 0) | opcode.value
    return bytes([first, 0x80 | 127]) + length.to_bytes(8, "big") + os.urandom(4)


async def closed_with(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
async def test_frame_over_one_megabyte_closes_with_1009(
    service: ServiceThread, hub: str, opcode: Opcode
) -> None:
    client = await connect_json(service, hub)
    client.ws.transport.write(frame_head(opcode, MB + 1))
    assert await closed_with(client.ws) == 1009
    await assert_gone(service, hub, client.connection_id)


async def test_fragmented_message_over_one_megabyte_closes_with_1009(
    service: ServiceThread, hub: str
) -> None:
    """Fragments of 64 KB each are fine; their sum may not pass 1 MB."""
    client = await connect_json(service, hub)
    fragment = b"x" * (64 * 1024)
    frames = [Frame(Opcode.TEXT, fragment, fin=False).serialize(mask=True)]
    frames += [Frame(Opcode.CONT, fragment, fin=False).serialize(mask=True)] * 15
    client.ws.transport.write(b"".join(frames))  # exactly 1 MB so far
    client.ws.transport.write(frame_head(Opcode.CONT, 1))  # one byte too many
    assert await closed_with(client.ws) == 1009
    await assert_gone(service, hub, client.connection_id)


async def test_binary_frame_over_one_megabyte_from_simple_client(
    service: ServiceThread, hub: str
) -> None:
    ws = await connect_raw(service, hub, user_id="big")
    ws.transport.write(frame_head(Opcode.BINARY, MB + 1))
    assert await closed_with(ws) == 1009
    await async_wait_until(lambda: not user_exists(service, hub, "big"), "user to go")


async def test_message_of_almost_one_megabyte_is_accepted(service: ServiceThread, hub: str) -> None:
    roles = ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"]
    async with await connect_json(service, hub, roles=roles, groups=["big"]) as client:
        data = "y" * (MB - 200)
        ack = await client.publish("big", data, "text")
        assert ack["success"] is True
        message = await client.receive()
        assert message["data"] == data


async def test_invalid_utf8_text_frame_closes_with_1007(service: ServiceThread, hub: str) -> None:
    client = await connect_json(service, hub)
    await client.ws.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
    code, _, _ = await client.until_closed()
    assert code == 1007
    await assert_gone(service, hub, client.connection_id)


async def test_abrupt_tcp_drop_removes_the_connection_everywhere(
    service: ServiceThread, hub: str
) -> None:
    stayer = await connect_json(service, hub, user_id="stayer", groups=["shared"])
    dropper = await connect_json(service, hub, user_id="dropper", groups=["shared", "solo"])
    raw = await connect_raw(service, hub, user_id="raw-dropper", groups=["shared", "raw-solo"])
    try:
        assert connection_exists(service, hub, dropper.connection_id)
        assert user_exists(service, hub, "raw-dropper")
        assert group_exists(service, hub, "solo") and group_exists(service, hub, "raw-solo")

        dropper.ws.transport.abort()  # no close frame, no FIN handshake: a reset
        raw.transport.write(b"\x81")  # half a frame header, then vanish
        raw.transport.abort()

        def all_gone() -> bool:
            return not (
                connection_exists(service, hub, dropper.connection_id)
                or user_exists(service, hub, "dropper")
                or user_exists(service, hub, "raw-dropper")
                or group_exists(service, hub, "solo")
                or group_exists(service, hub, "raw-solo")
            )

        await async_wait_until(all_gone, "dropped clients to leave users, groups, connections")
        snapshot = hub_snapshot(service, hub)
        assert snapshot.connections == {stayer.connection_id}
        assert snapshot.groups == {"shared": {stayer.connection_id}}
        listed = rest_call(service, "GET", f"/api/hubs/{hub}/groups/shared/connections").json()
        assert listed["value"] == [{"connectionId": stayer.connection_id, "userId": "stayer"}]
        # Sends to the vanished targets are still fine (fire and forget).
        response = post_text(service, f"/api/hubs/{hub}/users/dropper/:send", [])
        assert response.status_code == 202
    finally:
        await close_all([stayer, dropper, raw])


async def test_clean_close_removes_the_connection(service: ServiceThread, hub: str) -> None:
    client = await connect_json(service, hub, user_id="leaver", groups=["g"])
    await client.close()
    await async_wait_until(
        lambda: not (user_exists(service, hub, "leaver") or group_exists(service, hub, "g")),
        "closed client to leave",
    )


# -- still alive --------------------------------------------------------------------------


async def test_service_still_answers_after_all_that(service: ServiceThread, hub: str) -> None:
    assert health_ok(service)
    async with await connect_json(service, hub, user_id="survivor") as client:
        response = rest_call(
            service,
            "POST",
            f"/api/hubs/{hub}/users/survivor/:send",
            content=b'{"still": "here"}',
            content_type="application/json",
        )
        assert response.status_code == 202
        message = await client.receive()
        assert message == {
            "type": "message",
            "from": "server",
            "dataType": "json",
            "data": {"still": "here"},
        }
    assert http().head(rest_url(service, "/api/health")).status_code == 200
