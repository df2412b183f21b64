"""Acceptance checks of socketio spec 8 with the official packages end to end: a Socket.IO
app server (``socket.io`` 4.8 + ``@azure/web-pubsub-socket.io`` 1.2.1, over our tunnel) and
``socket.io-client`` 4.8 clients (Engine.IO v4 on ``/clients/socketio/hubs/{hub}/``).

A fresh hub per check. Negative checks ("B gets nothing") send a marker afterwards and look
at what arrived before it: order is kept per client, so nothing is timed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.nodejs import JsError, NodeDriver, node_missing
from webpubsub.testing import ServiceThread

pytestmark = pytest.mark.skipif(node_missing() is not None, reason=str(node_missing()))


def path(hub: str) -> str:
    return f"/clients/socketio/hubs/{hub}"


@pytest.fixture
def socketio_served(service: ServiceThread) -> None:
    response = httpx.get(f"{service.endpoint}{path('probe')}/?EIO=4&transport=polling")
    if response.status_code in (400, 404) and "UnsupportedClientProtocol" in response.text:
        pytest.skip("this service has no Socket.IO client endpoint yet")


class SocketIO:
    """One app server and the clients of one hub."""

    def __init__(self, service: ServiceThread, hub: str) -> None:
        self.service = service
        self.hub = hub
        self.app = NodeDriver("socketio_app.mjs")
        self.clients = NodeDriver("socketio_client.mjs")

    def start(self, **options: Any) -> None:
        self.app.request(
            "start", hub=self.hub, connectionString=self.service.connection_string, **options
        )

    def connect(self, name: str, nsp: str = "/", **options: Any) -> dict[str, Any]:
        connected: dict[str, Any] = self.clients.request(
            "connect",
            name=name,
            url=self.service.endpoint + (nsp if nsp != "/" else ""),
            path=path(self.hub),
            **options,
        )
        return connected

    def server_socket(self, nsp: str = "/") -> dict[str, Any]:
        """The next ``connection`` the app server saw."""
        return self.app.wait_for(
            lambda line: line.get("event") == "connection" and line.get("nsp") == nsp,
            f"a connection on {nsp}",
        )

    def received(self, name: str, event: str) -> dict[str, Any]:
        return self.clients.wait_for(
            lambda line: (
                line.get("client") == name
                and line.get("event") == "message"
                and line.get("name") == event
            ),
            f"{name} to receive {event}",
        )

    def app_received(self, event: str) -> dict[str, Any]:
        return self.app.wait_for(
            lambda line: line.get("event") == "message" and line.get("name") == event,
            f"the app server to receive {event}",
        )

    def events_until_marker(self, name: str, marker: str) -> list[str]:
        """Names of what ``name`` received up to the marker (consumed)."""
        self.received(name, marker)
        before = self.clients.unread(
            lambda line: line.get("client") == name and line.get("event") == "message"
        )
        for line in before:
            self.clients.wait_for(lambda x, line=line: x is line, "a kept line")
        return [line["name"] for line in before]

    def close(self) -> None:
        self.clients.close()
        self.app.close()


@pytest.fixture
def sio(service: ServiceThread, hub: str, socketio_served: None) -> Iterator[SocketIO]:
    running = SocketIO(service, hub)
    try:
        yield running
    finally:
        running.close()


def test_1_quickstart_over_websocket(sio: SocketIO) -> None:
    sio.start()
    connected = sio.connect("a", transports=["websocket"])
    assert connected["transport"] == "websocket"
    assert sio.received("a", "hello")["args"] == ["world"]
    sio.clients.request("emit", name="a", event="howdy", args=["stranger"])
    assert sio.app_received("howdy")["args"] == ["stranger"]
    assert sio.clients.request("transport", name="a") == "websocket"


def test_2_default_transports_upgrade(sio: SocketIO) -> None:
    sio.start()
    connected = sio.connect("a")
    # The handshake is polling; the upgrade may finish before the CONNECT ack arrives (it
    # does not wait for the app server), and the upgrade event says it came from polling.
    assert connected["transport"] in ("polling", "websocket")
    upgrade = sio.clients.wait_for(
        lambda line: line.get("client") == "a" and line.get("event") == "upgrade", "the upgrade"
    )
    assert upgrade["transport"] == "websocket"
    assert sio.clients.request("transport", name="a") == "websocket"
    assert sio.clients.request("emitWithAck", name="a", event="add", args=[2, 3]) == 5


def test_3_polling_only(sio: SocketIO) -> None:
    sio.start()
    sio.connect("a", transports=["polling"])
    assert sio.received("a", "hello")["args"] == ["world"]
    sio.clients.request("emit", name="a", event="up", args=["x"])
    assert sio.app_received("up")["args"] == ["x"]
    data = bytes(range(256))
    answer = sio.clients.request("emitWithAck", name="a", event="echo", args=[data, "s"])
    assert answer == data  # emitWithAck resolves with the first argument of the ack
    assert sio.clients.request("transport", name="a") == "polling"


def test_7_acks_both_ways(sio: SocketIO) -> None:
    sio.start()
    sio.connect("a", transports=["websocket"])
    socket = sio.server_socket()
    assert sio.clients.request("emitWithAck", name="a", event="add", args=[2, 3]) == 5
    assert sio.app.request("askClient", socket=socket["id"], event="q", args=[41]) == 42
    with pytest.raises(JsError):
        sio.app.request("askClient", socket=socket["id"], event="silent", args=[], timeout=300)


def test_4_namespaces(sio: SocketIO) -> None:
    sio.start(namespaces=["/", "/chat"])
    chat = sio.connect("a", "/chat", transports=["websocket"])
    server_chat = sio.server_socket("/chat")
    sio.connect("b", transports=["websocket"])
    sio.server_socket("/")
    assert chat["id"] == server_chat["id"]
    assert chat["engineId"] == server_chat["connId"]
    sio.app.request("emit", nsp="/chat", event="news", args=["x"])
    assert sio.received("a", "news")["args"] == ["x"]
    sio.app.request("emit", nsp="/", event="marker", args=[])
    assert "news" not in sio.events_until_marker("b", "marker")


def test_5_rooms(sio: SocketIO) -> None:
    sio.start()
    ids = {}
    for name in "abc":
        sio.connect(name, transports=["websocket"])
        ids[name] = sio.server_socket()["id"]
    for name in "ab":
        sio.app.request("join", socket=ids[name], room="r1")

    def only(event: str, expected: set[str]) -> None:
        sio.app.request("emit", event="marker", args=[])
        for name in "abc":
            got = sio.events_until_marker(name, "marker")
            assert (event in got) == (name in expected), (event, name, got)
            assert got.count(event) <= 1, (event, name, got)

    sio.app.request("emit", rooms=["r1"], event="toR1", args=[])
    only("toR1", {"a", "b"})
    sio.app.request("emit", event="exceptR1", args=[], **{"except": ["r1"]})
    only("exceptR1", {"c"})
    sio.app.request("socketBroadcast", socket=ids["a"], event="fromA", args=[])
    only("fromA", {"b", "c"})
    sio.app.request("socketBroadcast", socket=ids["a"], event="aToR1", args=[], rooms=["r1"])
    only("aToR1", {"b"})
    sio.app.request("emit", rooms=["r1", ids["c"]], event="union", args=[])
    only("union", {"a", "b", "c"})
    sio.app.request("leave", socket=ids["b"], room="r1")
    sio.app.request("emit", rooms=["r1"], event="afterLeave", args=[])
    only("afterLeave", {"a"})


def test_binary_survives_the_wire(sio: SocketIO) -> None:
    """Check 6 in short: a server Buffer reaches the client byte-exact."""
    sio.start()
    sio.connect("a", transports=["websocket"])
    socket = sio.server_socket()
    sio.app.request("socketEmit", socket=socket["id"], event="bin", args=[b"ABC"])
    assert sio.received("a", "bin")["args"] == [b"ABC"]


def test_20_two_app_servers(service: ServiceThread, hub: str, socketio_served: None) -> None:
    """Clients spread over two app-server processes; broadcasts and rooms are hub-wide."""
    first, second = SocketIO(service, hub), SocketIO(service, hub)
    try:
        first.start()
        second.start()
        names = {first.connect(f"c{i}", transports=["websocket"])["id"]: f"c{i}" for i in range(4)}
        owners: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while len(owners) < 4:  # the apps' output may lag behind the clients'
            assert time.monotonic() < deadline, f"connections seen: {owners}"
            for app, label in ((first.app, "A"), (second.app, "B")):
                for line in app.unread(lambda line: line.get("event") == "connection"):
                    owners[line["id"]] = label
            time.sleep(0.02)  # polling the drivers' output, not timing an effect
        assert sorted(owners.values()) == ["A", "A", "B", "B"]
        first.app.request("emit", event="fromA", args=[])
        for i in range(4):
            first.received(f"c{i}", "fromA")
        b_socket = next(sid for sid, label in owners.items() if label == "B")
        second.app.request("join", socket=b_socket, room="room")
        first.app.request("emit", rooms=["room"], event="toRoom", args=[])
        first.app.request("emit", event="marker", args=[])
        receivers = [
            f"c{i}" for i in range(4) if "toRoom" in first.events_until_marker(f"c{i}", "marker")
        ]
        assert receivers == [names[b_socket]]
    finally:
        second.close()
        first.close()


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]])
def test_8_broadcast_acks(sio: SocketIO, transports: list[str]) -> None:
    """io.timeout().emitWithAck through the service's :invoke: every client's answer, a
    silent client failing the broadcast with the others' answers, nobody: [] at once."""
    sio.start()
    for name in ("a", "b", "c"):
        sio.connect(name, transports=transports)
    answer = sio.app.request("emitWithAck", event="q", args=[41], timeout=3000)
    assert answer == {"answers": [42, 42, 42]}
    sio.connect("mute", transports=transports, mute=True)
    answer = sio.app.request("emitWithAck", event="q", args=[1], timeout=500)
    assert answer["error"] and sorted(answer["answers"]) == [2, 2, 2]
    answer = sio.app.request("emitWithAck", rooms=["nobody"], event="q", args=[1], timeout=3000)
    assert answer == {"answers": []}
    data = bytes(range(10))
    answer = sio.app.request("emitWithAck", rooms=["nobody"], event="echo", args=[data])
    assert answer == {"answers": []}


