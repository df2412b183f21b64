"""Tests for webpubsub.core.odata: the OData ``filter`` of send operations (spec 1.7)."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Collection
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webpubsub.core.odata import (
    MAX_CLAUSES,
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    Filter,
    FilterError,
    FilterTarget,
    parse_filter,
)


@dataclass(frozen=True)
class Conn:
    """A connection as a filter sees it."""

    connection_id: str = "conn-1"
    user_id: str | None = None
    groups: Collection[str] = frozenset()
    subprotocol: str | None = None


def conn(
    user_id: str | None = None,
    *groups: str,
    connection_id: str = "conn-1",
    subprotocol: str | None = None,
) -> Conn:
    return Conn(connection_id, user_id, frozenset(groups), subprotocol)


ANON = conn(None)
USER1 = conn("user1", "group1", "g1", connection_id="123")


def matches(text: str, target: FilterTarget) -> bool:
    return parse_filter(text).matches(target)


def error(text: str) -> FilterError:
    with pytest.raises(FilterError) as info:
        parse_filter(text)
    return info.value


class TestDocumentedExamples:
    """The examples of the docs' reference-odata-filter page and of spec 1.7."""

    @pytest.mark.parametrize(
        ("text", "target", "expected"),
        [
            ("userId eq 'user1' and connectionId ne '123'", conn("user1"), True),
            ("userId eq 'user1' and connectionId ne '123'", USER1, False),
            ("userId eq 'user1' and (not ('group1' in groups))", conn("user1"), True),
            ("userId eq 'user1' and (not ('group1' in groups))", USER1, False),
            ("userId eq 'user''1'", conn("user'1"), True),
            ("userId eq 'user''1'", USER1, False),
            ("startswith(userId, 'listener-')", conn("listener-7"), True),
            ("startswith(userId, 'listener-')", USER1, False),
            ("length(groups) gt 0", USER1, True),
            ("length(groups) gt 0", ANON, False),
            ("'g1' in groups", USER1, True),
            ("'g1' in groups", ANON, False),
            ("userId in ('a','b')", conn("b"), True),
            ("userId in ('a','b')", USER1, False),
            ("tolower(userId) eq 'bob'", conn("BoB"), True),
            ("tolower(userId) eq 'bob'", ANON, False),
            ("userId eq null", ANON, True),
            ("userId eq null", USER1, False),
            ("userId ne 'vic''s' and 'g1' in groups", USER1, True),
            ("userId ne 'vic''s' and 'g1' in groups", conn("vic's", "g1"), False),
            (
                "'group1' in groups or 'group2' in groups or 'group3' in groups",
                conn("x", "group3"),
                True,
            ),
            ("userId in ('user1', 'user2', 'user3') and 'group1' in groups", USER1, True),
            ("length(userId) le 10 and length(userId) gt 3", USER1, True),
            ("length(userId) gt 10 or length(userId) le 3", USER1, False),
            ("not endswith(userId, 'milk')", USER1, True),
            ("toupper(userId) eq 'USER1'", USER1, True),
            ("trim(userId) eq 'user1'", conn(" user1 "), True),
            ("substring(userId,5,2) eq 'ab'", conn("user-ab-de"), True),
            ("endswith(userId,'de')", conn("user-ab-de"), True),
            ("indexof(userId,'-ab-') ge 0", conn("user-ab-de"), True),
            ("length(groups) gt 1", USER1, True),
            ("not (length(userId) gt 5)", USER1, True),
        ],
    )
    def test_example(self, text: str, target: Conn, expected: bool) -> None:
        assert matches(text, target) is expected

    def test_precedence_example_from_the_docs(self) -> None:
        bare = (
            "length(userId) gt 0 and length(userId) lt 3"
            " or length(userId) gt 7 and length(userId) lt 10"
        )
        grouped = (
            "((length(userId) gt 0) and (length(userId) lt 3))"
            " or ((length(userId) gt 7) and (length(userId) lt 10))"
        )
        for user in (None, "", "a", "abc", "abcd", "abcdefgh", "abcdefghij"):
            target = conn(user)
            assert matches(bare, target) is matches(grouped, target)


