"""The Live Trace endpoints over real HTTP: login, sessions, the SSE stream and its filters."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from websockets.sync.client import connect

import webpubsub
from tests.conftest import ACCESS_KEY, SECONDARY_KEY
from tests.ops.helpers import (
    TIMEOUT,
    EventStream,
    has,
    live_trace_pages,
    livetrace_token,
    login,
    scrape,
    wait_for_metric,
)
from webpubsub.server import cli
from webpubsub.server.config import Settings
from webpubsub.server.ops import LoginThrottle, Sessions
from webpubsub.server.ops._throttle import client_address
from webpubsub.testing import ServiceThread

JSON = "json.webpubsub.azure.v1"


@contextlib.contextmanager
def stream(
    client: httpx.Client, query: str = "", headers: dict[str, str] | None = None
) -> Iterator[EventStream]:
    with client.stream("GET", f"/livetrace/stream{query}", headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = EventStream(response)
        hello = events.next_event()
        assert hello.name == "hello"
        yield events


def service_client(service: ServiceThread, hub: str) -> webpubsub.WebPubSubServiceClient:
    return webpubsub.WebPubSubServiceClient.from_connection_string(
        service.connection_string, hub=hub
    )


@contextlib.contextmanager
def listener(service: ServiceThread, hub: str) -> Iterator[None]:
    """A client in ``hub``: sends are applied (and traced) only where the hub has clients."""
    url = service_client(service, hub).get_client_access_token()["url"]
    with connect(url, subprotocols=[JSON]) as ws:  # type: ignore[list-item]
        ws.recv(timeout=TIMEOUT)  # connected: the client is registered
        yield


@pytest.fixture(autouse=True)
def fresh_throttle(service: ServiceThread) -> None:
    """Tests refuse credentials on purpose; they must not throttle one another."""
    live_trace_pages(service).throttle = LoginThrottle()


class TestLogin:
    def test_without_a_session_the_page_is_the_login_form(self, service: ServiceThread) -> None:
        response = httpx.get(f"{service.endpoint}/livetrace")
        assert response.status_code == 200
        assert 'name="credential"' in response.text
        assert "Content-Security-Policy" in response.headers
        assert "livetrace.js" not in response.text
        assert "login.js" in response.text  # mints the token in the browser

    def test_the_key_field_is_never_submitted(self, service: ServiceThread) -> None:
        """The key's input has no name: only the hidden token field is posted."""
        page = httpx.get(f"{service.endpoint}/livetrace").text
        (key_input,) = re.findall(r'<input id="credential"[^>]*>', page)
        assert "name=" not in key_input
        assert re.search(r'<input id="token" name="credential" type="hidden"', page)

    def test_a_livetrace_token_opens_a_session_and_the_cookie_holds_no_secret(
        self, service: ServiceThread
    ) -> None:
        token = livetrace_token(service)
        with login(service, token) as client:
            cookie = client.post("/livetrace/login", data={"credential": token})
            set_cookie = cookie.headers["set-cookie"]
            assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
            assert ACCESS_KEY not in set_cookie and token not in set_cookie
            page = client.get("/livetrace")
            assert page.status_code == 200
            assert "livetrace.js" in page.text
            assert service.endpoint in page.text

    def test_the_secondary_key_works_too(self, service: ServiceThread) -> None:
        with login(service, livetrace_token(service, SECONDARY_KEY)) as client:
            assert "livetrace.js" in client.get("/livetrace").text

    @pytest.mark.parametrize("key", [ACCESS_KEY, SECONDARY_KEY])
    def test_the_raw_key_is_refused_everywhere(self, service: ServiceThread, key: str) -> None:
        """Item 14: a key in a URL or a form crosses the network; only tokens sign in."""
        with httpx.Client(base_url=service.endpoint, timeout=TIMEOUT) as client:
            assert client.get("/livetrace", params={"access_token": key}).status_code == 401
            assert client.post("/livetrace/login", data={"credential": key}).status_code == 401
            stream = client.get("/livetrace/stream", params={"access_token": key})
            assert stream.status_code == 401
            bearer = client.get("/livetrace/stream", headers={"Authorization": f"Bearer {key}"})
            assert bearer.status_code == 401
            assert "webpubsub_livetrace" not in client.cookies

    def test_a_livetrace_token_opens_a_session(self, service: ServiceThread) -> None:
        with login(service, livetrace_token(service)):
            pass
        with httpx.Client(base_url=service.endpoint) as client:
            token = livetrace_token(service, SECONDARY_KEY)
            response = client.get(f"/livetrace?access_token={token}")
            assert response.status_code == 303
            assert response.headers["location"] == "/livetrace"
            assert client.get("/livetrace").text.count("livetrace.js") == 1

    @pytest.mark.parametrize(
        "credential",
        ["wrong-key", ACCESS_KEY + "x", "", "a.b.c"],
    )
    def test_a_wrong_key_is_refused(self, service: ServiceThread, credential: str) -> None:
        response = httpx.post(
            f"{service.endpoint}/livetrace/login", data={"credential": credential}
        )
        assert response.status_code == 401
        assert "not valid" in response.text
        assert "set-cookie" not in response.headers

    def test_tokens_for_another_audience_or_key_are_refused(self, service: ServiceThread) -> None:
        rest_token = livetrace_token(service, aud=f"{service.endpoint}/api/hubs/h/:send")
        forged = livetrace_token(service, key="some-other-key-0123456789abcdefghijk")
        expired = livetrace_token(service, exp=1)
        for token in (rest_token, forged, expired):
            response = httpx.post(f"{service.endpoint}/livetrace/login", data={"credential": token})
            assert response.status_code == 401, token

    def test_logout_ends_the_session(self, service: ServiceThread) -> None:
        with login(service) as client:
            assert client.post("/livetrace/logout").status_code == 303
            assert "livetrace.js" not in client.get("/livetrace").text
            assert client.get("/livetrace/stream").status_code == 401

    def test_a_trailing_slash_redirects(self, service: ServiceThread) -> None:
        response = httpx.get(f"{service.endpoint}/livetrace/")
        assert response.status_code == 303
        assert response.headers["location"] == "/livetrace"

    def test_wrong_methods(self, service: ServiceThread) -> None:
        assert httpx.get(f"{service.endpoint}/livetrace/login").status_code == 405
        assert httpx.delete(f"{service.endpoint}/livetrace").status_code == 405

    def test_assets_are_served(self, service: ServiceThread) -> None:
        js = httpx.get(f"{service.endpoint}/livetrace/livetrace.js")
        css = httpx.get(f"{service.endpoint}/livetrace/livetrace.css")
        assert js.status_code == css.status_code == 200
        assert js.headers["content-type"].startswith("text/javascript")
        assert "EventSource" in js.text
        assert css.headers["content-type"] == "text/css"