def test_10_server_disconnects(sio: SocketIO) -> None:
    """socket.disconnect() and io.disconnectSockets(false): the client hears "io server
    disconnect"; io.disconnectSockets(true): every client disconnects, no socket is left."""
    sio.start()

    def ended(name: str) -> str:
        line = sio.clients.wait_for(
            lambda line: line.get("client") == name and line.get("event") == "disconnect",
            f"{name}'s end",
        )
        return str(line["reason"])

    sio.connect("a", transports=["websocket"])
    socket = sio.server_socket()
    sio.app.request("disconnectSocket", socket=socket["id"])
    assert ended("a") == "io server disconnect"
    sio.connect("b", transports=["polling"])
    sio.connect("c", transports=["websocket"])
    sio.app.request("disconnectAll", close=False)
    assert (ended("b"), ended("c")) == ("io server disconnect", "io server disconnect")
    sio.connect("d", transports=["polling"])
    sio.connect("e", transports=["websocket"])
    sio.app.request("emit", event="marker", args=[])
    sio.received("d", "marker")
    sio.app.request("disconnectAll", close=True)
    ended("d")
    ended("e")
    assert sio.app.request("count") == 0


def test_11_client_disconnects(sio: SocketIO) -> None:
    """Client socket.disconnect(): the app server hears "client namespace disconnect"."""
    sio.start()
    sio.connect("a", transports=["websocket"])
    socket = sio.server_socket()
    sio.clients.request("disconnect", name="a")
    gone = sio.app.wait_for(
        lambda line: line.get("event") == "disconnect" and line.get("id") == socket["id"],
        "the server socket's end",
    )
    assert gone["reason"] == "client namespace disconnect"


