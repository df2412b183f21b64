"""The tunnel registry (socketio spec 4.6): round robin, pinning, the grace period."""

from __future__ import annotations

import pytest

from webpubsub.core.events import UpstreamRejected
from webpubsub.core.tunnels import (
    RemotePins,
    Route,
    RouteKind,
    TunnelRegistry,
    socketio_open,
)


def registry() -> TunnelRegistry[str]:
    return TunnelRegistry(grace=10.0)


class TestNewConnections:
    def test_no_tunnel_no_route(self) -> None:
        r = registry()
        assert not r.has_tunnel("h")
        assert r.route("h", "c1", 0.0) == Route(RouteKind.GONE)
        assert r.pinned("h", "c1") is None

    def test_round_robin_over_subs_then_pinned(self) -> None:
        r = registry()
        r.add("h", "A", "a1")
        r.add("h", "A", "a2")  # a second socket of the same process is not a second server
        r.add("h", "B", "b1")
        subs = [r.route("h", f"c{i}", 0.0).sub for i in range(4)]
        assert subs == ["A", "B", "A", "B"]
        for _ in range(3):
            assert r.route("h", "c1", 0.0).sub == "B"
        assert r.pinned("H", "c0") == "A"  # hub names are case-insensitive

    def test_a_subs_sockets_take_turns(self) -> None:
        r = registry()
        r.add("h", "A", "a1")
        r.add("h", "A", "a2")
        tunnels = {r.route("h", "c", 0.0).tunnel for _ in range(4)}
        assert tunnels == {"a1", "a2"}

    def test_hubs_are_apart(self) -> None:
        r = registry()
        r.add("h1", "A", "a1")
        assert r.route("h2", "c", 0.0).kind is RouteKind.GONE
        assert r.tunnels("H1") == ["a1"] and r.tunnels("h2") == []


class TestGrace:
    def test_drop_then_same_sub_comes_back(self) -> None:
        r = registry()
        r.add("h", "A", "a1")
        r.route("h", "c", 0.0)
        r.remove("h", "A", "a1", 5.0)
        assert not r.has_tunnel("h")
        assert r.route("h", "c", 6.0) == Route(RouteKind.WAIT, "A", deadline=15.0)
        assert r.expire(14.9) == []
        r.add("h", "A", "a9")
        assert r.route("h", "c", 20.0) == Route(RouteKind.LIVE, "A", "a9")
        assert r.expire(100.0) == []

    def test_other_sub_does_not_take_over(self) -> None:
        r = registry()
        r.add("h", "A", "a1")
        r.add("h", "B", "b1")
        r.route("h", "c", 0.0)
        r.remove("h", "A", "a1", 1.0)
        assert r.route("h", "c", 2.0).kind is RouteKind.WAIT
        assert r.route("h", "new", 2.0).sub == "B"  # new connections go to live subs only

    def test_past_grace_connections_expire(self) -> None:
        r = registry()
        r.add("h", "A", "a1")
        r.route("h", "c1", 0.0)
        r.route("h", "c2", 0.0)
        r.remove("h", "A", "a1", 1.0)
        assert r.route("h", "c1", 11.0).kind is RouteKind.GONE
        assert sorted(r.expire(11.0)) == [("h", "c1"), ("h", "c2")]
        assert r.pins() == []
        assert r.expire(12.0) == []
        r.add("h", "A", "a2")  # too late: a new life of the process starts empty
        assert r.route("h", "c1", 13.0).kind is RouteKind.LIVE  # pinned anew, as a new one

    def test_one_of_two_sockets_drops(self) -> None:
        r = registry()
        r.add("h", "A", "a1")
        r.add("h", "A", "a2")
        r.route("h", "c", 0.0)
        r.remove("h", "A", "a1", 1.0)
        assert r.route("h", "c", 2.0) == Route(RouteKind.LIVE, "A", "a2")


class TestCleanup:
    def test_unpin_forgets_everything(self) -> None:
        r = registry()
        r.add("h", "A", "a1")
        r.route("h", "c", 0.0)
        r.unpin("h", "c")
        r.remove("h", "A", "a1", 1.0)
        assert r.pins() == [] and r.expire(100.0) == []
        assert r._hubs == {}

    def test_remove_unknown_is_harmless(self) -> None:
        r = registry()
        r.remove("h", "A", "x", 0.0)
        r.add("h", "A", "a1")
        r.remove("h", "A", "x", 0.0)
        r.unpin("h", "nobody")
        assert r.has_tunnel("h")


class TestSocketioOpen:
    def test_open_packet(self) -> None:
        body = b'{"socketio":{"sid":"c1","upgrades":[],"pingInterval":25000}}'
        assert socketio_open(200, body) == {"sid": "c1", "upgrades": [], "pingInterval": 25000}

    @pytest.mark.parametrize(
        ("status", "body", "expected"),
        [
            (400, b"EIO server refused connection with error: x", 400),
            (500, b"", 500),
            (204, b"", 500),
            (200, b"nope", 500),
            (200, b'{"socketio":{}}', 500),
            (200, b"[]", 500),
        ],
    )
    def test_refusals(self, status: int, body: bytes, expected: int) -> None:
        with pytest.raises(UpstreamRejected) as info:
            socketio_open(status, body)
        assert info.value.status == expected
        if status == 400:
            assert info.value.message == body.decode()


class TestOwned:
    def test_owned_until_unpinned(self) -> None:
        r = registry()
        r.add("h", "A", "a1")
        r.route("h", "sio", 0.0, own=True)
        r.route("h", "classic", 0.0)
        assert r.owned("H", "sio") and not r.owned("h", "classic")
        r.unpin("h", "sio")
        assert not r.owned("h", "sio")

    def test_not_owned_without_a_tunnel(self) -> None:
        r = registry()
        assert r.route("h", "sio", 0.0, own=True).kind is RouteKind.GONE
        assert not r.owned("h", "sio")

    def test_expiry_forgets_ownership(self) -> None:
        r = registry()
        r.add("h", "A", "a1")
        r.route("h", "sio", 0.0, own=True)
        r.remove("h", "A", "a1", 0.0)
        assert r.expire(10.0) == [("h", "sio")]
        assert not r.owned("h", "sio")


class TestRemotePins:
    def test_round_robin_and_ownership(self) -> None:
        pins = RemotePins(grace=10.0)
        assert pins.pin("h", "c0", [], own=True) is None
        assert [pins.pin("h", f"c{i}", ["B", "A"], own=i == 0) for i in range(3)] == [
            "A",
            "B",
            "A",
        ]
        assert pins.sub("H", "c1") == "B"
        assert pins.owned("h", "c0") and not pins.owned("h", "c1")
        pins.unpin("h", "c0")
        assert pins.sub("h", "c0") is None and not pins.owned("h", "c0")

    def test_grace_runs_from_the_first_miss(self) -> None:
        pins = RemotePins(grace=10.0)
        pins.pin("h", "c", ["A"], own=True)
        assert pins.missing("h", "c", 5.0) == 15.0
        assert pins.missing("h", "c", 9.0) == 15.0
        pins.found("h", "c")
        assert pins.missing("h", "c", 20.0) == 30.0
