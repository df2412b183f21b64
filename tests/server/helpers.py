"""Shared helpers for the end-to-end tests of the running service (tests/server, tests/compat).

Everything here talks to a real ``ServiceThread`` over real sockets:

* tokens: :func:`sign_rest`, :func:`client_token` (PyJWT) and :func:`forge_token` (hand-made
  JWS, for headers PyJWT refuses to produce);
* REST: :func:`rest_url`, :func:`rest_call` (httpx, signed per request like the SDKs do),
  :func:`assert_error_detail`;
* raw HTTP: :func:`raw_http` and :func:`parse_http_response` for bytes no HTTP client sends;
* WebSockets: :func:`client_url`, :class:`JsonClient` (a small ``json.webpubsub.azure.v1``
  client), :func:`connect_json`, :func:`connect_raw`, :func:`refused_handshake`;
* waiting: :func:`wait_until` / :func:`async_wait_until` poll a condition with a deadline
  (tests never sleep for a fixed time), :func:`hub_snapshot` reads state on the service loop.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import http.client as http_client
import json
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Response

from tests.conftest import ACCESS_KEY
from webpubsub.testing import ServiceThread

API_VERSION = "2024-12-01"
JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"
TIMEOUT = 5.0
"""Upper bound for one expected effect (a frame, a state change); never a fixed wait."""

Query = Sequence[tuple[str, str]]

# -- tokens -------------------------------------------------------------------------------


def sign(claims: Mapping[str, Any], key: str = ACCESS_KEY, algorithm: str = "HS256") -> str:
    """An HS* JWT over ``claims`` with the UTF-8 bytes of ``key`` (spec 2.1)."""
    return jwt.encode(dict(claims), key.encode("utf-8"), algorithm=algorithm)


def sign_rest(
    audience: str,
    key: str = ACCESS_KEY,
    *,
    lifetime: int = 60,
    iat: bool = False,
    **claims: Any,
) -> str:
    """A REST bearer token as the Python SDK makes it (``aud``, ``exp``; ``iat`` optional)."""
    now = int(time.time())
    body: dict[str, Any] = {"aud": audience, "exp": now + lifetime}
    if iat:
        body["iat"] = now
    body.update(claims)
    return sign(body, key)


def client_audience(service: ServiceThread, hub: str) -> str:
    return f"{service.endpoint}/client/hubs/{hub}"


def client_token(
    service: ServiceThread,
    hub: str,
    *,
    user_id: str | None = None,
    roles: Iterable[str] = (),
    groups: Iterable[str] = (),
    key: str = ACCESS_KEY,
    lifetime: int = 3600,
    audience: str | None = None,
    **claims: Any,
) -> str:
    """A client access token with the claims of spec 3.2."""
    now = int(time.time())
    body: dict[str, Any] = {
        "aud": audience or client_audience(service, hub),
        "iat": now,
        "exp": now + lifetime,
    }
    if user_id is not None:
        body["sub"] = user_id
    if roles := list(roles):
        body["role"] = roles
    if groups := list(groups):
        body["webpubsub.group"] = groups
    body.update(claims)
    return sign(body, key)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge_token(
    header: Mapping[str, Any],
    claims: Mapping[str, Any],
    key: str | bytes | None = ACCESS_KEY,
    digest: Callable[..., Any] = hashlib.sha256,
) -> str:
    """A JWS assembled by hand: any header, HMAC with ``digest`` (no signature if no key)."""
    encoded = [_b64url(json.dumps(dict(part)).encode()) for part in (header, claims)]
    signing_input = ".".join(encoded)
    signature = b""
    if key is not None:
        secret = key.encode("utf-8") if isinstance(key, str) else key
        signature = hmac.new(secret, signing_input.encode("ascii"), digest).digest()
    return signing_input + "." + _b64url(signature)


# -- REST ---------------------------------------------------------------------------------


@functools.cache
def http() -> httpx.Client:
    """One keep-alive HTTP client shared by the tests (far cheaper than one per request)."""
    return httpx.Client(timeout=TIMEOUT, trust_env=False)


def rest_url(
    service: ServiceThread,
    path: str,
    query: Query = (),
    *,
    api_version: str | None = API_VERSION,
    endpoint: str | None = None,
) -> str:
    """``endpoint + path + ?query`` with ``api-version`` last (the Python SDK's order)."""
    params = list(query)
    if api_version is not None:
        params.append(("api-version", api_version))
    url = (endpoint or service.endpoint).rstrip("/") + path
    return f"{url}?{urlencode(params, quote_via=quote)}" if params else url


def rest_call(
    service: ServiceThread,
    method: str,
    path: str,
    *,
    query: Query = (),
    content: bytes | None = None,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    token: str | None = None,
    auth: bool = True,
    key: str = ACCESS_KEY,
) -> httpx.Response:
    """One REST request; unless ``auth`` is False it carries a bearer token for its URL
    (``token``, or one signed with ``key`` whose ``aud`` is the full request URL)."""
    url = rest_url(service, path, query)
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    if auth:
        all_headers["Authorization"] = "Bearer " + (token or sign_rest(url, key))
    return http().request(method, url, content=content, headers=all_headers)


def rest_send(
    service: ServiceThread,
    hub: str,
    to: str = "",
    data: bytes = b"marker",
    content_type: str = "text/plain",
    query: Query = (),
) -> httpx.Response:
    """POST a message to ``to``: "" (all), ``groups/<g>``, ``users/<u>``, ``connections/<c>``."""
    path = f"/api/hubs/{hub}/{to + '/' if to else ''}:send"
    return rest_call(service, "POST", path, query=query, content=data, content_type=content_type)


def assert_error_detail(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is ``status`` with an ``ErrorDetail`` body and ``x-ms-error-code``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert response.headers.get("x-ms-error-code") == body["code"], response.headers
    return body


def group_exists(service: ServiceThread, hub: str, group: str) -> bool:
    return _exists(rest_call(service, "HEAD", f"/api/hubs/{hub}/groups/{quote(group, safe='')}"))


def user_exists(service: ServiceThread, hub: str, user_id: str) -> bool:
    return _exists(rest_call(service, "HEAD", f"/api/hubs/{hub}/users/{quote(user_id, safe='')}"))


def connection_exists(service: ServiceThread, hub: str, connection_id: str) -> bool:
    path = f"/api/hubs/{hub}/connections/{quote(connection_id, safe='')}"
    return _exists(rest_call(service, "HEAD", path))


def _exists(response: httpx.Response) -> bool:
    assert response.status_code in (200, 404), response.status_code
    return response.status_code == 200


def health_ok(service: ServiceThread) -> bool:
    """The service answers a fresh connection (unauthenticated health probe)."""
    connection = http_client.HTTPConnection(
        service.settings.host, service.settings.port, timeout=TIMEOUT
    )
    try:
        connection.request("HEAD", "/api/health")
        return connection.getresponse().status == 200
    finally:
        connection.close()


# -- raw HTTP -----------------------------------------------------------------------------


def raw_http(service: ServiceThread, *chunks: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send ``chunks`` on a fresh TCP connection and read until the server closes it.

    Send errors are ignored: a server refusing a large body may reset the connection while
    we are still writing, and what it answered before that is still readable.
    """
    with socket.create_connection(
        (service.settings.host, service.settings.port), timeout=timeout
    ) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass
        received = bytearray()
        try:
            while data := sock.recv(65536):
                received += data
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(
                f"the service did not close the connection within {timeout} s; "
                f"received {bytes(received[:300])!r}"
            ) from None
        return bytes(received)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_http_response(raw: bytes) -> RawResponse:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = lines[0].split(" ", 2)
    assert version.startswith("HTTP/1."), lines[0]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(body)))
    return RawResponse(int(status), headers, body[:length])


def assert_raw_error(response: RawResponse, status: int) -> dict[str, Any]:
    """Like :func:`assert_error_detail`, for a raw response."""
    assert response.status == status, (response.status, response.body[:300])
    body = response.json()
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert response.headers.get("x-ms-error-code") == body["code"], response.headers
    return body


# -- waiting ------------------------------------------------------------------------------


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = TIMEOUT, interval: float = 0.01
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(
    condition: Callable[[], bool], what: str, timeout: float = TIMEOUT, interval: float = 0.01
) -> None:
    """:func:`wait_until` for async tests.

    ``condition`` runs in a worker thread, so it may block (REST calls, ``service.call``)
    without stalling the test's own WebSocket clients.
    """
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class HubSnapshot:
    """Connections, users and groups of one hub as the service's node sees them."""

    connections: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)


def hub_snapshot(service: ServiceThread, hub: str) -> HubSnapshot:
    """Read a hub's state on the service loop (hub names are case-insensitive)."""

    def read() -> HubSnapshot:
        found = service.service.node.hubs.get(hub.lower())
        if found is None:
            return HubSnapshot()
        return HubSnapshot(
            frozenset(found.connections),
            frozenset(found.users),
            {name: frozenset(members) for name, members in found.groups.items()},
        )

    return service.call(read)


# -- WebSocket clients --------------------------------------------------------------------


def client_url(
    service: ServiceThread,
    hub: str,
    *,
    token: str | None = None,
    query: Query = (),
    path: str | None = None,
) -> str:
    """``ws://host:port/client/hubs/{hub}?access_token=...&query``."""
    params = list(query)
    if token is not None:
        params.insert(0, ("access_token", token))
    base = "ws" + service.endpoint[len("http") :] + (path or f"/client/hubs/{hub}")
    return f"{base}?{urlencode(params)}" if params else base


class JsonClient:
    """A small ``json.webpubsub.azure.v1`` client: send requests, await acks and messages.

    Frames that arrive while waiting for an ack are kept, in order, for :meth:`receive`.
    """

    def __init__(self, ws: ClientConnection, connected: dict[str, Any]) -> None:
        self.ws = ws
        self.connected = connected
        self.connection_id: str = connected["connectionId"]
        self.user_id: str | None = connected.get("userId")
        self._inbox: list[dict[str, Any]] = []
        self._last_ack_id = 0

    async def __aenter__(self) -> JsonClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.ws.close()

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def _read(self, timeout: float) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        message = json.loads(frame)
        assert isinstance(message, dict), message
        return message

    async def receive(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame (kept ones first), parsed."""
        if self._inbox:
            return self._inbox.pop(0)
        return await self._read(timeout)

    async def request(self, message: Mapping[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
        """Send ``message`` with a fresh ``ackId`` (unless it has one) and return its ack."""
        body = dict(message)
        if "ackId" not in body:
            self._last_ack_id += 1
            body["ackId"] = self._last_ack_id
        await self.send(body)
        return await self.ack(body["ackId"], timeout)

    async def ack(self, ack_id: int, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait for the ack of ``ack_id``, keeping other frames for :meth:`receive`."""
        for i, kept in enumerate(self._inbox):
            if kept.get("type") == "ack" and kept.get("ackId") == ack_id:
                return self._inbox.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            message = await self._read(max(0.0, deadline - time.monotonic()))
            if message.get("type") == "ack" and message.get("ackId") == ack_id:
                return message
            self._inbox.append(message)

    async def join(self, group: str) -> dict[str, Any]:
        return await self.request({"type": "joinGroup", "group": group})

    async def leave(self, group: str) -> dict[str, Any]:
        return await self.request({"type": "leaveGroup", "group": group})

    async def publish(
        self, group: str, data: Any, data_type: str = "json", *, no_echo: bool = False
    ) -> dict[str, Any]:
        return await self.request(
            {
                "type": "sendToGroup",
                "group": group,
                "dataType": data_type,
                "data": data,
                "noEcho": no_echo,
            }
        )

    async def until_closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str, list[Any]]:
        """Read until the service closes: (close code, reason, frames received before)."""
        frames: list[Any] = list(self._inbox)
        self._inbox.clear()
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = max(0.0, deadline - time.monotonic())
                frame = await asyncio.wait_for(self.ws.recv(), remaining)
                frames.append(json.loads(frame) if isinstance(frame, str) else frame)
        except ConnectionClosed:
            pass
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else ""), frames


async def connect_json(
    service: ServiceThread,
    hub: str,
    *,
    user_id: str | None = None,
    roles: Iterable[str] = (),
    groups: Iterable[str] = (),
    token: str | None = None,
    query: Query = (),
    headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] = (JSON_SUBPROTOCOL,),
    url: str | None = None,
) -> JsonClient:
    """Open a JSON-subprotocol client and wait for its ``connected`` system message.

    Without ``url`` it connects to the hub with ``token`` (default: one minted from
    ``user_id``/``roles``/``groups``) in ``access_token`` plus ``query``.
    """
    if url is None:
        if token is None:
            token = client_token(service, hub, user_id=user_id, roles=roles, groups=groups)
        url = client_url(service, hub, token=token, query=query)
    return await open_json_url(url, headers=headers, subprotocols=subprotocols)


