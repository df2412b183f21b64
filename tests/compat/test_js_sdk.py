"""Compatibility with the official JavaScript SDKs, driven for real through Node.

``tests/node/service_ops.mjs`` runs ``@azure/web-pubsub`` (the service SDK) and
``tests/node/client.mjs`` runs ``@azure/web-pubsub-client`` instances; both speak JSON lines on
stdin/stdout (see ``tests/node/common.mjs``). One service driver serves the whole module (one
SDK client per hub); every test starts its own client driver hosting as many SDK clients as it
needs. Receivers are SDK clients too, so each check goes SDK -> service -> SDK.

Setup: ``cd tests/node && npm ci`` (``make install`` does it). Without ``node`` or without
``tests/node/node_modules`` the module is skipped.

Nothing here sleeps: every wait reads driver output until the expected line arrives, and fails
with everything received so far after ``TIMEOUT`` seconds. Absence is proven with a marker:
after the message under test, a second message every client would get is sent; since one
connection receives messages in the order the service processed them, whatever has not
arrived before the marker was not delivered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from tests.hardening.support import RawWebSocket
from tests.nodejs import (
    JsError,
    Line,
    NodeDriver,
    node_missing,
)
from webpubsub.testing import ServiceThread

if node_missing():
    pytest.skip(node_missing() or "", allow_module_level=True)

ALL_ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


# -- the service SDK -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What a service SDK call returned, and the HTTP responses its onResponse callback saw."""

    value: Any
    responses: list[dict[str, Any]]

    @property
    def statuses(self) -> list[int]:
        return [response["status"] for response in self.responses]


@dataclass(frozen=True)
class Rest:
    """``WebPubSubServiceClient`` of one hub (or ``.group(name)`` of it) in service_ops.mjs."""

    driver: NodeDriver
    hub: str
    group_name: str | None = None

    def group(self, name: str) -> Rest:
        return replace(self, group_name=name)

    def call(self, method: str, *args: Any, pages: bool = False, **options: Any) -> Reply:
        """``method(*args, options)``; options that are None are left out (undefined in JS)."""
        params: dict[str, Any] = {
            "hub": self.hub,
            "method": method,
            "args": list(args),
            "options": {k: v for k, v in options.items() if v is not None},
            "pages": pages,
        }
        if self.group_name is not None:
            params["group"] = self.group_name
        value = self.driver.request("call", **params)
        return Reply(value["value"], value["responses"])

    def error(self, method: str, *args: Any, **options: Any) -> JsError:
        """Call ``method`` expecting the SDK to throw; return the error."""
        with pytest.raises(JsError) as caught:
            self.call(method, *args, **options)
        return caught.value


# -- the client SDK ------------------------------------------------------------------------------


def is_message(line: Line) -> bool:
    return line.get("event") in ("server-message", "group-message")


@dataclass
class Clients:
    """``WebPubSubClient`` instances hosted by one client.mjs process."""

    driver: NodeDriver
    rest: Rest

    def start(
        self,
        name: str,
        *,
        user_id: str | None = None,
        roles: list[str] | None = None,
        groups: list[str] | None = None,
        protocol: str = "json",
        **options: Any,
    ) -> str:
        """Start client ``name`` with a token from getClientAccessToken; its connection id."""
        token = self.rest.call("getClientAccessToken", userId=user_id, roles=roles, groups=groups)
        url = token.value["url"]
        self.driver.request("start", client=name, url=url, protocol=protocol, options=options)
        connected = self.expect(name, "connected")
        assert connected.get("userId") == user_id
        connection_id: str = connected["connectionId"]
        assert connection_id
        return connection_id

    def call(self, name: str, method: str, *args: Any) -> Any:
        return self.driver.request("call", client=name, method=method, args=list(args))

    def error(self, name: str, method: str, *args: Any) -> JsError:
        with pytest.raises(JsError) as caught:
            self.call(name, method, *args)
        return caught.value

    def expect(self, name: str, event: str) -> Line:
        """The next ``event`` of client ``name``."""
        return self.driver.wait_for(
            lambda line: line.get("client") == name and line.get("event") == event,
            f"{event} on client {name!r}",
        )

    def pending_events(self, name: str, *events: str) -> list[Line]:
        """Events of client ``name`` that arrived and were not consumed (one of ``events``)."""
        return self.driver.unread(
            lambda line: line.get("client") == name and line.get("event") in events
        )

    def message(self, name: str) -> dict[str, Any]:
        """The next server or group message of client ``name`` (the SDK's message object)."""
        line = self.driver.wait_for(
            lambda line: line.get("client") == name and is_message(line),
            f"a message on client {name!r}",
        )
        message: dict[str, Any] = line["message"]
        return message

    def messages_before(self, name: str, marker: Any) -> list[Any]:
        """Data of every message client ``name`` got before the one whose data is ``marker``."""
        received = []
        while (message := self.message(name))["data"] != marker:
            received.append(message["data"])
        return received


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def js_service(service: ServiceThread) -> Iterator[NodeDriver]:
    driver = NodeDriver("service_ops.mjs", {"WPS_CONNECTION_STRING": service.connection_string})
    yield driver
    driver.close()


