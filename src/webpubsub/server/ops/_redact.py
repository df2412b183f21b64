"""Keep secrets out of log lines: URL query secrets, connection-string keys, URL passwords.

Secrets reach log records by routes we do not control: httpx logs every request URL (an
Azure Functions event handler URL carries ``?code=<function key>``), exception messages
quote URLs, our own warnings name the event handler URL that failed, and a Redis URL may
hold a password. Rather than trusting every call site, :class:`RedactingFilter` sits on the
service's log handlers and rewrites each record before any formatter sees it, so the rule
holds for every logger, ours and the libraries'.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"
"""What a secret is replaced with."""

SECRET_PARAMETERS = (
    "code",
    "sig",
    "signature",
    "access_token",
    "accesstoken",
    "accesskey",
    "api_key",
    "apikey",
    "key",
    "token",
    "password",
    "secret",
    "client_secret",
)
"""Query parameters (and connection-string parts) whose values are secrets, any case."""

# ``name=value`` where name is a secret parameter not preceded by a word character, so
# ``?code=``, ``&sig=``, ``;AccessKey=`` and ``AccessKey=`` match but ``zipcode=`` does not.
_PARAMETER = re.compile(
    r"(?<!\w)((?:" + "|".join(SECRET_PARAMETERS) + r")=)[^&;\s'\"<>,)\]}]+",
    re.IGNORECASE,
)
# ``scheme://user:password@host`` (``redis://:pw@host`` too): keep the user, drop the password.
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/@\s:]*:)[^/@\s]+@", re.IGNORECASE)
_BEARER = re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with secret query values, URL passwords, bearer tokens and ``secrets`` masked.

    Args:
        text: a log message, URL or exception text.
        secrets: literal strings to mask wherever they appear (the service's access keys).
    """
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    if "=" in text:
        text = _PARAMETER.sub(r"\1" + MASK, text)
    if "@" in text:
        text = _USERINFO.sub(r"\1" + MASK + "@", text)
    if "earer" in text:
        text = _BEARER.sub(r"\1" + MASK, text)
    return text


# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class RedactingFilter(logging.Filter):
    """A handler filter that masks secrets in each record's message, extras and traceback.

    Install it on a handler (not a logger: logger filters miss records propagated from child
    loggers such as ``httpx``). It never drops a record.

    Args:
        secrets: literal strings to mask anywhere (the access keys); :meth:`add_secrets`
            adds more after a reload.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Also mask these literals (keys loaded by a reload; old keys stay masked too)."""
        # Very short strings would mask ordinary words; real keys are long.
        self.secrets.update(s for s in secrets if len(s) >= 8)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format call must not leak its arguments
            message = f"{record.msg} (unformattable arguments)"
        record.msg = self.redact(str(message))
        record.args = None
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, self.redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)
