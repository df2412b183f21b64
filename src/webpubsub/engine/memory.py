"""The in-memory answers to membership queries: a single node knows everything itself."""

from __future__ import annotations

from typing import Protocol

from ..core.node import Node
from ..core.roles import Permission


class Directory(Protocol):
    """Membership queries that REST asks (spec 1.4, 1.5); cluster-wide with an engine."""

    async def connection_exists(self, hub: str, connection_id: str) -> bool: ...

    async def user_exists(self, hub: str, user_id: str) -> bool: ...

    async def group_exists(self, hub: str, group: str) -> bool: ...

    async def group_members(
        self, hub: str, group: str, after: str | None, limit: int
    ) -> list[tuple[str, str | None]]:
        """Members ordered by connection id, strictly after ``after``, at most ``limit``."""
        ...

    async def has_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool: ...


class MemoryDirectory:
    """Answers from the node's own hubs."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def connection_exists(self, hub: str, connection_id: str) -> bool:
        return self.node.connection_exists(hub, connection_id)

    async def user_exists(self, hub: str, user_id: str) -> bool:
        return self.node.user_exists(hub, user_id)

    async def group_exists(self, hub: str, group: str) -> bool:
        return self.node.group_exists(hub, group)

    async def group_members(
        self, hub: str, group: str, after: str | None, limit: int
    ) -> list[tuple[str, str | None]]:
        return self.node.group_members(hub, group, after, limit)

    async def has_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool:
        return self.node.has_permission(hub, connection_id, permission, target)