@pytest.fixture
def rest(js_service: NodeDriver, hub: str) -> Rest:
    return Rest(js_service, hub)


@pytest.fixture
def clients(rest: Rest) -> Iterator[Clients]:
    driver = NodeDriver("client.mjs")
    yield Clients(driver, rest)
    driver.close()


def marker(rest: Rest, text: str = "marker") -> str:
    """Send a text marker to every connection of the hub."""
    rest.call("sendToAll", text, contentType="text/plain")
    return text


def member_ids(rest: Rest, group: str) -> set[str]:
    return {m["connectionId"] for m in rest.group(group).call("listConnections").value}


def query_of(response: dict[str, Any]) -> dict[str, list[str]]:
    """The decoded query of a request the service SDK made."""
    return parse_qs(urlsplit(response["url"]).query)


# -- tests ---------------------------------------------------------------------------------------


def test_pinned_sdk_versions(js_service: NodeDriver, clients: Clients) -> None:
    assert js_service.versions["@azure/web-pubsub"] == "1.2.0"
    assert clients.driver.versions["@azure/web-pubsub-client"] == "1.1.0"


def test_client_access_token_connects_with_identity(
    rest: Rest, clients: Clients, service: ServiceThread, hub: str
) -> None:
    token = rest.call(
        "getClientAccessToken",
        userId="user 1",
        roles=ALL_ROLES,
        groups=["lobby"],
        expirationTimeInMinutes=5,
    )
    assert token.responses == []  # minted locally from the access key, no HTTP call
    base_url = f"ws://{urlsplit(service.endpoint).netloc}/client/hubs/{hub}"
    assert token.value["baseUrl"] == base_url
    assert token.value["url"] == f"{base_url}?access_token={token.value['token']}"
    claims = jwt.decode(
        token.value["token"],
        service.access_key,
        algorithms=["HS256"],
        audience=f"{service.endpoint}/client/hubs/{hub}",
    )
    assert claims["sub"] == "user 1"
    assert claims["role"] == ALL_ROLES
    assert claims["webpubsub.group"] == ["lobby"]
    assert claims["exp"] - claims["iat"] == 300

    connection_id = clients.start("a", user_id="user 1", roles=ALL_ROLES, groups=["lobby"])

    for method, argument, expected in [
        ("connectionExists", connection_id, True),
        ("connectionExists", "no-such-connection", False),
        ("userExists", "user 1", True),
        ("userExists", "nobody", False),
        ("groupExists", "lobby", True),
        ("groupExists", "no-such-group", False),
    ]:
        reply = rest.call(method, argument)
        assert (reply.value, reply.statuses) == (expected, [200 if expected else 404]), method
    members = rest.group("lobby").call("listConnections")
    assert members.value == [{"connectionId": connection_id, "userId": "user 1"}]
    assert members.statuses == [200]
    # Hub names are case-insensitive: the SDK sends the caller's casing.
    assert replace(rest, hub=hub.upper()).call("connectionExists", connection_id).value is True


