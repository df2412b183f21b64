"""An MQTT session moving between two nodes, without sockets or Redis: the holder lets go
(``prepare_move``, ``Node.release``), the snapshot travels as Redis hash fields, and the
CONNECT waiting on the other node resumes it (``finish_move``). The engine's part (the move
request on the hub's channel) is tested with real nodes in tests/cluster."""

from __future__ import annotations

from collections.abc import Iterable

from webpubsub.core import commands as c
from webpubsub.core.connection import Connection
from webpubsub.core.handover import Snapshot, from_fields, to_fields
from webpubsub.core.message import DataType, Message, Source
from webpubsub.core.mqtt import Session
from webpubsub.core.node import Node
from webpubsub.protocols.frames import binary_frame
from webpubsub.protocols.mqtt import (
    V5,
    V311,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    Parser,
    Properties,
    PubAck,
    Publish,
    Subscribe,
    Subscription,
    Will,
    encode,
)
from webpubsub.protocols.mqtt.connection import MqttConnection

from .test_mqtt_connection import ROLES, Recording


class Wire:
    """Two nodes' engine: what one publishes, the other applies (core.node.Engine)."""

    def __init__(self) -> None:
        self.other: Node | None = None

    def publish(self, hub: str, command: c.Command) -> None:
        if self.other is not None:
            self.other.apply(hub, command)

    def record_soon(self, hub: str, command: c.Command) -> None:
        pass

    def connection_added(self, conn: Connection, groups: Iterable[str]) -> None:
        pass

    async def registered(self, connection_id: str) -> None:
        return None

    def connection_removed(self, conn: Connection) -> None:
        pass

    def hub_added(self, hub: str) -> None:
        pass

    def hub_removed(self, hub: str) -> None:
        pass


def pair() -> tuple[Node, Node]:
    a, b = Node(), Node()
    wire_a, wire_b = Wire(), Wire()
    wire_a.other, wire_b.other = b, a
    a.engine, b.engine = wire_a, wire_b
    return a, b


def packets(sent: list[bytes], version: int = V5) -> list[Packet]:
    """What a transport was given, read back as packets (frames are < 126 bytes here)."""
    parser = Parser(version)
    return [packet for frame in sent for packet in parser.feed(frame[2:])]


def text(value: str, group: str = "g") -> Message:
    return Message(value.encode(), DataType.TEXT, Source.GROUP, group)


def hand_over(holder: Node, conn: MqttConnection, token: str) -> Snapshot | str:
    """The holding node's side of engine/redis.py ``_hand_over``."""
    why = conn.prepare_move(token, "mqtt")
    if why:
        return why
    fields = to_fields(holder.release(conn, now=10))
    return from_fields({k.encode(): v for k, v in fields.items()})


def connected(
    node: Node, client_id: str, version: int = V5, *, first: bool = True, **connect: object
) -> MqttConnection:
    """A client's CONNECT; ``first``: no other node holds its session (the engine's answer)."""
    conn = MqttConnection("h", Recording(), node, roles=ROLES)
    packet = Connect(client_id, version, **connect)  # type: ignore[arg-type]
    conn.receive(encode(packet, version), False, 1.0)
    if first and conn.pending_move is not None:
        conn.finish_move(None, (), 1.0)
    return conn


def test_session_resumes_on_the_other_node() -> None:
    a, b = Node(), Node()  # A alone: its session is made as a single node makes it
    first = connected(a, "dev", clean_start=False, will=Will("w", b"gone"))
    first_socket = first.transport
    first.receive(encode(Subscribe(1, (Subscription("g", 1),)), V5), False, 2.0)
    a.apply("h", c.Send(c.ToGroup("g"), text("one")))  # unacknowledged: it moves along
    wire_a, wire_b = Wire(), Wire()
    wire_a.other, wire_b.other = b, a
    a.engine, b.engine = wire_a, wire_b
    watcher = connected(b, "watcher")
    watcher.receive(encode(Subscribe(1, (Subscription("w", 0),)), V5), False, 2.0)

    second = connected(b, "dev", clean_start=False, first=False)
    assert second.pending_move is not None and second.move_token() == "resume:5"
    second.receive(encode(Publish("g", b"early", 0), V5), False, 2.5)  # waits for the answer
    outcome = hand_over(a, first, second.move_token())
    assert isinstance(outcome, Snapshot)
    assert not a.connection_exists("h", "dev")
    first_saw = packets(first_socket.sent)  # type: ignore[attr-defined]
    assert first_saw[-1] == Disconnect(0x8E)
    second.finish_move(outcome, [c.Send(c.ToGroup("g"), text("two"))], 3.0)

    saw = packets(second.transport.sent)  # type: ignore[attr-defined]
    assert isinstance(saw[0], ConnAck) and saw[0].session_present
    resent = [p for p in saw if isinstance(p, Publish)]
    assert [(p.payload, p.dup) for p in resent] == [
        (b"one", True),
        (b"two", False),
        (b"early", False),
    ]
    assert b.connection_exists("h", "dev") and not second.closed
    # Its socket was taken over, as on one node: the will goes, once.
    wills = [p for p in packets(watcher.transport.sent) if isinstance(p, Publish)]  # type: ignore[attr-defined]
    assert [(p.topic, p.payload) for p in wills] == [("w", b"gone")]
    b.apply("h", c.Send(c.ToGroup("g"), text("three")))  # still subscribed, QoS 1
    last = packets(second.transport.sent)[-1]  # type: ignore[attr-defined]
    assert isinstance(last, Publish) and (last.payload, last.qos) == (b"three", 1)
    second.receive(encode(PubAck(last.packet_id or 0), V5), False, 4.0)


