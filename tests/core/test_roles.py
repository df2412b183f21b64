"""Permission rules (spec 4.6) and REST grant/revoke/check (spec 1.5)."""

from __future__ import annotations

import pytest

from webpubsub.core.roles import (
    Permission,
    compile_pattern,
    has_permission,
    is_allowed,
    parse_permission,
    revoke,
    role_for,
)

JOIN = Permission.JOIN_LEAVE_GROUP
SEND = Permission.SEND_TO_GROUP


class TestRoles:
    def test_no_roles_allow_nothing(self) -> None:
        assert not is_allowed(set(), JOIN, "g")
        assert not is_allowed(set(), SEND, "g")

    def test_wide_roles_allow_every_group(self) -> None:
        assert is_allowed({"webpubsub.joinLeaveGroup"}, JOIN, "any.group")
        assert is_allowed({"webpubsub.sendToGroup"}, SEND, "x")
        assert not is_allowed({"webpubsub.sendToGroup"}, JOIN, "x")

    def test_scoped_role_allows_only_its_group(self) -> None:
        roles = {"webpubsub.sendToGroup.room1"}
        assert is_allowed(roles, SEND, "room1")
        assert not is_allowed(roles, SEND, "room2")
        assert not is_allowed(roles, SEND, "room")

    def test_scoped_group_name_may_contain_dots(self) -> None:
        assert is_allowed({"webpubsub.joinLeaveGroup.a.b.c"}, JOIN, "a.b.c")
        assert not is_allowed({"webpubsub.joinLeaveGroup.a.b.c"}, JOIN, "a.b")

    def test_roles_are_case_sensitive(self) -> None:
        assert not is_allowed({"webpubsub.sendToGroup.Room"}, SEND, "room")


class TestWildcardRoles:
    @pytest.mark.parametrize(
        ("pattern", "group", "expected"),
        [
            ("chat-*", "chat-1", True),
            ("chat-*", "chat.1", False),
            ("clientA.**", "clientA.alpha.room1", True),
            ("clientA.rooms.?1", "clientA.rooms.a1", True),
            ("clientA.rooms.?1", "clientA.rooms.1", False),
            (r"literal\*star", "literal*star", True),
            (r"literal\*star", "literalXstar", False),
        ],
    )
    def test_documented_examples(self, pattern: str, group: str, expected: bool) -> None:
        assert is_allowed({f"webpubsub.sendToGroups.{pattern}"}, SEND, group) is expected

    def test_more_than_five_stars_is_invalid(self) -> None:
        assert compile_pattern("*.*.*.*.*.*") is None
        assert not is_allowed({"webpubsub.joinLeaveGroups.*.*.*.*.*.*"}, JOIN, "a.b.c.d.e.f")

    def test_dangling_escape_is_invalid(self) -> None:
        assert compile_pattern("abc\\") is None


class TestRestPermissions:
    def test_parse_permission_is_case_insensitive(self) -> None:
        assert parse_permission("SENDTOGROUP") is SEND
        assert parse_permission("joinLeaveGroup") is JOIN
        assert parse_permission("admin") is None

    def test_grant_then_check(self) -> None:
        roles = {role_for(SEND, "g1")}
        assert has_permission(roles, SEND, "g1")
        assert not has_permission(roles, SEND, "g2")
        assert not has_permission(roles, SEND, None)

    def test_check_without_target_needs_the_wide_role(self) -> None:
        assert has_permission({role_for(JOIN)}, JOIN, None)

    def test_revoke_one_group(self) -> None:
        roles = {role_for(SEND, "g1"), role_for(SEND, "g2")}
        revoke(roles, SEND, "g1")
        assert roles == {role_for(SEND, "g2")}

    def test_revoke_without_target_removes_every_role_of_the_permission(self) -> None:
        roles = {role_for(SEND), role_for(SEND, "g1"), role_for(JOIN)}
        revoke(roles, SEND, None)
        assert roles == {role_for(JOIN)}
