"""Commands: the state changes and deliveries that REST calls and client requests ask for.

A node executes a command by handing it to its broker, which applies it on every node that
holds connections of the hub (one node in memory, all nodes in a cluster). Each command is a
small immutable value, so an engine can ship it to other nodes as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from .message import Message
from .odata import Filter
from .roles import Permission


@dataclass(frozen=True, slots=True)
class ToAll:
    pass


@dataclass(frozen=True, slots=True)
class ToGroup:
    group: str


@dataclass(frozen=True, slots=True)
class ToUser:
    user_id: str


@dataclass(frozen=True, slots=True)
class ToConnection:
    connection_id: str


Target = ToAll | ToGroup | ToUser | ToConnection


@dataclass(frozen=True, slots=True)
class Send:
    target: Target
    message: Message
    excluded: frozenset[str] = frozenset()
    filter: Filter | None = None


@dataclass(frozen=True, slots=True)
class CloseConnections:
    target: Target
    reason: str = ""
    excluded: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AddToGroup:
    """Add the target's current connections (a user or one connection) to a group."""

    target: ToUser | ToConnection
    group: str


@dataclass(frozen=True, slots=True)
class RemoveFromGroup:
    target: ToUser | ToConnection
    group: str


@dataclass(frozen=True, slots=True)
class RemoveFromAllGroups:
    target: ToUser | ToConnection


@dataclass(frozen=True, slots=True)
class AddToGroups:
    """``:addToGroups``: every connection matching ``filter`` (all when None) joins ``groups``."""

    groups: tuple[str, ...]
    filter: Filter | None = None


@dataclass(frozen=True, slots=True)
class RemoveFromGroups:
    groups: tuple[str, ...]
    filter: Filter | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    connection_id: str
    permission: Permission
    target_name: str | None = None


@dataclass(frozen=True, slots=True)
class Revoke:
    connection_id: str
    permission: Permission
    target_name: str | None = None


Command = (
    Send
    | CloseConnections
    | AddToGroup
    | RemoveFromGroup
    | RemoveFromAllGroups
    | AddToGroups
    | RemoveFromGroups
    | Grant
    | Revoke
)

__all__ = [
    "AddToGroup",
    "AddToGroups",
    "CloseConnections",
    "Command",
    "Grant",
    "RemoveFromAllGroups",
    "RemoveFromGroup",
    "RemoveFromGroups",
    "Revoke",
    "Send",
    "Target",
    "ToAll",
    "ToConnection",
    "ToGroup",
    "ToUser",
]
