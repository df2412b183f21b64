"""The hub registry and local fan-out (spec 0, 1.4, 6)."""

from __future__ import annotations

from webpubsub.core import commands as c
from webpubsub.core.hub import Hub
from webpubsub.core.message import DataType, Message
from webpubsub.core.odata import parse_filter
from webpubsub.core.roles import Permission
from webpubsub.protocols import JSON, RAW

from .helpers import make_connection


def hub_with(*specs: tuple[str, str | None]) -> tuple[Hub, dict[str, object]]:
    hub = Hub("chat")
    transports = {}
    for connection_id, user_id in specs:
        conn, transport = make_connection(user_id=user_id, connection_id=connection_id)
        hub.add(conn)
        transports[connection_id] = transport
    return hub, transports


class TestRegistry:
    def test_add_indexes_by_id_and_user(self) -> None:
        hub, _ = hub_with(("c1", "u1"), ("c2", "u1"), ("c3", None))
        assert set(hub.connections) == {"c1", "c2", "c3"}
        assert set(hub.users) == {"u1"}
        assert set(hub.users["u1"]) == {"c1", "c2"}

    def test_remove_clears_user_and_groups(self) -> None:
        hub, _ = hub_with(("c1", "u1"))
        conn = hub.connections["c1"]
        hub.join(conn, "g1")
        hub.join(conn, "g2")
        assert hub.remove(conn)
        assert hub.connections == {}
        assert hub.users == {}
        assert hub.groups == {}
        assert conn.groups == set()
        assert not hub.remove(conn)

    def test_group_exists_only_while_it_has_members(self) -> None:
        hub, _ = hub_with(("c1", None))
        conn = hub.connections["c1"]
        hub.join(conn, "g")
        hub.join(conn, "g")  # idempotent
        assert list(hub.groups["g"]) == ["c1"]
        hub.leave(conn, "g")
        hub.leave(conn, "g")  # idempotent
        assert "g" not in hub.groups


class TestCommands:
    def test_add_user_adds_current_connections_only(self) -> None:
        hub, _ = hub_with(("c1", "u1"), ("c2", "u1"), ("c3", "u2"))
        hub.apply(c.AddToGroup(c.ToUser("u1"), "g"))
        assert set(hub.groups["g"]) == {"c1", "c2"}
        late, _ = make_connection(user_id="u1", connection_id="c4")
        hub.add(late)
        assert "c4" not in hub.groups["g"]

    def test_remove_from_all_groups(self) -> None:
        hub, _ = hub_with(("c1", "u1"))
        hub.apply(c.AddToGroups(("a", "b"), None))
        assert hub.connections["c1"].groups == {"a", "b"}
        hub.apply(c.RemoveFromAllGroups(c.ToUser("u1")))
        assert hub.groups == {}

    def test_add_to_groups_with_filter(self) -> None:
        hub, _ = hub_with(("c1", "listener-1"), ("c2", "talker"))
        hub.apply(c.AddToGroups(("g",), parse_filter("startswith(userId, 'listener-')")))
        assert set(hub.groups["g"]) == {"c1"}
        hub.apply(c.RemoveFromGroups(("g",), parse_filter("userId eq 'nobody'")))
        assert set(hub.groups["g"]) == {"c1"}

    def test_send_to_all_respects_excluded_and_filter(self) -> None:
        hub, transports = hub_with(("c1", "u1"), ("c2", "u2"), ("c3", "u3"))
        message = Message(b'{"a":1}', DataType.JSON)
        hub.apply(c.Send(c.ToAll(), message, frozenset({"c1"}), parse_filter("userId ne 'u3'")))
        assert [len(transports[cid].frames) for cid in ("c1", "c2", "c3")] == [0, 1, 0]  # type: ignore[attr-defined]

    def test_send_to_all_filtered_by_one_group_walks_that_group(self) -> None:
        # Web PubSub for Socket.IO's io.emit: sendToAll with "'<namespace group>' in groups".
        hub, transports = hub_with(("c1", "u1"), ("c2", "u2"), ("c3", "u3"))
        hub.join(hub.connections["c1"], "it's")
        hub.join(hub.connections["c2"], "it's")
        only = parse_filter("'it''s' in groups")
        assert only.in_group == "it's"
        message = Message(b'{"a":1}', DataType.JSON)
        hub.apply(c.Send(c.ToAll(), message, frozenset({"c2"}), only))
        assert [len(transports[cid].frames) for cid in ("c1", "c2", "c3")] == [1, 0, 0]  # type: ignore[attr-defined]
        hub.apply(c.Send(c.ToAll(), message, frozenset(), parse_filter("'nobody' in groups")))
        assert [len(transports[cid].frames) for cid in ("c1", "c2", "c3")] == [1, 0, 0]  # type: ignore[attr-defined]

    def test_filter_on_one_connection_id_looks_it_up(self) -> None:
        # The Socket.IO adapter's socket.join(): addConnectionsToGroups with connectionId eq.
        hub, transports = hub_with(("c1", "u1"), ("c2", "u2"))
        hub.apply(c.AddToGroups(("room",), parse_filter("connectionId eq 'c2'")))
        hub.apply(c.AddToGroups(("room",), parse_filter("connectionId eq 'c9'")))
        assert set(hub.groups["room"]) == {"c2"}
        message = Message(b"x", DataType.TEXT)
        only_c1 = parse_filter("connectionId eq 'c1'")
        hub.apply(c.Send(c.ToAll(), message, frozenset({"c1"}), only_c1))
        hub.apply(c.Send(c.ToAll(), message, frozenset(), only_c1))
        assert [len(transports[cid].frames) for cid in ("c1", "c2")] == [1, 0]  # type: ignore[attr-defined]

    def test_group_send_is_from_group(self) -> None:
        hub, transports = hub_with(("c1", None))
        hub.join(hub.connections["c1"], "room")
        hub.apply(c.Send(c.ToGroup("room"), Message(b"hi", DataType.TEXT)))
        [envelope] = transports["c1"].messages()  # type: ignore[attr-defined]
        assert envelope == {
            "type": "message",
            "from": "group",
            "group": "room",
            "dataType": "text",
            "data": "hi",
        }

    def test_close_removes_and_reports(self) -> None:
        hub, transports = hub_with(("c1", "u1"), ("c2", "u1"))
        closed = hub.apply(c.CloseConnections(c.ToUser("u1"), "bye", frozenset({"c2"}))).closed
        assert [conn.connection_id for conn in closed] == ["c1"]
        assert set(hub.connections) == {"c2"}
        assert transports["c1"].closed == (1000, "bye")  # type: ignore[attr-defined]
        assert transports["c1"].messages()[-1] == {  # type: ignore[attr-defined]
            "type": "system",
            "event": "disconnected",
            "message": "bye",
        }

    def test_grant_and_revoke(self) -> None:
        hub, _ = hub_with(("c1", None))
        hub.apply(c.Grant("c1", Permission.SEND_TO_GROUP, "g"))
        assert "webpubsub.sendToGroup.g" in hub.connections["c1"].roles
        hub.apply(c.Revoke("c1", Permission.SEND_TO_GROUP, "g"))
        assert hub.connections["c1"].roles == set()


