"""Values the SDK hands to callers: raw responses, group members, client access tokens."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict

from ..core.roles import Permission

__all__ = [
    "ClientAccessToken",
    "ClientProtocol",
    "GroupMember",
    "Headers",
    "Permission",
    "RawRequest",
    "RawResponse",
]


class ClientProtocol(StrEnum):
    """Which client endpoint a client access token is for (spec 3.1)."""

    DEFAULT = "default"
    """Web PubSub clients: ``/client/hubs/{hub}``."""
    MQTT = "mqtt"
    """MQTT over WebSocket: ``/clients/mqtt/hubs/{hub}``."""
    SOCKETIO = "socketio"
    """Socket.IO: ``/clients/socketio/hubs/{hub}``."""

    @classmethod
    def parse(cls, value: str | ClientProtocol) -> ClientProtocol:
        """The protocol named by ``value``, case-insensitively (``"MQTT"``, ``"SocketIO"``).

        Raises:
            ValueError: for any other name.
        """
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(
                f"Unknown client_protocol {value!r}: use 'default', 'mqtt' or 'socketio'."
            ) from None

    @property
    def client_type(self) -> str:
        """The ``clientType`` query value of ``:generateToken`` (swagger casing)."""
        return {"default": "Default", "mqtt": "MQTT", "socketio": "SocketIO"}[self.value]


class ClientAccessToken(TypedDict):
    """What :meth:`WebPubSubServiceClient.get_client_access_token` returns.

    ``baseUrl`` is the client endpoint (``wss://host/client/hubs/chat``), ``url`` the same with
    ``?access_token=<token>``: hand ``url`` to a WebSocket client.
    """

    token: str
    baseUrl: str
    url: str


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One connection in a group, as listed by ``group(name).list_connections()``."""

    connection_id: str
    user_id: str | None = None


class Headers(Mapping[str, str]):
    """A read-only, case-insensitive view of HTTP headers (repeated names joined by ``, ``)."""

    __slots__ = ("_items", "_map")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = tuple(items)
        merged: dict[str, tuple[str, str]] = {}
        for name, value in self._items:
            key = name.lower()
            if key in merged:
                merged[key] = (merged[key][0], f"{merged[key][1]}, {value}")
            else:
                merged[key] = (name, value)
        self._map = merged

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._map.values())

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def raw_items(self) -> tuple[tuple[str, str], ...]:
        """Every header as sent, in order, repeats kept."""
        return self._items

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True, slots=True)
class RawRequest:
    """The request as it went on the wire (``Authorization`` shown as ``REDACTED``)."""

    method: str
    url: str
    headers: Headers
    body: bytes = field(repr=False, default=b"")


@dataclass(frozen=True, slots=True)
class RawResponse:
    """The HTTP response of one call, given to ``on_response`` callbacks and carried by errors.

    Attributes:
        status_code: the HTTP status.
        headers: the response headers (case-insensitive).
        body: the response body (empty for most operations).
        request: the request that produced it.
        reason_phrase: the status text (``Accepted``).
    """

    status_code: int
    headers: Headers
    body: bytes
    request: RawRequest
    reason_phrase: str = ""

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: when the body is not JSON.
        """
        return json.loads(self.body)

    @property
    def is_success(self) -> bool:
        """True for 2xx statuses."""
        return 200 <= self.status_code < 300
