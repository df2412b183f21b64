"""No secret in stdout or the logs of a real ``webpubsub serve`` process (issue 13, item 12).

Each test starts the service as an operator would, captures everything it writes to stdout
and stderr, and looks for the secret: the access key (from a flag, the environment, or
generated), and an event handler URL's ``?code=`` function key, with a handler that answers
and one that cannot be reached (so our own warnings name the URL).
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.ops.helpers import TIMEOUT
from tests.upstream_app import Reply, UpstreamApp
from webpubsub.auth.tokens import client_audience, mint_client_token, mint_rest_token
from webpubsub.server.ops import RedactingFilter, redact

SRC = Path(__file__).resolve().parents[2] / "src"
KEY = "secret-key-from-the-operator-0123456789abcdef"
CODE = "FunctionKeySECRET0123456789"
JSON = "json.webpubsub.azure.v1"


class Served:
    """``python -m webpubsub serve --port 0 ...``; :meth:`output` is all it wrote, once stopped."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("WEBPUBSUB_")}
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), base.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webpubsub", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            bufsize=0,  # raw pipes: the selector sees exactly what was not read yet
            env={**base, **(env or {})},
        )
        self.stdout = ""
        self.stderr = ""
        self.endpoint = self._wait_for_endpoint()

    def _wait_for_endpoint(self) -> str:
        """Read stdout up to the connection string line (the service is listening then)."""
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while selector.select(4 * TIMEOUT):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                self.stdout += chunk.decode()
                found = re.search(r"listening on (\S+)\n(?s:.*)Connection string:.*\n", self.stdout)
                if found:
                    return found.group(1)
        self.stop()
        raise AssertionError(f"the service did not start:\n{self.stdout}\n{self.stderr}")

    def stop(self) -> str:
        """Stop the service (SIGTERM, a graceful drain) and return stdout + stderr."""
        if self.proc.returncode is None:
            self.proc.terminate()
            out, err = self.proc.communicate(timeout=4 * TIMEOUT)
            self.stdout += out.decode()
            self.stderr += err.decode()
        return self.stdout + self.stderr

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.communicate(timeout=TIMEOUT)


def rest_call(endpoint: str, key: str) -> int:
    """A REST call signed with ``key``: proves the process runs with that key."""
    url = f"{endpoint}/api/hubs/chat/:send"
    token = mint_rest_token(key, url)
    response = httpx.post(
        url,
        params={"api-version": "2024-01-01"},
        content=b"hi",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )
    return response.status_code


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestTheAccessKey:
    def test_a_key_from_the_flag_is_never_printed_or_logged(self) -> None:
        with Served("--access-key", KEY, "--log-level", "debug") as served:
            assert rest_call(served.endpoint, KEY) == 202
            output = served.stop()
        assert KEY not in output
        assert f"Connection string: Endpoint={served.endpoint};AccessKey=***;" in output
        assert "--access-key" in output  # the hint: where the key to fill in came from

    def test_a_key_from_the_environment_with_json_logs(self) -> None:
        env = {"WEBPUBSUB_ACCESS_KEY": KEY}
        with Served("--log-format", "json", env=env) as served:
            assert rest_call(served.endpoint, KEY) == 202
            output = served.stop()
        assert KEY not in output
        assert "AccessKey=***" in served.stdout
        assert [json.loads(line) for line in served.stderr.splitlines()]  # all JSON lines

    def test_a_generated_key_is_printed_exactly_once(self) -> None:
        with Served("--log-format", "json", "--log-level", "debug") as served:
            found = re.search(r"Connection string: .*AccessKey=([^;]+);", served.stdout)
            assert found, served.stdout
            key = found.group(1)
            assert rest_call(served.endpoint, key) == 202
            output = served.stop()
        assert output.count(key) == 1


@pytest.fixture(scope="module")
def app() -> Iterator[UpstreamApp]:
    with UpstreamApp() as running:
        yield running


@pytest.fixture(scope="module")
def failing() -> Iterator[UpstreamApp]:
    """A handler that passes validation and then answers every connect event with 500."""
    with UpstreamApp() as running:
        running.rules["connect"] = Reply(500)
        yield running


