"""The event handler inside a Starlette app: mounted as a route, or as middleware.

Starlette is a test dependency only: the handler is plain ASGI and imports no framework.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from tests.handler.helpers import (
    KEY,
    ASGIServerThread,
    ce_headers,
    connect_body,
    preflight_headers,
    serve_asgi,
)
from webpubsub.handler import (
    ConnectRequest,
    ConnectResponse,
    UserEventRequest,
    UserEventResponse,
    WebPubSubEventHandler,
)


async def homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"home {request.url.path}")


async def handle_connect(request: ConnectRequest) -> ConnectResponse:
    return ConnectResponse(user_id=request.query["name"][0], groups=["lobby"])


async def handle_user_event(request: UserEventRequest) -> UserEventResponse:
    return UserEventResponse.text(f"echo {request.data}")


def chat_handler(path: str) -> WebPubSubEventHandler:
    return WebPubSubEventHandler(
        "chat",
        path=path,
        access_keys=[KEY],
        handle_connect=handle_connect,
        handle_user_event=handle_user_event,
    )


class TestMount:
    async def test_mounted_at_a_prefix(self, asgi_server: ASGIServerThread) -> None:
        app = Starlette(
            routes=[Route("/", homepage), Mount("/eventhandler", app=chat_handler(path="/"))]
        )
        async with asgi_server.use(app) as client:
            response = await client.post(
                "/eventhandler/connect",
                content=connect_body(query={"name": ["ann"]}),
                headers=ce_headers("connect"),
            )
            assert response.json() == {"userId": "ann", "groups": ["lobby"]}
            response = await client.post(
                "/eventhandler/message", content=b"hi", headers=ce_headers("message")
            )
            assert response.text == "echo hi"
            response = await client.options("/eventhandler/validate", headers=preflight_headers())
            assert response.headers["webhook-allowed-origin"] == "*"
            assert (await client.get("/")).text == "home /"
            # Under the mount but not an event: the handler's own 404.
            assert (await client.get("/eventhandler/other")).status_code == 404

    async def test_path_is_relative_to_the_mount(self, asgi_server: ASGIServerThread) -> None:
        app = Starlette(routes=[Mount("/webpubsub", app=chat_handler(path="/hubs/chat"))])
        async with asgi_server.use(app) as client:
            response = await client.post(
                "/webpubsub/hubs/chat/message", content=b"x", headers=ce_headers("message")
            )
            assert response.text == "echo x"
            response = await client.post(
                "/webpubsub/other/message", content=b"x", headers=ce_headers("message")
            )
            assert response.status_code == 404


class TestMiddleware:
    async def test_add_middleware(self, asgi_server: ASGIServerThread) -> None:
        app = Starlette(routes=[Route("/", homepage), Route("/eventhandler/page", homepage)])
        app.add_middleware(chat_handler(path="/eventhandler").as_asgi)
        async with asgi_server.use(app) as client:
            response = await client.post(
                "/eventhandler/message", content=b"yo", headers=ce_headers("message")
            )
            assert response.text == "echo yo"
            assert (await client.get("/")).text == "home /"
            # The handler's path, but no CloudEvents headers: Starlette's route answers.
            assert (await client.get("/eventhandler/page")).text == "home /eventhandler/page"
            # A bad signature is refused by the handler, not passed on.
            response = await client.post(
                "/eventhandler/message", content=b"yo", headers=ce_headers("message", keys=())
            )
            assert response.status_code == 401

    async def test_lifespan_reaches_the_app(self) -> None:
        events: list[str] = []

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            events.append("startup")
            yield
            events.append("shutdown")

        app = Starlette(
            routes=[Route("/", homepage)],
            middleware=[Middleware(chat_handler(path="/eventhandler").as_asgi)],
            lifespan=lifespan,
        )
        async with serve_asgi(app, lifespan="on") as client:
            response = await client.post(
                "/eventhandler/connect",
                content=connect_body(query={"name": ["bo"]}),
                headers=ce_headers("connect"),
            )
            assert response.json()["userId"] == "bo"
            # uvicorn completes the startup before it serves the first request.
            assert events == ["startup"]
        assert events == ["startup", "shutdown"]
