"""Request/response logging for the SDK, with secrets redacted.

Records go to the ``webpubsub.sdk`` logger (a child of ``webpubsub``): requests and responses
at DEBUG, retries at INFO. Setting ``WEBPUBSUB_LOG_LEVEL`` or ``AZURE_LOG_LEVEL`` (``verbose``,
``debug``, ``info``, ``warning``, ``error``) turns them on without code, as ``@azure/logger``
does for the JS SDK. ``Authorization`` headers, ``access_token`` query values and bodies are
never logged.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

__all__ = ["ENV_VARS", "configure_from_environment", "logger", "redact_headers", "redact_url"]

logger = logging.getLogger("webpubsub.sdk")

ENV_VARS = ("WEBPUBSUB_LOG_LEVEL", "AZURE_LOG_LEVEL")
LEVELS = {
    "verbose": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
REDACTED = "REDACTED"
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "ocp-apim-subscription-key"}
)
SECRET_QUERY = frozenset({"access_token", "token", "sig", "signature", "accesskey", "key"})

_handler: logging.Handler | None = None
_configured = False


def configure_from_environment(
    environ: Mapping[str, str] | None = None, *, force: bool = False
) -> int | None:
    """Apply ``WEBPUBSUB_LOG_LEVEL`` / ``AZURE_LOG_LEVEL`` to the SDK logger (once per process).

    When logging is otherwise unconfigured (no handler on the root or SDK logger), a stderr
    handler is attached so the records are visible, like the JS SDK's logger.

    Args:
        environ: the environment to read (default ``os.environ``).
        force: apply even if an earlier client already did.

    Returns:
        The level applied, or None when no variable names a known level.
    """
    global _configured, _handler
    if _configured and not force:
        return None
    _configured = True
    env = os.environ if environ is None else environ
    level = None
    for name in ENV_VARS:
        value = env.get(name, "").strip().lower()
        if value in LEVELS:
            level = LEVELS[value]
            break
    if level is None:
        return None
    logger.setLevel(level)
    if _handler is None and not logger.handlers and not logging.getLogger().handlers:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(_handler)
    return level


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers with the values of credential-bearing ones replaced by ``REDACTED``."""
    return [
        (name, REDACTED if name.lower() in SECRET_HEADERS else value) for name, value in headers
    ]


def redact_url(url: str) -> str:
    """The URL with secret query values (``access_token``, ``sig``...) replaced."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name.lower() in SECRET_QUERY for name, _ in pairs):
        return url
    cleaned = [(n, REDACTED if n.lower() in SECRET_QUERY else v) for n, v in pairs]
    return urlunsplit(parts._replace(query=urlencode(cleaned, quote_via=quote, safe="")))