class TestEventHandlerUrls:
    """``?code=`` in a url_template: never in the logs, whether the call works or fails."""

    HUBS = ("good", "fails", "unreachable")

    def config(self, tmp_path: Path, app: UpstreamApp, failing: UpstreamApp) -> str:
        urls = {
            "good": app.url_template + f"?code={CODE}",
            "fails": failing.url_template + f"?code={CODE}",
            "unreachable": f"http://127.0.0.1:{closed_port()}/{{hub}}/{{event}}?sig={CODE}",
        }
        path = tmp_path / "webpubsub.toml"
        path.write_text(
            "".join(
                f'[[hubs.{hub}.event_handlers]]\nurl_template = "{url}"\n'
                for hub, url in urls.items()
            )
        )
        return str(path)

    def visit(self, endpoint: str, hub: str) -> None:
        """Connect a client to ``hub`` (its connect event goes to the handler) and leave."""
        audience = client_audience(endpoint, hub)
        url = audience.replace("http", "ws", 1) + "?access_token="
        url += mint_client_token(KEY, audience, user_id="ann")
        try:
            with connect(url, subprotocols=[JSON], open_timeout=TIMEOUT) as ws:  # type: ignore[list-item]
                ws.recv(timeout=TIMEOUT)
        except InvalidStatus as exc:
            assert hub != "good", exc  # the handler failed: the connection is refused

    @pytest.mark.parametrize("level", ["info", "debug"])
    def test_the_function_key_never_reaches_the_output(
        self, tmp_path: Path, app: UpstreamApp, failing: UpstreamApp, level: str
    ) -> None:
        config = self.config(tmp_path, app, failing)
        with Served("--access-key", KEY, "--config", config, "--log-level", level) as served:
            for hub in self.HUBS:
                self.visit(served.endpoint, hub)
            output = served.stop()
        assert CODE not in output
        # Our own warnings named the URLs, redacted: a 500 answer and an unreachable handler.
        assert re.search(r"connect event to \S+/fails/connect\?code=\*\*\* answered 500", output)
        assert re.search(r"event handler \S+/unreachable/validate\?sig=\*\*\* refused", output)
        if level == "debug":
            assert "HTTP Request: POST" in output  # httpx's own line, redacted
        else:
            assert "HTTP Request:" not in output  # httpx's per-request INFO lines are quiet


class TestRedact:
    """The rule itself, on the shapes secrets take in log lines."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("POST http://h/api?code=abc123&x=1", "POST http://h/api?code=***&x=1"),
            ("https://h/e?sig=s1g%3D&se=2030&sp=r", "https://h/e?sig=***&se=2030&sp=r"),
            ("/livetrace?access_token=eyJ.a.b HTTP/1.1", "/livetrace?access_token=*** HTTP/1.1"),
            ("u?key=k&token=t&Password=p", "u?key=***&token=***&Password=***"),
            (
                "Endpoint=http://h;AccessKey=abc==;Version=1.0;",
                "Endpoint=http://h;AccessKey=***;Version=1.0;",
            ),
            ("lost Redis at redis://:hunter2@db:6379/0", "lost Redis at redis://:***@db:6379/0"),
            (
                "rediss://user:pw@db/0 and https://a:b@c/",
                "rediss://user:***@db/0 and https://a:***@c/",
            ),
            ("Authorization: Bearer eyJhbGciOi.x.y", "Authorization: Bearer ***"),
            ("zipcode=12345 hub=chat userId=ann", "zipcode=12345 hub=chat userId=ann"),
            ("'http://h/x?code=abc'", "'http://h/x?code=***'"),
        ],
    )
    def test_patterns(self, text: str, expected: str) -> None:
        assert redact(text) == expected

    def test_literal_secrets(self) -> None:
        assert redact(f"config error near {KEY}", [KEY]) == "config error near ***"

    def test_the_filter_rewrites_message_args_extras_and_tracebacks(self) -> None:
        try:
            raise ValueError(f"cannot reach http://h/?code={CODE}")
        except ValueError:
            record = logging.LogRecord(
                "httpx", logging.INFO, __file__, 1, "to %s", (f"u?code={CODE}",), sys.exc_info()
            )
        record.url = f"http://h/?code={CODE}"
        assert RedactingFilter([KEY]).filter(record)
        formatted = logging.Formatter("%(message)s %(url)s").format(record)
        assert CODE not in formatted
        assert formatted.startswith("to u?code=*** http://h/?code=***")
        assert "ValueError: cannot reach http://h/?code=***" in formatted
