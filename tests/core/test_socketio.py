"""The Socket.IO rules: peeking, namespace groups, ack ids and the DISCONNECT shapes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from webpubsub.core import socketio as sio
from webpubsub.core.socketio import Do


def test_peek_reads_type_namespace_and_rest() -> None:
    assert sio.peek('42["e",1]') == sio.Peeked(sio.EVENT, "/", '["e",1]', "42")
    assert sio.peek('42/chat,7["e"]') == sio.Peeked(sio.EVENT, "/chat", '7["e"]', "42/chat,")
    assert sio.peek('451-/a,["e",{"_placeholder":true,"num":0}]').prefix == "451-/a,"
    for other in ("2", "3", "4", "49", "45x", "b AAAA", ""):
        assert sio.peek(other) is None


def test_groups_are_base64url_without_padding() -> None:
    assert sio.namespace_group("/") == "0~Lw~"
    assert sio.room_group("/", "r") == "0~Lw~cg"


@given(st.integers(min_value=sio.INVOKE_ACK_BASE, max_value=10**15), st.sampled_from(["", "/n,"]))
def test_ack_id_round_trip(ack_id: int, nsp: str) -> None:
    packet = sio.with_ack_id(f'42{nsp}["e"]', ack_id)
    assert packet == f'42{nsp}{ack_id}["e"]'
    assert sio.ack_of(f"43{nsp}{ack_id}[1]") == (ack_id, 0)
    assert sio.with_ack_id(packet, ack_id) is None  # already has one


def test_binary_ack_counts_attachments() -> None:
    assert sio.ack_of('462-/a,1000000000[{"_placeholder":true,"num":0}]') == (10**9, 2)
    assert sio.ack_of('42["e"]') is None
    assert sio.ack_of("43[1]") is None


def test_connect_joins_the_namespace_and_disconnect_shapes() -> None:
    state = sio.SocketIOState()
    joined = state.from_server('40/a,{"sid":"s1"}', None)
    assert (joined.do, joined.join) == (Do.RELAY, sio.namespace_group("/a"))
    # Second shape: through another socket's private room, dropped.
    assert state.from_server("41/a,", sio.room_group("/a", "old")).do is Do.DROP
    # Third shape, close=false: relayed and told upstream, the connection stays.
    gone = state.from_server('41/a,{"close":false}', None)
    assert (gone.do, gone.packet, gone.upstream) == (Do.RELAY, "41/a,", "41/a,")
    assert not gone.close_after
    assert state.from_server('41/a,{"close":true}', None).do is Do.DROP  # not connected any more
    assert state.from_server("1", None).do is Do.CLOSE


def test_client_disconnect_leaves_the_namespace() -> None:
    state = sio.SocketIOState()
    state.from_server('40{"sid":"s"}', None)
    assert state.from_client("41") == "/"
    assert state.sockets == {}
    assert state.from_client('42["e"]') is None


@given(
    st.sampled_from(['42["e",1]', '42/chat,["e"]', '43/a,5["ok"]', "44", '451-["e",{}]', "b AQI="])
    | st.text(max_size=12),
    st.sampled_from([None, "0~Lw~", "0~Lw~cg"]),
    st.dictionaries(st.sampled_from(["/", "/chat"]), st.sampled_from(["s1", "s2"])),
)
def test_a_stateless_packet_is_relayed_as_it_is_whatever_the_state(
    packet: str, group: str | None, sockets: dict[str, str]
) -> None:
    # What lets a broadcast be serialized once for every Socket.IO recipient.
    if not sio.stateless(packet):
        return
    state = sio.SocketIOState(dict(sockets))
    assert state.from_server(packet, group) == sio.Decision(Do.RELAY, packet)
    assert state.sockets == sockets


def test_connect_disconnect_and_close_are_not_stateless() -> None:
    for packet in ("1", '40{"sid":"s"}', "40", "41", '41/chat,{"close":true}'):
        assert not sio.stateless(packet)
    assert sio.stateless('42["m","x"]') and sio.stateless("2")
