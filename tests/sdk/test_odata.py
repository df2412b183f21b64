"""The ``odata`` helper: values become escaped OData literals (spec 1.7)."""

from __future__ import annotations

from typing import Any

import pytest

from webpubsub import odata
from webpubsub.core.odata import parse_filter
from webpubsub.sdk import odata_literal

from .helpers import WsClient


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("user1", "'user1'"),
        ("vic's", "'vic''s'"),
        ("''", "''''''"),
        ("", "''"),
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (-1, "-1"),
        (1.5, "1.5"),
        (["a", "b'c"], "('a','b''c')"),
        (("x",), "('x')"),
        (frozenset({"b", "a"}), "('a','b')"),
    ],
)
def test_literals(value: Any, literal: str) -> None:
    assert odata_literal(value) == literal


def test_template() -> None:
    assert (
        odata("userId ne {} and {group} in groups", "vic's", group="g1")
        == "userId ne 'vic''s' and 'g1' in groups"
    )
    assert odata("userId in {}", ["u1", "u2"]) == "userId in ('u1','u2')"
    assert odata("length(userId) gt {0} or length(connectionId) gt {0}", 5) == (
        "length(userId) gt 5 or length(connectionId) gt 5"
    )
    assert odata("userId eq {:>4}", 7) == "userId eq '   7'"
    assert odata("no fields {{}}") == "no fields {}"


def test_injection_is_neutralised() -> None:
    evil = "x' or userId ne 'x"
    expression = odata("userId eq {}", evil)
    assert expression == "userId eq 'x'' or userId ne ''x'"
    parse_filter(expression)  # one comparison, still valid OData


def test_rejects_values_without_literal() -> None:
    with pytest.raises(TypeError):
        odata("userId eq {}", object())
    with pytest.raises(TypeError):
        odata("userId eq {}", b"bytes")
    with pytest.raises(ValueError):
        odata("x eq {}", float("nan"))
    with pytest.raises(IndexError):
        odata("{} {}", "only one")


async def test_filters_select_on_the_service(client: Any) -> None:
    quoted = await WsClient.connect(client, user_id="o'brien", groups=["g1"])
    plain = await WsClient.connect(client, user_id="smith")
    await client.send_to_all("hi", filter=odata("userId eq {} and {} in groups", "o'brien", "g1"))
    assert (await quoted.receive())["data"] == "hi"
    await client.send_to_all("both", filter=odata("userId in {}", ["o'brien", "smith"]))
    assert (await quoted.receive())["data"] == "both"
    assert (await plain.receive())["data"] == "both"
    await quoted.close()
    await plain.close()