class TestParsing:
    """Lexical rules, case-insensitivity, precedence and the Filter value."""

    @pytest.mark.parametrize("name", ["userId", "userid", "USERID", "UserId"])
    def test_identifiers_are_case_insensitive(self, name: str) -> None:
        assert matches(f"{name} eq 'user1'", USER1)

    @pytest.mark.parametrize(
        "text",
        [
            "USERID EQ 'user1' AND 'g1' IN GROUPS",
            "ToLower(userId) Eq 'user1'",
            "NOT (userId Ne 'user1') Or FALSE",
            "userId ne NULL",
        ],
    )
    def test_keywords_and_functions_are_case_insensitive(self, text: str) -> None:
        assert matches(text, USER1)

    def test_string_values_are_case_sensitive(self) -> None:
        assert not matches("userId eq 'USER1'", USER1)
        assert not matches("'G1' in groups", USER1)

    def test_connection_id_and_protocol_identifiers(self) -> None:
        target = conn("u", connection_id="abc", subprotocol="json.webpubsub.azure.v1")
        assert matches("connectionId eq 'abc'", target)
        assert matches("protocol eq 'json.webpubsub.azure.v1'", target)
        assert matches("Protocol eq null", conn("u"))

    @pytest.mark.parametrize(
        ("literal", "value"),
        [("''", ""), ("''''", "'"), ("'a''b''c'", "a'b'c"), ("' x '", " x "), ("'é€😀'", "é€😀")],
    )
    def test_string_literals(self, literal: str, value: str) -> None:
        assert matches(f"userId eq {literal}", conn(value))
        assert not matches(f"userId ne {literal}", conn(value))

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("length(userId) eq 5", True),
            ("length(userId) eq +5", True),
            ("length(userId) eq 005", True),
            ("length(userId) gt -1", True),
            ("indexof(userId, 'zz') eq -1", True),
            ("length(userId) lt 2147483647", True),
            ("length(userId) gt -2147483648", True),
        ],
    )
    def test_integer_literals(self, text: str, expected: bool) -> None:
        assert matches(text, USER1) is expected

    def test_whitespace_is_free_between_tokens(self) -> None:
        assert matches("\t userId\neq'user1'and('g1'in groups) \r\n", USER1)

    def test_and_binds_tighter_than_or(self) -> None:
        # true or (false and false), not (true or false) and false
        assert matches("true or false and false", ANON)
        assert not matches("(true or false) and false", ANON)

    def test_not_binds_tighter_than_comparisons(self) -> None:
        # (not true) eq false
        assert matches("not true eq false", ANON)
        assert matches("not not true", ANON)

    def test_comparisons_associate_to_the_left(self) -> None:
        # (1 eq 1) eq true
        assert matches("1 eq 1 eq true", ANON)
        assert matches("'a' in groups eq false", ANON)

    def test_in_forms(self) -> None:
        assert matches("'g1' in (groups)", USER1)
        assert matches("'g1' in ((groups))", USER1)
        assert matches("userId in ('user1')", USER1)
        assert matches("userId in (('x'), 'user1')", USER1)
        assert matches("userId in (connectionId, 'x')", conn("123", connection_id="123"))
        assert matches("length(userId) in (1, 5)", USER1)
        assert matches("startswith(userId, 'u') in (true)", USER1)

    def test_constant_filters(self) -> None:
        assert matches("true", ANON)
        assert not matches("false", ANON)
        assert matches("'a' eq 'a'", ANON)
        assert matches("false or userId eq 'user1'", USER1)
        assert not matches("false and userId eq 'user1'", USER1)
        assert matches("true or userId eq 'x'", USER1)

    def test_filter_keeps_its_text(self) -> None:
        text = " userId eq 'a' "
        assert parse_filter(text).text == text

    def test_filter_constructor_compiles(self) -> None:
        assert Filter("'g1' in groups").matches(USER1)
        with pytest.raises(FilterError):
            Filter("userId")

    def test_filter_equality_and_hash_go_by_text(self) -> None:
        a, b = parse_filter("userId eq 'a'"), parse_filter("userId eq 'a'")
        assert a == b
        assert hash(a) == hash(b)
        assert a != parse_filter("userId eq 'b'")

    def test_filter_pickles_by_text(self) -> None:
        original = parse_filter("'g1' in groups and userId ne null")
        copy = pickle.loads(pickle.dumps(original))
        assert copy == original
        assert copy.matches(USER1)
        assert not copy.matches(ANON)

    def test_target_may_be_any_object_with_the_attributes(self) -> None:
        class Plain:
            __slots__ = ("connection_id", "groups", "user_id")

            def __init__(self) -> None:
                self.connection_id = "c"
                self.user_id: str | None = "u"
                self.groups: dict[str, None] = {"g1": None}

            @property
            def subprotocol(self) -> str | None:
                return None

        assert matches("'g1' in groups and length(groups) eq 1 and protocol eq null", Plain())


