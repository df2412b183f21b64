"""Structured logs: one INFO line per connection open/close, as text or JSON."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest
from websockets.sync.client import connect

from tests.core.helpers import make_connection
from webpubsub.auth.tokens import client_audience, mint_client_token
from webpubsub.core.node import Node
from webpubsub.server import cli
from webpubsub.server.ops import ConnectionLog, JsonFormatter, make_formatter


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.Logger("test.connections", logging.INFO)
    logger.addHandler(handler)
    return logger, stream


def test_one_json_line_per_open_and_close(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    node = Node()
    node.observer.add(ConnectionLog(logger))
    conn, _ = make_connection("chat", user_id="alice")
    conn.transport.peer = "127.0.0.1:4000"  # type: ignore[attr-defined]
    node.connect(conn)
    node.disconnect(conn, "Client closed: going home")
    opened, closed = (json.loads(line) for line in stream.getvalue().splitlines())
    assert opened["level"] == "info"
    assert opened["logger"] == "test.connections"
    assert opened["hub"] == "chat"
    assert opened["connectionId"] == conn.connection_id
    assert opened["userId"] == "alice"
    assert opened["subprotocol"] == "json.webpubsub.azure.v1"
    assert opened["peer"] == "127.0.0.1:4000"
    assert opened["time"].endswith("Z")
    assert opened["message"].startswith("connection opened hub=chat")
    assert closed["reason"] == "Client closed: going home"
    assert 'reason="Client closed: going home"' in closed["message"]


def test_text_lines_are_key_value_pairs(caplog: pytest.LogCaptureFixture) -> None:
    node = Node()
    node.observer.add(ConnectionLog())
    conn, _ = make_connection("chat")
    with caplog.at_level(logging.INFO, logger="webpubsub.connections"):
        node.connect(conn)
    (record,) = caplog.records
    line = make_formatter("text").format(record)
    assert "INFO" in line and "webpubsub.connections" in line
    assert f"connectionId={conn.connection_id} userId=- " in line


def test_nothing_is_formatted_above_info() -> None:
    logger = logging.Logger("quiet", logging.WARNING)
    logger.addHandler(logging.NullHandler())
    node = Node()
    node.observer.add(ConnectionLog(logger))
    conn, _ = make_connection("chat")
    node.connect(conn)  # no error, no output: the level check comes first


def test_json_formatter_keeps_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("it",), None)
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed it"
    assert "ValueError: boom" in entry["exception"]


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="log format"):
        make_formatter("xml")


def test_the_cli_flag() -> None:
    args = cli.build_parser().parse_args(["serve", "--log-format", "json"])
    assert args.log_format == "json"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", "--log-format", "xml"])


def test_the_cli_refuses_a_bad_environment_format(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBPUBSUB_LOG_FORMAT", "yaml")
    assert cli.main(["serve", "--port", "0"]) == 2
    assert "log format" in capsys.readouterr().err


def test_the_served_process_logs_json_lines() -> None:
    """``webpubsub serve --log-format json``: the lines a log shipper would read."""
    key = "cli-test-key-0123456789abcdefghijklmnopqrstu"
    command = [sys.executable, "-m", "webpubsub", "serve", "--port", "0", "--access-key", key]
    with subprocess.Popen(
        [*command, "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            endpoint = process.stdout.readline().split(" listening on ")[1].strip()
            audience = client_audience(endpoint, "chat")
            token = mint_client_token(key, audience, user_id="ann")
            url = audience.replace("http", "ws", 1) + f"?access_token={token}"
            with connect(url, subprotocols=["json.webpubsub.azure.v1"]) as ws:  # type: ignore[list-item]
                ws.recv(timeout=5)
        finally:
            process.terminate()
        _, stderr = process.communicate(timeout=10)
    entries = [json.loads(line) for line in stderr.splitlines()]
    opened = [e for e in entries if e["message"].startswith("connection opened")]
    closed = [e for e in entries if e["message"].startswith("connection closed")]
    assert len(opened) == len(closed) == 1
    assert opened[0]["userId"] == "ann"
    assert opened[0]["logger"] == "webpubsub.connections"
    assert key not in stderr