def test_16_and_18_http_answers(service: ServiceThread, hub: str, socketio_served: None) -> None:
    """EIO=3 is 400 with Engine.IO's error body; a wrong path 404; no app server: 503."""
    base = f"{service.endpoint}{path(hub)}/"
    answer = httpx.get(base, params={"EIO": "3", "transport": "polling"})
    assert answer.status_code == 400
    assert answer.json() == {"code": 5, "message": "Unsupported protocol version"}
    answer = httpx.get(base, params={"EIO": "4", "transport": "carrier-pigeon"})
    assert (answer.status_code, answer.json()["code"]) == (400, 0)
    answer = httpx.get(base, params={"EIO": "4", "transport": "polling", "sid": "nope"})
    assert (answer.status_code, answer.json()["code"]) == (400, 1)
    assert httpx.get(f"{service.endpoint}/socket.io/?EIO=4&transport=polling").status_code == 404
    assert httpx.get(base, params={"EIO": "4", "transport": "polling"}).status_code == 503


def test_6_binary_mixed(sio: SocketIO) -> None:
    """Mixed arguments with Buffers to a room, and a client Buffer up: all byte-exact."""
    sio.start()
    sio.connect("a", transports=["polling"])
    socket = sio.server_socket()
    sio.app.request("join", socket=socket["id"], room="r")
    args = [1, b"\x01", "3", [b"\x02\x03"]]
    sio.app.request("emit", rooms=["r"], event="mixed", args=args)
    assert sio.received("a", "mixed")["args"] == args
    sio.clients.request("emit", name="a", event="up", args=[b"\x07\x08"])
    assert sio.app_received("up")["args"] == [b"\x07\x08"]


