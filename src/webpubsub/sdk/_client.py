"""The synchronous server SDK: :class:`WebPubSubServiceClient` and :class:`WebPubSubGroup`."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Self

import httpx

from ._base import (
    API_VERSION,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    BaseServiceClient,
    FlowReply,
    Operation,
    Sleep,
    check_group,
    default_ssl_context,
)
from ._connection_string import parse_connection_string
from ._content import OCTET_STREAM, encode_message, is_readable, read_body
from ._credentials import AzureKeyCredential, KeyCredential, TokenCredential
from ._models import ClientAccessToken, ClientProtocol, GroupMember, Permission, RawResponse
from ._retry import RetryPolicy

__all__ = ["OnResponse", "WebPubSubGroup", "WebPubSubServiceClient"]

OnResponse = Callable[[RawResponse], object]
"""A callback given the raw response of a call (``on_response=``)."""


class WebPubSubServiceClient(BaseServiceClient):
    """Server-side client of one hub: send messages, manage groups, connections and permissions.

    Talks to the REST API of Azure Web PubSub or of ``webpubsub serve`` (spec 1-3). Create it
    from a connection string, or from an endpoint and a credential::

        client = WebPubSubServiceClient.from_connection_string(conn_str, hub="chat")
        client = WebPubSubServiceClient(endpoint, AzureKeyCredential(key), hub="chat")
        client = WebPubSubServiceClient(endpoint, DefaultAzureCredential(), hub="chat")

    The client holds a connection pool: use it as a context manager or call :meth:`close`.
    It is safe to share between threads. For asyncio use ``webpubsub.aio``.

    Args:
        endpoint: the service URL, e.g. ``https://contoso.webpubsub.azure.com``.
        credential: an :class:`AzureKeyCredential` (each request carries a JWT signed with the
            key; ``credential.update(new_key)`` rotates it), or a token credential with
            ``get_token(*scopes)`` such as ``azure.identity.DefaultAzureCredential`` (scope
            ``https://webpubsub.azure.com/.default``).
        hub: the hub name (a letter, then up to 127 letters, digits or ``_`,.[]``).
        api_version: the REST ``api-version`` (default ``2024-12-01``).
        reverse_proxy_endpoint: send requests there instead (e.g. Azure API Management);
            tokens still name ``endpoint``.
        retry: a :class:`RetryPolicy`, or False to never retry (default: 3 retries with
            exponential backoff for 408, 429, 5xx and connection errors).
        timeout: seconds to wait for the service to answer (None: no limit).
        connect_timeout: seconds to wait for a connection (None: no limit).
        transport: an ``httpx.BaseTransport`` to send requests with (tests use
            ``httpx.MockTransport``).
        user_agent: a prefix for the ``User-Agent`` header.

    Raises:
        ValueError: for an invalid endpoint, hub name or api_version.
        TypeError: for an unusable credential.
    """

    def __init__(
        self,
        endpoint: str,
        credential: KeyCredential | TokenCredential,
        *,
        hub: str,
        api_version: str = API_VERSION,
        reverse_proxy_endpoint: str | None = None,
        retry: RetryPolicy | bool | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        user_agent: str | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            credential,
            hub=hub,
            api_version=api_version,
            reverse_proxy_endpoint=reverse_proxy_endpoint,
            retry=retry,
            timeout=timeout,
            connect_timeout=connect_timeout,
            user_agent=user_agent,
        )
        if self._token_credential is not None and inspect.iscoroutinefunction(
            self._token_credential.get_token
        ):
            raise TypeError(
                "This credential is asynchronous (azure.identity.aio): use it with "
                "webpubsub.aio.WebPubSubServiceClient."
            )
        self._http = httpx.Client(
            transport=transport, timeout=self._timeout, verify=default_ssl_context()
        )

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        hub: str,
        api_version: str = API_VERSION,
        reverse_proxy_endpoint: str | None = None,
        retry: RetryPolicy | bool | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        user_agent: str | None = None,
    ) -> Self:
        """Create a client from a connection string (spec 2.2).

        Accepts ``Endpoint=https://<host>[:port][/prefix];AccessKey=<key>;Version=1.0;`` with
        an optional ``Port=<n>`` (which replaces the endpoint's port); keys are
        case-insensitive and an endpoint without a scheme means https.

        Args:
            connection_string: the connection string (portal "Keys" page, or the one
                ``webpubsub serve`` prints).
            hub: the hub name.
            api_version: see the class.
            reverse_proxy_endpoint: see the class.
            retry: see the class.
            timeout: see the class.
            connect_timeout: see the class.
            transport: see the class.
            user_agent: see the class.

        Returns:
            A client signing requests with the connection string's access key.

        Raises:
            ConnectionStringError: for a malformed string (a ``ValueError``).
        """
        parsed = parse_connection_string(connection_string)
        return cls(
            parsed.endpoint,
            AzureKeyCredential(parsed.access_key),
            hub=hub,
            api_version=api_version,
            reverse_proxy_endpoint=reverse_proxy_endpoint,
            retry=retry,
            timeout=timeout,
            connect_timeout=connect_timeout,
            transport=transport,
            user_agent=user_agent,
        )

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool. The client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- sending one operation ------------------------------------------------------------

    def _bearer(self) -> str:
        """``Bearer <token>`` from the token credential, fetched once per expiry."""
        with self._token_cache.lock:
            header = self._cached_bearer()
            if header is None:
                token = self._token_cache.store(self._token_credential.get_token(self._scope))
                header = "Bearer " + token
        return header

    def _call(self, op: Operation, on_response: OnResponse | None = None) -> RawResponse:
        """Drive the shared send flow with blocking I/O; give ``on_response`` the result."""
        flow = self._send_flow(op)
        reply: FlowReply = None
        while True:
            try:
                step = flow.send(reply)
            except StopIteration as done:
                raw: RawResponse = done.value
                break
            if isinstance(step, httpx.Request):
                try:
                    reply = self._http.send(step)
                except httpx.HTTPError as exc:
                    reply = exc
            elif isinstance(step, Sleep):
                time.sleep(step.seconds)
                reply = None
            else:
                reply = self._bearer()
        if on_response is not None:
            on_response(raw)
        return raw

    def _run(self, op: Operation, on_response: OnResponse | None) -> bool | None:
        return self._result(op, self._call(op, on_response))

    def _read(self, message: object, content_type: str | None) -> tuple[object, str | None]:
        """Read a file-like message in full (binary unless ``content_type`` says otherwise)."""
        if is_readable(message):
            return encode_message(read_body(message.read()), content_type or OCTET_STREAM)
        return message, content_type

    # -- client access tokens -----------------------------------------------------------

    def get_client_access_token(
        self,
        *,
        user_id: str | None = None,
        roles: Iterable[str] | None = None,
        groups: Iterable[str] | None = None,
        minutes_to_expire: int = 60,
        client_protocol: str | ClientProtocol = ClientProtocol.DEFAULT,
        on_response: OnResponse | None = None,
    ) -> ClientAccessToken:
        """A token and URL a WebSocket client connects with (spec 3).

        With an access key the token is signed locally (no request); with a token
        credential the service mints it through ``:generateToken``.

        Args:
            user_id: the user the connection belongs to (``sub``).
            roles: roles such as ``webpubsub.sendToGroup`` or
                ``webpubsub.joinLeaveGroup.<group>``.
            groups: groups the connection joins when it connects.
            minutes_to_expire: token lifetime (checked only when the client connects).
            client_protocol: ``"default"``, ``"mqtt"`` or ``"socketio"`` (any case, or
                :class:`ClientProtocol`): which client endpoint the URL points at.
            on_response: called with the raw response when a request is made.

        Returns:
            ``{"token": ..., "baseUrl": "wss://host/client/hubs/<hub>", "url": baseUrl +
            "?access_token=" + token}``.

        Raises:
            ValueError: for an unknown client protocol or a non-positive lifetime.
            HttpResponseError: when ``:generateToken`` fails.
        """
        args = self._client_token_args(user_id, roles, groups, minutes_to_expire, client_protocol)
        key = self._access_key()
        if key is not None:
            return self._mint_client_access_token(key, *args)
        op = self._op_generate_token(*args)
        raw = self._call(op, on_response)
        self._result(op, raw)
        return self._token_from_response(raw, args[-1])

    # -- sending messages ------------------------------------------------------------------

    def send_to_all(
        self,
        message: object,
        *,
        content_type: str | None = None,
        excluded: Sequence[str] | None = None,
        filter: str | None = None,
        message_ttl_seconds: int | None = None,
        metadata: Mapping[str, str] | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        """Send a message to every connection of the hub.

        Args:
            message: a dict, list, number or str (sent as JSON), bytes / bytearray /
                memoryview or a binary file (sent as ``application/octet-stream``); with
                ``content_type="text/plain"`` a str is sent as text.
            content_type: ``application/json``, ``text/plain`` or
                ``application/octet-stream``; inferred from ``message`` when omitted.
            excluded: connection ids that must not receive the message.
            filter: an OData filter selecting the receivers (see :func:`odata`).
            message_ttl_seconds: drop the message for clients that do not get it within
                this many seconds (0..300; 0 = never).
            metadata: string pairs sent as ``X-WebPubSub-Metadata-<key>`` headers; receivers
                see them with the message, keys lowercased.
            on_response: called with the raw response.

        Raises:
            TypeError: when the message does not fit the content type.
            ValueError: for an unsupported content type.
            HttpResponseError: when the service refuses the message (e.g. 400 bad filter).
        """
        message, content_type = self._read(message, content_type)
        op = self._op_send_to_all(
            message, content_type, excluded, filter, message_ttl_seconds, metadata
        )
        self._run(op, on_response)

    def send_to_user(
        self,
        user_id: str,
        message: object,
        *,
        content_type: str | None = None,
        filter: str | None = None,
        message_ttl_seconds: int | None = None,
        metadata: Mapping[str, str] | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        """Send a message to every connection of a user.

        Args:
            user_id: the user.
            message: see :meth:`send_to_all`.
            content_type: see :meth:`send_to_all`.
            filter: an OData filter among the user's connections.
            message_ttl_seconds: see :meth:`send_to_all`.
            on_response: called with the raw response.

        Raises:
            TypeError: when the message does not fit the content type.
            ValueError: for an empty user id or an unsupported content type.
            HttpResponseError: when the service refuses the message.
        """
        message, content_type = self._read(message, content_type)
        op = self._op_send_to_user(
            user_id, message, content_type, filter, message_ttl_seconds, metadata
        )
        self._run(op, on_response)

    def send_to_connection(
        self,
        connection_id: str,
        message: object,
        *,
        content_type: str | None = None,
        message_ttl_seconds: int | None = None,
        metadata: Mapping[str, str] | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        """Send a message to one connection.

        Args:
            connection_id: the connection.
            message: see :meth:`send_to_all`.
            content_type: see :meth:`send_to_all`.
            message_ttl_seconds: see :meth:`send_to_all`.
            on_response: called with the raw response.

        Raises:
            TypeError: when the message does not fit the content type.
            ValueError: for an empty connection id or an unsupported content type.
            HttpResponseError: when the service refuses the message.
        """
        message, content_type = self._read(message, content_type)
        op = self._op_send_to_connection(
            connection_id, message, content_type, message_ttl_seconds, metadata
        )
        self._run(op, on_response)

    # -- groups -------------------------------------------------------------------------

    def group(self, name: str) -> WebPubSubGroup:
        """A client for one group of the hub (no request is made).

        Args:
            name: the group name (1..1024 characters, not only whitespace).

        Returns:
            The group client.

        Raises:
            ValueError: for an invalid group name.
        """
        return WebPubSubGroup(self, name)

    def group_exists(self, group: str, *, on_response: OnResponse | None = None) -> bool:
        """Whether a group has at least one connection.

        Args:
            group: the group name.
            on_response: called with the raw response.

        Returns:
            True when the group has a connection.

        Raises:
            HttpResponseError: on any answer but 200 / 404.
        """
        return bool(self._run(self._op_exists("groups", group), on_response))

    def user_exists(self, user_id: str, *, on_response: OnResponse | None = None) -> bool:
        """Whether a user has at least one connection.

        Args:
            user_id: the user.
            on_response: called with the raw response.

        Returns:
            True when the user is connected.

        Raises:
            HttpResponseError: on any answer but 200 / 404.
        """
        return bool(self._run(self._op_exists("users", user_id), on_response))

    def connection_exists(
        self, connection_id: str, *, on_response: OnResponse | None = None
    ) -> bool:
        """Whether a connection is open.

        Args:
            connection_id: the connection.
            on_response: called with the raw response.

        Returns:
            True when the connection exists.

        Raises:
            HttpResponseError: on any answer but 200 / 404.
        """
        return bool(self._run(self._op_exists("connections", connection_id), on_response))

    def add_connections_to_groups(
        self,
        groups: Iterable[str],
        filter: str,
        *,
        on_response: OnResponse | None = None,
    ) -> None:
        """Add every connection matching ``filter`` to every group in ``groups``.

        Args:
            groups: group names.
            filter: an OData filter selecting connections, e.g.
                ``odata("userId eq {}", "user1")``; an empty string selects all.
            on_response: called with the raw response.

        Raises:
            ValueError: for no or invalid group names.
            HttpResponseError: e.g. 400 for an invalid filter.
        """
        self._run(self._op_connections_to_groups("addToGroups", groups, filter), on_response)

    def remove_connections_from_groups(
        self,
        groups: Iterable[str],
        filter: str,
        *,
        on_response: OnResponse | None = None,
    ) -> None:
        """Remove every connection matching ``filter`` from every group in ``groups``.

        Args:
            groups: group names.
            filter: an OData filter selecting connections; an empty string selects all.
            on_response: called with the raw response.

        Raises:
            ValueError: for no or invalid group names.
            HttpResponseError: e.g. 400 for an invalid filter.
        """
        self._run(self._op_connections_to_groups("removeFromGroups", groups, filter), on_response)

    def remove_user_from_all_groups(
        self, user_id: str, *, on_response: OnResponse | None = None
    ) -> None:
        """Remove every connection of a user from every group.

        Args:
            user_id: the user.
            on_response: called with the raw response.

        Raises:
            HttpResponseError: when the service refuses the call.
        """
        self._run(self._op_remove_user_from_all_groups(user_id), on_response)

    def remove_connection_from_all_groups(
        self, connection_id: str, *, on_response: OnResponse | None = None
    ) -> None:
        """Remove a connection from every group.

        Args:
            connection_id: the connection.
            on_response: called with the raw response.

        Raises:
            HttpResponseError: when the service refuses the call.
        """
        self._run(self._op_remove_connection_from_all_groups(connection_id), on_response)

    # -- closing connections ------------------------------------------------------------

    def close_connection(
        self,
        connection_id: str,
        *,
        reason: str | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        """Close one connection (no error if it is already gone).

        Args:
            connection_id: the connection.
            reason: given to the client in its ``disconnected`` message.
            on_response: called with the raw response.

        Raises:
            HttpResponseError: when the service refuses the call.
        """
        self._run(self._op_close_connection(connection_id, reason), on_response)

    def close_user_connections(
        self,
        user_id: str,
        *,
        excluded: Sequence[str] | None = None,
        reason: str | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        """Close every connection of a user.

        Args:
            user_id: the user.
            excluded: connection ids to keep open.
            reason: given to the clients in their ``disconnected`` message.
            on_response: called with the raw response.

        Raises:
            HttpResponseError: when the service refuses the call.
        """
        self._run(self._op_close_user(user_id, excluded, reason), on_response)

    def close_all_connections(
        self,
        *,
        excluded: Sequence[str] | None = None,
        reason: str | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        """Close every connection of the hub.

        Args:
            excluded: connection ids to keep open.
            reason: given to the clients in their ``disconnected`` message.
            on_response: called with the raw response.

        Raises:
            HttpResponseError: when the service refuses the call.
        """
        self._run(self._op_close_all(excluded, reason), on_response)

    # -- permissions ----------------------------------------------------------------------

    def grant_permission(
        self,
        permission: str | Permission,
        connection_id: str,
        *,
        target_name: str | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        """Allow a connection to join/leave or send to a group.

        Args:
            permission: ``"sendToGroup"`` or ``"joinLeaveGroup"`` (or :class:`Permission`).
            connection_id: the connection.
            target_name: the group; None means every group.
            on_response: called with the raw response.

        Raises:
            ValueError: for an unknown permission.
            ResourceNotFoundError: when the connection does not exist.
            HttpResponseError: when the service refuses the call.
        """
        self._run(self._op_permission("PUT", permission, connection_id, target_name), on_response)

    def revoke_permission(
        self,
        permission: str | Permission,
        connection_id: str,
        *,
        target_name: str | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        """Withdraw a permission granted earlier.

        Args:
            permission: ``"sendToGroup"`` or ``"joinLeaveGroup"`` (or :class:`Permission`).
            connection_id: the connection.
            target_name: the group; None means every group.
            on_response: called with the raw response.

        Raises:
            ValueError: for an unknown permission.
            HttpResponseError: when the service refuses the call.
        """
        op = self._op_permission("DELETE", permission, connection_id, target_name)
        self._run(op, on_response)

    def has_permission(
        self,
        permission: str | Permission,
        connection_id: str,
        target_name: str | None = None,
        *,
        on_response: OnResponse | None = None,
    ) -> bool:
        """Whether a connection has a permission (from its token roles or a grant).

        Args:
            permission: ``"sendToGroup"`` or ``"joinLeaveGroup"`` (or :class:`Permission`).
            connection_id: the connection.
            target_name: the group; None asks about every group.
            on_response: called with the raw response.

        Returns:
            True when the connection has the permission (False also for unknown connections).

        Raises:
            ValueError: for an unknown permission.
            HttpResponseError: on any answer but 200 / 404.
        """
        op = self._op_permission("HEAD", permission, connection_id, target_name)
        return bool(self._run(op, on_response))


class WebPubSubGroup:
    """One group of a hub, from :meth:`WebPubSubServiceClient.group`.

    Attributes:
        name: the group name.
        client: the service client it sends through.
    """

    def __init__(self, client: WebPubSubServiceClient, name: str) -> None:
        self.client = client
        self.name = check_group(name)

    def __repr__(self) -> str:
        return f"WebPubSubGroup(name={self.name!r}, hub={self.client.hub!r})"

    def send_to_all(
        self,
        message: object,
        *,
        content_type: str | None = None,
        excluded: Sequence[str] | None = None,
        filter: str | None = None,
        message_ttl_seconds: int | None = None,
        metadata: Mapping[str, str] | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        """Send a message to every connection in the group.

        Args:
            message: see :meth:`WebPubSubServiceClient.send_to_all`.
            content_type: see :meth:`WebPubSubServiceClient.send_to_all`.
            excluded: connection ids that must not receive the message.
            filter: an OData filter among the group's connections.
            message_ttl_seconds: see :meth:`WebPubSubServiceClient.send_to_all`.
            metadata: see :meth:`WebPubSubServiceClient.send_to_all`.
            on_response: called with the raw response.

        Raises:
            TypeError: when the message does not fit the content type.
            ValueError: for an unsupported content type.
            HttpResponseError: when the service refuses the message.
        """
        client = self.client
        message, content_type = client._read(message, content_type)
        op = client._op_send_to_group(
            self.name, message, content_type, excluded, filter, message_ttl_seconds, metadata
        )
        client._run(op, on_response)

    def add_user(self, user_id: str, *, on_response: OnResponse | None = None) -> None:
        """Add every current connection of a user to the group.

        Args:
            user_id: the user.
            on_response: called with the raw response.

        Raises:
            ResourceNotFoundError: when the user has no connection.
            HttpResponseError: when the service refuses the call.
        """
        self.client._run(self.client._op_user_group("PUT", self.name, user_id), on_response)

    def remove_user(self, user_id: str, *, on_response: OnResponse | None = None) -> None:
        """Remove every connection of a user from the group.

        Args:
            user_id: the user.
            on_response: called with the raw response.

        Raises:
            HttpResponseError: when the service refuses the call.
        """
        self.client._run(self.client._op_user_group("DELETE", self.name, user_id), on_response)

    def add_connection(self, connection_id: str, *, on_response: OnResponse | None = None) -> None:
        """Add a connection to the group.

        Args:
            connection_id: the connection.
            on_response: called with the raw response.

        Raises:
            ResourceNotFoundError: when the connection does not exist.
            HttpResponseError: when the service refuses the call.
        """
        op = self.client._op_connection_group("PUT", self.name, connection_id)
        self.client._run(op, on_response)

    def remove_connection(
        self, connection_id: str, *, on_response: OnResponse | None = None
    ) -> None:
        """Remove a connection from the group.

        Args:
            connection_id: the connection.
            on_response: called with the raw response.

        Raises:
            HttpResponseError: when the service refuses the call.
        """
        op = self.client._op_connection_group("DELETE", self.name, connection_id)
        self.client._run(op, on_response)

    def close_all_connections(
        self,
        *,
        excluded: Sequence[str] | None = None,
        reason: str | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        """Close every connection in the group.

        Args:
            excluded: connection ids to keep open.
            reason: given to the clients in their ``disconnected`` message.
            on_response: called with the raw response.

        Raises:
            HttpResponseError: when the service refuses the call.
        """
        self.client._run(self.client._op_close_group(self.name, excluded, reason), on_response)

    def list_connections(
        self,
        *,
        max_page_size: int | None = None,
        top: int | None = None,
        on_response: OnResponse | None = None,
    ) -> Iterator[GroupMember]:
        """Iterate over the group's connections, fetching pages as needed.

        Args:
            max_page_size: connections per page (the service allows 1..200).
            top: stop after this many connections.
            on_response: called with the raw response of every page.

        Returns:
            An iterator of :class:`GroupMember` (connection id and user id); requests are
            made while iterating.

        Raises:
            ValueError: for a non-positive ``max_page_size`` or ``top``.
            HttpResponseError: when a page cannot be fetched (raised while iterating).
        """
        op = self.client._op_list_connections(self.name, max_page_size, top)
        return self._pages(op, top, on_response)

    def _pages(
        self, op: Operation | None, top: int | None, on_response: OnResponse | None
    ) -> Iterator[GroupMember]:
        seen = 0
        while op is not None:
            raw = self.client._call(op, on_response)
            self.client._result(op, raw)
            members, op = self.client._parse_page(op, raw)
            for member in members:
                if top is not None and seen >= top:
                    return
                seen += 1
                yield member
