"""Wildcard roles against hostile group names: same answers as the spec's rules, in linear time.

Group names come from clients (up to 1024 characters) and patterns from the app's roles, so
a pattern like ``*-*-*-*`` must not let a client stall the event loop with a group name of
dashes (a backtracking regex needs O(n**4) steps for it: minutes at 1024 characters).
"""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from webpubsub.core.roles import Permission, compile_pattern, is_allowed


def reference(pattern: str) -> re.Pattern[str] | None:
    """The rules of spec 4.6 as a (backtracking) regex: the oracle for short inputs."""
    out, stars, i = [], 0, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1] not in "\\*?":
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif pattern.startswith("**", i):
            out.append(".*")
            stars, i = stars + 2, i + 2
        elif char == "*":
            out.append("[^.]*")
            stars, i = stars + 1, i + 1
        else:
            out.append("[^.]" if char == "?" else re.escape(char))
            i += 1
    if stars > 5 or not pattern:
        return None
    return re.compile("".join(out), re.DOTALL)


alphabet = st.sampled_from(list("ab.-*?\\"))
names = st.text(st.sampled_from(list("ab.-\n")), max_size=12)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(pattern=st.text(alphabet, max_size=8), group=names)
def test_same_answers_as_the_reference(pattern: str, group: str) -> None:
    expected = reference(pattern)
    compiled = compile_pattern(pattern)
    assert (compiled is None) == (expected is None), pattern
    if compiled is not None and expected is not None:
        assert compiled.fullmatch(group) == bool(expected.fullmatch(group)), (pattern, group)


def test_documented_examples() -> None:
    cases = [
        ("chat-*", "chat-1", True),
        ("chat-*", "chat.1", False),
        ("clientA.**", "clientA.alpha.room1", True),
        ("clientA.rooms.?1", "clientA.rooms.a1", True),
        ("clientA.rooms.?1", "clientA.rooms.1", False),
        ("literal\\*star", "literal*star", True),
        ("literal\\*star", "literalXstar", False),
    ]
    for pattern, group, expected in cases:
        compiled = compile_pattern(pattern)
        assert compiled is not None
        assert compiled.fullmatch(group) is expected, (pattern, group)


def test_hostile_group_names_are_matched_quickly() -> None:
    roles = {
        "webpubsub.joinLeaveGroups.*-*-*-*-*",
        "webpubsub.joinLeaveGroups.**a**a",
        "webpubsub.joinLeaveGroups.?*?*?*?*?*",
    }
    hostile = ["-" * 1023 + ".", "a" * 1023 + "b", "a-" * 511 + "."]
    started = time.perf_counter()
    for group in hostile:
        is_allowed(roles, Permission.JOIN_LEAVE_GROUP, group)
    assert time.perf_counter() - started < 0.5