def test_clean_start_ends_the_old_session_there() -> None:
    a, b = pair()
    ended: list[str] = []
    a.on_disconnected.append(lambda conn, reason: ended.append(conn.connection_id))
    first = connected(a, "dev", V311, clean_start=False)
    second = connected(b, "dev", V311, clean_start=True, first=False)
    assert second.move_token() == "new"
    assert hand_over(a, first, second.move_token()) == "the session ended"
    assert ended == ["dev"] and first.closed
    second.finish_move(None, (), 3.0)
    saw = packets(second.transport.sent, V311)  # type: ignore[attr-defined]
    assert saw[0] == ConnAck(0, False)
    assert b.connection_exists("h", "dev")


def test_another_version_is_a_new_session() -> None:
    a, b = pair()
    first = connected(a, "dev", V311, clean_start=False)
    second = connected(b, "dev", V5, clean_start=False, first=False)
    assert hand_over(a, first, second.move_token()) == "the session ended"


def test_a_web_pubsub_client_id_is_refused() -> None:
    a, b = pair()
    second = connected(b, "dev", V311, first=False)
    second.finish_move("refused", (), 3.0)
    assert packets(second.transport.sent, V311) == [ConnAck(0x02, False)]  # type: ignore[attr-defined]
    assert second.closed and not b.connection_exists("h", "dev")
    assert not a.hubs


def test_no_answer_from_the_cluster_is_server_unavailable() -> None:
    _, b = pair()
    second = connected(b, "dev", V5, first=False)
    second.finish_move("unavailable", (), 3.0)
    assert packets(second.transport.sent) == [ConnAck(0x88, False)]  # type: ignore[attr-defined]


def test_a_client_that_leaves_during_the_move_keeps_its_session() -> None:
    a, b = pair()
    first = connected(a, "dev", clean_start=False)
    first.receive(encode(Subscribe(1, (Subscription("g", 1),)), V5), False, 2.0)
    keep = Properties(session_expiry_interval=60)
    second = connected(b, "dev", clean_start=False, first=False, properties=keep)
    assert second.socket_lost(second.transport, 2.5) is False  # not over: it waits
    outcome = hand_over(a, first, second.move_token())
    assert isinstance(outcome, Snapshot)
    second.finish_move(outcome, (), 3.0)
    assert b.connection_exists("h", "dev") and not second.closed
    session = second.session
    assert session is not None and session.detached_until is not None
    assert second.tick(3.0 + session.expiry + 1)  # it expires as any detached session does
    assert not b.connection_exists("h", "dev")


def test_session_json_round_trip_and_garbage() -> None:
    session = Session(5, expiry=30)
    session.subscriptions["g"] = (1, True, 7)
    session.received_qos2.add(3)
    session.outgoing[4] = binary_frame(b"\x32\x00")
    session.waiting.append((b"head", b"tail"))
    session.next_id = 9
    back, session_id = Session.from_json(session.to_json("sid"))
    assert session_id == "sid"
    assert back.subscriptions == session.subscriptions
    assert back.received_qos2 == {3} and back.outgoing == session.outgoing
    assert list(back.waiting) == [(b"head", b"tail")] and back.next_id == 9
    good = session.to_json(None)
    garbage: list[dict[str, object]] = [
        {},
        {**good, "v": 9},
        {**good, "subs": [["g"]]},
        {**good, "out": [[1, "!!"]]},
        {**good, "next": 0},
    ]
    for bad in garbage:
        try:
            Session.from_json(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_an_unreadable_session_starts_a_new_one() -> None:
    a, b = pair()
    first = connected(a, "dev", clean_start=False)
    second = connected(b, "dev", clean_start=False, first=False)
    outcome = hand_over(a, first, second.move_token())
    assert isinstance(outcome, Snapshot)
    broken = Snapshot(
        **{**{f: getattr(outcome, f) for f in outcome.__dataclass_fields__}, "session": {"v": 5}}
    )
    second.finish_move(broken, (), 3.0)
    saw = packets(second.transport.sent)  # type: ignore[attr-defined]
    assert isinstance(saw[0], ConnAck) and not saw[0].session_present
    assert b.connection_exists("h", "dev")
