"""Commands as bytes, for the trip between nodes: a JSON header line, then the payload.

JSON rather than pickle: what arrives from Redis is data, never code. The payload of a send
travels raw after the header, so a 1 MB binary message is not base64-inflated.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..core import commands as c
from ..core.message import DataType, Message, MqttExtras, Source
from ..core.odata import parse_filter
from ..core.roles import Permission
from ..core.streams import StreamError, StreamMark


class CodecError(ValueError):
    """Bytes that are not an encoded command."""


def _target(target: c.Target) -> list[str]:
    match target:
        case c.ToAll():
            return ["all"]
        case c.ToGroup(group):
            return ["group", group]
        case c.ToUser(user_id):
            return ["user", user_id]
        case c.ToConnection(connection_id):
            return ["connection", connection_id]


def _parse_target(raw: Any) -> c.Target:
    kind = raw[0]
    if kind == "all":
        return c.ToAll()
    if kind == "group":
        return c.ToGroup(raw[1])
    if kind == "user":
        return c.ToUser(raw[1])
    if kind == "connection":
        return c.ToConnection(raw[1])
    raise CodecError(f"unknown target {kind!r}")


def encode_command(command: c.Command) -> bytes:
    """Serialize a command (see module docstring for the format)."""
    payload = b""
    head: dict[str, Any]
    match command:
        case c.Send(target, message, excluded, filter):
            head = {
                "t": "send",
                "to": _target(target),
                "dt": message.data_type.value,
                "src": message.source.value,
            }
            if message.group is not None:
                head["g"] = message.group
            if message.from_user_id is not None:
                head["u"] = message.from_user_id
            # Newer fields are optional keys: an older node decoding this ignores them.
            if message.metadata:
                head["md"] = dict(message.metadata)
            if message.expires is not None:
                head["exp"] = message.expires  # wall clock: nodes keep NTP time
            if message.stream is not None:
                head["st"] = _stream_mark(message.stream)
            if message.qos is not None:
                head["q"] = message.qos
            if message.mqtt is not None:
                head["mq"] = _mqtt_head(message.mqtt)
            if excluded:
                head["ex"] = sorted(excluded)
            if filter is not None:
                head["f"] = filter.text
            payload = message.data
        case c.CloseConnections(target, reason, excluded):
            head = {"t": "close", "to": _target(target), "r": reason, "ex": sorted(excluded)}
        case c.AddToGroup(target, group) | c.RemoveFromGroup(target, group):
            kind = "join" if isinstance(command, c.AddToGroup) else "leave"
            head = {"t": kind, "to": _target(target), "g": group}
        case c.RemoveFromAllGroups(target):
            head = {"t": "leaveall", "to": _target(target)}
        case c.AddToGroups(groups, filter) | c.RemoveFromGroups(groups, filter):
            kind = "joinmany" if isinstance(command, c.AddToGroups) else "leavemany"
            head = {"t": kind, "gs": list(groups)}
            if filter is not None:
                head["f"] = filter.text
        case c.Grant(connection_id, permission, target_name) | c.Revoke(
            connection_id, permission, target_name
        ):
            kind = "grant" if isinstance(command, c.Grant) else "revoke"
            head = {"t": kind, "c": connection_id, "p": permission.value, "n": target_name}
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + payload


def decode_command(data: bytes) -> c.Command:
    """Parse what :func:`encode_command` produced; raises CodecError otherwise."""
    head_bytes, _, payload = data.partition(b"\n")
    try:
        head = json.loads(head_bytes)
        return _decode(head, payload)
    except CodecError:
        raise
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise CodecError(f"malformed command: {exc}") from None


def _filter(head: dict[str, Any]) -> Any:
    text = head.get("f")
    return parse_filter(text) if text else None


def _metadata(raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise CodecError("metadata must be an object of strings")
    return raw or None


def _stream_mark(mark: StreamMark) -> list[Any]:
    error = mark.error
    return [
        mark.stream_id,
        mark.sequence_id,
        mark.end,
        None if error is None else [error.name, error.message, error.user_error_code],
    ]


def _parse_stream_mark(raw: Any) -> StreamMark | None:
    if raw is None:
        return None
    stream_id, sequence_id, end, error = raw
    if not isinstance(stream_id, str) or type(sequence_id) is not int or type(end) is not bool:
        raise CodecError("malformed stream mark")
    if error is not None:
        name, message, code = error
        if not isinstance(name, str) or not isinstance(message, str):
            raise CodecError("malformed stream error")
        if code is not None and not isinstance(code, str):
            raise CodecError("malformed stream error")
        return StreamMark(stream_id, sequence_id, end, StreamError(name, message, code))
    return StreamMark(stream_id, sequence_id, end)


def _expires(raw: Any) -> float | None:
    if raw is None:
        return None
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        raise CodecError("exp must be a number")
    return float(raw)


def _mqtt_head(extras: MqttExtras) -> dict[str, Any]:
    head: dict[str, Any] = {}
    if extras.user_properties:
        head["up"] = [list(pair) for pair in extras.user_properties]
    if extras.correlation_data is not None:
        head["cd"] = base64.b64encode(extras.correlation_data).decode()
    if extras.response_topic is not None:
        head["rt"] = extras.response_topic
    if extras.payload_format_indicator is not None:
        head["pf"] = extras.payload_format_indicator
    if extras.origin is not None:
        head["o"] = extras.origin
    if extras.content_type is not None:
        head["ct"] = extras.content_type
    return head


def _mqtt(raw: Any) -> MqttExtras | None:
    if raw is None:
        return None
    try:
        pairs = tuple((str(n), str(v)) for n, v in raw.get("up", ()))
        cd = raw.get("cd")
        pf = raw.get("pf")
        rt, origin, ct = raw.get("rt"), raw.get("o"), raw.get("ct")
        if pf is not None and (isinstance(pf, bool) or pf not in (0, 1)):
            raise CodecError("mq.pf must be 0 or 1")
        if not all(v is None or isinstance(v, str) for v in (rt, origin, cd, ct)):
            raise CodecError("mq fields must be strings")
        return MqttExtras(
            pairs,
            base64.b64decode(cd, validate=True) if cd is not None else None,
            rt,
            pf,
            origin,
            ct,
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise CodecError(f"bad mq: {exc}") from None


def _qos(raw: Any) -> int | None:
    if raw is None:
        return None
    if raw not in (0, 1, 2) or isinstance(raw, bool):
        raise CodecError("q must be 0, 1 or 2")
    return int(raw)


def _decode(head: dict[str, Any], payload: bytes) -> c.Command:
    kind = head["t"]
    if kind == "send":
        message = Message(
            payload,
            DataType(head["dt"]),
            Source(head["src"]),
            head.get("g"),
            head.get("u"),
            _metadata(head.get("md")),
            _expires(head.get("exp")),
            _parse_stream_mark(head.get("st")),
            _qos(head.get("q")),
            _mqtt(head.get("mq")),
        )
        return c.Send(
            _parse_target(head["to"]), message, frozenset(head.get("ex", ())), _filter(head)
        )
    if kind == "close":
        return c.CloseConnections(_parse_target(head["to"]), head["r"], frozenset(head["ex"]))
    if kind in ("join", "leave"):
        target = _parse_target(head["to"])
        if not isinstance(target, c.ToUser | c.ToConnection):
            raise CodecError("join/leave need a user or connection target")
        cls = c.AddToGroup if kind == "join" else c.RemoveFromGroup
        return cls(target, head["g"])
    if kind == "leaveall":
        target = _parse_target(head["to"])
        if not isinstance(target, c.ToUser | c.ToConnection):
            raise CodecError("leaveall needs a user or connection target")
        return c.RemoveFromAllGroups(target)
    if kind in ("joinmany", "leavemany"):
        many = c.AddToGroups if kind == "joinmany" else c.RemoveFromGroups
        return many(tuple(head["gs"]), _filter(head))
    if kind in ("grant", "revoke"):
        perm = c.Grant if kind == "grant" else c.Revoke
        return perm(head["c"], Permission(head["p"]), head.get("n"))
    raise CodecError(f"unknown command {kind!r}")