class TestSyntaxErrors:
    """Malformed filters raise FilterError pointing at the offending position."""

    @pytest.mark.parametrize(
        ("text", "position", "fragment"),
        [
            ("fooBar eq 'x'", 0, "unknown identifier 'fooBar'"),
            ("userId eq 'x' and bogus", 18, "unknown identifier 'bogus'"),
            ("frobnicate(userId)", 0, "unknown function 'frobnicate'"),
            ("userId(1) eq 'x'", 0, "unknown function 'userId'"),
            ("substring(userId)", 0, "takes 2 or 3 arguments, got 1"),
            ("tolower(userId, 'x') eq 'x'", 0, "takes 1 argument, got 2"),
            ("length() eq 0", 0, "takes 1 argument, got 0"),
            ("userId eq 'abc", 10, "unterminated string"),
            ("userId eq 'it''s", 10, "unterminated string"),
            ("userId eq 'a' userId", 14, "found 'userId'"),
            ("userId eq 'a')", 13, "found ')'"),
            ("(userId eq 'a'", 14, "expected ')' to close the '(' at position 0"),
            ("userId eq", 9, "found the end of the filter"),
            ("userId eq eq 'a'", 10, "expected a value, found 'eq'"),
            ("and userId eq 'a'", 0, "expected a value"),
            ("userId in ('a',)", 15, "expected a value, found ')'"),
            ("userId in ('a' 'b')", 15, "expected ')' or ','"),
            ("userId in ()", 11, "expected a value"),
            ("userId == 'a'", 7, "unexpected character '='"),
            ('userId eq "a"', 10, "unexpected character '\"'"),
            ("userId eq 'a' && true", 14, "unexpected character '&'"),
            ("length(userId) eq 5x", 18, "invalid number '5x'"),
            ("length(userId) eq 2147483648", 18, "out of the 32-bit range"),
            ("length(userId) eq -2147483649", 18, "out of the 32-bit range"),
            ("length(userId) eq 1" + "0" * 300, 18, "out of the 32-bit range"),
            ("length(userId) eq - 1", 18, "unexpected character '-'"),
            ("length(userId) eq \u0661", 18, "unexpected character"),  # Arabic-Indic one
            ("userId eq 'a' and", 17, "found the end of the filter"),
            ("groups/any(g: g eq 'a')", 6, "unexpected character '/'"),
        ],
    )
    def test_error_position_and_message(self, text: str, position: int, fragment: str) -> None:
        exc = error(text)
        assert exc.position == position
        assert f"position {position}" in str(exc)
        assert fragment in str(exc)

    @pytest.mark.parametrize("text", ["", " ", "\t\r\n"])
    def test_empty_filter(self, text: str) -> None:
        exc = error(text)
        assert str(exc) == "Filter is empty."
        assert exc.position is None

    def test_non_string_is_rejected(self) -> None:
        with pytest.raises(FilterError):
            parse_filter(None)  # type: ignore[arg-type]

    def test_error_is_a_value_error(self) -> None:
        assert isinstance(error("?"), ValueError)

    def test_long_tokens_are_clipped_in_messages(self) -> None:
        exc = error("userId eq 'a' " + "x" * 2000)
        assert len(str(exc)) < 200


