"""Logging: the ``webpubsub.sdk`` logger, the environment switches, and redaction."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from webpubsub.sdk import _logging
from webpubsub.sdk._logging import configure_from_environment, redact_headers, redact_url
from webpubsub.testing import ServiceThread

from ..conftest import ACCESS_KEY
from .test_client import FakeTokenCredential

pytestmark = pytest.mark.usefixtures("sdk_logs")


@pytest.mark.parametrize(
    ("env", "level"),
    [
        ({"AZURE_LOG_LEVEL": "verbose"}, logging.DEBUG),
        ({"AZURE_LOG_LEVEL": "info"}, logging.INFO),
        ({"AZURE_LOG_LEVEL": "warning"}, logging.WARNING),
        ({"AZURE_LOG_LEVEL": "error"}, logging.ERROR),
        ({"WEBPUBSUB_LOG_LEVEL": "DEBUG"}, logging.DEBUG),
        ({"WEBPUBSUB_LOG_LEVEL": "info", "AZURE_LOG_LEVEL": "verbose"}, logging.INFO),
        ({"WEBPUBSUB_LOG_LEVEL": "loud", "AZURE_LOG_LEVEL": "error"}, logging.ERROR),
    ],
)
def test_environment_sets_the_level(env: dict[str, str], level: int) -> None:
    assert configure_from_environment(env, force=True) == level
    assert logging.getLogger("webpubsub.sdk").level == level


def test_no_variable_changes_nothing() -> None:
    logger = logging.getLogger("webpubsub.sdk")
    before = logger.level
    assert configure_from_environment({}, force=True) is None
    assert configure_from_environment({"AZURE_LOG_LEVEL": "chatty"}, force=True) is None
    assert logger.level == before


def test_environment_read_when_a_client_is_built(
    monkeypatch: pytest.MonkeyPatch, service: ServiceThread, hub: str
) -> None:
    import webpubsub

    monkeypatch.setenv("AZURE_LOG_LEVEL", "verbose")
    monkeypatch.setattr(_logging, "_configured", False)
    webpubsub.WebPubSubServiceClient.from_connection_string(
        service.connection_string, hub=hub
    ).close()
    assert logging.getLogger("webpubsub.sdk").level == logging.DEBUG
    parent = logging.getLogger("webpubsub")  # records propagate through "webpubsub"
    assert logging.getLogger("webpubsub.sdk").parent is parent


def test_redaction_helpers() -> None:
    headers = redact_headers([("Authorization", "Bearer eyJsecret"), ("Accept", "*/*")])
    assert headers == [("Authorization", "REDACTED"), ("Accept", "*/*")]
    url = redact_url("wss://h/client/hubs/chat?access_token=eyJsecret&x=1")
    assert "eyJsecret" not in url and "access_token=REDACTED" in url and "x=1" in url
    assert redact_url("http://h/api?api-version=1") == "http://h/api?api-version=1"


async def test_request_logs_never_show_secrets(
    make_client: Any, service: ServiceThread, hub: str, caplog: pytest.LogCaptureFixture
) -> None:
    configure_from_environment({"WEBPUBSUB_LOG_LEVEL": "debug"}, force=True)
    caplog.set_level(logging.DEBUG, logger="webpubsub.sdk")
    keyed = make_client(service.connection_string, hub=hub)
    await keyed.send_to_all({"hello": "world"})
    await keyed.group_exists("g")
    token = await keyed.get_client_access_token(user_id="u")
    entra = make_client(service.endpoint, FakeTokenCredential(service.endpoint), hub=hub)
    minted = await entra.get_client_access_token(user_id="u")  # the body holds a token
    await entra.user_exists("u")

    records = [r for r in caplog.records if r.name == "webpubsub.sdk"]
    text = "\n".join(r.getMessage() for r in records)
    assert "--> send_to_all POST" in text and "<-- send_to_all 202" in text
    assert "--> group_exists HEAD" in text and "<-- group_exists 404" in text
    assert "--> get_client_access_token POST" in text
    assert "'authorization': 'REDACTED'" in text
    assert ACCESS_KEY not in text
    assert "eyJ" not in text  # no JWT (every JWT starts with the base64 of '{"')
    assert token["token"] not in text and minted["token"] not in text
    assert all(r.levelno == logging.DEBUG for r in records)
