"""MQTT rules without sockets (mqtt spec 2.4, 3.2, 3.4, 3.5, 4.2, 4.3)."""

from __future__ import annotations

import pytest

from webpubsub.core import mqtt as rules
from webpubsub.core.message import DataType


class TestConnect:
    """mqtt spec 3.2: client id, keep alive, will."""

    @pytest.mark.parametrize("client_id", ["mqttjs_1234", "a b", "é", "x" * 129])
    def test_bad_client_ids(self, client_id: str) -> None:
        assert rules.connect_problem(5, client_id, 60, None, False) == rules.CLIENT_ID_NOT_VALID

    def test_empty_id_only_in_5(self) -> None:
        assert rules.connect_problem(5, "", 60, None, False) == rules.SUCCESS
        assert rules.connect_problem(4, "", 60, None, False) == rules.CLIENT_ID_NOT_VALID
        assert rules.CLIENT_ID.fullmatch(rules.new_client_id())

    def test_keep_alive_311_only(self) -> None:
        assert rules.connect_problem(4, "a", 0, None, False) == rules.V311_UNAVAILABLE_AS_5
        assert rules.connect_problem(4, "a", 181, None, False) == rules.V311_UNAVAILABLE_AS_5
        assert rules.v311_connack(rules.V311_UNAVAILABLE_AS_5) == 3
        assert rules.connect_problem(5, "a", 0, None, False) == rules.SUCCESS
        assert rules.server_keep_alive(5, 0) == 180
        assert rules.server_keep_alive(5, 60) is None

    def test_will_limits(self) -> None:
        def will(topic: str, payload: bytes = b"", retain: bool = False) -> rules.WillSpec:
            return rules.WillSpec(topic, payload, 0, retain)

        assert rules.connect_problem(5, "a", 60, will(" "), False) == rules.TOPIC_NAME_INVALID
        assert rules.connect_problem(5, "a", 60, will("t", b"x" * 2001), False) == 0x97
        assert rules.connect_problem(5, "a", 60, will("t", retain=True), False) == 0x9A
        assert rules.connect_problem(4, "a", 60, will("t", retain=True), False) == 0
        assert rules.connect_problem(5, "a", 60, None, True) == rules.BAD_AUTHENTICATION_METHOD

    def test_v311_codes(self) -> None:
        assert rules.v311_connack(rules.CLIENT_ID_NOT_VALID) == 2
        assert rules.v311_connack(rules.NOT_AUTHORIZED) == 5
        assert rules.v311_suback(rules.NOT_AUTHORIZED) == 0x80
        assert rules.v311_suback(2) == 2


class TestTopics:
    """mqtt spec 3.4 / 3.5 / 2.3."""

    def test_subscribe(self) -> None:
        roles = {"webpubsub.joinLeaveGroup.t", "webpubsub.joinLeaveGroups.room.*"}
        assert rules.subscribe_reason("t", 2, roles) == 2
        assert rules.subscribe_reason("room.1", 1, roles) == 1
        assert rules.subscribe_reason("u", 1, roles) == rules.NOT_AUTHORIZED
        assert rules.subscribe_reason("a/#", 0, roles) == rules.WILDCARD_NOT_SUPPORTED
        assert rules.subscribe_reason("$share/g/t", 0, roles) == rules.SHARED_NOT_SUPPORTED
        assert rules.subscribe_reason("$webpubsub/x", 0, roles) == rules.TOPIC_FILTER_INVALID
        assert rules.subscribe_reason(" ", 0, roles) == rules.TOPIC_FILTER_INVALID
        assert rules.subscribe_reason(rules.SERVER_MESSAGES, 1, set()) == 1
        assert rules.subscribe_reason("$webpubsub/server/events/e/failed", 0, set()) == 0

    def test_publish(self) -> None:
        assert rules.publish_reason("t", {"webpubsub.sendToGroup"}) == rules.SUCCESS
        assert rules.publish_reason("t", {"webpubsub.sendToGroup.u"}) == rules.NOT_AUTHORIZED
        assert rules.publish_reason("$webpubsub/server/events/e", set()) == rules.SUCCESS
        assert rules.publish_reason("$webpubsub/server/events/a/b", set()) == 0x90
        assert rules.publish_reason("a/+", {"webpubsub.sendToGroup"}) == 0x90

    def test_kinds(self) -> None:
        assert rules.topic_kind("chat") == "group"
        assert rules.topic_kind("$webpubsub/server/events/echo") == "event"
        assert rules.event_name("$webpubsub/server/events/echo") == "echo"
        assert rules.topic_kind("x" * 1025) == "invalid"


class TestDataTypes:
    """mqtt spec 4.2: content type <-> data type."""

    @pytest.mark.parametrize(
        ("content_type", "payload", "expected"),
        [
            (None, b"x", DataType.BINARY),
            ("text/plain", b"x", DataType.TEXT),
            ("Text/Plain; charset=utf-8", b"x", DataType.TEXT),
            ("application/json", b'{"a":1}', DataType.JSON),
            ("application/json", b"{nope", DataType.BINARY),
            ("text/plain", b"\xff", DataType.BINARY),
            ("application/x-protobuf", b"\x08\x01", DataType.PROTOBUF),
            ("image/png", b"x", DataType.BINARY),
        ],
    )
    def test_mapping(self, content_type: str | None, payload: bytes, expected: DataType) -> None:
        assert rules.data_type_of(content_type, payload) is expected

    def test_back(self) -> None:
        assert rules.CONTENT_TYPES[DataType.JSON] == "application/json"
        assert rules.CONTENT_TYPES[DataType.TEXT] == "text/plain"


class TestSession:
    """mqtt spec 3.6 / 4.3: packet ids and QoS."""

    def test_packet_ids_wrap_and_skip_in_flight(self) -> None:
        session = rules.Session(5, next_id=65535)
        assert session.take_packet_id() == 65535
        assert session.take_packet_id() == 1
        session.outgoing.pop(65535)
        session.next_id = 65535
        assert session.take_packet_id() == 65535

    def test_window_full(self) -> None:
        session = rules.Session(5, max_outgoing=2)
        assert session.take_packet_id() is not None
        assert session.take_packet_id() is not None
        assert session.take_packet_id() is None

    def test_expiry(self) -> None:
        assert rules.session_expiry(4, True, None) == 0
        assert rules.session_expiry(4, False, None) == 30
        assert rules.session_expiry(5, False, None) == 0
        assert rules.session_expiry(5, True, 10) == 10
        assert rules.session_expiry(5, False, 0xFFFFFFFF) == 30

    def test_downgrade(self) -> None:
        session = rules.Session(5)
        session.subscriptions["t"] = (1, False, None)
        assert rules.delivered_qos(2, session.granted("t")) == 1
        assert rules.delivered_qos(0, session.granted("t")) == 0
        assert session.granted("added-by-rest") == 0


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("text/plain", True),
        ("application/json; charset=utf-8", True),
        ('a/b;x="y z"', True),
        ("text", False),
        ("", False),
        ("text/plain\r\nx: y", False),
        ("té/x", False),
        ('a/b;x="\x00"', False),
        ("a/" + "b" * 1100, False),
    ],
)
def test_content_type_is_a_mime_type(value: str, valid: bool) -> None:
    assert rules.valid_content_type(value) is valid
