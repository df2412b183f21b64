"""The public API of ``webpubsub.handler`` is a curated list, and it needs no web framework."""

from __future__ import annotations

import subprocess
import sys

import pytest

import webpubsub.handler
from tests.handler.helpers import KEY
from webpubsub.handler import WebPubSubEventHandler

PUBLIC = {
    "DEFAULT_PATH",
    "MAX_BODY_SIZE",
    "ClientCertificate",
    "ConnectHandler",
    "ConnectRequest",
    "ConnectResponse",
    "ConnectedHandler",
    "ConnectedRequest",
    "ConnectionContext",
    "DataType",
    "DisconnectedHandler",
    "DisconnectedRequest",
    "EventHandlerError",
    "GroupJoinedHandler",
    "GroupJoinedRequest",
    "GroupLeftHandler",
    "GroupLeftRequest",
    "UserEventHandler",
    "UserEventRequest",
    "UserEventResponse",
    "UserEventResult",
    "WebPubSubEventHandler",
}


def test_exported_members() -> None:
    assert set(webpubsub.handler.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(webpubsub.handler, name) is not None


def test_error_is_a_webpubsub_error() -> None:
    from webpubsub import WebPubSubError

    assert issubclass(webpubsub.handler.EventHandlerError, WebPubSubError)


def test_no_web_framework_is_imported() -> None:
    code = (
        "import sys, webpubsub.handler; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'starlette', 'fastapi', 'uvicorn', 'anyio', 'flask', 'django'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"


class TestConfiguration:
    def test_keys_from_everywhere_are_combined(self) -> None:
        handler = WebPubSubEventHandler(
            "chat",
            access_keys=KEY,  # a single key as a str is fine
            connection_string="Endpoint=https://x.webpubsub.azure.com;AccessKey=other;Version=1.0;",
        )
        assert handler._keys == (KEY, "other")

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"hub": ""},
            {"hub": "chat", "access_keys": [""]},
            {"hub": "chat", "connection_string": "Endpoint=https://x;Version=1.0;"},
            {"hub": "chat", "allowed_endpoints": ["https://"]},
            {"hub": "chat", "max_body_size": 0},
        ],
    )
    def test_invalid(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            WebPubSubEventHandler(**kwargs)  # type: ignore[arg-type]

    def test_handlers_must_be_callable(self) -> None:
        with pytest.raises(TypeError, match="handle_connect must be callable"):
            WebPubSubEventHandler("chat", handle_connect="nope")  # type: ignore[arg-type]

    def test_repr_shows_no_key(self) -> None:
        handler = WebPubSubEventHandler("chat", access_keys=[KEY])
        assert KEY not in repr(handler)
        assert KEY not in repr(handler.as_asgi())
        assert KEY not in repr(handler.as_wsgi())