def test_9_server_side_room_operations(sio: SocketIO) -> None:
    """io.socketsJoin / socketsLeave reach every client; io.local.fetchSockets has them;
    io.fetchSockets (which needs the adapter's request/response) throws, as on Azure."""
    sio.start()
    ids = {name: sio.connect(name, transports=["websocket"])["id"] for name in ("a", "b")}
    sio.app.request("socketsJoin", room="all")
    # socketsJoin cannot be awaited with socket.io 4.8 (it returns nothing): its local joins
    # (more :addToGroups) follow later; wait until both sockets are in, or the leave below
    # could be overtaken by them.
    deadline = time.monotonic() + 5
    while not all("all" in sio.app.request("rooms", socket=sid) for sid in ids.values()):
        assert time.monotonic() < deadline, "the local joins of socketsJoin never finished"
    sio.app.request("emit", rooms=["all"], event="toAll", args=[])
    for name in ids:
        sio.received(name, "toAll")
    sio.app.request("socketsLeave", room="all", **{"from": "all"})
    sio.app.request("emit", rooms=["all"], event="afterLeave", args=[])
    sio.app.request("emit", event="marker", args=[])
    for name in ids:
        assert "afterLeave" not in sio.events_until_marker(name, "marker")
    assert sorted(sio.app.request("fetchLocal")) == sorted(ids.values())
    assert "error" in sio.app.request("fetchAll")


def test_12_middleware_refusal(sio: SocketIO) -> None:
    """io.use refusing with data: the client's connect_error has the message and data."""
    sio.start(refuse=True)
    with pytest.raises(JsError) as refused:
        sio.connect("a", transports=["websocket"])
    assert "unauthorized" in str(refused.value)


def test_14_order_of_broadcasts(sio: SocketIO) -> None:
    """100 io.emit interleaved with 100 io.to(room).emit arrive complete and in order."""
    sio.start()
    sio.connect("a", transports=["websocket"])
    socket = sio.server_socket()
    sio.app.request("join", socket=socket["id"], room="g")
    sio.app.request("emitMany", count=100)
    got = [sio.received("a", event)["args"][0] for _ in range(100) for event in ("bc", "gc")]
    assert got == [i for i in range(100) for _ in range(2)]


def test_15_query_and_auth(sio: SocketIO) -> None:
    sio.start()
    sio.connect("a", query={"foo": "bar"}, auth={"token": "abc"})
    socket = sio.server_socket()
    assert socket["query"]["foo"] == "bar"
    assert socket["auth"] == {"token": "abc"}


def test_17_heartbeat_is_the_app_servers(sio: SocketIO) -> None:
    """pingInterval 300 / pingTimeout 200 on the app's Server: the client sees the app
    server's pings through the service (4 of them) and stays connected."""
    sio.start(pingInterval=300, pingTimeout=200)
    sio.connect("a", transports=["websocket"])
    sio.connect("b", transports=["polling"])
    for name in ("a", "b"):
        for _ in range(4):
            sio.clients.wait_for(
                lambda line, name=name: line.get("client") == name and line.get("event") == "ping",
                f"a ping to {name}",
            )
    gone = sio.clients.unread(lambda line: line.get("event") == "disconnect")
    assert gone == []


def test_13_negotiated_token(sio: SocketIO, service: ServiceThread, hub: str) -> None:
    """A token as negotiate() signs it (aud = the Socket.IO path, sub and userId): the app
    server sees the claims; a token signed with another key is refused."""
    import time

    import jwt

    from tests.conftest import ACCESS_KEY

    sio.start()
    now = int(time.time())
    claims = {"userId": "bob", "iat": now, "exp": now + 3600, "sub": "bob"}
    claims["aud"] = f"{service.endpoint}{path(hub)}"
    token = jwt.encode(claims, ACCESS_KEY, algorithm="HS256")
    sio.connect("a", query={"access_token": token}, transports=["polling"])
    socket = sio.server_socket()
    assert socket["claims"]["userId"] == ["bob"]
    assert "access_token" not in socket["query"]
    forged = jwt.encode(claims, "another-key-0123456789abcdefghijklmnop", algorithm="HS256")
    with pytest.raises(JsError):
        sio.connect("b", query={"access_token": forged}, transports=["polling"])
