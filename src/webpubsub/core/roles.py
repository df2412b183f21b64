"""Permission rules for client requests (spec 4.6, 1.5).

A connection's permissions are a set of role strings. Token ``role`` claims, the ``connect``
handler's roles and REST grants all land in that set, so there is one rule to check:

* ``webpubsub.joinLeaveGroup`` / ``webpubsub.sendToGroup``: any group;
* ``webpubsub.joinLeaveGroup.<group>`` / ``webpubsub.sendToGroup.<group>``: that group, where
  everything after the second dot is the literal group name (group names may hold dots);
* ``webpubsub.joinLeaveGroups.<pattern>`` / ``webpubsub.sendToGroups.<pattern>``: groups that
  match a wildcard pattern (``?``, ``*``, ``**``, ``\\`` escapes; ``.`` is a separator).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from functools import lru_cache


class Permission(StrEnum):
    """The two permissions REST can grant, revoke and check."""

    SEND_TO_GROUP = "sendToGroup"
    JOIN_LEAVE_GROUP = "joinLeaveGroup"


ROLE_PREFIX = "webpubsub."
MAX_PATTERN_STARS = 5


def parse_permission(value: str) -> Permission | None:
    """The permission named in a REST path (case-insensitive), or None."""
    lowered = value.lower()
    for permission in Permission:
        if permission.value.lower() == lowered:
            return permission
    return None


def role_for(permission: Permission, group: str | None = None) -> str:
    """The role string that grants ``permission`` on ``group`` (all groups when None)."""
    base = ROLE_PREFIX + permission.value
    return base if group is None else f"{base}.{group}"


def is_allowed(roles: Iterable[str] | set[str], permission: Permission, group: str) -> bool:
    """Whether a connection holding ``roles`` may do ``permission`` on ``group``."""
    roles = roles if isinstance(roles, set | frozenset) else set(roles)
    base = ROLE_PREFIX + permission.value
    if base in roles or f"{base}.{group}" in roles:
        return True
    wildcard = base + "s."
    for role in roles:
        if role.startswith(wildcard):
            matcher = compile_pattern(role[len(wildcard) :])
            if matcher is not None and matcher.fullmatch(group):
                return True
    return False


def has_permission(roles: set[str], permission: Permission, target: str | None) -> bool:
    """REST ``CheckPermission``: a target checks that group, no target checks the wide role."""
    if target is None:
        return role_for(permission) in roles
    return is_allowed(roles, permission, target)


def revoke(roles: set[str], permission: Permission, target: str | None) -> None:
    """Remove a permission: one group's role, or (no target) every role of that permission."""
    if target is not None:
        roles.discard(role_for(permission, target))
        return
    base = role_for(permission)
    for role in [r for r in roles if r == base or r.startswith(base + ".")]:
        roles.discard(role)


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str] | None:
    """Compile a wildcard group pattern to a regex; None when the pattern is invalid.

    ``?`` is one character except ``.``, ``*`` zero or more characters except ``.``, ``**``
    zero or more of any character, ``\\`` escapes ``\\``, ``*`` and ``?``; at most five ``*``.
    """
    out: list[str] = []
    stars = 0
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1] not in "\\*?":
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if char == "*":
            if pattern.startswith("**", i):
                out.append(".*")
                stars += 2
                i += 2
            else:
                out.append("[^.]*")
                stars += 1
                i += 1
            continue
        out.append("[^.]" if char == "?" else re.escape(char))
        i += 1
    if stars > MAX_PATTERN_STARS or not pattern:
        return None
    return re.compile("".join(out), re.DOTALL)
