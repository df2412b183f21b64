"""Group state (spec-next 5): one string map per (connection, group), and who watches it.

Pure: the caller passes the time (Unix epoch milliseconds) and carries out what comes back
(a snapshot for a new subscriber, an update item for the group's subscribers). ``updatedAt``
is strictly increasing across this store, as clients drop an item that is not newer than
what they hold. One store per hub on each node; entries and subscriptions of a connection
live with it and go when it leaves the group or ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StateItem:
    """One entry of a snapshot or update; ``state`` None: cleared (or the member left)."""

    connection_id: str
    user_id: str | None
    state: Mapping[str, str] | None
    updated_at: int


@dataclass(slots=True)
class GroupStates:
    """The group states and subscriptions of one hub's local connections."""

    entries: dict[str, dict[str, StateItem]] = field(default_factory=dict)
    subscribers: dict[str, set[str]] = field(default_factory=dict)
    last_stamp: int = 0

    def _stamp(self, now_ms: int) -> int:
        self.last_stamp = max(now_ms, self.last_stamp + 1)
        return self.last_stamp

    def set(
        self,
        group: str,
        connection_id: str,
        user_id: str | None,
        state: Mapping[str, str] | None,
        now_ms: int,
    ) -> StateItem | None:
        """Set (or clear, with None) a connection's state; the update item, or None when
        clearing an entry that did not exist (nothing changed)."""
        entries = self.entries.setdefault(group, {})
        if state is None and connection_id not in entries:
            if not entries:
                del self.entries[group]
            return None
        item = StateItem(connection_id, user_id, state, self._stamp(now_ms))
        if state is None:
            del entries[connection_id]
            if not entries:
                del self.entries[group]
        else:
            entries[connection_id] = item
        return item

    def snapshot(self, group: str) -> list[StateItem]:
        return sorted(self.entries.get(group, {}).values(), key=lambda item: item.updated_at)

    def subscribe(self, group: str, connection_id: str) -> None:
        self.subscribers.setdefault(group, set()).add(connection_id)

    def unsubscribe(self, group: str, connection_id: str) -> None:
        watchers = self.subscribers.get(group)
        if watchers is not None:
            watchers.discard(connection_id)
            if not watchers:
                del self.subscribers[group]

    def watchers(self, group: str) -> frozenset[str]:
        return frozenset(self.subscribers.get(group, ()))

    def forget(self, connection_id: str, now_ms: int) -> list[tuple[str, StateItem]]:
        """The connection ended: drop its subscriptions and entries; the cleared items."""
        for group in [g for g, ids in self.subscribers.items() if connection_id in ids]:
            self.unsubscribe(group, connection_id)
        cleared = []
        for group in [g for g, entries in self.entries.items() if connection_id in entries]:
            user_id = self.entries[group][connection_id].user_id
            item = self.set(group, connection_id, user_id, None, now_ms)
            if item is not None:
                cleared.append((group, item))
        return cleared

    def __bool__(self) -> bool:
        return bool(self.entries or self.subscribers)
