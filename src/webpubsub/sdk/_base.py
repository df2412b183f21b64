"""What the sync and asyncio clients share: turning calls into requests, and responses into
results (style point 12).

A public method becomes an :class:`Operation` (method, path, query, body) built here.
:meth:`BaseServiceClient._send_flow` then signs, logs and retries it as a generator that
yields what it needs (send this request, fetch an Entra token, sleep); the sync and asyncio
clients drive that generator with their own I/O and hand the final response back here to be
interpreted. Nothing in this module does I/O.
"""

from __future__ import annotations

import functools
import logging
import platform
import ssl
import time
import uuid
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx

from .. import __version__
from ..auth.tokens import client_audience, client_url, mint_client_token, mint_rest_token
from ..core.metadata import MetadataError, check_pairs
from ..core.names import HUB_PATTERN, group_name_problem
from ..core.roles import Permission, parse_permission
from ._connection_string import normalize_endpoint
from ._content import encode_message
from ._credentials import ENTRA_SCOPE, KeyCredential, TokenCache
from ._errors import HttpResponseError, ServiceResponseError, error_for, map_transport_error
from ._logging import configure_from_environment, logger, redact_headers, redact_url
from ._models import (
    ClientAccessToken,
    ClientProtocol,
    GroupMember,
    Headers,
    RawRequest,
    RawResponse,
)
from ._retry import RetryPolicy

__all__ = ["API_VERSION", "NEED_BEARER", "BaseServiceClient", "Flow", "Operation", "Sleep"]

API_VERSION: Final = "2024-12-01"
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
USER_AGENT: Final = (
    f"webpubsub-python/{__version__} Python/{platform.python_version()} ({platform.system()})"
)


@dataclass(frozen=True, slots=True)
class Sleep:
    """A step of :meth:`BaseServiceClient._send_flow`: wait before the next attempt."""

    seconds: float


class _NeedBearer:
    """A step of :meth:`BaseServiceClient._send_flow`: fetch an Entra ID token."""

    def __repr__(self) -> str:
        return "NEED_BEARER"


NEED_BEARER: Final = _NeedBearer()