async def open_json_url(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] = (JSON_SUBPROTOCOL,),
) -> JsonClient:
    """Open a JSON-subprotocol client on a full client URL (e.g. one an SDK built)."""
    ws = await connect(
        url,
        subprotocols=list(subprotocols),  # type: ignore[misc]
        additional_headers=dict(headers or {}),
        open_timeout=TIMEOUT,
    )
    frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
    connected = json.loads(frame)
    assert connected.get("type") == "system" and connected.get("event") == "connected", connected
    return JsonClient(ws, connected)


async def connect_raw(
    service: ServiceThread,
    hub: str,
    *,
    user_id: str | None = None,
    roles: Iterable[str] = (),
    groups: Iterable[str] = (),
    token: str | None = None,
    query: Query = (),
    headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] = (),
) -> ClientConnection:
    """Open a simple WebSocket client (no predefined subprotocol); it gets no greeting."""
    if token is None:
        token = client_token(service, hub, user_id=user_id, roles=roles, groups=groups)
    return await connect(
        client_url(service, hub, token=token, query=query),
        subprotocols=list(subprotocols) or None,  # type: ignore[arg-type]
        additional_headers=dict(headers or {}),
        open_timeout=TIMEOUT,
    )


async def refused_handshake(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Attempt an upgrade that must be refused; return the service's HTTP response."""
    try:
        ws = await connect(
            url,
            subprotocols=list(subprotocols) or None,  # type: ignore[arg-type]
            additional_headers=dict(headers or {}),
            open_timeout=TIMEOUT,
        )
    except InvalidStatus as exc:
        return exc.response
    await ws.close()
    raise AssertionError(f"the handshake to {url[:120]} was accepted")


def assert_refused(response: Response, status: int) -> dict[str, Any]:
    """A refused upgrade: ``status`` with an ``ErrorDetail`` body and ``x-ms-error-code``."""
    assert response.status_code == status, (response.status_code, response.body)
    body = json.loads(response.body or b"null")
    assert isinstance(body, dict), response.body
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert response.headers.get("x-ms-error-code") == body["code"], response.headers
    return body


async def close_all(clients: Iterable[JsonClient | ClientConnection]) -> None:
    """Close clients, ignoring ones the service already closed."""
    await asyncio.gather(
        *(c.close() for c in clients),
        return_exceptions=True,
    )