class TestTypeErrors:
    """Static type checking: the filter must be boolean and operands must fit their operators."""

    def test_not_binds_to_the_function_call(self) -> None:
        exc = error("not length(userId) gt 5")
        assert str(exc) == (
            "Invalid syntax for 'not length(userId)' at position 0: Type 'int', expect 'bool'."
        )
        assert exc.position == 0

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("userId", "'userId' at position 0: Type 'string', expect 'bool'"),
            ("groups", "Type 'collection', expect 'bool'"),
            ("length(userId)", "Type 'int', expect 'bool'"),
            ("null", "Type 'null', expect 'bool'"),
            ("'a'", "Type 'string', expect 'bool'"),
            ("(tolower(userId))", "Type 'string', expect 'bool'"),
            ("userId eq 'a' and userId", "'userId' at position 18: Type 'string'"),
            ("length(userId) or true", "'length(userId)' at position 0: Type 'int'"),
            ("not userId eq 'a'", "'not userId' at position 0: Type 'string', expect 'bool'"),
            ("not 'g1' in groups", "'not 'g1'' at position 0"),
            ("not null", "Type 'null', expect 'bool'"),
        ],
    )
    def test_non_boolean_where_bool_expected(self, text: str, fragment: str) -> None:
        assert fragment in str(error(text))

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("userId eq 1", "'userId eq 1' at position 0: Type 'int', expect 'string'"),
            ("length(userId) eq 'a'", "Type 'string', expect 'int'"),
            ("userId eq true", "Type 'bool', expect 'string'"),
            ("groups eq null", "Type 'collection', expect 'bool' or 'int' or 'string'"),
            ("groups ne groups", "Type 'collection'"),
            ("true gt false", "Type 'bool', expect 'int' or 'string'"),
            ("userId gt 5", "Type 'int', expect 'string'"),
            ("length(groups) ge groups", "Type 'collection', expect 'int' or 'string'"),
        ],
    )
    def test_comparison_operands(self, text: str, fragment: str) -> None:
        assert fragment in str(error(text))

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("1 in groups", "Type 'int', expect 'string'"),
            ("groups in groups", "Type 'collection', expect 'string'"),
            ("'a' in userId", "'a' in userId' at position 0: Type 'string', expect 'collection'"),
            ("'a' in null", "Type 'null', expect 'collection'"),
            ("userId in (1, 2)", "Type 'int', expect 'string'"),
            ("userId in ('a', 2)", "Type 'int', expect 'string'"),
            ("null in ('a', 2)", "Type 'string', expect 'int'"),
            ("userId in (groups, 'a')", "Type 'collection'"),
            ("length(userId) in (groups)", "Type 'int', expect 'string'"),
        ],
    )
    def test_in_operands(self, text: str, fragment: str) -> None:
        assert fragment in str(error(text))

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            (
                "tolower(groups) eq 'a'",
                "'tolower(groups)' at position 0: Type 'collection', expect",
            ),
            ("length(5) eq 1", "Type 'int', expect 'string' or 'collection'"),
            ("length(true) eq 1", "Type 'bool'"),
            ("startswith(userId, 1)", "Type 'int', expect 'string'"),
            ("substring(userId, 'a') eq 'b'", "Type 'string', expect 'int'"),
            ("substring(userId, 1, true) eq 'b'", "Type 'bool', expect 'int'"),
            ("substring(groups, 1) eq 'b'", "Type 'collection', expect 'string'"),
            ("concat(userId, groups) eq 'a'", "Type 'collection', expect 'string'"),
            ("contains(userId, groups)", "Type 'collection', expect 'string'"),
            ("contains(groups, groups)", "Type 'collection', expect 'string'"),
            ("contains(5, 'a')", "Type 'int', expect 'string'"),
            ("indexof(userId, 1) eq 0", "Type 'int', expect 'string'"),
        ],
    )
    def test_function_arguments(self, text: str, fragment: str) -> None:
        assert fragment in str(error(text))


