"""The one rule for names: whatever it accepts can be encoded anywhere later."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webpubsub.core.events import UpstreamRejected, parse_connect_response
from webpubsub.core.names import (
    event_name_problem,
    group_name_problem,
    role_problem,
    text_problem,
    user_id_problem,
)

# Every code point, lone surrogates included (what JSON escapes and JWT claims can carry).
ANY_TEXT = st.text(alphabet=st.characters(codec=None, min_codepoint=0), max_size=40)


@given(ANY_TEXT)
def test_an_accepted_name_always_encodes(name: str) -> None:
    for problem in (user_id_problem, event_name_problem, role_problem, group_name_problem):
        if problem(name) is None:
            name.encode("utf-8")  # never raises for an accepted name
            assert "\0" not in name and name


@pytest.mark.parametrize(
    "name",
    ["José", "张伟", "עברית", "🎉 party", "a b", "x" * 1024, "\u202ertl", "tab\there"],
)
def test_unicode_names_are_welcome(name: str) -> None:
    assert text_problem(name, "Name") is None
    assert group_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("\ud800", "surrogate"),
        ("a\udfffb", "surrogate"),
        ("a\0b", "NUL"),
        ("", "empty"),
        ("x" * 1025, "longer"),
        (42, "string"),
    ],
)
def test_hostile_names_are_refused_with_a_reason(name: object, why: str) -> None:
    problem = user_id_problem(name)
    assert problem is not None and why in problem


def test_blank_group_names_are_refused_but_blank_user_ids_are_not_special() -> None:
    assert group_name_problem("   ") is not None
    assert user_id_problem("   ") is None


@pytest.mark.parametrize(
    "answer",
    [
        {"userId": "\ud800"},
        {"userId": "a\0b"},
        {"roles": ["webpubsub.joinLeaveGroup.\udc00"]},
        {"groups": ["\ud800"]},
    ],
)
def test_a_connect_answer_with_a_hostile_name_is_a_handler_failure(
    answer: dict[str, object],
) -> None:
    with pytest.raises(UpstreamRejected) as refused:
        parse_connect_response(200, json.dumps(answer).encode(), [])
    assert refused.value.status == 500
    # The handler's author is told which member and what is wrong with it.
    (member,) = answer
    assert f"'{member}' in the connect response: " in refused.value.message
    assert "surrogate" in refused.value.message or "NUL" in refused.value.message


@pytest.mark.parametrize("member", ["groups", "roles"])
def test_a_connect_answer_with_names_not_in_a_list_says_so(member: str) -> None:
    with pytest.raises(UpstreamRejected, match=f"'{member}' .* must be a list"):
        parse_connect_response(200, json.dumps({member: "g1"}).encode(), [])


def test_a_connect_answer_with_unicode_names_is_taken() -> None:
    answer = {"userId": "张伟", "roles": ["webpubsub.sendToGroup.héllo"], "groups": ["😀"]}
    result = parse_connect_response(200, json.dumps(answer).encode(), [])
    assert result.user_id == "张伟"
    assert result.groups == ["😀"]
