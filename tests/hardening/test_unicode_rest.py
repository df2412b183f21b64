"""Unicode edge cases in REST paths, queries, bodies and headers, on one node and a cluster.

User ids, connection ids, group names and roles from :mod:`tests.hardening.hostile` go into
path segments (percent-encoded UTF-8, lone surrogates as ``%ED%A0%80``, raw non-ASCII bytes,
broken escapes such as ``%zz``, ``%C3`` and ``%00`` kept as written), query values
(``excluded``, ``userId``, ``role``, ``group``, ``targetName``), the ``groups`` of an
``:addToGroups`` body (JSON escapes), and odd bytes in ``Content-Type`` and
``x-ms-client-request-id``. Each request goes on a fresh connection with raw bytes.

The oracle: the service decodes a segment or query value once, as UTF-8; raw non-ASCII bytes
in the target (RFC 3986 has none) and escapes that are not UTF-8 are refused with 400 (never
replaced with U+FFFD, which would let two names become one), as is a name
the rule of :mod:`webpubsub.core.names` refuses; a valid name gets the operation's own
answer. Never a 5xx, never a connection closed without an answer, every error an
``ErrorDetail`` body; the service stays healthy. In a 2-node Redis cluster, after each
hostile call both nodes stay ready and a send through one node still reaches a client on
the other.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import jwt
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

from tests.cluster.conftest import RedisServer, free_port
from tests.conftest import ACCESS_KEY
from tests.hardening.hostile import (
    assert_json_error,
    compact_token,
    decoded,
    encode,
    fuzz,
    hostile_text,
    short_hostile,
    upgrade,
    without_surrogates,
)
from tests.hardening.support import Census, RawWebSocket, assert_no_leaks, running
from tests.hardening.test_unicode_fuzz import next_json
from tests.hardening.test_ws_fuzz import finish
from tests.server.helpers import (
    RawResponse,
    client_token,
    health_ok,
    parse_http_response,
    raw_http,
    rest_call,
    sign_rest,
)
from webpubsub.core.names import MAX_NAME, group_name_problem, text_problem
from webpubsub.server.config import Cluster, Limits, Settings
from webpubsub.testing import ServiceThread

HUB = "unicoderest"
MAX_URL = Limits().max_url_length  # the default: a 1,024-character non-BMP name is past it


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceThread]:
    with running() as svc:
        yield svc


@pytest.fixture(scope="module")
def baseline(service: ServiceThread) -> Census:
    assert rest_call(service, "HEAD", "/api/health").status_code == 200  # warm the pool
    return Census.take(service)


# -- encoding names into a request ----------------------------------------------------------

ENCODINGS = ["percent", "raw", "as-written"]
"""``percent``: every byte of the UTF-8 (lone surrogates as their 3 bytes) escaped;
``raw``: non-ASCII bytes sent raw (refused by the HTTP parser), ASCII escaped;
``as-written``: ``%XX`` sequences in the text left as they are (``%zz``, ``%C3``,
``%ED%A0%80``), the rest escaped."""


@dataclasses.dataclass(frozen=True)
class Op:
    """A REST operation with names in it; ``ok`` the statuses a valid call may get."""

    method: str
    path: str  # with {group}, {user}, {conn}
    ok: frozenset[int]
    query: tuple[tuple[str, str], ...] = ()  # (name, placeholder)
    body: str | None = None  # "text" or "groups"


def op(
    method: str,
    path: str,
    *ok: int,
    query: tuple[tuple[str, str], ...] = (),
    body: str | None = None,
) -> Op:
    return Op(method, path, frozenset(ok), query, body)


OPS = [
    op("POST", "groups/{group}/:send", 202, body="text"),
    op("POST", "users/{user}/:send", 202, body="text"),
    op("POST", "connections/{conn}/:send", 202, 404, body="text"),
    op("POST", ":send", 202, query=(("excluded", "conn"), ("excluded", "conn2")), body="text"),
    op("POST", "groups/{group}/:send", 202, query=(("excluded", "conn"),), body="text"),
    op("HEAD", "groups/{group}", 200, 404),
    op("HEAD", "users/{user}", 200, 404),
    op("HEAD", "connections/{conn}", 200, 404),
    op("PUT", "users/{user}/groups/{group}", 200, 404),
    op("DELETE", "users/{user}/groups/{group}", 204),
    op("DELETE", "users/{user}/groups", 204),
    op("POST", "users/{user}/:closeConnections", 204),
    op("POST", "groups/{group}/:closeConnections", 204),
    op("DELETE", "connections/{conn}", 204, 404),
    op("PUT", "groups/{group}/connections/{conn}", 200, 404),
    op("DELETE", "groups/{group}/connections/{conn}", 204),
    op(
        "HEAD",
        "permissions/joinLeaveGroup/connections/{conn}",
        200,
        404,
        query=(("targetName", "group"),),
    ),
    op(
        "PUT",
        "permissions/sendToGroup/connections/{conn}",
        200,
        404,
        query=(("targetName", "group"),),
    ),
    op(
        "POST",
        ":generateToken",
        200,
        query=(("userId", "user"), ("role", "role"), ("group", "group")),
    ),
    op("POST", ":addToGroups", 200, body="groups"),
    op("POST", ":removeFromGroups", 200, body="groups"),
]


@dataclasses.dataclass
class Built:
    """A request on the wire, and what the service must answer."""

    wire: bytes
    names: dict[str, str | None]  # placeholder -> the name the service reads (None: not UTF-8)
    refused: str | None  # why it must be 400, or None


NAME_RULES = {
    "group": lambda name: group_name_problem(name),
    "user": lambda name: text_problem(name, "userId"),
    "conn": lambda name: text_problem(name, "connectionId"),
    "conn2": lambda name: None,  # excluded ids are only compared
    "role": lambda name: text_problem(name, "role"),
}


def query_rule(key: str, placeholder: str, name: str) -> str | None:
    """Query values: empty ``excluded``, ``userId`` and ``role`` mean none (the SDKs' way)."""
    if key == "excluded":
        return None  # compared with connection ids, never stored
    if not name and key in ("userId", "role"):
        return None
    return NAME_RULES[placeholder](name)


def build(
    service: ServiceThread,
    operation: Op,
    names: dict[str, str],
    encoding: str,
    headers: list[tuple[bytes, bytes]],
) -> Built:
    seen: dict[str, str | None] = {}
    refused = None
    path = f"/api/hubs/{HUB}/{operation.path}".encode()
    for placeholder in ("group", "user", "conn"):
        marker = "{" + placeholder + "}"
        if marker.encode() not in path:
            continue
        wire = encode(names[placeholder], encoding)
        path = path.replace(marker.encode(), wire)
        name = seen[placeholder] = decoded(wire)
        if name is None:
            refused = refused or f"{placeholder} is not UTF-8"
        elif not name:
            refused = refused or f"{placeholder} is empty"  # no route, or an empty name
        else:
            refused = refused or NAME_RULES[placeholder](name)
    pairs = []
    for key, placeholder in operation.query:
        wire = encode(names[placeholder], encoding)
        pairs.append(key.encode() + b"=" + wire)
        value = decoded(wire.replace(b"+", b" "))
        if value is None:
            refused = refused or f"{key} is not UTF-8"
        else:
            seen[placeholder] = value
            refused = refused or query_rule(key, placeholder, value)
    body = b""
    content_type = b"text/plain"
    if operation.body == "text":
        body = b"hello"
    elif operation.body == "groups":
        groups = [names["group"], names["user"]]
        body = json.dumps({"groups": groups}).encode()
        content_type = b"application/json"
        refused = refused or next((p for g in groups if (p := group_name_problem(g))), None)
    if encoding == "raw" and any(b >= 0x80 for b in path + b"".join(pairs)):
        refused = "a raw non-ASCII byte in the target"  # the HTTP parser refuses it: 400
    target = path + (
        b"?" + b"&".join(pairs) + b"&api-version=2024-12-01"
        if pairs
        else b"?api-version=2024-12-01"
    )
    if len(target) > MAX_URL:
        # 414 before anything else, but the parser may see a raw byte first (400).
        raw = refused == "a raw non-ASCII byte in the target"
        refused = "too long, raw" if raw else "too long"
    audience = service.endpoint + target.decode("latin-1")
    lines = [
        operation.method.encode() + b" " + target + b" HTTP/1.1",
        f"Host: 127.0.0.1:{service.settings.port}".encode(),
        b"Authorization: Bearer " + sign_rest(audience).encode(),
        *([b"Content-Type: " + content_type] if b"content-type" not in dict(headers) else []),
        b"Content-Length: " + str(len(body)).encode(),
        b"Connection: close",
        *(name + b": " + value for name, value in headers),
    ]
    return Built(b"\r\n".join(lines) + b"\r\n\r\n" + body, seen, refused)


def call(service: ServiceThread, built: Built) -> RawResponse:
    """Send the request on a fresh connection: an answer is required (no silent close)."""
    raw = raw_http(service, built.wire)
    assert raw, "the service closed the connection without an answer"
    return parse_http_response(raw)


def check_answer(operation: Op, built: Built, response: RawResponse, header_odd: bool) -> None:
    assert response.status < 500, (response.status, response.body[:300])
    if response.status >= 400 and operation.method != "HEAD":
        assert_json_error(response.status, response.headers, response.body)
    if header_odd:
        return  # an odd Content-Type may make the body a 400 or 415; the checks above hold
    if built.refused and built.refused.startswith("too long"):
        allowed = {414, 400} if built.refused.endswith("raw") else {414}
        assert response.status in allowed, response.status
    elif built.refused:
        assert response.status in (400, 404, 405), (built.refused, response.status)
        if response.status != 400:
            # Only an empty segment changes the route (404/405); a bad name is a 400.
            assert "empty" in built.refused, (built.refused, response.status)
    else:
        assert response.status in operation.ok, (response.status, response.body[:300])
    if operation.path == ":generateToken" and response.status == 200:
        claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
        assert claims.get("sub") == (built.names["user"] or None), claims
        assert claims.get("role", []) == ([built.names["role"]] if built.names["role"] else [])
        assert claims.get("webpubsub.group", []) == [built.names["group"]], claims


# -- headers --------------------------------------------------------------------------------

odd_header_values = st.one_of(
    short_hostile.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from([b"text/plain; charset=\xff\xfe", b"t\xc3\xa9xt/plain", b"\xed\xa0\x80", b""]),
).map(lambda value: value.replace(b"\r", b"").replace(b"\n", b""))
"""Any bytes but CR and LF (which would end the header)."""


def odd_headers() -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    names = st.sampled_from(
        [b"x-ms-client-request-id", b"content-type", b"x-\xc3\xa9", b"user-agent"]
    )
    return st.lists(st.tuples(names, odd_header_values), max_size=2)


# -- single node ----------------------------------------------------------------------------

names_strategy = st.fixed_dictionaries(
    {
        "group": hostile_text,
        "user": hostile_text,
        "conn": short_hostile,
        "conn2": short_hostile,
        "role": short_hostile,
    }
)


@fuzz
@given(
    operation=st.sampled_from(OPS),
    names=names_strategy,
    encoding=st.sampled_from(ENCODINGS),
    headers=st.just([]) | odd_headers(),
)
def test_hostile_names_in_rest_calls(
    service: ServiceThread,
    baseline: Census,
    operation: Op,
    names: dict[str, str],
    encoding: str,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """Hostile names in paths, queries and bodies, odd header bytes: the operation's own
    answer, or a 4xx with an ``ErrorDetail`` body; the service stays healthy."""
    # An odd Content-Type replaces ours (two would be another test).
    built = build(service, operation, names, encoding, headers)
    note(f"{built.wire[:600]!r}")
    event(f"{operation.method} {'refused' if built.refused else 'valid'}")
    response = call(service, built)
    check_answer(operation, built, response, header_odd=bool(headers))
    assert health_ok(service)
    assert_no_leaks(service, baseline)


def valid_name(text: str) -> str:
    """The hostile text made valid: no lone surrogate, no NUL, 1 to 1,024 characters."""
    text = without_surrogates(text).replace("\0", "")[:MAX_NAME]
    return text if text.strip() else text + "x"


valid_names = st.fixed_dictionaries(
    {"group": hostile_text.map(valid_name), "user": hostile_text.map(valid_name)}
)


@fuzz
@given(names=valid_names, encoding=st.sampled_from(["percent", "percent", "raw"]))
def test_names_round_trip_between_rest_and_clients(
    service: ServiceThread, baseline: Census, names: dict[str, str], encoding: str
) -> None:
    """A valid name sent by REST is the name a client has: a client whose token names the
    user and group gets a message sent to them by path, whatever the encoding."""
    user, group = names["user"], names["group"]
    if text_problem(user, "userId") or group_name_problem(group):
        return
    event(f"round trip, {encoding}")
    claims = jwt.decode(
        client_token(service, HUB, user_id=user, groups=[group]),
        options={"verify_signature": False},
    )
    token = compact_token(claims, ACCESS_KEY)  # PyJWT's escapes could pass the 16 KiB limit
    answer = upgrade(service, HUB, token, in_header=True)  # long names: past the URL limit
    assert answer.ws is not None, (answer.status, answer.body[:300])
    ws = answer.ws
    try:
        assert next_json(ws)["userId"] == user
        for operation, expected in ((OPS[0], "group"), (OPS[1], "user")):
            built = build(service, operation, names, encoding, [])
            response = call(service, built)
            if built.refused:  # past the URL limit (414), or raw bytes (400)
                check_answer(operation, built, response, header_odd=False)
                continue
            assert response.status == 202, (response.status, response.body[:300])
            message = next_json(ws)
            assert message["data"] == "hello", message
            assert message.get("group") == (group if expected == "group" else None), message
        code, _ = finish(ws)
        assert code == 1000
    finally:
        ws.close()
    assert_no_leaks(service, baseline)


# -- a cluster ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(free_port(), Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def nodes(redis_server: RedisServer) -> Iterator[list[ServiceThread]]:
    def settings() -> Settings:
        return Settings(
            port=0,
            access_keys=[ACCESS_KEY],
            redis_url=redis_server.url,
            limits=Limits(),
            cluster=Cluster(node_ttl=2.0, heartbeat_interval=0.5, redis_timeout=1.0),
        )

    with ServiceThread(settings()) as first, ServiceThread(settings()) as second:
        yield [first, second]


def ready(node: ServiceThread) -> int:
    raw = raw_http(node, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return parse_http_response(raw).status


PROBE_GROUP = "probe!"  # no hostile name drawn is this one


@pytest.fixture(scope="module")
def probe(nodes: list[ServiceThread]) -> Iterator[RawWebSocket]:
    """A client on node B, in its group for the whole module (its node stays subscribed)."""
    token = client_token(nodes[1], HUB, groups=[PROBE_GROUP])
    answer = upgrade(nodes[1], HUB, token)
    assert answer.ws is not None, answer.status
    assert next_json(answer.ws).get("event") == "connected"
    yield answer.ws
    finish(answer.ws)


_sent = itertools.count()


@fuzz
@given(
    operation=st.sampled_from(OPS),
    names=names_strategy,
    encoding=st.sampled_from(ENCODINGS),
    through=st.sampled_from([0, 1]),
)
def test_hostile_names_in_a_cluster(
    nodes: list[ServiceThread],
    probe: RawWebSocket,
    operation: Op,
    names: dict[str, str],
    encoding: str,
    through: int,
) -> None:
    """A hostile REST call on either node: the same answers as on one node, both nodes
    stay ready, and a message sent through node A still reaches a client on node B."""
    built = build(nodes[through], operation, names, encoding, [])
    note(f"{built.wire[:600]!r}")
    event(f"{operation.method} {'refused' if built.refused else 'valid'}")
    response = call(nodes[through], built)
    check_answer(operation, built, response, header_odd=False)
    assert [ready(node) for node in nodes] == [200, 200]
    marker = f"across-{next(_sent)}"
    path = f"/api/hubs/{HUB}/groups/{quote(PROBE_GROUP)}/:send"
    sent = rest_call(nodes[0], "POST", path, content=marker.encode(), content_type="text/plain")
    assert sent.status_code == 202, sent.text
    while (message := next_json(probe))["data"] != marker:
        assert message["data"] == "hello", message  # a hostile send to all, before ours


def test_a_send_right_after_connecting_reaches_the_other_node(
    nodes: list[ServiceThread],
) -> None:
    """A client told ``connected`` on node B, in a hub new to B, gets a group send made
    through node A at once (not found by the names: by the cluster fuzzer's first form)."""
    for i in range(20):
        hub = f"fresh{i}{os.getpid()}"
        answer = upgrade(nodes[1], hub, client_token(nodes[1], hub, groups=["g"]), timeout=1.0)
        assert answer.ws is not None, answer.status
        ws = answer.ws
        try:
            assert next_json(ws).get("event") == "connected"
            path = f"/api/hubs/{hub}/groups/g/:send"
            sent = rest_call(nodes[0], "POST", path, content=b"now", content_type="text/plain")
            assert sent.status_code == 202, sent.text
            assert next_json(ws)["data"] == "now", i
        finally:
            ws.close()