class TestEvaluation:
    """What each operator and function computes for a non-null connection."""

    @pytest.mark.parametrize(
        ("text", "user", "expected"),
        [
            ("tolower(userId) eq 'abc'", "AbC", True),
            ("toupper(userId) eq 'ABC'", "aBc", True),
            ("trim(userId) eq 'a b'", " \ta b\n ", True),
            ("substring(userId, 2) eq 'cdef'", "abcdef", True),
            ("substring(userId, 0) eq 'abcdef'", "abcdef", True),
            ("substring(userId, 6) eq ''", "abcdef", True),
            ("substring(userId, 1, 3) eq 'bcd'", "abcdef", True),
            ("substring(userId, 1, 0) eq ''", "abcdef", True),
            ("substring(userId, 2, 4) eq 'cdef'", "abcdef", True),
            ("concat(userId, '-x') eq 'ab-x'", "ab", True),
            ("concat(concat('<', userId), '>') eq '<ab>'", "ab", True),
            ("indexof(userId, 'cd') eq 2", "abcdcd", True),
            ("indexof(userId, 'zz') eq -1", "abc", True),
            ("indexof(userId, '') eq 0", "abc", True),
            ("length(userId) eq 3", "abc", True),
            ("length(userId) eq 0", "", True),
            ("startswith(userId, 'ab')", "abc", True),
            ("startswith(userId, 'bc')", "abc", False),
            ("endswith(userId, 'bc')", "abc", True),
            ("endswith(userId, 'ab')", "abc", False),
            ("contains(userId, 'b')", "abc", True),
            ("contains(userId, 'x')", "abc", False),
            ("startswith(userId, '')", "abc", True),
            ("startswith('user-1', userId)", "user", True),
            ("userId gt 'abc'", "abd", True),
            ("userId gt 'abc'", "abc", False),
            ("userId ge 'abc'", "abc", True),
            ("userId lt 'b'", "a", True),
            ("userId lt 'B'", "a", False),  # ordinal: 'B' < 'a'
            ("userId le 'a'", "a", True),
            ("'b' gt userId", "a", True),
            ("'a' le userId", "a", True),
            ("'a' eq userId", "a", True),
            ("'a' ne userId", "a", False),
            ("userId eq connectionId", "conn-1", True),
            ("userId ne connectionId", "conn-1", False),
            ("userId lt connectionId", "a", True),
            ("length(userId) lt length(connectionId)", "a", True),
            ("2 gt 1", "a", True),
            ("-2 lt -1", "a", True),
        ],
    )
    def test_string_and_int_operations(self, text: str, user: str, expected: bool) -> None:
        assert matches(text, conn(user)) is expected

    @pytest.mark.parametrize(
        "text",
        [
            "substring(userId, 7) eq null",
            "substring(userId, -1) eq null",
            "substring(userId, 1, 6) eq null",
            "substring(userId, 0, -1) eq null",
            "substring(userId, 2, length(userId)) eq null",
        ],
    )
    def test_substring_out_of_range_is_null(self, text: str) -> None:
        assert matches(text, conn("abcdef"))

    def test_substring_with_computed_arguments(self) -> None:
        assert matches("substring(userId, indexof(userId, '-') , 3) eq '-ab'", conn("user-ab"))

    def test_collections(self) -> None:
        target = conn("u", "a", "b", "it's")
        assert matches("length(groups) eq 3", target)
        assert matches("'it''s' in groups", target)
        assert matches("contains(groups, 'a')", target)
        assert not matches("contains(groups, 'c')", target)
        assert matches("concat('i', 't''s') in groups", target)
        assert matches("userId in groups", conn("a", "a"))
        assert not matches("userId in groups", conn("z", "a"))

    def test_groups_may_be_any_collection(self) -> None:
        target = Conn("c", "u", {"g1": None, "g2": None}.keys(), None)
        assert matches("'g2' in groups and length(groups) eq 2", target)

    def test_in_list_with_dynamic_items(self) -> None:
        text = "userId in ('x', connectionId, concat('a', 'b'), tolower(protocol))"
        assert matches(text, conn("ab"))
        assert matches(text, conn("conn-1"))
        assert matches(text, conn("json", subprotocol="JSON"))
        assert not matches(text, conn("y"))

    def test_many_operands_of_and_or(self) -> None:
        ors = " or ".join(f"'g{i}' in groups" for i in range(20))
        assert matches(ors, conn("u", "g19"))
        assert not matches(ors, conn("u", "g20"))
        ands = " and ".join(f"'g{i}' in groups" for i in range(20))
        assert matches(ands, conn("u", *(f"g{i}" for i in range(20))))
        assert not matches(ands, conn("u", *(f"g{i}" for i in range(19))))

    def test_and_or_with_three_dynamic_operands_among_constants(self) -> None:
        text = "true and userId ne null and true and 'a' in groups and length(groups) eq 1"
        assert matches(text, conn("u", "a"))
        assert not matches(text, conn(None, "a"))

    def test_results_are_bools(self) -> None:
        for text in ("userId eq 'user1'", "'g1' in groups", "true", "userId in ('a')"):
            assert isinstance(parse_filter(text).matches(USER1), bool)