class TestEncodeOnce:
    def test_one_frame_per_codec(self) -> None:
        hub = Hub("chat")
        transports = []
        for i in range(10):
            conn, transport = make_connection(connection_id=f"c{i}", codec=JSON if i % 2 else RAW)
            hub.add(conn)
            transports.append(transport)
        message = Message(b"payload", DataType.TEXT)
        assert hub.deliver(message, list(hub.connections.values())) == []
        assert all(len(t.frames) == 1 for t in transports)
        assert len(message.frames) == 2
        sent = {id(t.frames[0]) for t in transports}
        assert len(sent) == 2  # the very same bytes objects went to every recipient


class Recorded:
    """A Batcher that keeps what it is handed (the edge's Flusher writes it)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[object, bytes]]] = []

    def broadcast(self, hub: Hub, frames: dict[object, bytes]) -> None:  # type: ignore[override]
        self.calls.append((hub.version, dict(frames)))


class TestBatchedBroadcast:
    """Issue 16: a broadcast to the whole hub goes to the batcher once, one frame per codec
    of its plain connections; reliable connections still get theirs one by one."""

    def test_plain_connections_go_to_the_batcher_the_others_one_by_one(self) -> None:
        from webpubsub.protocols import RELIABLE_JSON

        hub = Hub("chat")
        hub.batcher = batcher = Recorded()
        raw, raw_t = make_connection(codec=RAW)
        json_conn, json_t = make_connection(codec=JSON)
        reliable, reliable_t = make_connection(codec=RELIABLE_JSON)
        for conn in (raw, json_conn, reliable):
            hub.add(conn)
        assert hub.plain_codecs == {RAW: 1, JSON: 1}
        assert set(hub.special) == {reliable.connection_id}
        applied = hub.apply(c.Send(c.ToAll(), Message(b"hi", DataType.TEXT)))
        assert applied.recipients == 3 and applied.closed == []
        ((version, frames),) = batcher.calls
        assert version == hub.version and set(frames) == {RAW, JSON}
        assert raw_t.frames == [] and json_t.frames == []  # the batcher writes those
        assert b'"sequenceId":1' in b"".join(reliable_t.frames)  # its own way, as before
        hub.remove(json_conn)
        assert hub.plain_codecs == {RAW: 1} and hub.version > version
        assert json_conn.added_at < hub.version

    def test_exclusions_filters_and_ttl_take_the_per_connection_path(self) -> None:
        hub = Hub("chat")
        hub.batcher = batcher = Recorded()
        conn, transport = make_connection(codec=RAW, connection_id="c1")
        hub.add(conn)
        hub.apply(c.Send(c.ToAll(), Message(b"x", DataType.TEXT), frozenset({"other"})))
        hub.apply(
            c.Send(c.ToAll(), Message(b"y", DataType.TEXT), filter=parse_filter("userId eq 'u'"))
        )
        hub.apply(c.Send(c.ToAll(), Message(b"z", DataType.TEXT, expires=1e12)))
        hub.apply(c.Send(c.ToGroup("g"), Message(b"g", DataType.TEXT)))
        assert batcher.calls == []
        assert len(transport.frames) == 2  # x and z one by one; y filtered out; not in g
