"""Connection strings and endpoints (spec 2.2).

``Endpoint=https://<host>[:port][/prefix];AccessKey=<key>;Version=1.0;[Port=<n>;]``

Keys are case-insensitive and ``;``-separated; a value is everything after the first ``=`` (keys
may hold ``=``). An endpoint without a scheme gets ``https://``; ``Port`` replaces the port of
``Endpoint`` (the JS and .NET behaviour; Python's append-the-port bug is not reproduced).
Error messages never echo the string: it holds the access key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from ._errors import ConnectionStringError

__all__ = ["ConnectionString", "normalize_endpoint", "parse_connection_string"]


@dataclass(frozen=True, slots=True)
class ConnectionString:
    """The parts of a connection string the SDK uses.

    Attributes:
        endpoint: normalised endpoint: ``scheme://host[:port][/prefix]`` with no trailing ``/``.
        access_key: the key that signs REST and client tokens.
        version: the ``Version`` value, if any (``1.0``).
    """

    endpoint: str
    access_key: str = field(repr=False)
    version: str | None = None


def parse_connection_string(connection_string: str) -> ConnectionString:
    """Parse a Web PubSub connection string.

    Args:
        connection_string: e.g. ``Endpoint=http://127.0.0.1:8080;AccessKey=...;Version=1.0;``.

    Returns:
        The endpoint (with ``Port`` applied) and the access key.

    Raises:
        ConnectionStringError: for an empty string, a segment without ``=``, a repeated key,
            a missing ``Endpoint`` or ``AccessKey``, an invalid ``Port`` or endpoint URL.
    """
    if not isinstance(connection_string, str):
        raise ConnectionStringError(
            f"The connection string must be a str, not {type(connection_string).__name__}."
        )
    values: dict[str, str] = {}
    segments = [s.strip() for s in connection_string.split(";")]
    for index, segment in enumerate(segments, start=1):
        if not segment:
            continue
        name, sep, value = segment.partition("=")
        key = name.strip().lower()
        if not sep or not key:
            raise ConnectionStringError(
                f"Malformed connection string: segment {index} is not of the form Name=Value. "
                "Expected 'Endpoint=https://<host>;AccessKey=<key>;Version=1.0;'."
            )
        if key in values:
            raise ConnectionStringError(
                f"Malformed connection string: '{name.strip()}' appears more than once."
            )
        values[key] = value.strip()
    missing = [
        name
        for name, key in (("Endpoint", "endpoint"), ("AccessKey", "accesskey"))
        if not values.get(key)
    ]
    if missing:
        hint = ""
        if missing == ["AccessKey"]:
            hint = (
                " For Microsoft Entra ID, construct the client with the endpoint and a token "
                "credential instead."
            )
        raise ConnectionStringError(
            f"The connection string lacks {' and '.join(missing)}: expected "
            f"'Endpoint=https://<host>;AccessKey=<key>;Version=1.0;'.{hint}"
        )
    port: int | None = None
    if "port" in values:
        raw_port = values["port"]
        if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
            raise ConnectionStringError(
                f"Invalid Port in the connection string: {raw_port[:10]!r} is not 1..65535."
            )
        port = int(raw_port)
    try:
        endpoint = normalize_endpoint(values["endpoint"], port=port)
    except ValueError as exc:
        raise ConnectionStringError(f"Invalid Endpoint in the connection string: {exc}") from None
    return ConnectionString(endpoint, values["accesskey"], values.get("version"))


def normalize_endpoint(endpoint: str, *, port: int | None = None) -> str:
    """``scheme://host[:port][/prefix]``: https when no scheme, ``port`` replacing any port.

    Args:
        endpoint: the service URL, e.g. ``https://contoso.webpubsub.azure.com``.
        port: a port to force (the connection string's ``Port``).

    Returns:
        The endpoint without a trailing ``/``, query or fragment; host casing is kept.

    Raises:
        ValueError: when the URL is not http(s) or has no host.
    """
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ValueError("the endpoint must be a non-empty URL such as https://<host>")
    text = endpoint.strip()
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        existing_port = parts.port
    except ValueError as exc:
        raise ValueError(f"{endpoint[:200]!r} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{endpoint[:200]!r} must use http:// or https://")
    host = parts.hostname
    if not host:
        raise ValueError(f"{endpoint[:200]!r} has no host")
    # Keep the host as written (hostname is lower-cased by urlsplit).
    netloc = parts.netloc.rpartition("@")[2]
    if netloc.startswith("["):
        host_text = netloc[: netloc.index("]") + 1]
    else:
        host_text = netloc.rsplit(":", 1)[0] if existing_port is not None else netloc
        host_text = host_text.rstrip(":")
    chosen = port if port is not None else existing_port
    netloc = f"{host_text}:{chosen}" if chosen is not None else host_text
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, "", ""))
