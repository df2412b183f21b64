"""samples/socketio/chat in a real headless Chromium: the "chat with negotiate" sample of
@azure/web-pubsub-socket.io (an Express app: /negotiate gives the page the service's
endpoint, path and a token; the page connects straight to the service, cross-origin,
long-polling first and then WebSocket). Two users chat. Skipped, saying why, without
Chromium, Playwright or Node (issue 18 item 5; socketio spec 8)."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nodejs import NODE_DIR, node_missing
from webpubsub.testing import ServiceThread

CHAT = Path(__file__).resolve().parents[2] / "samples" / "socketio" / "chat"
CHROMIUM = os.environ.get("WEBPUBSUB_CHROMIUM") or shutil.which("chromium")
TIMEOUT = 15.0

if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)
if node_missing() is not None:
    pytest.skip(str(node_missing()), allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright")


@pytest.fixture
def chat(service: ServiceThread) -> Iterator[str]:
    """The sample's app server, on a free port; its URL."""
    env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules"), "PORT": "0"}
    app = subprocess.Popen(
        ["node", str(CHAT / "server.js"), service.connection_string],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    printed: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert app.stdout is not None
        for line in app.stdout:
            printed.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    try:
        line = printed.get(timeout=TIMEOUT)
        assert line.startswith("chat on "), line
        yield line.removeprefix("chat on ")
    finally:
        app.kill()
        app.wait(TIMEOUT)


def join(context: Any, url: str, name: str) -> Any:
    page = context.new_page()
    page.set_default_timeout(TIMEOUT * 1000)
    page.goto(url)
    page.fill("#username", name)
    page.click("#login button")
    page.wait_for_selector(f"text=connected as {name}")
    return page


def test_two_users_chat_through_the_service(chat: str, service: ServiceThread) -> None:
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context()
        context.on("weberror", lambda error: errors.append(str(error.error)))
        try:
            alice = join(context, chat, "alice")
            bob = join(context, chat, "bob")
            alice.wait_for_selector("text=bob joined")
            for page in (alice, bob):  # it started polling (cross-origin) and upgraded
                page.wait_for_function("window.chatSocket.io.engine.transport.name === 'websocket'")
                assert page.evaluate("window.chatSocket.io.engine.id")
            bob.fill("#text", "hello from bob")
            bob.click("#chat button")
            alice.wait_for_selector("text=bob: hello from bob")
            bob.wait_for_selector("text=bob: hello from bob")
            endpoint = alice.evaluate("window.chatSocket.io.uri")
            assert endpoint.rstrip("/") == service.endpoint  # the service, not the app
            bob.close()
            alice.wait_for_selector("text=bob left")
        finally:
            context.close()
            browser.close()
    assert errors == []