def check_message(
    message: dict[str, Any], source: str, data_type: str, data: Any, group: str | None = None
) -> None:
    assert message["from"] == source, message
    assert message["dataType"] == data_type, message
    assert message["data"] == data, message
    assert message.get("group") == group, message
    assert "fromUserId" not in message, message


PAYLOADS: list[tuple[Any, dict[str, Any], str]] = [
    ({"k": [1, "two", None]}, {}, "json"),
    ("a JSON string", {}, "json"),
    ("plain text", {"contentType": "text/plain"}, "text"),
    (b"\x00\x01\xfe\xff", {}, "binary"),
]


def test_rest_sends_every_data_type(rest: Rest, clients: Clients) -> None:
    # Ids and names that need percent-encoding in REST paths ("/" arrives as %2F).
    user, group = "al/ice ü?", "room/1 #ü"
    connection_id = clients.start("a", user_id=user, groups=[group])
    targets: list[tuple[Rest, str, tuple[Any, ...], str | None]] = [
        (rest, "sendToAll", (), None),
        (rest, "sendToUser", (user,), None),
        (rest, "sendToConnection", (connection_id,), None),
        (rest.group(group), "sendToAll", (), group),
    ]
    for target, method, args, to_group in targets:
        for payload, options, data_type in PAYLOADS:
            reply = target.call(method, *args, payload, **options)
            assert reply.statuses == [202]
            source = "server" if to_group is None else "group"
            check_message(clients.message("a"), source, data_type, payload, to_group)
    assert rest.call("userExists", user).value is True
    assert rest.call("groupExists", group).value is True


def test_send_excluded_filter_and_ttl(rest: Rest, clients: Clients) -> None:
    a1 = clients.start("a1", user_id="u-a", groups=["room"])
    a2 = clients.start("a2", user_id="u-a", groups=["room"])
    clients.start("b", user_id="u-b", groups=["room"])

    sent = rest.call(
        "sendToAll",
        {"n": 1},
        excludedConnections=[a2],
        filter="userId ne 'u-b'",
        messageTtlSeconds=30,
    )
    query = query_of(sent.responses[0])
    assert query["excluded"] == [a2]
    assert query["filter"] == ["userId ne 'u-b'"]
    assert query["messageTtlSeconds"] == ["30"]
    rest.call(
        "sendToUser",
        "u-a",
        "user text",
        contentType="text/plain",
        filter=f"connectionId ne '{a1}'",
        messageTtlSeconds=10,
    )
    rest.group("room").call(
        "sendToAll",
        b"\x07",
        excludedConnections=[a1],
        filter="'room' in groups and startswith(userId, 'u-')",
        messageTtlSeconds=300,
    )
    rest.call("sendToConnection", a1, "to a1", contentType="text/plain", messageTtlSeconds=5)

    end = marker(rest)
    assert clients.messages_before("a1", end) == [{"n": 1}, "to a1"]
    assert clients.messages_before("a2", end) == ["user text", b"\x07"]
    assert clients.messages_before("b", end) == [b"\x07"]


def test_send_errors_surface_as_rest_errors(rest: Rest) -> None:
    for options in [{"messageTtlSeconds": 301}, {"filter": "userId eq"}]:
        error = rest.error("sendToAll", {"x": 1}, **options)
        assert error.status_code == 400, error.error
        assert error.error["responses"][0]["status"] == 400
        assert error.error["code"], error.error  # the ErrorDetail code reaches RestError.code


