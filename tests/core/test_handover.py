"""A reliable connection moving between two nodes (core/handover.py): what a snapshot
keeps, and how the new node applies what the snapshot lacks."""

from __future__ import annotations

import pytest

from webpubsub.core import commands as c
from webpubsub.core.connection import Connection
from webpubsub.core.handover import HandoverError, Snapshot, from_fields, to_fields
from webpubsub.core.message import DataType, Message
from webpubsub.core.node import Node
from webpubsub.core.roles import Permission
from webpubsub.protocols import RELIABLE_JSON

from .helpers import RecordingTransport, make_connection
from .test_reliable import messages_of, send_all


def text(value: str) -> Message:
    return Message(value.encode(), DataType.TEXT)


class TestMove:
    def setup_method(self) -> None:
        self.a, self.b = Node(recovery_window=30), Node(recovery_window=30)
        self.conn, self.transport = make_connection(codec=RELIABLE_JSON, user_id="u", roles=["r"])
        self.a.connect(self.conn, ["g"])
        self.conn.state = "state"
        self.conn.event_id = 7
        assert not self.conn.seen_ack(5)

    def move(self, later: list[c.Command] | None = None) -> tuple[Connection, RecordingTransport]:
        snapshot = from_fields(
            {k.encode(): v for k, v in to_fields(self.a.release(self.conn, now=10)).items()}
        )
        fresh = RecordingTransport()
        return self.b.adopt(snapshot, RELIABLE_JSON, fresh, 11, later or []), fresh

    def test_everything_but_the_socket_moves(self) -> None:
        send_all(self.a, "one")
        send_all(self.a, "two")
        self.a.receive(self.conn, b'{"type":"sequenceAck","sequenceId":1}', True)
        self.a.connection_lost(self.conn, self.transport, now=5)
        send_all(self.a, "three")
        token = self.conn.recovery.token if self.conn.recovery else ""
        left: list[str] = []
        self.a.on_disconnected.append(lambda conn, reason: left.append(reason))

        moved, fresh = self.move()

        assert left == []  # no disconnected event: the connection goes on
        assert not self.a.connection_exists("chat", self.conn.connection_id)
        assert "chat" not in self.a.hubs
        assert moved.connection_id == self.conn.connection_id
        replay = messages_of(fresh)
        assert replay[0] == {
            "type": "system",
            "event": "connected",
            "connectionId": self.conn.connection_id,
            "userId": "u",
            "reconnectionToken": token,
        }
        assert [(m["sequenceId"], m["data"]) for m in replay[1:]] == [(2, "two"), (3, "three")]
        assert self.b.group_exists("chat", "g")
        assert self.b.user_exists("chat", "u")
        assert moved.roles == {"r"}
        assert moved.state == "state" and moved.event_id == 7
        assert moved.seen_ack(5)
        send_all(self.b, "four")
        assert messages_of(fresh)[-1]["sequenceId"] == 4

    def test_later_commands_reach_it_alone_and_in_order(self) -> None:
        other, other_transport = make_connection(codec=RELIABLE_JSON, user_id="v")
        self.b.connect(other, ["g"])
        before = len(messages_of(other_transport))
        later: list[c.Command] = [
            c.AddToGroup(c.ToConnection(self.conn.connection_id), "new"),
            c.Send(c.ToGroup("g"), text("x")),
            c.Send(c.ToGroup("new"), text("y")),
            c.Grant(self.conn.connection_id, Permission.SEND_TO_GROUP, "h"),
            c.RemoveFromGroup(c.ToConnection(self.conn.connection_id), "g"),
        ]
        self.a.connection_lost(self.conn, self.transport, now=5)
        moved, fresh = self.move(later)
        assert [m["data"] for m in messages_of(fresh)[1:]] == ["x", "y"]
        assert len(messages_of(other_transport)) == before  # the others had them already
        assert moved.groups == {"new"}
        assert "webpubsub.sendToGroup.h" in moved.roles
        assert [conn.connection_id for conn in self.b.hubs["chat"].group_members("new")] == [
            self.conn.connection_id
        ]
        assert len(self.b.hubs["chat"].group_members("g")) == 1  # only the other one

    def test_a_later_close_ends_it_with_its_event(self) -> None:
        ended: list[str] = []
        self.b.on_disconnected.append(lambda conn, reason: ended.append(reason))
        self.a.connection_lost(self.conn, self.transport, now=5)
        later: list[c.Command] = [c.CloseConnections(c.ToUser("u"), "bye")]
        _moved, fresh = self.move(later)
        assert ended == ["bye"]
        assert fresh.closed == (1008, "bye")
        assert not self.b.connection_exists("chat", self.conn.connection_id)

    def test_an_attached_connection_loses_its_old_socket(self) -> None:
        self.move()
        assert self.transport.closed is not None and self.transport.closed[0] == 1008


class TestSnapshotFields:
    def test_round_trip(self) -> None:
        snapshot = Snapshot(
            hub="h",
            connection_id="id",
            subprotocol="json.reliable.webpubsub.azure.v1",
            token="t",
            user_id=None,
            roles=("a", "b"),
            groups=("é", "\u0000"),
            state=None,
            event_id=0,
            ack_ids=(1, 2),
            next_id=3,
            messages=((1, b"\x00\xff", None), (2, b"", 12.5)),
            window_left=3.0,
            marks={"n": 4},
        )
        fields = {k.encode(): v for k, v in to_fields(snapshot).items()}
        assert from_fields(fields) == snapshot

    @pytest.mark.parametrize(
        "fields",
        [{}, {b"meta": b"not json"}, {b"meta": b"{}"}, {b"meta": b'{"seq":[[1,null]]}'}],
    )
    def test_garbage_is_refused(self, fields: dict[bytes, bytes]) -> None:
        with pytest.raises(HandoverError):
            from_fields(fields)
