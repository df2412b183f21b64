"""The app-server tunnel ``/server/tunnel`` (socketio spec 4.1, 4.2, 4.4, 4.5): auth, the
first frame, REST over the tunnel with its exact status codes, order, streamed answers, and
bad input closing only the tunnel that sent it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ACCESS_KEY
from tests.ops.helpers import scrape
from tests.server.helpers import (
    assert_refused,
    async_wait_until,
    connect_json,
    hub_snapshot,
    refused_handshake,
)
from tests.tunnel_client import TunnelClient, tunnel_token, tunnel_url
from webpubsub.protocols import tunnel as t
from webpubsub.server import rest
from webpubsub.server.config import Settings
from webpubsub.server.http import HttpResponse
from webpubsub.testing import ServiceThread

API = "api-version=2023-07-01"


def url_with(service: ServiceThread, hub: str, token: str) -> str:
    return f"{tunnel_url(service, hub)}&access_token={token}"


class TestHandshake:
    """Spec 4.1: the token is the credential; ``ConnectionConnected`` comes first."""

    async def test_connection_connected_first(self, service: ServiceThread, hub: str) -> None:
        async with await TunnelClient.open(service, hub, sub="app-1") as tunnel:
            assert tunnel.connected is not None
            assert tunnel.connected.user_id == "app-1"
            assert tunnel.connected.connection_id
            assert service.call(lambda: service.service.tunnels.has_tunnel(hub))
        await async_wait_until(
            lambda: not service.call(lambda: service.service.tunnels.has_tunnel(hub)), "unregister"
        )

    async def test_audience_leniency(self, service: ServiceThread, hub: str) -> None:
        """wss/https scheme, hub case and query order do not matter."""
        aud = tunnel_url(service, hub).replace("ws://", "https://").replace(hub, hub.upper())
        token = tunnel_token(service, hub, "s", aud=aud + "&x=1")
        async with connect(url_with(service, hub, token)) as ws:
            frame = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(t.decode(frame), t.ConnectionConnected)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("make", "status", "code"),
        [
            (lambda s, h: "", 401, "Error.Unauthorized.NoToken"),
            (
                lambda s, h: tunnel_token(s, h, "x", key="wrong-key" * 5),
                401,
                "Error.Unauthorized.Invalid",
            ),
            (
                lambda s, h: tunnel_token(s, h, "x", exp=int(time.time()) - 3600),
                401,
                "Error.Unauthorized.TokenExpired",
            ),
            (
                lambda s, h: tunnel_token(s, "otherhub", "x"),
                401,
                "Error.Unauthorized.InvalidAudience",
            ),
            (
                lambda s, h: tunnel_token(s, h, "x", aud=s.endpoint + "/client/hubs/" + h),
                401,
                "Error.Unauthorized.InvalidAudience",
            ),
        ],
    )
    async def test_refused(
        self, service: ServiceThread, hub: str, make: object, status: int, code: str
    ) -> None:
        token = make(service, hub)  # type: ignore[operator]
        url = url_with(service, hub, token) if token else tunnel_url(service, hub)
        body = assert_refused(await refused_handshake(url), status)
        assert body["code"] == code

    async def test_no_hub(self, service: ServiceThread) -> None:
        url = service.endpoint.replace("http", "ws", 1) + "/server/tunnel"
        body = assert_refused(await refused_handshake(url), 400)
        assert body["target"] == "hub"

    async def test_plain_get_wants_an_upgrade(self, service: ServiceThread, hub: str) -> None:
        import httpx

        response = httpx.get(f"{service.endpoint}/server/tunnel?hub={hub}")
        assert response.status_code == 426


class TestRest:
    """Spec 4.4: the SDK's calls, answered with the status codes it checks."""

    async def test_status_codes_and_delivery(self, service: ServiceThread, hub: str) -> None:
        async with (
            await TunnelClient.open(service, hub) as tunnel,
            await connect_json(service, hub) as client,
        ):
            cid = client.connection_id
            answer = await tunnel.call(
                "POST", f"/api/hubs/{hub}/connections/{cid}/:send?{API}", b"42[1]", "text/plain"
            )
            assert answer.status == 202
            assert (await client.receive())["data"] == "42[1]"
            body = json.dumps({"groups": ["0~Lw~"], "filter": f"connectionId eq '{cid}'"})
            answer = await tunnel.call(
                "POST", f"/api/hubs/{hub}/:addToGroups?{API}", body.encode(), "application/json"
            )
            assert answer.status == 200
            assert hub_snapshot(service, hub).groups == {"0~Lw~": frozenset({cid})}
            answer = await tunnel.call(
                "POST",
                f"/api/hubs/{hub}/:send?{API}&filter=%270~Lw~%27%20in%20groups",
                b"42[2]",
                "text/plain",
            )
            assert answer.status == 202
            assert (await client.receive())["data"] == "42[2]"
            answer = await tunnel.call(
                "POST", f"/api/hubs/{hub}/groups/0~Lw~/:send?{API}", b"42[3]", "text/plain"
            )
            assert answer.status == 202
            assert (await client.receive())["data"] == "42[3]"
            answer = await tunnel.call(
                "POST",
                f"/api/hubs/{hub}/:removeFromGroups?{API}",
                body.encode(),
                "application/json",
            )
            assert answer.status == 200
            answer = await tunnel.call(
                "DELETE", f"/api/hubs/{hub}/groups/g/connections/{cid}?{API}"
            )
            assert answer.status in (200, 204)
            assert answer.frames[0].not_completed is False

    async def test_in_arrival_order(self, service: ServiceThread, hub: str) -> None:
        """Fired without waiting (as the SDK's broadcasts are): delivered in order."""
        async with (
            await TunnelClient.open(service, hub) as tunnel,
            await connect_json(service, hub) as client,
        ):
            cid = client.connection_id
            join = json.dumps({"groups": ["g"], "filter": f"connectionId eq '{cid}'"}).encode()
            ids = [
                await tunnel.start(
                    "POST", f"/api/hubs/{hub}/:addToGroups", join, "application/json"
                )
            ]
            for i in range(50):
                path = f"/api/hubs/{hub}/groups/g/:send" if i % 2 else f"/api/hubs/{hub}/:send"
                ids.append(await tunnel.start("POST", path, str(i).encode(), "text/plain"))
            statuses = [(await tunnel.answer(a)).status for a in ids]
            assert statuses == [200] + [202] * 50
            received = [(await client.receive())["data"] for _ in range(50)]
            assert received == [str(i) for i in range(50)]

    async def test_own_hub_only(self, service: ServiceThread, hub: str) -> None:
        async with await TunnelClient.open(service, hub) as tunnel:
            answer = await tunnel.call("POST", f"/api/hubs/{hub}x/:send", b"x", "text/plain")
            assert answer.status == 403
            assert json.loads(answer.body)["code"] == "Error.Forbidden"
            answer = await tunnel.call("POST", f"/api/hubs/{hub.upper()}/:send", b"x", "text/plain")
            assert answer.status == 202  # hub names are case-insensitive

    async def test_errors_in_the_rest_form(self, service: ServiceThread, hub: str) -> None:
        async with await TunnelClient.open(service, hub) as tunnel:
            assert (await tunnel.call("POST", "/api/nothing")).status == 404
            assert (await tunnel.call("GET", f"/api/hubs/{hub}/:send")).status == 405
            answer = await tunnel.call(
                "POST", f"/api/hubs/{hub}/:addToGroups", b"{", "application/json"
            )
            assert answer.status == 400
            assert answer.headers["x-ms-error-code"] == ["Error.InvalidJson"]
            answer = await tunnel.call("POST", f"/api/hubs/{hub}/:invoke", b"40", "text/plain")
            assert answer.status == 400  # a broadcast with acks takes one EVENT
            answer = await tunnel.call("POST", f"/api/hubs/{hub}/:invoke", b"42[]", "text/plain")
            assert (answer.status, answer.body) == (200, b"")  # nobody to wait for