def test_group_membership_operations(rest: Rest, clients: Clients) -> None:
    a = clients.start("a", user_id="u1")
    b = clients.start("b", user_id="u1")
    c = clients.start("c", user_id="u2")
    g1 = rest.group("g1")

    assert g1.call("addConnection", a).statuses == [200]
    assert member_ids(rest, "g1") == {a}
    assert g1.call("addUser", "u1").statuses == [200]
    assert member_ids(rest, "g1") == {a, b}
    assert g1.call("removeConnection", a).statuses == [204]
    assert member_ids(rest, "g1") == {b}
    assert g1.call("removeUser", "u1").statuses == [204]
    assert rest.call("groupExists", "g1").value is False

    assert g1.error("addConnection", "no-such-connection").status_code == 404
    assert g1.error("addUser", "nobody").status_code == 404
    assert g1.call("removeConnection", "no-such-connection").statuses == [204]
    assert g1.call("removeUser", "nobody").statuses == [204]

    added = rest.call("addConnectionsToGroups", ["g2", "g3"], "userId eq 'u1'")
    assert added.statuses == [200]
    assert member_ids(rest, "g2") == member_ids(rest, "g3") == {a, b}
    rest.group("g2").call("sendToAll", "to g2", contentType="text/plain")
    end = marker(rest)
    assert clients.messages_before("a", end) == ["to g2"]
    assert clients.messages_before("b", end) == ["to g2"]
    assert clients.messages_before("c", end) == []

    removed = rest.call("removeConnectionsFromGroups", ["g3"], f"connectionId eq '{a}'")
    assert removed.statuses == [200]
    assert member_ids(rest, "g2") == {a, b}
    assert member_ids(rest, "g3") == {b}
    assert rest.call("removeUserFromAllGroups", "u1").statuses == [204]
    assert not rest.call("groupExists", "g2").value
    assert not rest.call("groupExists", "g3").value

    rest.call("addConnectionsToGroups", ["g4", "g5"], "userId eq 'u2'")
    assert member_ids(rest, "g4") == member_ids(rest, "g5") == {c}
    assert rest.call("removeConnectionFromAllGroups", c).statuses == [204]
    assert member_ids(rest, "g4") == member_ids(rest, "g5") == set()


def test_list_connections_follows_next_links(rest: Rest, clients: Clients) -> None:
    users = [f"user{i}" for i in range(5)]
    started = {clients.start(user, user_id=user, groups=["crowd"]): user for user in users}
    crowd = rest.group("crowd")

    paged = crowd.call("listConnections", pages=True, maxPageSize=2)
    assert [len(page) for page in paged.value] == [2, 2, 1]
    assert paged.statuses == [200, 200, 200]
    members = [member for page in paged.value for member in page]
    assert {m["connectionId"]: m["userId"] for m in members} == started
    assert len(members) == 5
    assert query_of(paged.responses[0])["maxpagesize"] == ["2"]
    for response in paged.responses[1:]:
        assert query_of(response)["continuationToken"], response

    top = crowd.call("listConnections", pages=True, maxPageSize=2, top=3)
    assert [len(page) for page in top.value] == [2, 1]
    assert {m["connectionId"] for page in top.value for m in page} < set(started)

    empty = rest.group("nobody-here").call("listConnections")
    assert (empty.value, empty.statuses) == ([], [200])


def test_permissions(rest: Rest, clients: Clients) -> None:
    p = clients.start("p", user_id="pat")
    join = {"targetName": "locked"}

    assert clients.error("p", "joinGroup", "locked").detail_name == "Forbidden"
    checked = rest.call("hasPermission", p, "joinLeaveGroup", **join)
    assert (checked.value, checked.statuses) == (False, [404])

    assert rest.call("grantPermission", p, "joinLeaveGroup", **join).statuses == [200]
    checked = rest.call("hasPermission", p, "joinLeaveGroup", **join)
    assert (checked.value, checked.statuses) == (True, [200])
    assert query_of(checked.responses[0])["targetName"] == ["locked"]
    assert clients.call("p", "joinGroup", "locked")["isDuplicated"] is False
    assert clients.error("p", "joinGroup", "elsewhere").detail_name == "Forbidden"

    assert clients.error("p", "sendToGroup", "locked", "hi", "text").detail_name == "Forbidden"
    rest.call("grantPermission", p, "sendToGroup")  # no targetName: every group
    assert rest.call("hasPermission", p, "sendToGroup", targetName="anything").value is True
    clients.call("p", "sendToGroup", "locked", "hi", "text")
    message = clients.message("p")
    assert (message["group"], message["fromUserId"], message["data"]) == ("locked", "pat", "hi")

    assert rest.call("revokePermission", p, "joinLeaveGroup", **join).statuses == [204]
    assert rest.call("hasPermission", p, "joinLeaveGroup", **join).value is False
    assert clients.error("p", "leaveGroup", "locked").detail_name == "Forbidden"

    assert rest.error("grantPermission", "no-such-connection", "sendToGroup").status_code == 404
    assert rest.call("hasPermission", "no-such-connection", "sendToGroup").value is False