class TestSessions:
    """Sessions expire, are bounded, and end when their key is rotated away."""

    def test_expiry(self) -> None:
        now = [0.0]
        sessions = Sessions(["k"], lifetime=10, clock=lambda: now[0])
        token = sessions.create("k")
        assert sessions.valid(token)
        now[0] = 10.0
        assert not sessions.valid(token)
        assert not sessions.valid(None) and not sessions.valid("made-up")

    def test_rotating_the_key_ends_its_sessions(self) -> None:
        keys = ["old", "other"]
        sessions = Sessions(keys)
        old, other = sessions.create("old"), sessions.create("other")
        keys[:] = ["new", "other"]  # Service.reload replaces the keys in place
        assert not sessions.valid(old)
        assert sessions.valid(other)

    def test_the_oldest_session_goes_past_the_limit(self) -> None:
        sessions = Sessions(["k"], limit=2)
        first = sessions.create("k")
        sessions.create("k")
        sessions.create("k")
        assert len(sessions) == 2
        assert not sessions.valid(first)


class TestStream:
    def test_refused_without_a_session_or_token(self, service: ServiceThread) -> None:
        response = httpx.get(f"{service.endpoint}/livetrace/stream")
        assert response.status_code == 401
        wrong = httpx.get(
            f"{service.endpoint}/livetrace/stream",
            headers={"Authorization": "Bearer not-a-token"},
        )
        assert wrong.status_code == 401

    def test_connections_messages_and_rest_calls_arrive(
        self, service: ServiceThread, hub: str
    ) -> None:
        publish = json.dumps(
            {"type": "sendToGroup", "group": "room", "data": "hi", "dataType": "text"}
        )
        with login(service) as client, stream(client, f"?hub={hub}") as events:
            token = service_client(service, hub).get_client_access_token(
                user_id="alice", roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
            )
            with connect(token["url"], subprotocols=[JSON]) as ws:  # type: ignore[list-item]
                connected = json.loads(ws.recv(timeout=TIMEOUT))
                ws.send(json.dumps({"type": "joinGroup", "group": "room", "ackId": 1}))
                ws.recv(timeout=TIMEOUT)
                ws.send(publish)
                ws.recv(timeout=TIMEOUT)
                service_client(service, hub).send_to_all("to everyone", content_type="text/plain")
                ws.recv(timeout=TIMEOUT)
            connection_id = connected["connectionId"]
            records = events.records_until(
                lambda rs: has(rs, operationName="ConnectionEnded", connectionId=connection_id)
            )
        assert all(r["hub"] == hub for r in records)
        assert has(
            records,
            operationName="ConnectionStarted",
            connectionId=connection_id,
            userId="alice",
            subprotocol=JSON,
        )
        assert has(records, operationName="MessageReceived", kind="joinGroup", group="room")
        assert has(records, operationName="MessageReceived", kind="sendToGroup", size=len(publish))
        assert has(records, operationName="MessageSent", target="group:room", recipients=1)
        assert has(records, operationName="MessageSent", target="all", dataType="text", size=11)
        assert has(
            records,
            category="HttpRequestLogs",
            operation="WebPubSub_SendToAll",
            status=202,
            method="POST",
        )
        assert not any("preview" in r for r in records)

    def test_preview_and_category_filter(self, service: ServiceThread, hub: str) -> None:
        with (
            listener(service, hub),
            login(service) as client,
            stream(client, f"?hub={hub}&preview=1&category=messaging") as events,
        ):
            service_client(service, hub).send_to_all({"hello": "world"})
            records = events.records_until(lambda rs: has(rs, operationName="MessageSent"))
        assert {r["category"] for r in records} == {"MessagingLogs"}
        assert records[0]["preview"] == '{"hello":"world"}'

    def test_a_token_in_the_header_or_query_works_for_scripts(
        self, service: ServiceThread, hub: str
    ) -> None:
        token = livetrace_token(service)
        with (
            listener(service, hub),
            httpx.Client(base_url=service.endpoint, timeout=TIMEOUT) as client,
        ):
            headers = {"Authorization": f"Bearer {token}"}
            with stream(client, f"?hub={hub}", headers) as events:
                service_client(service, hub).send_to_all("x", content_type="text/plain")
                assert events.records_until(lambda rs: has(rs, target="all"))
            with stream(client, f"?hub={hub}&access_token={token}") as events:
                service_client(service, hub).send_to_all("y", content_type="text/plain")
                assert events.records_until(lambda rs: has(rs, target="all"))

    def test_the_trace_observes_only_while_someone_watches(
        self, service: ServiceThread, hub: str
    ) -> None:
        wait_for_metric(service, lambda m: m.value("webpubsub_livetrace_viewers") == 0)
        assert scrape(service).value("webpubsub_livetrace_observing") == 0
        with login(service) as client, stream(client, f"?hub={hub}"):
            watched = scrape(service)
            assert watched.value("webpubsub_livetrace_viewers") == 1
            assert watched.value("webpubsub_livetrace_observing") == 1
        # The viewer left: the stream notices and the trace unregisters itself.
        wait_for_metric(service, lambda m: m.value("webpubsub_livetrace_observing") == 0)