class TestNullSemantics:
    """A null userId or protocol: functions yield null (or false), comparisons are false."""

    @pytest.mark.parametrize(
        "text",
        [
            "userId eq null",
            "null eq userId",
            "null eq null",
            "not (userId ne null)",
            "length(userId) eq null",
            "tolower(userId) eq null",
            "toupper(userId) eq null",
            "trim(userId) eq null",
            "substring(userId, 0) eq null",
            "substring(userId, 0, 1) eq null",
            "concat(userId, 'a') eq null",
            "concat('a', userId) eq null",
            "indexof(userId, 'a') eq null",
            "indexof('a', userId) eq null",
            "tolower(null) eq null",
            "length(null) eq null",
            "userId in ('a', null)",
            "userId in (null)",
            "protocol eq null",
            "not startswith(userId, 'x')",
            "not endswith(userId, 'x')",
            "not contains(userId, 'x')",
            "not startswith('x', userId)",
            "not contains(groups, userId)",
            "not (userId in groups)",
            "not (null in groups)",
            "not (userId gt 'a')",
            "not (userId le 'a')",
            "not ('a' lt userId)",
            "not (length(userId) gt -1)",
            "not (length(userId) le 100)",
            "not (userId gt null)",
            "not (null ge null)",
            "not (userId eq 'a')",
            "userId ne 'a'",
            "not (userId in ('a', 'b'))",
            "not startswith(null, 'x')",
            "not contains(null, 'x')",
        ],
    )
    def test_holds_for_anonymous_connection(self, text: str) -> None:
        assert matches(text, conn(None, "a"))

    @pytest.mark.parametrize(
        "text",
        [
            "userId eq null",
            "length(userId) eq null",
            "userId in (null)",
            "userId gt null",
            "length(userId) lt null",
        ],
    )
    def test_fails_for_named_connection(self, text: str) -> None:
        assert not matches(text, conn("a"))


