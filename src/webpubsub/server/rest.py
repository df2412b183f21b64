"""The REST data-plane API (spec 1.2): the 25 operations as a table of routes.

Each handler parses, authorizes (done once for all routes), calls the node and answers with
the status code of the spec; nothing else. Paths are matched on raw segments, each decoded
exactly once, so ids may hold ``/`` as ``%2F``.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode

from ..auth.tokens import CLIENT_PATHS, client_audience, mint_client_token
from ..core import commands as c
from ..core.errors import BadRequest, MethodNotAllowed, NotFound, RequestError
from ..core.message import Message
from ..core.metadata import MetadataError, from_headers
from ..core.names import check_group, check_hub, check_id
from ..core.odata import Filter, FilterError, parse_filter
from ..core.roles import Permission, parse_permission
from .http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from ..engine.memory import Directory
    from .app import Service

MAX_TTL_SECONDS = 300
MAX_PAGE_SIZE = 200
LATEST_API_VERSION = "2024-12-01"


@dataclass(slots=True)
class Call:
    """One REST call being served: the request, path parameters and the service."""

    request: HttpRequest
    params: dict[str, str]
    service: Service

    @property
    def hub(self) -> str:
        return check_hub(self.params["hub"])

    async def execute(self, command: c.Command) -> None:
        # A pipelined request with more behind it does not wait for its broadcast to be
        # written: the ones behind join the same round of writes (a burst goes as one).
        await self.service.execute(self.hub, command, settle=not self.request.followed)

    @property
    def directory(self) -> Directory:
        return self.service.directory

    # -- query parameters ---------------------------------------------------------------

    def excluded(self) -> frozenset[str]:
        return frozenset(v for v in self.request.query.get("excluded", []) if v)

    def filter(self) -> Filter | None:
        text = self.request.query_one("filter")
        if text is None or not text.strip():
            return None
        try:
            return parse_filter(text)
        except FilterError as exc:
            raise BadRequest(
                f"Invalid filter: {exc}", code="Error.InvalidFilter", target="filter"
            ) from None

    def int_param(self, name: str, low: int, high: int, default: int | None) -> int | None:
        raw = self.request.query_one(name)
        if raw is None or raw == "":
            return default
        # Digits only: int() would also take " 5", "+5" and "1_0".
        value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else low - 1
        if not low <= value <= high:
            raise BadRequest(f"'{name}' must be an integer from {low} to {high}.", target=name)
        return value

    def message(self) -> Message:
        ttl = self.int_param("messageTtlSeconds", 0, MAX_TTL_SECONDS, 0)
        try:
            metadata = from_headers(self.request.headers)
        except MetadataError as exc:
            raise BadRequest(f"Invalid metadata: {exc}.", target="X-WebPubSub-Metadata") from None
        message = Message.from_rest(self.request.body, self.request.header("content-type"))
        if metadata is None and not ttl:
            return message
        expires = time.time() + ttl if ttl else None
        return Message(message.data, message.data_type, metadata=metadata, expires=expires)

    def reason(self) -> str:
        return (self.request.query_one("reason") or "")[:1024]

    def group(self) -> str:
        return check_group(self.params["group"])

    def connection_id(self) -> str:
        return check_id(self.params["connectionId"], "connectionId")

    def user_id(self) -> str:
        return check_id(self.params["userId"], "userId")


Handler = Callable[[Call], Awaitable[HttpResponse]]

ACCEPTED = HttpResponse(202)
OK = HttpResponse(200)
NO_CONTENT = HttpResponse(204)


def _exists(found: bool, warning: str) -> HttpResponse:
    if found:
        return HttpResponse(200)
    return HttpResponse(404, headers=[("x-ms-error-code", warning)])


# -- handlers ---------------------------------------------------------------------------


async def health(call: Call) -> HttpResponse:
    return HttpResponse(200)


async def send_to_all(call: Call) -> HttpResponse:
    await call.execute(c.Send(c.ToAll(), call.message(), call.excluded(), call.filter()))
    return ACCEPTED


async def send_to_group(call: Call) -> HttpResponse:
    target = c.ToGroup(call.group())
    await call.execute(c.Send(target, call.message(), call.excluded(), call.filter()))
    return ACCEPTED


async def send_to_user(call: Call) -> HttpResponse:
    await call.execute(c.Send(c.ToUser(call.user_id()), call.message(), filter=call.filter()))
    return ACCEPTED


async def send_to_connection(call: Call) -> HttpResponse:
    await call.execute(c.Send(c.ToConnection(call.connection_id()), call.message()))
    return ACCEPTED


async def close_all(call: Call) -> HttpResponse:
    await call.execute(c.CloseConnections(c.ToAll(), call.reason(), call.excluded()))
    return NO_CONTENT


async def close_group(call: Call) -> HttpResponse:
    await call.execute(c.CloseConnections(c.ToGroup(call.group()), call.reason(), call.excluded()))
    return NO_CONTENT


async def close_user(call: Call) -> HttpResponse:
    await call.execute(c.CloseConnections(c.ToUser(call.user_id()), call.reason(), call.excluded()))
    return NO_CONTENT


async def close_connection(call: Call) -> HttpResponse:
    await call.execute(c.CloseConnections(c.ToConnection(call.connection_id()), call.reason()))
    return NO_CONTENT


async def connection_exists(call: Call) -> HttpResponse:
    found = await call.directory.connection_exists(call.hub, call.connection_id())
    return _exists(found, "Warning.Connection.NotExisted")


async def group_exists(call: Call) -> HttpResponse:
    found = await call.directory.group_exists(call.hub, call.group())
    return _exists(found, "Warning.Group.NotExisted")


async def user_exists(call: Call) -> HttpResponse:
    found = await call.directory.user_exists(call.hub, call.user_id())
    return _exists(found, "Warning.User.NotExisted")


async def add_connection_to_group(call: Call) -> HttpResponse:
    group, connection_id = call.group(), call.connection_id()
    if not await call.directory.connection_exists(call.hub, connection_id):
        raise _connection_not_found(connection_id)
    await call.execute(c.AddToGroup(c.ToConnection(connection_id), group))
    return OK


async def remove_connection_from_group(call: Call) -> HttpResponse:
    await call.execute(c.RemoveFromGroup(c.ToConnection(call.connection_id()), call.group()))
    return NO_CONTENT


async def remove_connection_from_all_groups(call: Call) -> HttpResponse:
    await call.execute(c.RemoveFromAllGroups(c.ToConnection(call.connection_id())))
    return NO_CONTENT


async def add_user_to_group(call: Call) -> HttpResponse:
    group, user_id = call.group(), call.user_id()
    if not await call.directory.user_exists(call.hub, user_id):
        raise NotFound(
            f"User `{user_id}` is not found.", code="Error.User.NotExisted", target="User"
        )
    await call.execute(c.AddToGroup(c.ToUser(user_id), group))
    return OK


async def remove_user_from_group(call: Call) -> HttpResponse:
    await call.execute(c.RemoveFromGroup(c.ToUser(call.user_id()), call.group()))
    return NO_CONTENT


async def remove_user_from_all_groups(call: Call) -> HttpResponse:
    await call.execute(c.RemoveFromAllGroups(c.ToUser(call.user_id())))
    return NO_CONTENT


def _groups_body(call: Call) -> tuple[tuple[str, ...], Filter | None]:
    """``AddToGroupsRequest`` / ``RemoveFromGroupsRequest`` (additionalProperties: false)."""
    try:
        body = json.loads(call.request.body or b"null")
    except (ValueError, RecursionError):
        raise BadRequest("The body is not valid JSON.", code="Error.InvalidJson") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object with 'groups' and 'filter'.")
    unknown = set(body) - {"groups", "filter"}
    if unknown:
        raise BadRequest(f"Unknown properties in the body: {', '.join(sorted(unknown))[:200]}.")
    groups = body.get("groups")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise BadRequest("'groups' must be an array of group names.", target="groups")
    for group in groups:
        check_group(group)
    text = body.get("filter")
    if text is not None and not isinstance(text, str):
        raise BadRequest("'filter' must be a string.", target="filter")
    filter = None
    if text and text.strip():
        try:
            filter = parse_filter(text)
        except FilterError as exc:
            raise BadRequest(
                f"Invalid filter: {exc}", code="Error.InvalidFilter", target="filter"
            ) from None
    return tuple(dict.fromkeys(groups)), filter


async def add_to_groups(call: Call) -> HttpResponse:
    groups, filter = _groups_body(call)
    await call.execute(c.AddToGroups(groups, filter))
    return OK


async def remove_from_groups(call: Call) -> HttpResponse:
    groups, filter = _groups_body(call)
    await call.execute(c.RemoveFromGroups(groups, filter))
    return OK


def _permission(call: Call) -> tuple[Permission, str | None]:
    permission = parse_permission(call.params["permission"])
    if permission is None:
        raise BadRequest(
            f"Unknown permission '{call.params['permission'][:40]}': use sendToGroup or "
            "joinLeaveGroup.",
            target="permission",
        )
    target = call.request.query_one("targetName")
    if target is not None:
        target = check_group(target)
    return permission, target or None


async def grant_permission(call: Call) -> HttpResponse:
    permission, target = _permission(call)
    connection_id = call.connection_id()
    if not await call.directory.connection_exists(call.hub, connection_id):
        raise _connection_not_found(connection_id)
    await call.execute(c.Grant(connection_id, permission, target))
    return OK


async def revoke_permission(call: Call) -> HttpResponse:
    permission, target = _permission(call)
    await call.execute(c.Revoke(call.connection_id(), permission, target))
    return NO_CONTENT


async def check_permission(call: Call) -> HttpResponse:
    permission, target = _permission(call)
    found = await call.directory.has_permission(call.hub, call.connection_id(), permission, target)
    return _exists(found, "Warning.Permission.NotExisted")


async def generate_token(call: Call) -> HttpResponse:
    query = call.request.query
    client_type = (call.request.query_one("clientType") or "default").lower()
    if client_type not in CLIENT_PATHS:
        raise BadRequest("'clientType' must be Default, MQTT or SocketIO.", target="clientType")
    minutes = call.int_param("minutesToExpire", 1, 525_600, 60)
    groups = [check_group(g) for g in query.get("group", [])]
    user_id = call.request.query_one("userId") or None
    if user_id is not None:
        check_id(user_id, "userId")
    roles = [check_id(r, "role") for r in query.get("role", []) if r]
    hub = call.params["hub"]
    call.hub  # noqa: B018 - validates the hub name
    token = mint_client_token(
        call.service.settings.access_keys[0],
        client_audience(call.service.settings.endpoint, hub, client_type),
        user_id=user_id,
        roles=roles,
        groups=groups,
        minutes_to_expire=minutes or 60,
    )
    return HttpResponse.json(200, {"token": token})


async def list_connections(call: Call) -> HttpResponse:
    group = call.group()
    page_size = call.int_param("maxpagesize", 1, MAX_PAGE_SIZE, MAX_PAGE_SIZE) or MAX_PAGE_SIZE
    top = call.int_param("top", 1, 2**31 - 1, None)
    after = _decode_continuation(call.request.query_one("continuationToken"))
    size = page_size if top is None else min(page_size, top)
    members = await call.directory.group_members(call.hub, group, after, size + 1)
    page, rest = members[:size], members[size:]
    value: list[dict[str, Any]] = []
    for connection_id, user_id in page:
        item: dict[str, Any] = {"connectionId": connection_id}
        if user_id is not None:
            item["userId"] = user_id
        value.append(item)
    body: dict[str, Any] = {"value": value}
    remaining = None if top is None else top - len(page)
    if rest and page and (remaining is None or remaining > 0):
        query: dict[str, Any] = {"maxpagesize": page_size}
        if remaining is not None:
            query["top"] = remaining
        query["continuationToken"] = _encode_continuation(page[-1][0])
        query["api-version"] = call.request.query_one("api-version") or LATEST_API_VERSION
        base = call.service.base_url(call.request)
        path = call.request.path
        body["nextLink"] = f"{base}{path}?{urlencode(query, quote_via=quote)}"
    return HttpResponse.json(200, body)


def _encode_continuation(connection_id: str) -> str:
    return base64.urlsafe_b64encode(connection_id.encode()).decode().rstrip("=")


def _decode_continuation(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, ValueError):
        raise BadRequest("Invalid continuationToken.", target="continuationToken") from None


def _connection_not_found(connection_id: str) -> RequestError:
    return NotFound(
        f"Connection `{connection_id}` is not found.",
        code="Error.Connection.NotExisted",
        target="Connection",
    )


# -- the route table --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str
    handler: Handler
    operation: str
    auth: bool = True

    @property
    def segments(self) -> list[str]:
        return self.template.strip("/").split("/")

    def match(self, segments: list[str]) -> dict[str, str] | None:
        mine = self.segments
        if len(mine) != len(segments):
            return None
        params: dict[str, str] = {}
        for pattern, actual in zip(mine, segments, strict=True):
            if pattern.startswith("{"):
                params[pattern[1:-1]] = actual
            elif pattern != actual:
                return None
        return params


H = "/api/hubs/{hub}"
ROUTES = [
    Route("HEAD", "/api/health", health, "HealthApi_GetServiceStatus", auth=False),
    Route("GET", "/api/health", health, "HealthApi_GetServiceStatus", auth=False),
    Route("POST", f"{H}/:addToGroups", add_to_groups, "WebPubSub_AddConnectionsToGroups"),
    Route("POST", f"{H}/:closeConnections", close_all, "WebPubSub_CloseAllConnections"),
    Route("POST", f"{H}/:generateToken", generate_token, "WebPubSub_GenerateClientToken"),
    Route(
        "POST",
        f"{H}/:removeFromGroups",
        remove_from_groups,
        "WebPubSub_RemoveConnectionsFromGroups",
    ),
    Route("POST", f"{H}/:send", send_to_all, "WebPubSub_SendToAll"),
    Route(
        "DELETE", f"{H}/connections/{{connectionId}}", close_connection, "WebPubSub_CloseConnection"
    ),
    Route(
        "HEAD", f"{H}/connections/{{connectionId}}", connection_exists, "WebPubSub_ConnectionExists"
    ),
    Route(
        "POST",
        f"{H}/connections/{{connectionId}}/:send",
        send_to_connection,
        "WebPubSub_SendToConnection",
    ),
    Route(
        "DELETE",
        f"{H}/connections/{{connectionId}}/groups",
        remove_connection_from_all_groups,
        "WebPubSub_RemoveConnectionFromAllGroups",
    ),
    Route("HEAD", f"{H}/groups/{{group}}", group_exists, "WebPubSub_GroupExists"),
    Route(
        "POST",
        f"{H}/groups/{{group}}/:closeConnections",
        close_group,
        "WebPubSub_CloseGroupConnections",
    ),
    Route("POST", f"{H}/groups/{{group}}/:send", send_to_group, "WebPubSub_SendToGroup"),
    Route(
        "GET",
        f"{H}/groups/{{group}}/connections",
        list_connections,
        "WebPubSub_ListConnectionsInGroup",
    ),
    Route(
        "DELETE",
        f"{H}/groups/{{group}}/connections/{{connectionId}}",
        remove_connection_from_group,
        "WebPubSub_RemoveConnectionFromGroup",
    ),
    Route(
        "PUT",
        f"{H}/groups/{{group}}/connections/{{connectionId}}",
        add_connection_to_group,
        "WebPubSub_AddConnectionToGroup",
    ),
    Route(
        "DELETE",
        f"{H}/permissions/{{permission}}/connections/{{connectionId}}",
        revoke_permission,
        "WebPubSub_RevokePermission",
    ),
    Route(
        "HEAD",
        f"{H}/permissions/{{permission}}/connections/{{connectionId}}",
        check_permission,
        "WebPubSub_CheckPermission",
    ),
    Route(
        "PUT",
        f"{H}/permissions/{{permission}}/connections/{{connectionId}}",
        grant_permission,
        "WebPubSub_GrantPermission",
    ),
    Route("HEAD", f"{H}/users/{{userId}}", user_exists, "WebPubSub_UserExists"),
    Route(
        "POST",
        f"{H}/users/{{userId}}/:closeConnections",
        close_user,
        "WebPubSub_CloseUserConnections",
    ),
    Route("POST", f"{H}/users/{{userId}}/:send", send_to_user, "WebPubSub_SendToUser"),
    Route(
        "DELETE",
        f"{H}/users/{{userId}}/groups",
        remove_user_from_all_groups,
        "WebPubSub_RemoveUserFromAllGroups",
    ),
    Route(
        "DELETE",
        f"{H}/users/{{userId}}/groups/{{group}}",
        remove_user_from_group,
        "WebPubSub_RemoveUserFromGroup",
    ),
    Route(
        "PUT",
        f"{H}/users/{{userId}}/groups/{{group}}",
        add_user_to_group,
        "WebPubSub_AddUserToGroup",
    ),
]


def path_segments(path: str) -> list[str]:
    """The path's segments, each percent-decoded once as UTF-8.

    Escapes that are not UTF-8 (``%ED%A0%80``, a lone surrogate's bytes; ``%C3`` alone) are
    refused, not replaced: two different broken names must not become the same U+FFFD name,
    and a lone surrogate is no name wherever it enters (``core.names``).
    """
    try:
        return [unquote(s, errors="strict") for s in path.strip("/").split("/")]
    except UnicodeDecodeError:
        raise BadRequest(
            "The request path is not UTF-8 once percent-decoded (a broken escape sequence or "
            "a lone surrogate).",
            target="path",
        ) from None


async def invoke(call: Call) -> HttpResponse:
    """A broadcast with acknowledgements to Socket.IO clients (socketio spec 4.5): 200,
    then one JSON line per client that acknowledges."""
    call.filter()  # a bad filter is a 400 before anything is sent
    text = call.request.query_one("filter")
    lines = call.service.socketio.invoke(call.hub, text, call.request.body)
    return HttpResponse(200, content_type="application/octet-stream", stream=lines)


# Operations only an app server's tunnel may call (socketio spec 4.4); ``:invoke`` (a
# broadcast with acknowledgements, answered as a stream) is set by the Socket.IO relay.
TUNNEL_ROUTES = [Route("POST", f"{H}/:invoke", invoke, "WebPubSub_Invoke")]


def resolve(method: str, path: str, *, tunnel: bool = False) -> tuple[Route, dict[str, str]]:
    """The route and path parameters for a request; 404 for no path, 405 for a wrong method.

    ``tunnel``: the call came over an app server's tunnel, which has operations of its own.
    """
    segments = path_segments(path)
    allowed: list[str] = []
    for route in (*TUNNEL_ROUTES, *ROUTES) if tunnel else ROUTES:
        params = route.match(segments)
        if params is None:
            continue
        if route.method == method:
            return route, params
        allowed.append(route.method)
    if allowed:
        raise MethodNotAllowed(
            f"Method {method[:10]} is not allowed here; use {', '.join(sorted(set(allowed)))}.",
            code="Error.MethodNotAllowed",
        )
    raise NotFound(f"No operation at {path[:200]}.", code="Error.NotFound")
