"""Unicode edge cases in every name a client brings: tokens, frames and ``connect`` answers.

Hostile strings (:mod:`tests.hardening.hostile`: lone surrogates, non-BMP, RTL and bidi
controls, NUL and C0 controls, combining marks, 1,023 to 1,025 characters) go into

* the client token's ``sub``, ``role`` and ``webpubsub.group`` claims (JSON carries a lone
  surrogate as a ``\\ud800`` escape): a token whose names the rule of
  :mod:`webpubsub.core.names` accepts connects and its user id, groups and group-scoped roles
  work; any other gets a clean ``400`` with an ``ErrorDetail`` body;
* the ``group`` and ``event`` fields of JSON frames, and their text ``data``: a valid name is
  acked with success (or, for an event without a handler, ``InternalServerError``), an
  invalid one with ``BadRequest``; the connection stays open and answers a ping; receivers in
  the group, JSON, protobuf and simple, get exactly the data, as valid UTF-8;
* a simple client's ``webpubsub_mode=sendToGroup&group=`` query, and user event names sent
  to a real handler (which gets them intact through the percent-encoded CloudEvents header);
* the ``userId``, ``groups`` and ``roles`` of a ``connect`` answer: accepted names connect
  and are carried, refused ones give the client a ``500`` upgrade refusal.

A lone surrogate in text or JSON ``data`` is refused with a ``BadRequest`` ack and reaches
no receiver.

Never a hang, a 5xx (but where the spec says 500), a dropped socket, and nothing is left
behind. Runs are bounded and deterministic (``FUZZ_EXAMPLES`` per test).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

from tests.conftest import ACCESS_KEY
from tests.hardening.hostile import (
    Upgrade,
    assert_json_error,
    compact_token,
    decoded,
    encode,
    fuzz,
    has_surrogate,
    hostile_text,
    json_bytes,
    short_hostile,
    upgrade,
    without_surrogates,
)
from tests.hardening.support import (
    CLOSE,
    JOIN,
    SEND,
    TEXT,
    Census,
    RawWebSocket,
    assert_no_leaks,
    close_payload,
    frame,
    running,
)
from tests.hardening.test_ws_fuzz import finish
from tests.server.helpers import client_token, rest_call
from tests.upstream_app import Reply, UpstreamApp
from webpubsub.auth.tokens import MAX_TOKEN_LENGTH
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.core.names import event_name_problem, group_name_problem, role_problem
from webpubsub.core.names import user_id_problem as _user_id_problem
from webpubsub.protocols.proto.webpubsub_pb2 import DownstreamMessage
from webpubsub.server.config import Limits, Settings
from webpubsub.testing import ServiceThread

HUB = "unicode"
JSON_PROTOCOL = "json.webpubsub.azure.v1"
PROTOBUF = "protobuf.webpubsub.azure.v1"
LIMITS: dict[str, Any] = {"close_timeout": 1.0, "max_url_length": 1 << 17}


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceThread]:
    with running(**LIMITS) as svc:
        yield svc


@pytest.fixture(scope="module")
def baseline(service: ServiceThread) -> Census:
    # The tests' shared HTTP client keeps a connection to the service (two descriptors in
    # this process): open it before counting.
    assert rest_call(service, "HEAD", "/api/health").status_code == 200
    return Census.take(service)


def user_id_problem(user_id: str | None) -> str | None:
    """An empty ``sub`` (or ``userId`` answer) means no user, as in the service."""
    return _user_id_problem(user_id) if user_id else None


def close_simple(ws: RawWebSocket) -> None:
    """Close a simple client (its text would be an event): close frame, read to EOF."""
    ws.send(frame(CLOSE, close_payload(1000)))
    ws.shutdown()
    ws.until_closed()
    ws.close()


def next_json(ws: RawWebSocket) -> dict[str, Any]:
    """The next data frame of a JSON client: a text frame of valid UTF-8 JSON."""
    received = ws.next_data()
    assert received is not None and received.opcode == TEXT, received
    message = json.loads(received.payload.decode("utf-8"))  # strict: valid UTF-8 only
    assert isinstance(message, dict), message
    return message


def connection(service: ServiceThread, connection_id: str) -> tuple[str | None, set[str], set[str]]:
    """(user id, roles, groups) of a connection, read on the service loop."""

    def read() -> tuple[str | None, set[str], set[str]]:
        conn = service.service.node.hubs[HUB].connections[connection_id]
        return conn.user_id, set(conn.roles), set(conn.groups)

    return service.call(read)


def rest_text(service: ServiceThread, to: str, marker: str) -> None:
    path = f"/api/hubs/{HUB}/{to}/:send"
    response = rest_call(service, "POST", path, content=marker.encode(), content_type="text/plain")
    assert response.status_code == 202, (response.status_code, response.text)


# -- tokens -------------------------------------------------------------------------------

scoped_roles = st.builds(
    lambda prefix, group: prefix + group,
    st.sampled_from(["webpubsub.joinLeaveGroup.", "webpubsub.sendToGroup."]),
    short_hostile,
)
roles = st.lists(short_hostile | scoped_roles, max_size=3)
PATTERN_CHARACTERS = set("*?\\")


def token_problem(user_id: str | None, roles: list[str], groups: list[str]) -> str | None:
    """The claim the service must refuse first, or None (order: sub, role, groups)."""
    if user_id_problem(user_id):
        return "sub"
    if any(role_problem(r) for r in roles):
        return "role"
    if any(group_name_problem(g) for g in groups):
        return "webpubsub.group"
    return None


@fuzz
@given(
    user_id=st.none() | hostile_text,
    roles=roles,
    groups=st.lists(short_hostile, max_size=3) | hostile_text.map(lambda g: [g]),
    compact=st.booleans(),
)
def test_token_claims(
    service: ServiceThread,
    baseline: Census,
    user_id: str | None,
    roles: list[str],
    groups: list[str],
    compact: bool,
) -> None:
    """Hostile ``sub``, ``role`` and ``webpubsub.group``: 101 and working names, or 400.

    Tokens are signed by PyJWT (every non-ASCII character escaped) or with raw UTF-8
    claims; past ``MAX_TOKEN_LENGTH`` (PyJWT's escapes of a long non-BMP name) it is 401."""
    note(f"sub={user_id!r} roles={roles!r} groups={groups!r} compact={compact}")
    token = client_token(service, HUB, user_id=user_id, roles=roles, groups=groups)
    if compact:
        token = compact_token(jwt.decode(token, options={"verify_signature": False}), ACCESS_KEY)
    answer = upgrade(service, HUB, token)
    refused = token_problem(user_id, roles, groups)
    event(f"token refused for {refused}" if refused else "token accepted")
    if len(token) > MAX_TOKEN_LENGTH:
        assert answer.status == 401, (answer.status, answer.body[:300])
        detail = assert_json_error(answer.status, answer.headers, answer.body)
        assert detail["code"] == "Error.Unauthorized.Invalid", detail
    elif refused:
        assert answer.status == 400, (answer.status, answer.body[:300])
        detail = assert_json_error(answer.status, answer.headers, answer.body)
        assert detail.get("target") == refused, detail
    else:
        assert answer.status == 101, (answer.status, answer.body[:300])
        assert answer.ws is not None
        check_token_connection(service, answer.ws, user_id or None, roles, groups)
    assert_no_leaks(service, baseline)


def check_token_connection(
    service: ServiceThread,
    ws: RawWebSocket,
    user_id: str | None,
    roles: list[str],
    groups: list[str],
) -> None:
    connected = next_json(ws)
    assert connected.get("event") == "connected", connected
    assert connected.get("userId") == user_id, connected
    connection_id = connected["connectionId"]
    assert connection(service, connection_id) == (user_id, set(roles), set(groups))
    # The names work: the user and every group are reachable by REST, by their names.
    if user_id is not None:
        rest_text(service, f"users/{quote(user_id, safe='')}", "to-user")
        assert next_json(ws)["data"] == "to-user"
    for i, group in enumerate(dict.fromkeys(groups)):
        rest_text(service, f"groups/{quote(group, safe='')}", f"to-group-{i}")
        message = next_json(ws)
        assert (message["group"], message["data"]) == (group, f"to-group-{i}"), message
    # A group-scoped role lets the client join exactly that group.
    ack_id = 0
    for role in roles:
        group = role.removeprefix("webpubsub.joinLeaveGroup.")
        if group == role or PATTERN_CHARACTERS & set(group):
            continue
        ack_id += 1
        ws.send(
            frame(
                TEXT,
                json_bytes({"type": "joinGroup", "group": group, "ackId": ack_id}, ascii_only=True),
            )
        )
        ack = next_json(ws)
        if group_name_problem(group):
            assert ack["error"]["name"] == "BadRequest", ack
        else:
            assert ack["success"], ack
    code, payloads = finish(ws)
    assert code == 1000 and b'{"type":"pong"}' in payloads, (code, payloads[-3:])


# -- frames -------------------------------------------------------------------------------


def open_json(service: ServiceThread) -> RawWebSocket:
    answer = upgrade(service, HUB, client_token(service, HUB, roles=[JOIN, SEND]))
    assert answer.ws is not None, (answer.status, answer.body)
    assert next_json(answer.ws).get("event") == "connected"
    return answer.ws


def receivers(service: ServiceThread, group: str) -> tuple[RawWebSocket, RawWebSocket]:
    """A JSON client and a simple client, both in ``group`` from their tokens."""
    claims = jwt.decode(
        client_token(service, HUB, groups=[group]), options={"verify_signature": False}
    )
    token = compact_token(claims, ACCESS_KEY)  # PyJWT's escapes could pass the 16 KiB limit
    pubsub, simple = upgrade(service, HUB, token), upgrade(service, HUB, token, subprotocol=None)
    assert pubsub.ws is not None and simple.ws is not None, (pubsub.status, simple.status)
    assert next_json(pubsub.ws).get("event") == "connected"
    return pubsub.ws, simple.ws


def protobuf_receiver(service: ServiceThread, group: str) -> RawWebSocket:
    """A protobuf client in ``group`` (its connected message read)."""
    claims = jwt.decode(
        client_token(service, HUB, groups=[group]), options={"verify_signature": False}
    )
    answer = upgrade(service, HUB, compact_token(claims, ACCESS_KEY), subprotocol=PROTOBUF)
    assert answer.ws is not None, answer.status
    received = answer.ws.next_data()
    assert received is not None
    assert DownstreamMessage.FromString(received.payload).HasField("system_message")
    return answer.ws


def acks(payloads: list[bytes]) -> dict[int, dict[str, Any]]:
    found = {}
    for payload in payloads:
        message = json.loads(payload.decode("utf-8"))
        if message.get("type") == "ack":
            found[message["ackId"]] = message
    return found


@fuzz
@given(
    kind=st.sampled_from(["joinGroup", "leaveGroup", "sendToGroup", "event"]),
    name=hostile_text,
    data=short_hostile.map(without_surrogates),
    data_type=st.sampled_from(["text", "json"]),
    ascii_only=st.booleans(),
)
def test_names_in_frames(
    service: ServiceThread,
    baseline: Census,
    kind: str,
    name: str,
    data: str,
    data_type: str,
    ascii_only: bool,
) -> None:
    """Hostile ``group``/``event`` fields and ``data`` (text, or a JSON string): acked as
    the rule says, the connection answers a ping afterwards, receivers get the exact data
    as valid UTF-8."""
    envelope: dict[str, Any] = {"type": kind, "ackId": 1}
    envelope["event" if kind == "event" else "group"] = name
    if kind in ("sendToGroup", "event"):
        envelope.update(dataType=data_type, data=data)
    note(f"envelope={envelope!r} ascii_only={ascii_only}")
    problem = event_name_problem(name) if kind == "event" else group_name_problem(name)
    event(f"{kind} {'refused' if problem else 'accepted'}")
    fan_out = kind == "sendToGroup" and not problem
    others = receivers(service, name) if fan_out else None
    proto = protobuf_receiver(service, name) if fan_out else None
    ws = open_json(service)
    try:
        ws.send(frame(TEXT, json_bytes(envelope, ascii_only=ascii_only)))
        code, payloads = finish(ws)
        assert code == 1000 and b'{"type":"pong"}' in payloads, (code, payloads[-3:])
        ack = acks(payloads).get(1)
        assert ack is not None, payloads
        if problem:
            assert not ack["success"] and ack["error"]["name"] == "BadRequest", ack
        elif kind == "event":
            assert ack["error"]["name"] == "InternalServerError", ack  # no handler here
        else:
            assert ack["success"], ack
        if others is not None:
            pubsub, simple = others
            message = next_json(pubsub)
            assert (message["group"], message["dataType"], message["data"]) == (
                name,
                data_type,
                data,
            ), message
            received = simple.next_data()
            assert received is not None and received.opcode == TEXT, received
            text = received.payload.decode("utf-8")  # strict: valid UTF-8 only
            assert (json.loads(text) if data_type == "json" else text) == data
        if proto is not None:
            received = proto.next_data()
            assert received is not None, "the protobuf receiver got nothing"
            # Parsing checks the strings are UTF-8 (proto3 requires it).
            downstream = DownstreamMessage.FromString(received.payload).data_message
            assert downstream.group == name, downstream
            if data_type == "json":
                assert json.loads(downstream.data.json_data) == data, downstream
            else:
                assert downstream.data.text_data == data, downstream
    finally:
        ws.close()
        if proto is not None:
            close_simple(proto)
        if others is not None:
            finish(others[0])
            close_simple(others[1])
    assert_no_leaks(service, baseline)


@fuzz
@given(group=hostile_text, encoding=st.sampled_from(["percent", "percent", "as-written"]))
def test_simple_client_group_in_the_query(
    service: ServiceThread, baseline: Census, group: str, encoding: str
) -> None:
    """``webpubsub_mode=sendToGroup&group=<hostile>`` (spec 4.2): a valid group connects
    and the client's frames reach the group's members; anything else is a 400."""
    wire = encode(group, encoding).decode("ascii")
    name = decoded(wire.encode("ascii"))
    note(f"group={group!r} wire={wire[:300]!r} read as {name!r}")
    token = client_token(service, HUB, roles=[SEND])
    query = f"webpubsub_mode=sendToGroup&group={wire}"
    if name is None or group_name_problem(name):
        event("group query refused")
        answer = upgrade(service, HUB, token, subprotocol=None, query=query)
        assert answer.status == 400, (answer.status, answer.body[:300])
        detail = assert_json_error(answer.status, answer.headers, answer.body)
        assert detail.get("target") == ("query" if name is None else "group"), detail
        assert_no_leaks(service, baseline)
        return
    event("group query accepted")
    member, simple = receivers(service, name)
    close_simple(simple)
    answer = upgrade(service, HUB, token, subprotocol=None, query=query)
    try:
        assert answer.ws is not None, (answer.status, answer.body[:300])
        answer.ws.send(frame(TEXT, "hi \u202e\U0001f600".encode()))
        message = next_json(member)
        assert (message["group"], message["data"]) == (name, "hi \u202e\U0001f600"), message
    finally:
        if answer.ws is not None:
            close_simple(answer.ws)
        finish(member)
    assert_no_leaks(service, baseline)


@pytest.mark.parametrize(
    ("data_type", "data"),
    [
        ("text", "\ud800"),
        ("text", "ok\udfffok"),
        ("text", "\U0001f600\udc00\u202e"),
        ("json", "\ud800"),
        ("json", {"a": ["b\udbff"]}),
    ],
)
def test_lone_surrogate_in_data_is_refused(
    service: ServiceThread, baseline: Census, data_type: str, data: Any
) -> None:
    """Text that cannot be UTF-8 is refused with a ``BadRequest`` ack, the sender stays
    connected, and receivers get nothing of it (their next message is the next one)."""
    pubsub, simple = receivers(service, "surrogates")
    ws = open_json(service)
    try:
        bad = {"type": "sendToGroup", "group": "surrogates", "ackId": 1}
        bad.update(dataType=data_type, data=data)
        good = {"type": "sendToGroup", "group": "surrogates", "ackId": 2}
        good.update(dataType="text", data="after")
        ws.send(frame(TEXT, json.dumps(bad).encode()))
        ws.send(frame(TEXT, json.dumps(good).encode()))
        code, payloads = finish(ws)
        assert code == 1000 and b'{"type":"pong"}' in payloads, (code, payloads[-3:])
        answered = acks(payloads)
        assert answered[1]["error"]["name"] == "BadRequest", answered
        assert answered[2]["success"], answered
        assert next_json(pubsub)["data"] == "after"
        received = simple.next_data()
        assert received is not None and received.payload == b"after", received
    finally:
        ws.close()
        finish(pubsub)
        close_simple(simple)
    assert_no_leaks(service, baseline)


# -- user events reaching a handler, and connect answers -------------------------------------


@pytest.fixture(scope="module")
def handler_app() -> Iterator[UpstreamApp]:
    with UpstreamApp() as app:
        yield app


@pytest.fixture(scope="module")
def handler_service(handler_app: UpstreamApp) -> Iterator[ServiceThread]:
    """A service whose hub calls ``connect`` (and user events) on a real handler."""
    handler = EventHandlerSettings(handler_app.url_template, system_events=("connect",))
    settings = Settings(
        port=0,
        access_keys=[ACCESS_KEY],
        limits=Limits(**LIMITS, upstream_timeout=5),
        hubs={"*": HubSettings((handler,))},
    )
    with ServiceThread(settings) as svc:
        yield svc


@pytest.fixture(scope="module")
def handler_baseline(handler_service: ServiceThread) -> Census:
    return Census.take(handler_service)


@fuzz
@given(name=hostile_text, data=short_hostile.map(without_surrogates), ascii_only=st.booleans())
def test_event_names_reach_the_handler(
    handler_service: ServiceThread,
    handler_app: UpstreamApp,
    handler_baseline: Census,
    name: str,
    data: str,
    ascii_only: bool,
) -> None:
    """A user event with a hostile name: a valid one reaches the handler intact (the
    CloudEvents header percent-encoded, decoded by the app) and is acked with success; an
    invalid one is a ``BadRequest`` ack and never goes upstream."""
    handler_app.rules["connect"] = Reply(204)
    problem = event_name_problem(name)
    event("event refused" if problem else "event sent upstream")
    before = len(handler_app.requests)
    answer = upgrade(handler_service, HUB, client_token(handler_service, HUB))
    assert answer.ws is not None, answer.status
    ws = answer.ws
    try:
        assert next_json(ws).get("event") == "connected"
        message = {"type": "event", "event": name, "ackId": 1, "dataType": "text", "data": data}
        ws.send(frame(TEXT, json_bytes(message, ascii_only=ascii_only)))
        ack = next_json(ws)
        assert ack.get("ackId") == 1, ack
        posted = [r for r in handler_app.requests[before:] if r.method == "POST"]
        if problem:
            assert ack["error"]["name"] == "BadRequest", ack
            assert [r.event for r in posted] == ["connect"], posted
        else:
            assert ack["success"], ack
            assert [(r.event, r.body) for r in posted[1:]] == [(name, data.encode())], posted
    finally:
        ws.close()
    assert_no_leaks(handler_service, handler_baseline, fds=False)


ANSWER_ENCODINGS = ["escaped", "utf-8", "cesu"]
"""``escaped``: ensure_ascii JSON; ``utf-8``: raw UTF-8 (escapes for lone surrogates only);
``cesu``: lone surrogates as raw (invalid) UTF-8 bytes."""


def answer_body(answer: dict[str, Any], encoding: str) -> bytes:
    if encoding == "escaped":
        return json.dumps(answer).encode()
    text = json.dumps(answer, ensure_ascii=False)
    if encoding == "cesu":
        return text.encode("utf-8", "surrogatepass")
    return json_bytes(answer, ascii_only=False)


@fuzz
@given(
    user_id=st.none() | hostile_text,
    groups=st.none() | st.lists(short_hostile, max_size=3),
    roles=st.none() | roles,
    encoding=st.sampled_from(ANSWER_ENCODINGS),
)
def test_connect_answers(
    handler_service: ServiceThread,
    handler_app: UpstreamApp,
    handler_baseline: Census,
    user_id: str | None,
    groups: list[str] | None,
    roles: list[str] | None,
    encoding: str,
) -> None:
    """A ``connect`` answer with hostile ``userId``, ``groups`` and ``roles``: the client
    connects with them, or its upgrade is refused with 500; never a hang or a leak."""
    answer: dict[str, Any] = {}
    if user_id is not None:
        answer["userId"] = user_id
    if groups is not None:
        answer["groups"] = groups
    if roles is not None:
        answer["roles"] = roles
    body = answer_body(answer, encoding)
    note(f"connect answer {body[:400]!r}")
    handler_app.rules["connect"] = Reply(200, body, {"Content-Type": "application/json"})
    refused = (
        (encoding == "cesu" and has_surrogate(json.dumps(answer, ensure_ascii=False)))
        or user_id_problem(user_id) is not None
        or any(group_name_problem(g) for g in groups or [])
        or any(role_problem(r) for r in roles or [])
    )
    event("connect answer refused" if refused else "connect answer accepted")
    result: Upgrade = upgrade(handler_service, HUB, client_token(handler_service, HUB))
    if refused:
        assert result.status == 500, (result.status, result.body[:300])
        detail = assert_json_error(result.status, result.headers, result.body)
        assert detail["code"] == "Error.ConnectRejected", detail
    else:
        assert result.status == 101, (result.status, result.body[:300])
        assert result.ws is not None
        connected = next_json(result.ws)
        assert connected.get("userId") == (user_id or None), connected
        expected = (user_id or None, set(roles or []), set(groups or []))
        assert connection(handler_service, connected["connectionId"]) == expected
        code, payloads = finish(result.ws)
        assert code == 1000 and b'{"type":"pong"}' in payloads, (code, payloads[-3:])
    assert_no_leaks(handler_service, handler_baseline, fds=False)