class TestLimits:
    """Hardening against hostile input: size, nesting and clause limits (spec 1.7, 6)."""

    def test_length_limit(self) -> None:
        head = "userId eq '"
        ok = head + "x" * (MAX_FILTER_LENGTH - len(head) - 1) + "'"
        assert len(ok) == MAX_FILTER_LENGTH
        parse_filter(ok)
        exc = error(ok + " ")
        assert "too long" in str(exc)
        assert str(MAX_FILTER_LENGTH) in str(exc)

    @pytest.mark.parametrize(
        ("opening", "closing"),
        [("(", ")"), ("not ", ""), ("not (", ")")],
    )
    def test_depth_limit(self, opening: str, closing: str) -> None:
        levels = MAX_DEPTH // 2 if opening == "not (" else MAX_DEPTH
        assert matches(opening * levels + "true" + closing * levels, ANON) in (True, False)
        exc = error(opening * (levels + 1) + "true" + closing * (levels + 1))
        assert "nested too deeply" in str(exc)

    def test_function_depth_limit(self) -> None:
        def nest(n: int) -> str:
            return "tolower(" * n + "userId" + ")" * n + " eq 'a'"

        assert matches(nest(MAX_DEPTH), conn("A"))
        assert "nested too deeply" in str(error(nest(MAX_DEPTH + 1)))

    @pytest.mark.parametrize("opening", ["(", "not ", "tolower(", "userId in (", "'a' in (("])
    def test_very_deep_input_is_a_filter_error(self, opening: str) -> None:
        text = opening * (MAX_FILTER_LENGTH // len(opening))
        assert MAX_FILTER_LENGTH - len(opening) < len(text) <= MAX_FILTER_LENGTH
        assert "nested too deeply" in str(error(text))

    def test_clause_limit(self) -> None:
        def clauses(n: int) -> str:
            return " or ".join(f"'g{i}' in groups" for i in range(n))

        assert matches(clauses(MAX_CLAUSES), conn("u", f"g{MAX_CLAUSES - 1}"))
        exc = error(clauses(MAX_CLAUSES + 1))
        assert "too complex" in str(exc)
        assert str(MAX_CLAUSES) in str(exc)

    def test_function_calls_count_as_clauses(self) -> None:
        # Each term is one comparison plus one call.
        half = MAX_CLAUSES // 2
        terms = [f"length(userId) ne {i}" for i in range(half + 1)]
        assert "too complex" in str(error(" and ".join(terms)))
        assert matches(" and ".join(terms[:half]), conn("x" * 1000))

    def test_long_in_list_is_one_clause(self) -> None:
        names = ", ".join(f"'u{i}'" for i in range(500))
        assert matches(f"userId in ({names})", conn("u499"))
        assert not matches(f"userId in ({names})", conn("u500"))

    def test_long_flat_expressions_evaluate_without_recursion(self) -> None:
        text = " and ".join(["true"] * 450)
        assert len(text) <= MAX_FILTER_LENGTH
        assert matches(text, ANON)
        text = " or ".join(["userId eq null"] * 90)
        assert matches(text, ANON)


# --- Properties ---------------------------------------------------------------------------------

TOKENS = [
    "userId", "connectionId", "groups", "protocol", "UserID", "foo",
    "and", "or", "not", "in", "eq", "ne", "gt", "ge", "lt", "le",
    "true", "false", "null", "(", ")", ",", "'a'", "''", "'it''s'", "'", "0", "-1", "+7",
    "99999999999", "tolower", "toupper", "trim", "substring", "concat", "indexof", "length",
    "startswith", "endswith", "contains", " ", "\t", "$", "/",
]  # fmt: skip


PREDICATES = ["startswith", "endswith", "contains"]


def string_expr(depth: int) -> st.SearchStrategy[str]:
    leaves = st.sampled_from(["userId", "connectionId", "protocol", "'a'", "'it''s'", "''", "null"])
    if depth <= 0:
        return leaves
    inner = string_expr(depth - 1)
    ints = int_expr(depth - 1)
    return st.one_of(
        leaves,
        st.builds("tolower({})".format, inner),
        st.builds("toupper({})".format, inner),
        st.builds("trim({})".format, inner),
        st.builds("substring({}, {})".format, inner, ints),
        st.builds("substring({}, {}, {})".format, inner, ints, ints),
        st.builds("concat({}, {})".format, inner, inner),
        st.builds("({})".format, inner),
    )


def int_expr(depth: int) -> st.SearchStrategy[str]:
    leaves = st.integers(-3, 8).map(str)
    if depth <= 0:
        return leaves
    inner = string_expr(depth - 1)
    return st.one_of(
        leaves,
        st.just("length(groups)"),
        st.builds("length({})".format, inner),
        st.builds("indexof({}, {})".format, inner, inner),
    )


def bool_expr(depth: int) -> st.SearchStrategy[str]:
    leaves = st.sampled_from(["true", "false", "'a' in groups", "userId in groups"])
    if depth <= 0:
        return leaves
    strings, ints, inner = string_expr(depth - 1), int_expr(depth - 1), bool_expr(depth - 1)
    ops = st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"])
    return st.one_of(
        leaves,
        st.builds("{} {} {}".format, strings, ops, strings),
        st.builds("{} {} {}".format, ints, ops, ints),
        st.builds("{} in groups".format, strings),
        st.builds("{} in ({}, {})".format, strings, strings, strings),
        st.builds("{}({}, {})".format, st.sampled_from(PREDICATES), strings, strings),
        st.builds("contains(groups, {})".format, strings),
        st.builds("not ({})".format, inner),
        st.builds("({}) and ({})".format, inner, inner),
        st.builds("({}) or ({})".format, inner, inner),
    )


texts = st.sampled_from(["", "a", "A", " a ", "it's", "abcdef", "conn-1", "é😀"])
targets = st.builds(
    Conn,
    connection_id=texts,
    user_id=st.none() | texts,
    groups=st.frozensets(texts, max_size=3),
    subprotocol=st.none() | st.just("json.webpubsub.azure.v1"),
)


class TestProperties:
    """No input makes the parser fail other than with FilterError, nor the evaluator at all."""

    @settings(max_examples=500, deadline=None)
    @given(st.text(max_size=200))
    def test_arbitrary_text_only_raises_filter_error(self, text: str) -> None:
        with contextlib.suppress(FilterError):
            parse_filter(text)

    @settings(max_examples=500, deadline=None)
    @given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join), targets)
    def test_token_soup_only_raises_filter_error(self, text: str, target: Conn) -> None:
        try:
            compiled = parse_filter(text)
        except FilterError:
            return
        assert isinstance(compiled.matches(target), bool)

    @settings(max_examples=300, deadline=None)
    @given(bool_expr(3), targets)
    def test_well_typed_filters_evaluate_to_bool(self, text: str, target: Conn) -> None:
        compiled = parse_filter(text)
        result = compiled.matches(target)
        assert isinstance(result, bool)
        assert parse_filter(f"not ({text})").matches(target) is not result
        assert parse_filter(f"({text}) eq true").matches(target) is result

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join) | bool_expr(2), targets)
    def test_in_group_holds_exactly_for_the_groups_members(self, text: str, target: Conn) -> None:
        try:
            compiled = parse_filter(text)
        except FilterError:
            return
        if compiled.in_group is not None:
            assert compiled.matches(target) is (compiled.in_group in target.groups)
        if compiled.connection_id is not None:
            assert compiled.matches(target) is (compiled.connection_id == target.connection_id)

    @settings(max_examples=200, deadline=None)
    @given(texts | st.text(max_size=30), targets)
    def test_any_group_literal_is_recognised(self, group: str, target: Conn) -> None:
        compiled = parse_filter("'" + group.replace("'", "''") + "' in groups")
        assert compiled.in_group == group
        assert compiled.matches(target) is (group in target.groups)
        compiled = parse_filter("connectionId  eq '" + group.replace("'", "''") + "'")
        assert compiled.connection_id == group
        assert compiled.matches(target) is (group == target.connection_id)