@pytest.mark.parametrize("protocol", ["json", "reliable"])
def test_client_group_messages(rest: Rest, clients: Clients, protocol: str) -> None:
    a = clients.start("a", user_id="alice", roles=ALL_ROLES, protocol=protocol)
    clients.start("b", user_id="bob", roles=ALL_ROLES, protocol=protocol)
    for name in ("a", "b"):
        joined = clients.call(name, "joinGroup", "chat")
        assert joined["isDuplicated"] is False
        assert isinstance(joined["ackId"], int)
    assert rest.call("groupExists", "chat").value is True

    for data, data_type in [({"hello": ["json"]}, "json"), ("hi", "text"), (b"\x01\x02", "binary")]:
        sent = clients.call("a", "sendToGroup", "chat", data, data_type)
        assert sent["isDuplicated"] is False
        for name in ("b", "a"):  # noEcho is false by default: the sender gets it too
            message = clients.message(name)
            assert message["from"] == "group"
            assert (message["group"], message["fromUserId"]) == ("chat", "alice")
            assert (message["dataType"], message["data"]) == (data_type, data)

    clients.call("a", "sendToGroup", "chat", "no echo", "text", {"noEcho": True})
    fire = clients.call("a", "sendToGroup", "chat", "fire", "text", {"fireAndForget": True})
    assert fire == {"isDuplicated": False}  # no ackId: nothing to wait for
    end = marker(rest, "end 1")
    assert clients.messages_before("a", end) == ["fire"]
    assert clients.messages_before("b", end) == ["no echo", "fire"]

    # Reusing an ackId: the service answers Duplicate, the SDK resolves, nothing is re-sent.
    first = clients.call("a", "sendToGroup", "chat", "once", "text", {"ackId": 1000})
    again = clients.call("a", "sendToGroup", "chat", "twice", "text", {"ackId": 1000})
    assert (first["ackId"], first["isDuplicated"]) == (1000, False)
    assert (again["ackId"], again["isDuplicated"]) == (1000, True)

    assert clients.call("b", "leaveGroup", "chat")["isDuplicated"] is False
    clients.call("a", "sendToGroup", "chat", "after leave", "text")
    end = marker(rest, "end 2")
    assert clients.messages_before("a", end) == ["once", "after leave"]
    assert clients.messages_before("b", end) == ["once"]
    assert member_ids(rest, "chat") == {a}


def test_send_event_without_event_handler(rest: Rest, clients: Clients) -> None:
    e = clients.start("e", user_id="eve", roles=ALL_ROLES)
    error = clients.error("e", "sendEvent", "myEvent", {"x": 1}, "json")
    assert error.error["name"] == "SendMessageError"
    assert error.detail_name == "InternalServerError", error.error
    assert error.error["errorDetail"]["message"]

    fired = clients.call("e", "sendEvent", "myEvent", b"\x01", "binary", {"fireAndForget": True})
    assert fired == {"isDuplicated": False}
    # The connection survives both and still works.
    assert clients.call("e", "joinGroup", "after")["isDuplicated"] is False
    assert rest.call("connectionExists", e).value is True


def expect_closed(clients: Clients, name: str, connection_id: str, reason: str) -> None:
    """Client ``name`` reports ``disconnected`` with the service's reason, then ``stopped``."""
    disconnected = clients.expect(name, "disconnected")
    assert disconnected["connectionId"] == connection_id
    assert disconnected["message"]["message"] == reason
    clients.expect(name, "stopped")