@pytest.fixture
def streaming_route() -> Iterator[asyncio.Event]:
    """A tunnel-only route whose answer streams three lines, the last after ``release``."""
    release = asyncio.Event()

    async def lines() -> AsyncIterator[bytes]:
        yield b'{"Payload":"a"}\n'
        yield b'{"Payload":"b"}\n'
        await release.wait()
        yield b'{"Payload":"c"}\n'

    async def handler(call: rest.Call) -> HttpResponse:
        return HttpResponse(200, stream=lines())

    route = rest.Route("POST", f"{rest.H}/:stream", handler, "Test_Stream")
    rest.TUNNEL_ROUTES.append(route)
    yield release
    rest.TUNNEL_ROUTES.remove(route)


class TestStreaming:
    """Spec 4.5: a streamed answer is frames with ``NotCompleted``, and does not hold up the
    requests behind it."""

    async def test_stream_frames(
        self, service: ServiceThread, hub: str, streaming_route: asyncio.Event
    ) -> None:
        async with await TunnelClient.open(service, hub) as tunnel:
            stream = await tunnel.start("POST", f"/api/hubs/{hub}/:stream")
            first = await tunnel.next_frame(stream)
            assert (first.status_code, first.not_completed, first.content) == (200, True, b"")
            assert (await tunnel.next_frame(stream)).content == b'{"Payload":"a"}\n'
            assert (await tunnel.next_frame(stream)).content == b'{"Payload":"b"}\n'
            # the next request is served while the stream waits
            answer = await tunnel.call("POST", f"/api/hubs/{hub}/:send", b"x", "text/plain")
            assert answer.status == 202
            service.call(streaming_route.set)
            last_line = await tunnel.next_frame(stream)
            assert (last_line.content, last_line.not_completed) == (b'{"Payload":"c"}\n', True)
            end = await tunnel.next_frame(stream)
            assert (end.content, end.not_completed) == (b"", False)