@pytest.mark.parametrize(
    ("text", "group"),
    [
        ("'a' in groups", "a"),
        ("  'it''s'   in   groups ", "it's"),
        ("'a' IN Groups", "a"),
        ("'a' in groups or 'b' in groups", None),
        ("'a'' in groups or ''b' in groups", "a' in groups or 'b"),
        ("not ('a' in groups)", None),
        ("'a' in groups and userId eq 'u'", None),
        ("userId eq 'a'", None),
        ("connectionId eq 'a'", None),
    ],
)
def test_in_group_names_the_group_of_a_one_group_filter(text: str, group: str | None) -> None:
    # The hub walks that group instead of testing every connection: it must be exactly
    # the connections the filter holds for.
    assert Filter(text).in_group == group


@pytest.mark.parametrize(
    ("text", "connection_id"),
    [
        ("connectionId eq 'c1'", "c1"),
        (" connectionId  eq  'it''s' ", "it's"),
        ("connectionId ne 'c1'", None),
        ("ConnectionId EQ 'c1'", "c1"),  # names are case-insensitive, as for the parser
        ("'c1' eq connectionId", None),
        ("connectionId eq 'a' or connectionId eq 'b'", None),
        ("connectionId eq 'a'' or connectionId eq ''b'", "a' or connectionId eq 'b"),
    ],
)
def test_connection_id_names_the_connection_of_a_one_connection_filter(
    text: str, connection_id: str | None
) -> None:
    assert Filter(text).connection_id == connection_id