FlowStep = httpx.Request | Sleep | _NeedBearer
FlowReply = httpx.Response | httpx.HTTPError | str | None
Flow = Generator[FlowStep, Any, "RawResponse"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One REST call before authentication: what the service is asked.

    Attributes:
        name: the SDK method, for logs.
        method: HTTP method.
        path: percent-encoded path below the endpoint (``/api/hubs/chat/users/u%201/:send``).
        query: decoded query pairs in send order; repeated keys for arrays (spec 1.1).
        body: request body, if any.
        content_type: its Content-Type.
        exists: a HEAD check: 200 means True, 404 means False (spec 1.1).
        is_send: a ``:send`` (see ``RetryPolicy.retry_sends``).
        accept: the ``Accept`` header (``*/*`` for HEAD, as the Python SDK sends).
    """

    name: str
    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: bytes | None = field(default=None, repr=False)
    content_type: str | None = None
    exists: bool = False
    is_send: bool = False
    accept: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()  # extra request headers (metadata)


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every client: building one costs ~50 ms (CA bundle)."""
    return httpx.create_ssl_context()


def _segment(value: str) -> str:
    """One path parameter, percent-encoded (``/`` too: ``user/1`` -> ``user%2F1``)."""
    return quote(value, safe="")


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}.")
    if not value:
        raise ValueError(f"{what} must not be empty.")
    return value


def check_group(name: object) -> str:
    """A valid group name (1..1024 characters, not only whitespace), or ValueError."""
    problem = group_name_problem(name)
    if problem:
        if not isinstance(name, str):
            raise TypeError(problem)
        raise ValueError(problem)
    assert isinstance(name, str)
    return name


def _strings(values: Iterable[str] | None, what: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        raise TypeError(f"{what} must be a list of strings, not a single str.")
    result = list(values)
    for value in result:
        if not isinstance(value, str):
            raise TypeError(f"{what} must hold strings, not {type(value).__name__}.")
    return result


def to_permission(permission: str | Permission) -> Permission:
    """``"sendToGroup"`` / ``"joinLeaveGroup"`` (any case) or the enum, as the enum."""
    if isinstance(permission, Permission):
        return permission
    parsed = parse_permission(permission) if isinstance(permission, str) else None
    if parsed is None:
        raise ValueError(
            f"Unknown permission {permission!r}: use 'sendToGroup' or 'joinLeaveGroup' "
            "(or webpubsub.Permission)."
        )
    return parsed


def resolve_retry(retry: RetryPolicy | bool | None) -> RetryPolicy:
    if retry is None or retry is True:
        return RetryPolicy()
    if retry is False:
        return RetryPolicy.disabled()
    if isinstance(retry, RetryPolicy):
        return retry
    raise TypeError("retry must be a RetryPolicy, True or False.")


class BaseServiceClient:
    """Construction, request building and response interpretation for both clients."""

    def __init__(
        self,
        endpoint: str,
        credential: object,
        *,
        hub: str,
        api_version: str = API_VERSION,
        reverse_proxy_endpoint: str | None = None,
        retry: RetryPolicy | bool | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        user_agent: str | None = None,
    ) -> None:
        configure_from_environment()
        try:
            self._endpoint = normalize_endpoint(endpoint)
        except ValueError as exc:
            raise ValueError(f"Invalid endpoint: {exc}") from None
        if not isinstance(hub, str) or not HUB_PATTERN.fullmatch(hub):
            raise ValueError(
                f"Invalid hub name {hub!r}: it must start with a letter and hold at most 128 "
                "letters, digits or the characters _`,.[]"
            )
        self._hub = hub
        if not isinstance(api_version, str) or not api_version:
            raise ValueError("api_version must be a non-empty string such as '2024-12-01'.")
        self._api_version = api_version
        self._proxy: str | None = None
        if reverse_proxy_endpoint is not None:
            try:
                self._proxy = normalize_endpoint(reverse_proxy_endpoint)
            except ValueError as exc:
                raise ValueError(f"Invalid reverse_proxy_endpoint: {exc}") from None
        self._retry = resolve_retry(retry)
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._user_agent = f"{user_agent} {USER_AGENT}" if user_agent else USER_AGENT
        self._key_credential: KeyCredential | None = None
        self._token_credential: Any = None
        if isinstance(credential, KeyCredential) and isinstance(
            getattr(credential, "key", None), str
        ):
            self._key_credential = credential
        elif callable(getattr(credential, "get_token", None)):
            self._token_credential = credential
        else:
            raise TypeError(
                "credential must be an AzureKeyCredential (access key) or a token credential "
                f"with get_token(*scopes) (Microsoft Entra ID), not {type(credential).__name__}."
            )
        self._token_cache = TokenCache()

    # -- properties ----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The service endpoint (``https://<name>.webpubsub.azure.com``), no trailing ``/``."""
        return self._endpoint

    @property
    def hub(self) -> str:
        """The hub every call of this client addresses."""
        return self._hub

    @property
    def api_version(self) -> str:
        """The ``api-version`` sent with every call."""
        return self._api_version

    @property
    def reverse_proxy_endpoint(self) -> str | None:
        """Where requests are sent instead of the endpoint (e.g. Azure API Management)."""
        return self._proxy

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy of this client."""
        return self._retry

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self._endpoint!r}, hub={self._hub!r})"

    # -- operations (spec 1.2) -------------------------------------------------------------

    @property
    def _hub_path(self) -> str:
        return f"/api/hubs/{_segment(self._hub)}"

    def _query(self, *pairs: tuple[str, object]) -> tuple[tuple[str, str], ...]:
        """``api-version`` first, then every given value; lists repeat their key."""
        result = [("api-version", self._api_version)]
        for name, value in pairs:
            if value is None or value == "":
                continue
            if isinstance(value, list | tuple):
                result.extend((name, str(v)) for v in value)
            elif isinstance(value, bool):
                result.append((name, "true" if value else "false"))
            else:
                result.append((name, str(value)))
        return tuple(result)

    def _send_op(
        self,
        name: str,
        path: str,
        message: object,
        content_type: str | None,
        *,
        excluded: Sequence[str] | None = None,
        filter: str | None = None,
        message_ttl_seconds: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Operation:
        body, content_type = encode_message(message, content_type)
        headers = _metadata_headers(metadata)
        excluded_ids = _strings(excluded, "excluded")
        if filter is not None and not isinstance(filter, str):
            raise TypeError("filter must be a str (build one with webpubsub.odata).")
        if message_ttl_seconds is not None and (
            isinstance(message_ttl_seconds, bool)
            or not isinstance(message_ttl_seconds, int)
            or message_ttl_seconds < 0
        ):
            raise ValueError("message_ttl_seconds must be an int >= 0 (the service allows 0..300).")
        query = self._query(
            ("excluded", excluded_ids),
            ("filter", filter),
            ("messageTtlSeconds", message_ttl_seconds),
        )
        return Operation(
            name,
            "POST",
            path,
            query,
            body=body,
            content_type=content_type,
            is_send=True,
            headers=headers,
        )

    def _op_send_to_all(
        self,
        message: object,
        content_type: str | None,
        excluded: Sequence[str] | None,
        filter: str | None,
        message_ttl_seconds: int | None,
        metadata: Mapping[str, str] | None = None,
    ) -> Operation:
        return self._send_op(
            "send_to_all",
            f"{self._hub_path}/:send",
            message,
            content_type,
            excluded=excluded,
            filter=filter,
            message_ttl_seconds=message_ttl_seconds,
            metadata=metadata,
        )

    def _op_send_to_user(
        self,
        user_id: str,
        message: object,
        content_type: str | None,
        filter: str | None,
        message_ttl_seconds: int | None,
        metadata: Mapping[str, str] | None = None,
    ) -> Operation:
        user = _segment(_check_id(user_id, "user_id"))
        return self._send_op(
            "send_to_user",
            f"{self._hub_path}/users/{user}/:send",
            message,
            content_type,
            filter=filter,
            message_ttl_seconds=message_ttl_seconds,
            metadata=metadata,
        )

    def _op_send_to_connection(
        self,
        connection_id: str,
        message: object,
        content_type: str | None,
        message_ttl_seconds: int | None,
        metadata: Mapping[str, str] | None = None,
    ) -> Operation:
        conn = _segment(_check_id(connection_id, "connection_id"))
        return self._send_op(
            "send_to_connection",
            f"{self._hub_path}/connections/{conn}/:send",
            message,
            content_type,
            message_ttl_seconds=message_ttl_seconds,
            metadata=metadata,
        )

    def _op_send_to_group(
        self,
        group: str,
        message: object,
        content_type: str | None,
        excluded: Sequence[str] | None,
        filter: str | None,
        message_ttl_seconds: int | None,
        metadata: Mapping[str, str] | None = None,
    ) -> Operation:
        return self._send_op(
            "group.send_to_all",
            f"{self._hub_path}/groups/{_segment(check_group(group))}/:send",
            message,
            content_type,
            excluded=excluded,
            filter=filter,
            message_ttl_seconds=message_ttl_seconds,
            metadata=metadata,
        )

    def _op_exists(self, kind: str, value: str) -> Operation:
        if kind == "groups":
            name = check_group(value)
        else:
            name = _check_id(value, "user_id" if kind == "users" else "connection_id")
        path = f"{self._hub_path}/{kind}/{_segment(name)}"
        op_name = {"groups": "group_exists", "users": "user_exists"}.get(kind, "connection_exists")
        return Operation(op_name, "HEAD", path, self._query(), exists=True, accept="*/*")

    def _op_close(
        self,
        name: str,
        path: str,
        excluded: Sequence[str] | None,
        reason: str | None,
    ) -> Operation:
        if reason is not None and not isinstance(reason, str):
            raise TypeError("reason must be a str.")
        query = self._query(("excluded", _strings(excluded, "excluded")), ("reason", reason))
        return Operation(name, "POST", path, query)

    def _op_close_all(self, excluded: Sequence[str] | None, reason: str | None) -> Operation:
        return self._op_close(
            "close_all_connections", f"{self._hub_path}/:closeConnections", excluded, reason
        )

    def _op_close_user(
        self, user_id: str, excluded: Sequence[str] | None, reason: str | None
    ) -> Operation:
        user = _segment(_check_id(user_id, "user_id"))
        path = f"{self._hub_path}/users/{user}/:closeConnections"
        return self._op_close("close_user_connections", path, excluded, reason)

    def _op_close_group(
        self, group: str, excluded: Sequence[str] | None, reason: str | None
    ) -> Operation:
        path = f"{self._hub_path}/groups/{_segment(check_group(group))}/:closeConnections"
        return self._op_close("group.close_all_connections", path, excluded, reason)

    def _op_close_connection(self, connection_id: str, reason: str | None) -> Operation:
        conn = _segment(_check_id(connection_id, "connection_id"))
        if reason is not None and not isinstance(reason, str):
            raise TypeError("reason must be a str.")
        return Operation(
            "close_connection",
            "DELETE",
            f"{self._hub_path}/connections/{conn}",
            self._query(("reason", reason)),
        )

    def _op_user_group(self, method: str, group: str, user_id: str) -> Operation:
        user = _segment(_check_id(user_id, "user_id"))
        path = f"{self._hub_path}/users/{user}/groups/{_segment(check_group(group))}"
        name = "group.add_user" if method == "PUT" else "group.remove_user"
        return Operation(name, method, path, self._query())

    def _op_connection_group(self, method: str, group: str, connection_id: str) -> Operation:
        conn = _segment(_check_id(connection_id, "connection_id"))
        path = f"{self._hub_path}/groups/{_segment(check_group(group))}/connections/{conn}"
        name = "group.add_connection" if method == "PUT" else "group.remove_connection"
        return Operation(name, method, path, self._query())

    def _op_remove_user_from_all_groups(self, user_id: str) -> Operation:
        user = _segment(_check_id(user_id, "user_id"))
        return Operation(
            "remove_user_from_all_groups",
            "DELETE",
            f"{self._hub_path}/users/{user}/groups",
            self._query(),
        )

    def _op_remove_connection_from_all_groups(self, connection_id: str) -> Operation:
        conn = _segment(_check_id(connection_id, "connection_id"))
        return Operation(
            "remove_connection_from_all_groups",
            "DELETE",
            f"{self._hub_path}/connections/{conn}/groups",
            self._query(),
        )

    def _op_connections_to_groups(
        self, action: str, groups: Iterable[str], filter: str | None
    ) -> Operation:
        names = [check_group(g) for g in _strings(groups, "groups")]
        if not names:
            raise ValueError("groups must name at least one group.")
        if filter is not None and not isinstance(filter, str):
            raise TypeError("filter must be a str (build one with webpubsub.odata).")
        payload: dict[str, Any] = {"groups": names}
        if filter is not None:
            payload["filter"] = filter
        body, content_type = encode_message(payload, None)
        name = (
            "add_connections_to_groups"
            if action == "addToGroups"
            else ("remove_connections_from_groups")
        )
        return Operation(
            name,
            "POST",
            f"{self._hub_path}/:{action}",
            self._query(),
            body=body,
            content_type=content_type,
        )

    def _op_permission(
        self,
        method: str,
        permission: str | Permission,
        connection_id: str,
        target_name: str | None,
    ) -> Operation:
        perm = to_permission(permission)
        conn = _segment(_check_id(connection_id, "connection_id"))
        if target_name is not None:
            check_group(target_name)
        path = f"{self._hub_path}/permissions/{perm.value}/connections/{conn}"
        name = {"PUT": "grant_permission", "DELETE": "revoke_permission"}.get(
            method, "has_permission"
        )
        exists = method == "HEAD"
        return Operation(
            name,
            method,
            path,
            self._query(("targetName", target_name)),
            exists=exists,
            accept="*/*" if exists else "application/json",
        )

    def _op_list_connections(
        self, group: str, max_page_size: int | None, top: int | None
    ) -> Operation:
        for name, value in (("max_page_size", max_page_size), ("top", top)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be an int >= 1.")
        path = f"{self._hub_path}/groups/{_segment(check_group(group))}/connections"
        query = self._query(("maxpagesize", max_page_size), ("top", top))
        return Operation("group.list_connections", "GET", path, query)

    def _parse_page(
        self, op: Operation, raw: RawResponse
    ) -> tuple[list[GroupMember], Operation | None]:
        """The members of one page and the request for the next one (spec 1.4).

        ``nextLink`` is re-based on this client's endpoint (so a reverse proxy keeps
        working) and its ``api-version`` replaced by ours, as the Python SDK does.
        """
        try:
            page = raw.json()
        except ValueError:
            raise error_for_page(raw, "the page is not JSON") from None
        if not isinstance(page, dict) or not isinstance(page.get("value"), list):
            raise error_for_page(raw, "the page has no 'value' array")
        members: list[GroupMember] = []
        for item in page["value"]:
            if not isinstance(item, dict) or not isinstance(item.get("connectionId"), str):
                raise error_for_page(raw, "a group member has no 'connectionId'")
            user_id = item.get("userId")
            members.append(
                GroupMember(item["connectionId"], user_id if isinstance(user_id, str) else None)
            )
        next_link = page.get("nextLink")
        if not isinstance(next_link, str) or not next_link:
            return members, None
        parts = urlsplit(next_link)
        path = parts.path
        prefix = urlsplit(self._endpoint).path
        if prefix and path.startswith(prefix + "/"):
            path = path[len(prefix) :]
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        query = [("api-version", self._api_version)] + [
            (k, v) for k, v in query if k != "api-version"
        ]
        next_op = Operation(op.name, "GET", path, tuple(query))
        if next_op == op:
            return members, None  # a service repeating its own link would loop forever
        return members, next_op

    # -- client access tokens (spec 3) ------------------------------------------------

    def _client_endpoint(self) -> str:
        """The endpoint as client URLs and audiences name it: scheme and host lower-cased."""
        parts = urlsplit(self._endpoint)
        return f"{parts.scheme}://{parts.netloc.lower()}{parts.path}"

    def _client_token_args(
        self,
        user_id: str | None,
        roles: Iterable[str] | None,
        groups: Iterable[str] | None,
        minutes_to_expire: int | float,
        client_protocol: str | ClientProtocol,
    ) -> tuple[str | None, list[str], list[str], int | float, ClientProtocol]:
        if user_id is not None and not isinstance(user_id, str):
            raise TypeError("user_id must be a str.")
        role_list = _strings(roles, "roles")
        group_list = [check_group(g) for g in _strings(groups, "groups")]
        if (
            isinstance(minutes_to_expire, bool)
            or not isinstance(minutes_to_expire, int | float)
            or minutes_to_expire <= 0
        ):
            raise ValueError("minutes_to_expire must be a number > 0.")
        return (
            user_id or None,
            role_list,
            group_list,
            minutes_to_expire,
            ClientProtocol.parse(client_protocol),
        )

    def _mint_client_access_token(
        self,
        key: str,
        user_id: str | None,
        roles: list[str],
        groups: list[str],
        minutes_to_expire: int | float,
        protocol: ClientProtocol,
    ) -> ClientAccessToken:
        endpoint = self._client_endpoint()
        token = mint_client_token(
            key,
            client_audience(endpoint, self._hub, protocol.value),
            user_id=user_id,
            roles=roles,
            groups=groups,
            minutes_to_expire=minutes_to_expire,
        )
        return self._client_access_token(token, protocol)

    def _client_access_token(self, token: str, protocol: ClientProtocol) -> ClientAccessToken:
        base_url = client_url(self._client_endpoint(), self._hub, protocol.value)
        return {"token": token, "baseUrl": base_url, "url": f"{base_url}?access_token={token}"}

    def _op_generate_token(
        self,
        user_id: str | None,
        roles: list[str],
        groups: list[str],
        minutes_to_expire: int | float,
        protocol: ClientProtocol,
    ) -> Operation:
        minutes = max(1, round(minutes_to_expire))
        query = self._query(
            ("userId", user_id),
            ("role", roles),
            ("minutesToExpire", minutes),
            ("group", groups),
            ("clientType", None if protocol is ClientProtocol.DEFAULT else protocol.client_type),
        )
        return Operation(
            "get_client_access_token",
            "POST",
            f"{self._hub_path}/:generateToken",
            query,
            accept="application/json, text/json",
        )

    def _token_from_response(self, raw: RawResponse, protocol: ClientProtocol) -> ClientAccessToken:
        try:
            payload = raw.json()
        except ValueError:
            payload = None
        token = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise error_for_page(raw, "the :generateToken response has no 'token'")
        return self._client_access_token(token, protocol)

    # -- requests ---------------------------------------------------------------------

    def _urls(self, op: Operation) -> tuple[str, str]:
        """(audience URL, URL to send to): the same unless a reverse proxy is configured."""
        query = urlencode(op.query, quote_via=quote, safe="")
        tail = f"{op.path}?{query}" if query else op.path
        audience = self._endpoint + tail
        return audience, (self._proxy + tail if self._proxy else audience)

    def _key_authorization(self, audience: str) -> str | None:
        """``Bearer <JWT>`` signed with the current access key, or None for token credentials."""
        if self._key_credential is None:
            return None
        # aud is the request URL on the *service* endpoint even behind a proxy (spec 2.1, 2.4).
        return "Bearer " + mint_rest_token(self._key_credential.key, audience)

    def _cached_bearer(self) -> str | None:
        token = self._token_cache.current()
        return None if token is None else "Bearer " + token

    def _access_key(self) -> str | None:
        return None if self._key_credential is None else self._key_credential.key

    _scope = ENTRA_SCOPE

    def _build_request(self, op: Operation, url: str, authorization: str) -> httpx.Request:
        headers = [
            ("Accept", op.accept),
            ("User-Agent", self._user_agent),
            ("x-ms-client-request-id", str(uuid.uuid4())),
        ]
        if op.content_type is not None:
            headers.append(("Content-Type", op.content_type))
        headers.extend(op.headers)
        headers.append(("Authorization", authorization))
        return httpx.Request(op.method, url, headers=headers, content=op.body or b"")

    def _raw_response(self, request: httpx.Request, response: httpx.Response) -> RawResponse:
        raw_request = RawRequest(
            request.method,
            str(request.url),
            Headers(redact_headers(request.headers.multi_items())),
            request.content,
        )
        return RawResponse(
            response.status_code,
            Headers(response.headers.multi_items()),
            response.content,
            raw_request,
            response.reason_phrase,
        )

    def _result(self, op: Operation, raw: RawResponse) -> bool | None:
        """The value of a finished call: True/False for checks, None otherwise; or raise."""
        if raw.is_success:
            return True if op.exists else None
        if op.exists and raw.status_code == 404:
            return False
        raise error_for(raw)

    def _retry_delay(self, op: Operation, raw: RawResponse, retry: int) -> float | None:
        if raw.is_success or (op.exists and raw.status_code == 404):
            return None
        return self._retry.delay_after_status(
            retry, raw.status_code, raw.headers, is_send=op.is_send
        )

    def _send_flow(self, op: Operation) -> Flow:
        """One call as a generator both clients drive (httpx's ``auth_flow`` pattern).

        It yields what it needs and is sent the outcome back:

        * an ``httpx.Request``: send it; reply with the ``httpx.Response`` or the
          ``httpx.HTTPError`` it raised;
        * :data:`NEED_BEARER`: reply with ``"Bearer <token>"`` from the token credential;
        * a :class:`Sleep`: wait, reply None.

        It returns the final :class:`RawResponse` (error statuses included, once retries are
        exhausted) or raises the translated transport error. Signing, retry decisions and
        logging all live here; the drivers only do I/O.
        """
        audience, url = self._urls(op)
        retry = 0
        while True:
            authorization = self._key_authorization(audience) or self._cached_bearer()
            if authorization is None:
                authorization = yield NEED_BEARER
            request = self._build_request(op, url, authorization)
            self._log_request(op, request, retry + 1)
            started = time.perf_counter()
            outcome = yield request
            if isinstance(outcome, httpx.HTTPError):
                error = map_transport_error(outcome)
                retry += 1
                sent = isinstance(error, ServiceResponseError)
                delay = self._retry.delay_after_error(retry, sent=sent, is_send=op.is_send)
                if delay is None:
                    raise error from outcome
                self._log_retry(op, retry, delay, str(error))
                yield Sleep(delay)
                continue
            raw = self._raw_response(request, outcome)
            self._log_response(op, raw, time.perf_counter() - started)
            delay = self._retry_delay(op, raw, retry + 1)
            if delay is None:
                return raw
            retry += 1
            self._log_retry(op, retry, delay, f"status {raw.status_code}")
            yield Sleep(delay)

    # -- logging ------------------------------------------------------------------------

    def _log_request(self, op: Operation, request: httpx.Request, attempt: int) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "--> %s %s %s (%s, attempt %d) headers=%s",
                op.name,
                request.method,
                redact_url(str(request.url)),
                op.content_type or "no body",
                attempt,
                dict(redact_headers(request.headers.multi_items())),
            )

    def _log_response(self, op: Operation, raw: RawResponse, elapsed: float) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "<-- %s %d %s (%.1f ms) headers=%s",
                op.name,
                raw.status_code,
                raw.reason_phrase,
                elapsed * 1000,
                dict(redact_headers(raw.headers.raw_items())),
            )

    def _log_retry(self, op: Operation, retry: int, delay: float, why: str) -> None:
        logger.info(
            "retrying %s (retry %d of %d) in %.3f s after %s",
            op.name,
            retry,
            self._retry.max_retries,
            delay,
            why,
        )


def error_for_page(raw: RawResponse, problem: str) -> HttpResponseError:
    """An :class:`HttpResponseError` for a 2xx response whose body is not what the spec says."""
    return HttpResponseError(raw, f"Unexpected response from the service: {problem}.")


def _metadata_headers(metadata: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """``X-WebPubSub-Metadata-<key>`` headers, checked as the service would (its limits,
    no comma in a value: HTTP folds repeated headers with commas)."""
    if metadata is None:
        return ()
    if not isinstance(metadata, Mapping):
        raise TypeError("metadata must be a mapping of str to str")
    try:
        checked = check_pairs(metadata.items()) or {}
    except MetadataError as exc:
        raise ValueError(f"invalid metadata: {exc}") from None
    for key, value in checked.items():
        if "," in value:
            raise ValueError(f"metadata value of {key!r} cannot hold a comma over REST")
    return tuple((f"X-WebPubSub-Metadata-{key}", value) for key, value in checked.items())
