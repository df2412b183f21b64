"""Access-key rotation with zero downtime, as SECURITY.md tells operators to do it.

1. Add the new key as secondary and reload (SIGHUP): both keys work.
2. Move the apps to the new key.
3. Make the new key primary, drop the old one, reload: the old key stops working.

Connected clients stay connected throughout (a client token is checked only at connect,
spec 3.2), and no REST call in between fails.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.hardening.process import ServiceProcess
from tests.server.helpers import (
    TIMEOUT,
    assert_refused,
    open_json_url,
    refused_handshake,
    sign_rest,
)
from webpubsub.auth.tokens import mint_client_token

OLD = "old-key-0123456789abcdefghijklmnopqrstuvwx"
NEW = "new-key-0123456789abcdefghijklmnopqrstuvwx"
HUB = "rotation"


def send(endpoint: str, key: str, text: str) -> int:
    url = f"{endpoint}/api/hubs/{HUB}/:send?api-version=2024-12-01"
    headers = {"Authorization": f"Bearer {sign_rest(url, key)}", "Content-Type": "text/plain"}
    return httpx.post(url, content=text.encode(), headers=headers, timeout=TIMEOUT).status_code


def write_keys(config: Path, primary: str, secondary: str | None = None) -> None:
    lines = ["[keys]", f'primary = "{primary}"']
    if secondary:
        lines.append(f'secondary = "{secondary}"')
    config.write_text("\n".join(lines) + "\n")


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_rotate_keys_without_downtime(tmp_path: Path) -> None:
    config = tmp_path / "webpubsub.toml"
    write_keys(config, OLD)
    with ServiceProcess("--config", str(config)) as process:
        endpoint = process.endpoint
        audience = f"{endpoint}/client/hubs/{HUB}"
        ws_url = "ws" + audience[len("http") :] + "?access_token="
        client = await open_json_url(ws_url + mint_client_token(OLD, audience, user_id="old"))
        assert await asyncio.to_thread(send, endpoint, OLD, "one") == 202
        assert (await client.receive())["data"] == "one"
        assert await asyncio.to_thread(send, endpoint, NEW, "refused") == 401

        # 1. The new key joins as secondary.
        write_keys(config, OLD, NEW)
        process.signal(signal.SIGHUP)
        await until(lambda: send(endpoint, NEW, "two") == 202, "the new key to work")
        assert await asyncio.to_thread(send, endpoint, OLD, "three") == 202
        newcomer = await open_json_url(ws_url + mint_client_token(NEW, audience, user_id="new"))

        # 3. The new key becomes primary; the old one is gone.
        write_keys(config, NEW)
        process.signal(signal.SIGHUP)
        await until(lambda: send(endpoint, OLD, "refused") == 401, "the old key to stop")
        assert await asyncio.to_thread(send, endpoint, NEW, "four") == 202

        # The client that connected with an old-key token never noticed.
        assert [(await client.receive())["data"] for _ in range(3)] == ["two", "three", "four"]
        await client.send({"type": "ping"})
        assert await client.receive() == {"type": "pong"}
        assert (await newcomer.receive())["data"] == "four"
        # New connections need the new key.
        refusal = await refused_handshake(ws_url + mint_client_token(OLD, audience))
        assert_refused(refusal, 401)
        await client.close()
        await newcomer.close()
        process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 10) == 0
