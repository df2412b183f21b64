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


# Pattern tokens besides one-character literals (longer than one character, so distinct).
ONE, STAR, STAR_ANY = "\0?", "\0*", "\0**"


class GroupPattern:
    """A compiled wildcard group pattern, matched in linear time.

    The pattern is run as a bit-parallel NFA (one bit per token), never by backtracking: a
    regex such as ``[^.]*-[^.]*-[^.]*-[^.]*`` needs O(n**4) steps on a group name of n dashes
    and a trailing dot, and group names come from clients (up to 1024 characters).
    """

    __slots__ = ("_accept", "_any_but_dot", "_literals", "_skippable", "_star", "_star_any")

    def __init__(self, tokens: list[str]) -> None:
        # tokens: a one-character literal, or ONE ("?"), STAR ("*"), STAR_ANY ("**")
        self._literals: dict[str, int] = {}
        self._any_but_dot = 0  # "?"
        self._star = 0  # "*": loops on anything but "."
        self._star_any = 0  # "**": loops on anything
        for i, token in enumerate(tokens):
            bit = 1 << i
            if token == ONE:
                self._any_but_dot |= bit
            elif token == STAR:
                self._star |= bit
            elif token == STAR_ANY:
                self._star_any |= bit
            else:
                self._literals[token] = self._literals.get(token, 0) | bit
        self._skippable = self._star | self._star_any
        self._accept = 1 << len(tokens)

    def _closure(self, states: int) -> int:
        """Add the states reached by matching stars with nothing."""
        while True:
            grown = states | (states & self._skippable) << 1
            if grown == states:
                return states
            states = grown

    def fullmatch(self, group: str) -> bool:
        """Whether the whole of ``group`` matches the pattern."""
        states = self._closure(1)
        for char in group:
            dot = char == "."
            step = self._literals.get(char, 0) | (0 if dot else self._any_but_dot)
            loop = self._star_any | (0 if dot else self._star)
            states = self._closure((states & step) << 1 | (states & loop))
            if not states:
                return False
        return bool(states & self._accept)


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> GroupPattern | None:
    """Compile a wildcard group pattern; None when the pattern is invalid.

    ``?`` is one character except ``.``, ``*`` zero or more characters except ``.``, ``**``
    zero or more of any character, ``\\`` escapes ``\\``, ``*`` and ``?``; at most five ``*``.
    """
    tokens: list[str] = []
    stars = 0
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1] not in "\\*?":
                return None
            tokens.append(pattern[i + 1])
            i += 2
            continue
        if char == "*":
            if pattern.startswith("**", i):
                tokens.append(STAR_ANY)
                stars += 2
                i += 2
            else:
                tokens.append(STAR)
                stars += 1
                i += 1
            continue
        tokens.append(ONE if char == "?" else char)
        i += 1
    if stars > MAX_PATTERN_STARS or not pattern:
        return None
    return GroupPattern(tokens)