class TestStreamEnds:
    """A stream lasts only as long as what authorized it."""

    def test_when_the_session_is_logged_out(self, service: ServiceThread) -> None:
        with login(service) as client, stream(client) as events:
            assert client.post("/livetrace/logout").status_code == 303
            assert [e.name for e in events.events()] in ([], ["records"])  # then it ends

    def test_when_the_token_expires(self, service: ServiceThread) -> None:
        # Expired 297 s ago: still inside the 300 s clock-skew allowance, for about three
        # seconds (a loaded CI machine may take a second to get the request through).
        token = livetrace_token(service, exp=int(time.time()) - 297)
        with (
            httpx.Client(base_url=service.endpoint, timeout=TIMEOUT) as client,
            stream(client, f"?access_token={token}") as events,
        ):
            for _ in events.events():
                pass  # ends a few seconds after it began, with the token


class TestKeyRotation:
    def test_a_reload_that_drops_the_key_ends_the_session(self) -> None:
        settings = Settings(port=0, access_keys=[ACCESS_KEY, SECONDARY_KEY])
        with (
            ServiceThread(settings) as service,
            login(service, livetrace_token(service, SECONDARY_KEY)) as client,
        ):
            assert "livetrace.js" in client.get("/livetrace").text
            rotated = Settings(access_keys=[ACCESS_KEY, "a-brand-new-secondary-key-0123456789"])
            service.call(lambda: service.service.reload(rotated))
            assert client.get("/livetrace/stream").status_code == 401
            assert "livetrace.js" not in client.get("/livetrace").text