def test_rest_close_operations(rest: Rest, clients: Clients) -> None:
    c1 = clients.start("c1", user_id="u1")
    c2 = clients.start("c2", user_id="u2")
    c3 = clients.start("c3", user_id="u3", groups=["doomed"])
    c4 = clients.start("c4", user_id="u4")
    c5 = clients.start("c5", user_id="u5")

    assert rest.call("closeConnection", c1, reason="kicked").statuses == [204]
    expect_closed(clients, "c1", c1, "kicked")
    assert rest.call("closeUserConnections", "u2", reason="user kicked").statuses == [204]
    expect_closed(clients, "c2", c2, "user kicked")
    assert rest.group("doomed").call("closeAllConnections", reason="bye group").statuses == [204]
    expect_closed(clients, "c3", c3, "bye group")

    closed = rest.call("closeAllConnections", reason="all gone", excluded=[c5])
    assert closed.statuses == [204]
    assert query_of(closed.responses[0])["excluded"] == [c5]
    expect_closed(clients, "c4", c4, "all gone")
    for connection_id in (c1, c2, c3, c4):
        assert rest.call("connectionExists", connection_id).value is False
    assert rest.call("connectionExists", c5).value is True
    assert rest.call("userExists", "u5").value is True

    clients.call("c5", "stop")  # closed by the client: no disconnected system message
    disconnected = clients.expect("c5", "disconnected")
    assert disconnected["connectionId"] == c5
    assert disconnected.get("message") is None
    clients.expect("c5", "stopped")


def test_auto_reconnect_rejoins_groups(rest: Rest, clients: Clients) -> None:
    first = clients.start("r", user_id="ray", roles=ALL_ROLES, autoReconnect=True)
    clients.call("r", "joinGroup", "sticky")
    rest.call("closeConnection", first, reason="come back")

    disconnected = clients.expect("r", "disconnected")
    assert disconnected["message"]["message"] == "come back"
    # The SDK reconnects with the same URL and rejoins its groups before saying connected.
    second = clients.expect("r", "connected")
    assert second["userId"] == "ray"
    assert second["connectionId"] != first
    assert member_ids(rest, "sticky") == {second["connectionId"]}
    rest.group("sticky").call("sendToAll", "welcome back", contentType="text/plain")
    check_message(clients.message("r"), "group", "text", "welcome back", "sticky")


def test_reliable_protocol_sequence_ids(rest: Rest, clients: Clients) -> None:
    r = clients.start("r", user_id="rel", roles=ALL_ROLES, protocol="reliable")
    clients.call("r", "joinGroup", "g")
    rest.group("g").call("sendToAll", {"n": 1})
    rest.call("sendToConnection", r, "two", contentType="text/plain")
    clients.call("r", "sendToGroup", "g", b"3", "binary")

    messages = [clients.message("r") for _ in range(3)]
    assert [m["data"] for m in messages] == [{"n": 1}, "two", b"3"]
    sequence_ids = [m.get("sequenceId") for m in messages]
    assert all(isinstance(i, int) for i in sequence_ids), messages
    assert sequence_ids == sorted(set(sequence_ids)), messages

    # A REST close ends a reliable connection for good: no recovery attempt.
    rest.call("closeConnection", r, reason="no recovery")
    expect_closed(clients, "r", r, "no recovery")


def test_reliable_recovery_after_dropped_socket(
    rest: Rest, clients: Clients, service: ServiceThread, hub: str
) -> None:
    r = clients.start("r", user_id="rita", roles=ALL_ROLES, protocol="reliable")
    clients.call("r", "joinGroup", "g")
    rest.group("g").call("sendToAll", "before")
    assert clients.message("r")["data"] == "before"

    def transport() -> object:
        conn = service.service.node.find_connection(hub.lower(), r)
        assert conn is not None, "the connection is gone on the service"
        return conn.transport

    dropped = service.call(transport)
    clients.driver.request("dropSocket", client="r")
    rest.group("g").call("sendToAll", "during")  # buffered or sent: delivered exactly once
    end = marker(rest)
    assert clients.messages_before("r", end) == ["during"]

    # Recovered, not reconnected: the same connection on a new socket, and the SDK emitted
    # no connected/disconnected event.
    assert service.call(transport) is not dropped
    assert rest.call("connectionExists", r).value is True
    assert clients.pending_events("r", "connected", "disconnected", "stopped") == []
    assert member_ids(rest, "g") == {r}
    clients.call("r", "sendToGroup", "g", "after", "text")
    assert clients.message("r")["data"] == "after"


