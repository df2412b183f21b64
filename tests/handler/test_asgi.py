"""The event handler as an ASGI app under uvicorn, driven over real HTTP (spec 5).

Each test serves a ``WebPubSubEventHandler`` on a free loopback port and sends the CloudEvents
requests the service would send, then checks the answer and what the handler functions got.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from tests.handler.helpers import (
    CONNECTION_ID,
    KEY,
    OTHER_KEY,
    ASGIServerThread,
    Recorder,
    ce_headers,
    connect_body,
    decode_state,
    encode_state,
    preflight_headers,
    serve_asgi,
    signature,
)
from webpubsub.handler import (
    ClientCertificate,
    ConnectedRequest,
    ConnectRequest,
    ConnectResponse,
    DataType,
    DisconnectedRequest,
    EventHandlerError,
    UserEventRequest,
    UserEventResponse,
    WebPubSubEventHandler,
)

PATH = "/eventhandler"
Serve = Callable[[Any], AbstractAsyncContextManager[httpx.AsyncClient]]


class Functions:
    """One recorder per event, to hand to a handler."""

    def __init__(self) -> None:
        self.connect = Recorder()
        self.user_event = Recorder()
        self.connected = Recorder()
        self.disconnected = Recorder()

    def handler(self, **options: Any) -> WebPubSubEventHandler:
        options.setdefault("path", PATH)
        options.setdefault("access_keys", [KEY])
        return WebPubSubEventHandler(
            "chat",
            handle_connect=self.connect,
            handle_user_event=self.user_event,
            on_connected=self.connected,
            on_disconnected=self.disconnected,
            **options,
        )


@pytest.fixture
def functions() -> Functions:
    return Functions()


@pytest.fixture
def serve(asgi_server: ASGIServerThread) -> Serve:
    """Install an app on the shared uvicorn server: ``async with serve(app) as client``."""
    return asgi_server.use


@pytest.fixture
async def client(functions: Functions, serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(functions.handler()) as running:
        yield running


@pytest.fixture
def handler_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="webpubsub.handler"):
        yield caplog


async def post(
    client: httpx.AsyncClient, event: str, body: bytes = b"", path: str = PATH, **headers: Any
) -> httpx.Response:
    return await client.post(f"{path}/{event}", content=body, headers=ce_headers(event, **headers))


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "webpubsub.handler" and r.levelno >= logging.ERROR
    ]


class TestAbuseProtection:
    """Spec 5.2: OPTIONS with WebHook-Request-Origin before any event."""

    async def test_any_origin_is_allowed_by_default(self, client: httpx.AsyncClient) -> None:
        response = await client.options(f"{PATH}/validate", headers=preflight_headers())
        assert response.status_code == 200
        assert response.headers["webhook-allowed-origin"] == "*"

    async def test_allowed_endpoint(self, functions: Functions, serve: Serve) -> None:
        handler = functions.handler(allowed_endpoints=["https://Contoso.webpubsub.azure.com"])
        async with serve(handler) as client:
            response = await client.options(
                f"{PATH}/validate", headers=preflight_headers("contoso.webpubsub.azure.com")
            )
            assert response.status_code == 200
            assert response.headers["webhook-allowed-origin"] == "contoso.webpubsub.azure.com"

            refused = await client.options(
                f"{PATH}/validate", headers=preflight_headers("evil.example")
            )
            assert refused.status_code == 400
            assert "webhook-allowed-origin" not in refused.headers

    async def test_preflight_needs_no_signature(self, client: httpx.AsyncClient) -> None:
        response = await client.options(f"{PATH}/validate", headers=preflight_headers())
        assert response.status_code == 200

    @pytest.mark.parametrize("missing", ["ce-awpsversion", "WebHook-Request-Origin"])
    async def test_preflight_without_web_pubsub_headers_is_not_ours(
        self, client: httpx.AsyncClient, missing: str
    ) -> None:
        headers = preflight_headers()
        del headers[missing]
        response = await client.options(f"{PATH}/validate", headers=headers)
        assert response.status_code == 404


class TestIgnoredRequests:
    """Requests that are not Web PubSub events for this hub go on (here: 404)."""

    @pytest.mark.parametrize(
        "change",
        [
            {"ce-awpsversion": None},
            {"WebHook-Request-Origin": None},
            {"ce-type": "com.example.event"},
            {"ce-type": "azure.webpubsub.sys.joined"},
            {"ce-hub": "other"},
            {"ce-hub": None},
        ],
    )
    async def test_not_ours(
        self, client: httpx.AsyncClient, functions: Functions, change: dict[str, str | None]
    ) -> None:
        headers = ce_headers("connect")
        for name, value in change.items():
            if value is None:
                del headers[name]
            else:
                headers[name] = value
        response = await client.post(f"{PATH}/connect", content=connect_body(), headers=headers)
        assert response.status_code == 404
        assert functions.connect.requests == []

    async def test_other_path(self, client: httpx.AsyncClient) -> None:
        response = await post(client, "connect", connect_body(), path="/elsewhere")
        assert response.status_code == 404
        response = await post(client, "connect", connect_body(), path="/eventhandlerx")
        assert response.status_code == 404

    async def test_path_is_case_insensitive_and_covers_sub_paths(
        self, client: httpx.AsyncClient
    ) -> None:
        assert (
            await post(client, "connect", connect_body(), path="/EventHandler")
        ).status_code == 204
        response = await client.post(PATH, content=connect_body(), headers=ce_headers("connect"))
        assert response.status_code == 204

    async def test_get_is_not_ours(self, client: httpx.AsyncClient) -> None:
        response = await client.get(f"{PATH}/connect", headers=ce_headers("connect"))
        assert response.status_code == 404

    async def test_hub_matches_case_insensitively(
        self, client: httpx.AsyncClient, functions: Functions
    ) -> None:
        response = await post(client, "connect", connect_body(), hub="CHAT")
        assert response.status_code == 204
        assert functions.connect.last.context.hub == "CHAT"

    async def test_default_path_is_express_default(
        self, functions: Functions, serve: Serve
    ) -> None:
        async with serve(functions.handler(path="/api/webpubsub/hubs/{hub}/")) as client:
            response = await post(
                client, "connect", connect_body(), path="/api/webpubsub/hubs/chat"
            )
            assert response.status_code == 204
        handler = WebPubSubEventHandler("Chat")
        assert handler.path == "/api/webpubsub/hubs/chat"


class TestSignature:
    """Spec 5.4: with access keys, every event must be signed with one of them."""

    async def test_valid(self, client: httpx.AsyncClient) -> None:
        assert (await post(client, "connect", connect_body())).status_code == 204

    async def test_one_of_several_signatures(self, client: httpx.AsyncClient) -> None:
        response = await post(client, "connect", connect_body(), keys=(OTHER_KEY, KEY))
        assert response.status_code == 204

    async def test_uppercase_hex(self, client: httpx.AsyncClient) -> None:
        headers = ce_headers("connect")
        headers["ce-signature"] = "sha256=" + signature(CONNECTION_ID, KEY)[7:].upper()
        response = await client.post(f"{PATH}/connect", content=connect_body(), headers=headers)
        assert response.status_code == 204

    @pytest.mark.parametrize("keys", [(), (OTHER_KEY,)], ids=["missing", "wrong"])
    async def test_refused_with_401(
        self,
        client: httpx.AsyncClient,
        functions: Functions,
        keys: tuple[str, ...],
        handler_log: pytest.LogCaptureFixture,
    ) -> None:
        for event in ("connect", "message", "connected", "disconnected"):
            response = await post(client, event, b"{}", keys=keys)
            assert response.status_code == 401, event
        assert functions.connect.requests == functions.user_event.requests == []
        assert functions.connected.requests == functions.disconnected.requests == []
        assert KEY not in handler_log.text

    async def test_signature_of_another_connection(self, client: httpx.AsyncClient) -> None:
        headers = ce_headers("connect")
        headers["ce-signature"] = signature("another-connection", KEY)
        response = await client.post(f"{PATH}/connect", content=connect_body(), headers=headers)
        assert response.status_code == 401

    async def test_connection_string_key(self, functions: Functions, serve: Serve) -> None:
        handler = functions.handler(
            access_keys=(),
            connection_string=f"Endpoint=http://127.0.0.1:8080;AccessKey={KEY};Version=1.0;",
        )
        assert handler.verifies_signatures
        async with serve(handler) as client:
            assert (await post(client, "connect", connect_body())).status_code == 204
            assert (await post(client, "connect", connect_body(), keys=())).status_code == 401

    async def test_without_keys_any_signature_passes(
        self, functions: Functions, serve: Serve
    ) -> None:
        async with serve(functions.handler(access_keys=())) as client:
            assert (await post(client, "connect", connect_body(), keys=())).status_code == 204

    async def test_missing_connection_id_is_400(self, client: httpx.AsyncClient) -> None:
        headers = ce_headers("connect")
        del headers["ce-connectionId"]
        response = await client.post(f"{PATH}/connect", content=connect_body(), headers=headers)
        assert response.status_code == 400


class TestConnect:
    """Spec 5.5: the blocking connect event."""

    async def test_request(self, client: httpx.AsyncClient, functions: Functions) -> None:
        body = connect_body(
            claims={"sub": ["user1"], "role": ["webpubsub.sendToGroup"]},
            query={"access_token": ["<jwt>"], "room": ["a", "b"]},
            subprotocols=["json.webpubsub.azure.v1", "protobuf.webpubsub.azure.v1"],
            certificates=[{"thumbprint": "ABC", "content": "-----BEGIN CERTIFICATE-----"}],
        )
        response = await post(client, "connect", body, event_id="0")
        assert response.status_code == 204
        request = functions.connect.last
        assert isinstance(request, ConnectRequest)
        assert request.claims["role"] == ["webpubsub.sendToGroup"]
        assert request.query["room"] == ["a", "b"]
        assert request.headers["Host"] == ["localhost:8080"]
        assert request.subprotocols == ["json.webpubsub.azure.v1", "protobuf.webpubsub.azure.v1"]
        assert request.client_certificates == [
            ClientCertificate("ABC", "-----BEGIN CERTIFICATE-----")
        ]
        context = request.context
        assert (context.hub, context.connection_id, context.user_id) == (
            "chat",
            CONNECTION_ID,
            "user1",
        )
        assert (context.event_name, context.event_id, context.origin) == (
            "connect",
            "0",
            "127.0.0.1",
        )
        assert context.subprotocol is None
        assert context.signature == signature(CONNECTION_ID, KEY)

    async def test_accept_with_user_groups_roles_and_subprotocol(
        self, client: httpx.AsyncClient, functions: Functions
    ) -> None:
        functions.connect.answer = ConnectResponse(
            user_id="alice",
            groups=["room1", "room2"],
            roles=["webpubsub.joinLeaveGroup"],
            subprotocol="json.webpubsub.azure.v1",
        )
        body = connect_body(subprotocols=["json.webpubsub.azure.v1"])
        response = await post(client, "connect", body)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        assert response.json() == {
            "userId": "alice",
            "groups": ["room1", "room2"],
            "roles": ["webpubsub.joinLeaveGroup"],
            "subprotocol": "json.webpubsub.azure.v1",
        }
        assert "ce-connectionstate" not in response.headers

    async def test_accept_as_the_token_says(self, client: httpx.AsyncClient) -> None:
        response = await post(client, "connect", connect_body())
        assert response.status_code == 204
        assert response.content == b""
        assert "content-length" not in response.headers
        assert "transfer-encoding" not in response.headers

    async def test_without_handle_connect(self, serve: Serve) -> None:
        async with serve(WebPubSubEventHandler("chat", path=PATH)) as client:
            assert (await post(client, "connect", connect_body())).status_code == 204

    @pytest.mark.parametrize(
        ("status", "detail"), [(400, "bad room"), (401, "no token"), (403, "banned"), (500, "db")]
    )
    async def test_refuse(
        self, client: httpx.AsyncClient, functions: Functions, status: int, detail: str
    ) -> None:
        functions.connect.error = EventHandlerError(status, detail)
        response = await post(client, "connect", connect_body())
        assert response.status_code == status
        assert response.text == detail
        assert response.headers["content-type"] == "text/plain; charset=utf-8"

    async def test_bad_body_is_400(self, client: httpx.AsyncClient, functions: Functions) -> None:
        response = await post(client, "connect", b"{not json")
        assert response.status_code == 400
        assert functions.connect.requests == []

    async def test_plain_function_runs_too(self, serve: Serve) -> None:
        seen: list[ConnectRequest] = []

        def handle_connect(request: ConnectRequest) -> ConnectResponse:
            seen.append(request)
            return ConnectResponse(user_id=request.query["name"][0])

        handler = WebPubSubEventHandler("chat", path=PATH, handle_connect=handle_connect)
        async with serve(handler) as client:
            response = await post(client, "connect", connect_body(query={"name": ["bob"]}))
            assert response.json() == {"userId": "bob"}
        assert len(seen) == 1


class TestHandlerBugs:
    """A function that raises or answers nonsense: logged once, generic 500."""

    async def test_exception_is_logged_once_and_answered_500(
        self,
        client: httpx.AsyncClient,
        functions: Functions,
        handler_log: pytest.LogCaptureFixture,
    ) -> None:
        functions.connect.error = RuntimeError("password=hunter2")
        response = await post(client, "connect", connect_body())
        assert response.status_code == 500
        assert response.text == "Internal Server Error"
        [record] = error_records(handler_log)
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError
        assert "handle_connect" in record.getMessage()
        assert CONNECTION_ID in record.getMessage()

    @pytest.mark.parametrize("event", ["message", "connected", "disconnected"])
    async def test_every_event(
        self,
        client: httpx.AsyncClient,
        functions: Functions,
        handler_log: pytest.LogCaptureFixture,
        event: str,
    ) -> None:
        for recorder in (functions.user_event, functions.connected, functions.disconnected):
            recorder.error = ValueError("boom")
        response = await post(client, event, b"{}")
        assert response.status_code == 500
        assert "boom" not in response.text
        assert len(error_records(handler_log)) == 1

    async def test_wrong_answer_type(
        self,
        client: httpx.AsyncClient,
        functions: Functions,
        handler_log: pytest.LogCaptureFixture,
    ) -> None:
        functions.connect.answer = {"userId": "u"}
        response = await post(client, "connect", connect_body())
        assert response.status_code == 500
        [record] = error_records(handler_log)
        assert "ConnectResponse" in record.getMessage()

    async def test_subprotocol_not_offered(
        self,
        client: httpx.AsyncClient,
        functions: Functions,
        handler_log: pytest.LogCaptureFixture,
    ) -> None:
        functions.connect.answer = ConnectResponse(subprotocol="mqtt")
        response = await post(
            client, "connect", connect_body(subprotocols=["json.webpubsub.azure.v1"])
        )
        assert response.status_code == 500
        assert "did not offer" in error_records(handler_log)[0].getMessage()

    async def test_refusal_is_no_error(
        self,
        client: httpx.AsyncClient,
        functions: Functions,
        handler_log: pytest.LogCaptureFixture,
    ) -> None:
        functions.connect.error = EventHandlerError(401, "no")
        await post(client, "connect", connect_body())
        assert error_records(handler_log) == []


class TestNonBlockingEvents:
    """Spec 5.6, 5.7: connected and disconnected get an empty 200."""

    async def test_connected(self, client: httpx.AsyncClient, functions: Functions) -> None:
        response = await post(
            client, "connected", b"{}", subprotocol="json.webpubsub.azure.v1", event_id="1"
        )
        assert (response.status_code, response.content) == (200, b"")
        request = functions.connected.last
        assert isinstance(request, ConnectedRequest)
        assert request.context.subprotocol == "json.webpubsub.azure.v1"
        assert request.context.event_name == "connected"

    async def test_disconnected_with_reason(
        self, client: httpx.AsyncClient, functions: Functions
    ) -> None:
        response = await post(client, "disconnected", b'{"reason":"Connection closed by client"}')
        assert (response.status_code, response.content) == (200, b"")
        request = functions.disconnected.last
        assert isinstance(request, DisconnectedRequest)
        assert request.reason == "Connection closed by client"

    @pytest.mark.parametrize("body", [b"", b"{}", b'{"reason":""}'])
    async def test_disconnected_without_reason(
        self, client: httpx.AsyncClient, functions: Functions, body: bytes
    ) -> None:
        assert (await post(client, "disconnected", body)).status_code == 200
        assert functions.disconnected.last.reason is None

    async def test_without_functions(self, serve: Serve) -> None:
        async with serve(WebPubSubEventHandler("chat", path=PATH)) as client:
            for event in ("connected", "disconnected"):
                response = await post(client, event, b"{}")
                assert (response.status_code, response.content) == (200, b"")

    async def test_state_cannot_change_here(
        self, handler_log: pytest.LogCaptureFixture, serve: Serve
    ) -> None:
        async def on_connected(request: ConnectedRequest) -> None:
            request.context.set_state("late", True)

        handler = WebPubSubEventHandler("chat", path=PATH, on_connected=on_connected)
        async with serve(handler) as client:
            response = await post(client, "connected", b"{}")
        assert response.status_code == 500
        [record] = error_records(handler_log)
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError


class TestUserEvents:
    """Spec 5.8: user events in and their answers out, as text, JSON and binary."""

    @pytest.mark.parametrize(
        ("content_type", "body", "data_type", "data"),
        [
            ("text/plain", "hé".encode(), DataType.TEXT, "hé"),
            (
                "application/json",
                b'{"to":"room","n":[1,2]}',
                DataType.JSON,
                {"to": "room", "n": [1, 2]},
            ),
            ("application/octet-stream", b"\x00\x01\xff", DataType.BINARY, b"\x00\x01\xff"),
        ],
    )
    async def test_data_in(
        self,
        client: httpx.AsyncClient,
        functions: Functions,
        content_type: str,
        body: bytes,
        data_type: DataType,
        data: object,
    ) -> None:
        response = await post(client, "message", body, content_type=content_type)
        assert response.status_code == 204
        request = functions.user_event.last
        assert isinstance(request, UserEventRequest)
        assert (request.data_type, request.data, request.content) == (data_type, data, body)
        assert request.context.event_name == "message"

    @pytest.mark.parametrize(
        ("answer", "content_type", "body"),
        [
            (UserEventResponse.text("hé"), "text/plain; charset=utf-8", "hé".encode()),
            (
                UserEventResponse.json({"ok": True}),
                "application/json; charset=utf-8",
                b'{"ok":true}',
            ),
            (UserEventResponse.binary(b"\x00\xff"), "application/octet-stream", b"\x00\xff"),
            ("plain str", "text/plain; charset=utf-8", b"plain str"),
            (b"plain bytes", "application/octet-stream", b"plain bytes"),
        ],
    )
    async def test_data_out(
        self,
        client: httpx.AsyncClient,
        functions: Functions,
        answer: object,
        content_type: str,
        body: bytes,
    ) -> None:
        functions.user_event.answer = answer
        response = await post(client, "message", b"hi")
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        assert response.content == body

    async def test_custom_event_name(self, client: httpx.AsyncClient, functions: Functions) -> None:
        response = await post(client, "chat.typing", b"{}", content_type="application/json")
        assert response.status_code == 204
        assert functions.user_event.last.context.event_name == "chat.typing"

    async def test_protobuf_arrives_as_binary(
        self, client: httpx.AsyncClient, functions: Functions
    ) -> None:
        await post(client, "message", b"\x08\x01", content_type="application/x-protobuf")
        request = functions.user_event.last
        assert request.data_type is DataType.BINARY
        assert request.content_type == "application/x-protobuf"

    @pytest.mark.parametrize(
        ("content_type", "body"), [("application/json", b"{oops"), ("text/plain", b"\xff\xfe")]
    )
    async def test_undecodable_data_is_400(
        self, client: httpx.AsyncClient, functions: Functions, content_type: str, body: bytes
    ) -> None:
        response = await post(client, "message", body, content_type=content_type)
        assert response.status_code == 400
        assert functions.user_event.requests == []

    async def test_refuse(self, client: httpx.AsyncClient, functions: Functions) -> None:
        functions.user_event.error = EventHandlerError(400, "unknown command")
        response = await post(client, "message", b"/frobnicate")
        assert (response.status_code, response.text) == (400, "unknown command")

    async def test_without_handle_user_event(self, serve: Serve) -> None:
        async with serve(WebPubSubEventHandler("chat", path=PATH)) as client:
            assert (await post(client, "message", b"hi")).status_code == 204


class TestConnectionState:
    """Spec 5.9: states set on connect come back on later events; changes go back out."""

    async def test_round_trip(self, serve: Serve) -> None:
        async def handle_connect(request: ConnectRequest) -> None:
            request.context.set_state("nickname", "ally")
            request.context.set_state("count", 0)

        async def handle_user_event(request: UserEventRequest) -> str:
            count = request.context.get_state("count") + 1
            request.context.set_state("count", count)
            return f"{request.context.get_state('nickname')} #{count}"

        seen: list[dict[str, Any]] = []

        async def on_disconnected(request: DisconnectedRequest) -> None:
            seen.append(dict(request.context.states))

        handler = WebPubSubEventHandler(
            "chat",
            path=PATH,
            handle_connect=handle_connect,
            handle_user_event=handle_user_event,
            on_disconnected=on_disconnected,
        )
        async with serve(handler) as client:
            response = await post(client, "connect", connect_body())
            assert response.status_code == 204
            state = response.headers["ce-connectionstate"]
            assert decode_state(state) == {"nickname": "ally", "count": 0}
            for expected in (1, 2):
                response = await post(client, "message", b"hi", state=state)
                assert response.text == f"ally #{expected}"
                state = response.headers["ce-connectionstate"]
            await post(client, "disconnected", b"{}", state=state)
        assert seen == [{"nickname": "ally", "count": 2}]

    async def test_unchanged_state_sends_no_header(
        self, client: httpx.AsyncClient, functions: Functions
    ) -> None:
        functions.user_event.answer = "ok"
        response = await post(client, "message", b"hi", state=encode_state({"a": 1}))
        assert "ce-connectionstate" not in response.headers
        assert functions.user_event.last.context.states == {"a": 1}

    async def test_clearing_sends_an_empty_object(self, serve: Serve) -> None:
        async def handle_user_event(request: UserEventRequest) -> None:
            request.context.clear_states()

        handler = WebPubSubEventHandler("chat", path=PATH, handle_user_event=handle_user_event)
        async with serve(handler) as client:
            response = await post(client, "message", b"x", state=encode_state({"a": 1}))
        assert response.status_code == 204
        assert decode_state(response.headers["ce-connectionstate"]) == {}

    async def test_invalid_state_reads_as_empty(
        self, client: httpx.AsyncClient, functions: Functions
    ) -> None:
        await post(client, "message", b"x", state="%%% not base64 %%%")
        assert functions.user_event.last.context.states == {}


class TestBodyLimit:
    async def test_declared_length_over_the_limit(self, functions: Functions, serve: Serve) -> None:
        async with serve(functions.handler(max_body_size=1024)) as client:
            response = await post(client, "message", b"x" * 1025)
            assert response.status_code == 413
            assert (await post(client, "message", b"x" * 1024)).status_code == 204
        assert len(functions.user_event.requests) == 1

    async def test_chunked_body_over_the_limit(self, functions: Functions, serve: Serve) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"x" * 512

        async with serve(functions.handler(max_body_size=1024)) as client:
            response = await client.post(
                f"{PATH}/message", content=chunks(), headers=ce_headers("message")
            )
            assert response.status_code == 413
        assert functions.user_event.requests == []

    async def test_signature_is_checked_before_the_body_is_read(
        self, functions: Functions, serve: Serve
    ) -> None:
        async with serve(functions.handler(max_body_size=1024)) as client:
            response = await post(client, "message", b"x" * 4096, keys=())
            assert response.status_code == 401


class TestMiddleware:
    """``as_asgi(app)``: everything that is not an event goes to the wrapped app."""

    async def test_passes_other_requests_on(self, functions: Functions) -> None:
        seen: list[str] = []

        async def inner(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["type"])
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": f"inner {scope['path']}".encode()})

        app = functions.handler().as_asgi(inner)
        async with serve_asgi(app, lifespan="on") as client:
            assert (await client.get("/")).text == "inner /"
            # The right path without CloudEvents headers is not an event either.
            assert (await client.post(f"{PATH}/connect")).text == "inner /eventhandler/connect"
            assert (await post(client, "connect", connect_body(), hub="other")).text.startswith(
                "inner"
            )
            assert (await post(client, "connect", connect_body())).status_code == 204
            response = await client.options(f"{PATH}/validate", headers=preflight_headers())
            assert response.headers["webhook-allowed-origin"] == "*"
        assert seen == ["lifespan", "http", "http", "http"]
        assert len(functions.connect.requests) == 1

    async def test_standalone_answers_lifespan(self, functions: Functions) -> None:
        async with serve_asgi(functions.handler(), lifespan="on") as client:
            assert (await post(client, "connect", connect_body())).status_code == 204
            assert (await client.get("/")).status_code == 404

    async def test_standalone_refuses_websockets(self, client: httpx.AsyncClient) -> None:
        # A plain GET with an upgrade request: uvicorn answers what the app does (403).
        response = await client.get(
            "/ws",
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert response.status_code == 403

    async def test_json_payloads_are_never_echoed_in_refusals(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await post(client, "connect", b'{"claims": "secret-token"}')
        assert response.status_code == 400
        assert "secret-token" not in response.text
        assert json.dumps("secret-token") not in response.text
