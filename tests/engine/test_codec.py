"""Commands survive the trip between nodes unchanged."""

from __future__ import annotations

import pytest

from webpubsub.core import commands as c
from webpubsub.core.message import DataType, Message, MqttExtras, Source
from webpubsub.core.odata import parse_filter
from webpubsub.core.roles import Permission
from webpubsub.core.streams import StreamError, StreamMark
from webpubsub.engine.codec import CodecError, decode_command, encode_command

COMMANDS: list[c.Command] = [
    c.Send(c.ToAll(), Message(b"\x00\x01\n\xff", DataType.BINARY)),
    c.Send(
        c.ToGroup("g\n1"),
        Message(b'{"a": 1}', DataType.JSON, Source.GROUP, "g\n1", "user 1"),
        frozenset({"c1", "c2"}),
        parse_filter("userId eq 'x''y'"),
    ),
    c.Send(c.ToUser("u"), Message(b"hi", DataType.TEXT)),
    c.Send(  # metadata and TTL (spec-next 3, 4)
        c.ToGroup("g"),
        Message(b"hi", DataType.TEXT, Source.GROUP, "g", None, {"Trace-Id": "a,b", "k": ""}, 1.5e9),
    ),
    c.Send(c.ToConnection("c"), Message(b"p", DataType.PROTOBUF)),
    c.Send(  # group stream fragments and terminal frames (spec-next 2)
        c.ToGroup("g"),
        Message(b"x", DataType.TEXT, Source.GROUP, "g", "u", stream=StreamMark("s", 3)),
    ),
    c.Send(
        c.ToGroup("g"),
        Message(
            b"",
            DataType.TEXT,
            Source.GROUP,
            "g",
            stream=StreamMark("s", 4, True, StreamError("UserError", "boom", "E1")),
        ),
    ),
    c.Send(  # an MQTT PUBLISH keeps its QoS across nodes (mqtt spec 4.3)
        c.ToGroup("t"),
        Message(b"m", DataType.BINARY, Source.GROUP, "t", "u", None, None, qos=2),
    ),
    c.Send(  # MQTT 5.0 properties for MQTT receivers (mqtt spec 4.6)
        c.ToGroup("t"),
        Message(
            b"m",
            DataType.TEXT,
            Source.GROUP,
            "t",
            None,
            None,
            None,
            qos=1,
            mqtt=MqttExtras((("k", "v"),), b"\x00\xff", "reply/to", 1, "client1", "text/plain"),
        ),
    ),
    c.CloseConnections(c.ToGroup("g"), "bye", frozenset({"c3"})),
    c.AddToGroup(c.ToUser("u"), "g"),
    c.RemoveFromGroup(c.ToConnection("c"), "g"),
    c.RemoveFromAllGroups(c.ToUser("u")),
    c.AddToGroups(("a", "b"), parse_filter("'a' in groups")),
    c.RemoveFromGroups(("a",), None),
    c.Grant("c", Permission.SEND_TO_GROUP, "g"),
    c.Revoke("c", Permission.JOIN_LEAVE_GROUP, None),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda cmd: type(cmd).__name__)
def test_round_trip(command: c.Command) -> None:
    assert decode_command(encode_command(command)) == command


@pytest.mark.parametrize("data", [b"", b"{}\n", b"not json\n", b'{"t":"nope"}\n'])
def test_garbage_is_a_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_command(data)


def test_a_send_from_an_older_node_decodes() -> None:
    """Commands encoded before metadata and TTL existed still decode, with neither."""
    old = b'{"t":"send","to":["all"],"dt":"text","src":"server"}\nhi'
    command = decode_command(old)
    assert isinstance(command, c.Send)
    assert (command.message.metadata, command.message.expires) == (None, None)


@pytest.mark.parametrize(
    "head", [b'"md":{"k":1}', b'"md":["k"]', b'"exp":"soon"', b'"exp":true', b'"q":3', b'"q":true']
)
def test_bad_metadata_or_expiry_is_a_codec_error(head: bytes) -> None:
    with pytest.raises(CodecError):
        decode_command(b'{"t":"send","to":["all"],"dt":"text","src":"server",' + head + b"}\nx")
