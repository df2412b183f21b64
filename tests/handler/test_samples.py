"""``samples/chat_handler.py`` and its client, run against the real service."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.handler.helpers import ASGIServerThread, events_sent_to
from webpubsub.testing import ServiceThread

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"samples_{name}", SAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def chat_client(
    service: ServiceThread,
    hub: str,
    asgi_server: ASGIServerThread,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ModuleType]:
    """The sample client, talking to the sample app on the test's hub."""
    chat_handler = load("chat_handler")
    client = load("chat_handler_client")
    monkeypatch.setattr(asgi_server, "app", chat_handler.create_app(hub, service.connection_string))
    monkeypatch.setattr(client, "HUB", hub)
    monkeypatch.setenv("WEBPUBSUB_CONNECTION_STRING", service.connection_string)
    with events_sent_to(service, hub, f"{asgi_server.base_url}/eventhandler/{{event}}"):
        yield client


class TestChatHandlerSample:
    def test_chat(
        self,
        chat_client: ModuleType,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setattr(sys, "argv", ["chat_handler_client.py", "alice", "hello there"])
        chat_client.main()
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith("connected as alice (")
        assert lines[1:] == [
            "the app answered: {'from': 'alice', 'text': 'hello there', 'count': 1}",
            "the lobby got from alice: hello there",
        ]

    def test_nameless_client_is_refused(
        self, chat_client: ModuleType, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sys, "argv", ["chat_handler_client.py", ""])
        with pytest.raises(SystemExit, match="HTTP 401"):
            chat_client.main()