class TestLoginThrottle:
    """Item 14: wrong sign-ins from one address are throttled (429 with Retry-After)."""

    def test_the_rule(self) -> None:
        throttle = LoginThrottle(limit=3, window=60)
        for second in (0.0, 1.0):
            throttle.failed("10.0.0.1", second)
        assert throttle.retry_after("10.0.0.1", 2.0) is None
        throttle.failed("10.0.0.1", 2.0)
        assert throttle.retry_after("10.0.0.1", 2.0) == 58  # until the first failure expires
        assert throttle.retry_after("10.0.0.1", 59.5) == 1
        assert throttle.retry_after("10.0.0.2", 2.0) is None  # per address
        assert throttle.retry_after("10.0.0.1", 60.0) is None  # the first one left the window
        throttle.failed("10.0.0.1", 60.0)
        assert throttle.retry_after("10.0.0.1", 60.0) == 1  # 1 s and 2 s still count
        throttle.succeeded("10.0.0.1")
        assert throttle.retry_after("10.0.0.1", 60.0) is None
        assert len(throttle) == 0

    def test_memory_is_bounded(self) -> None:
        throttle = LoginThrottle(limit=2, window=60, max_addresses=100)
        for n in range(1000):
            throttle.failed(f"10.0.{n // 256}.{n % 256}", 0.0)
        assert len(throttle) == 100

    def test_client_address_drops_the_port(self) -> None:
        assert client_address("127.0.0.1:5000") == "127.0.0.1"
        assert client_address("::1:5000") == "::1"
        assert client_address("") == ""

    def test_a_real_service_answers_429_after_too_many_failures(self) -> None:
        settings = Settings(port=0, access_keys=[ACCESS_KEY])
        with (
            ServiceThread(settings) as service,
            httpx.Client(base_url=service.endpoint, timeout=TIMEOUT) as client,
        ):
            limit = live_trace_pages(service).throttle.limit
            forged = livetrace_token(service, key="a-guessed-key-0123456789abcdefghijklm")
            for _ in range(limit):
                wrong = client.post("/livetrace/login", data={"credential": forged})
                assert wrong.status_code == 401
            # Now even the right token waits: the guesser cannot tell which one was right.
            for attempt in (
                client.post("/livetrace/login", data={"credential": livetrace_token(service)}),
                client.get("/livetrace", params={"access_token": forged}),
                client.get("/livetrace/stream", headers={"Authorization": f"Bearer {forged}"}),
            ):
                assert attempt.status_code == 429
                assert 0 < int(attempt.headers["retry-after"]) <= 60
                assert "webpubsub_livetrace" not in client.cookies
            assert "Too many failed sign-ins" in client.post("/livetrace/login").text


class TestLivetraceUrlCommand:
    """``webpubsub livetrace-url``: a sign-in link with a short-lived token, never the key."""

    def test_the_printed_link_signs_in(
        self, service: ServiceThread, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert cli.main(["livetrace-url", "--connection-string", service.connection_string]) == 0
        url = capsys.readouterr().out.strip()
        assert url.startswith(f"{service.endpoint}/livetrace?access_token=eyJ")
        assert ACCESS_KEY not in url
        with httpx.Client(timeout=TIMEOUT) as client:
            assert client.get(url).status_code == 303
            assert "livetrace.js" in client.get(f"{service.endpoint}/livetrace").text

    def test_key_and_port_from_flags_and_a_lifetime(
        self, service: ServiceThread, capsys: pytest.CaptureFixture[str]
    ) -> None:
        port = str(service.settings.port)
        args = ["livetrace-url", "--access-key", SECONDARY_KEY, "--port", port, "--lifetime", "5"]
        assert cli.main(args) == 0
        token = capsys.readouterr().out.strip().split("access_token=")[1]
        claims = jwt.decode(
            token, SECONDARY_KEY.encode(), algorithms=["HS256"], options={"verify_aud": False}
        )
        assert claims["aud"] == f"{service.endpoint}/livetrace"
        assert claims["exp"] - claims["iat"] == 5

    def test_without_a_key_it_says_what_to_pass(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        for name in ("WEBPUBSUB_ACCESS_KEY", "WEBPUBSUB_CONNECTION_STRING", "WEBPUBSUB_CONFIG"):
            monkeypatch.delenv(name, raising=False)
        assert cli.main(["livetrace-url"]) == 2
        assert "--access-key" in capsys.readouterr().err