def test_json_from_a_raw_peer_reaches_the_sdk_as_valid_json(
    service: ServiceThread, hub: str, rest: Rest, clients: Clients
) -> None:
    """Numbers and duplicate keys are relayed as the peer wrote them, which JSON.parse
    reads; NaN and 1e999, which it cannot (the SDK used to throw and its process exit),
    are refused at the sender with an ack error and never reach the SDK."""
    clients.start("b", user_id="bob", roles=ALL_ROLES, groups=["room"])
    with RawWebSocket(
        service, hub, subprotocol="json.webpubsub.azure.v1", roles=["webpubsub.sendToGroup"]
    ) as peer:
        assert peer.next_data() is not None  # connected
        frames = [
            b'{"price":1.10,"big":12345678901234567.5,"k":1,"k":2}',
            b"NaN",
            b"[1e999]",
        ]
        for ack_id, data in enumerate(frames, 1):
            peer.send_message(
                b'{"type":"sendToGroup","group":"room","ackId":%d,"dataType":"json","data":%s}'
                % (ack_id, data)
            )
            received = peer.next_data()
            assert received is not None
            ack = json.loads(received.payload)
            assert ack["ackId"] == ack_id and ack["success"] is (ack_id == 1), ack
        end = marker(rest)
        assert clients.messages_before("b", end) == [
            {"price": 1.1, "big": 12345678901234568, "k": 2}
        ]
    assert clients.call("b", "sendToGroup", "room", "still alive", "text")["isDuplicated"] is False
    assert clients.message("b")["data"] == "still alive"


def test_metadata_reaches_the_sdk(
    service: ServiceThread, hub: str, rest: Rest, clients: Clients
) -> None:
    """Metadata (spec-next 3): from REST headers (keys lowercased) and from a client frame
    (keys as sent) to the JS client's ``message.metadata``; bad metadata is a 400."""
    clients.start("b", user_id="bob", roles=ALL_ROLES, groups=["room"])
    headers = {"X-WebPubSub-Metadata-Trace-Id": "abc", "X-WebPubSub-Metadata-Priority": "high"}
    rest.group("room").call(
        "sendToAll", "hi", contentType="text/plain", requestOptions={"customHeaders": headers}
    )
    message = clients.message("b")
    assert message["data"] == "hi"
    assert message["metadata"] == {"trace-id": "abc", "priority": "high"}
    rest.group("room").call("sendToAll", "plain", contentType="text/plain")
    assert "metadata" not in clients.message("b")
    for bad in ({"X-WebPubSub-Metadata-Key": "x" * 1025}, {"X-WebPubSub-Metadata-": "v"}):
        error = rest.error(
            "sendToAll", "no", contentType="text/plain", requestOptions={"customHeaders": bad}
        )
        assert error.status_code == 400, error.error
    with RawWebSocket(
        service, hub, subprotocol="json.webpubsub.azure.v1", roles=["webpubsub.sendToGroup"]
    ) as peer:
        assert peer.next_data() is not None  # connected
        peer.send_message(
            b'{"type":"sendToGroup","group":"room","ackId":1,"dataType":"text","data":"x",'
            b'"metadata":{"Trace":"1"}}'
        )
        received = peer.next_data()
        assert received is not None and json.loads(received.payload)["success"] is True
    end = marker(rest)
    received_messages = []
    while (message := clients.message("b"))["data"] != end:
        received_messages.append(message)
    assert [(m["data"], m["metadata"]) for m in received_messages] == [("x", {"Trace": "1"})]