class TestBadInput:
    """Each closes the tunnel that sent it with a clear code; the neighbour goes on."""

    @pytest.mark.parametrize(
        ("data", "code"),
        [
            ("text frame", 1003),
            (b"\x00\x00", 1008),
            (b"\x05\x00\x00\x00\x93\x01\xa0\xc0\xc0", 1008),  # bad MessagePack
            (t.encode(t.ServiceStatus("hi")), 1008),  # not for an app server to send
            (t.encode(t.HttpRequest(1, "POST", "https://host/", {}, b"x" * (2 << 20))), 1009),
        ],
    )
    async def test_closed(
        self, service: ServiceThread, hub: str, data: bytes | str, code: int
    ) -> None:
        async with (
            await TunnelClient.open(service, hub, sub="neighbour") as neighbour,
            await TunnelClient.open(service, hub) as bad,
        ):
            with contextlib.suppress(ConnectionClosed):  # the big one is refused mid-send
                await bad.send_raw(data)
            await asyncio.wait_for(bad.ws.wait_closed(), 5)
            assert bad.ws.close_code == code
            answer = await neighbour.call("POST", f"/api/hubs/{hub}/:send", b"x", "text/plain")
            assert answer.status == 202
        await async_wait_until(
            lambda: not service.call(lambda: service.service.tunnels.sessions), "no sessions"
        )

    async def test_answer_to_nothing_is_ignored(self, service: ServiceThread, hub: str) -> None:
        async with await TunnelClient.open(service, hub) as tunnel:
            await tunnel.send_raw(t.encode(t.HttpResponse(999, 200)))
            answer = await tunnel.call("POST", f"/api/hubs/{hub}/:send", b"x", "text/plain")
            assert answer.status == 202


async def test_idle_tunnel_gets_service_status() -> None:
    """Spec 4.1: the SDK's client drops a tunnel silent for 120 s; the service speaks first."""
    settings = Settings(port=0, access_keys=[ACCESS_KEY])
    settings.limits.tunnel_status_interval = 0.2
    with ServiceThread(settings) as service:
        async with await TunnelClient.open(service, "idle") as tunnel:
            await async_wait_until(lambda: len(tunnel.statuses) >= 2, "two ServiceStatus")


async def test_backlog_over_the_cap_closes_1013() -> None:
    settings = Settings(port=0, access_keys=[ACCESS_KEY])
    settings.limits.max_tunnel_backlog = 1000
    with ServiceThread(settings) as service:
        async with await TunnelClient.open(service, "backlog") as tunnel:
            with contextlib.suppress(ConnectionClosed):
                await tunnel.call("POST", "/api/hubs/backlog/:send", b"x" * 2000, wait=False)
            await asyncio.wait_for(tunnel.ws.wait_closed(), 5)
            assert tunnel.ws.close_code == 1013


async def test_metrics(service: ServiceThread, hub: str) -> None:
    async with (
        await TunnelClient.open(service, hub, sub="A"),
        await TunnelClient.open(service, hub, sub="B"),
    ):
        metrics = await asyncio.to_thread(scrape, service)
        assert metrics.value("webpubsub_tunnels", hub=hub.lower()) == 2
