"""JSON text from clients: validated once, then relayed byte for byte.

A client's ``json`` payload reaches other clients as the exact text it sent (numbers such as
``1.10`` or ``12345678901234567.5`` and duplicate keys included), so it is never
re-serialized. It must still be JSON every receiver can parse: Python's decoder accepts
``NaN``, ``Infinity``, numbers that overflow to infinity (``1e999``) and lone surrogate
escapes (``"\\ud800"``), and the official JavaScript client fails on what Python would
re-encode from them. This module refuses those with :class:`Refused`, and bounds nesting at
:data:`MAX_DEPTH` levels.

The walk uses the C scanner of :mod:`json` (``scan(text, index) -> (value, end)``), so a
value's raw span ``text[start:end]`` is known without a second pass. The scanner recurses in
C, on Python 3.11 bounded by the recursion limit: a value too deep for it is measured with a
bracket count outside strings, and scanned again under a raised limit when it is within
:data:`MAX_DEPTH`. A value it did parse is measured only when it holds over
:data:`MAX_DEPTH` brackets, so the limit is the same on every interpreter.
"""

from __future__ import annotations

import json
import json.scanner
import math
import re
import sys
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any, cast

MAX_DEPTH = 1000
"""The deepest nesting accepted in a client's JSON payload (``[[1]]`` is 2 levels)."""


class Refused(ValueError):
    """Syntactically JSON, but not JSON every client can read (or nested too deep)."""


def _refuse_constant(name: str) -> Any:
    # NaN, Infinity and -Infinity are Python extensions, not JSON.
    raise Refused(f"'{name}' is not a JSON number.")


def _strict_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        # JSON.parse would read Infinity, and a re-encoder writes null or Infinity.
        raise Refused(f"The number {text[:40]} is too large.")
    return value


def _lenient_constant(name: str) -> Any:
    return None


Scanner = Callable[[str, int], tuple[Any, int]]


def _scanner(decoder: json.JSONDecoder) -> Scanner:
    # The C scanner (c_make_scanner) when available; typeshed types it loosely.
    return cast(Scanner, json.scanner.make_scanner(cast(Any, decoder)))


_scan = _scanner(json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_strict_float))
# Reads past what _scan refuses: only to find an ackId to answer a refusal with.
_lenient_scan = _scanner(json.JSONDecoder(parse_constant=_lenient_constant))

_WHITESPACE = " \t\n\r"
# Always matches (maybe nothing): where the whitespace at an index ends.
_skip = cast("Callable[[str, int], re.Match[str]]", re.compile(r"[ \t\n\r]*").match)
# Every backslash escape of a JSON string: a surrogate pair, a lone surrogate, or any other.
_ESCAPE = re.compile(
    r"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|(u[dD][89a-fA-F][0-9a-fA-F]{2})|u[0-9a-fA-F]{4}|.)"
)
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# '[' and '{' become 1, ']' and '}' 255: -1 once read as signed bytes.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def scan(text: str, start: int, levels: int = MAX_DEPTH) -> tuple[Any, int]:
    """Parse the JSON value at ``text[start]``: (value, end index).

    Raises:
        Refused: NaN, infinity, a number that overflows, or nesting deeper than ``levels``
            (:data:`MAX_DEPTH`; one more for an envelope whose members may be that deep).
            Lone surrogate escapes are the caller's to check (see :func:`check_escapes`),
            once over the whole text.
        ValueError: the text is not JSON.
    """
    try:
        found, end = _scan(text, start)
    except StopIteration:
        raise ValueError("Expecting a JSON value") from None
    except RecursionError:
        return _scan_deep(text, start, levels)
    if end - start > 2 * levels:
        _check_depth(text, start, end, levels)
    return found, end


def _check_depth(text: str, start: int, end: int, levels: int = MAX_DEPTH) -> None:
    """Refuse a value the scanner parsed that is nested deeper than ``levels``; only a value
    longer than ``2 * levels`` characters (its brackets) can be.

    Whether the scanner refuses it first depends on the interpreter (Python 3.12 and later
    recurse in C past the recursion limit), so the limit is checked here: counting the
    brackets first is a fast scan, and only a value with more of them is measured.
    """
    if text.count("[", start, end) + text.count("{", start, end) <= levels:
        return
    if depth(text[start:end]) > levels:
        raise Refused(f"The JSON is nested deeper than {MAX_DEPTH} levels.")


def _scan_deep(text: str, start: int, levels: int = MAX_DEPTH) -> tuple[Any, int]:
    """Scan a value too deep for the current recursion limit, if within ``levels``."""
    if depth(text[start:]) > levels:
        raise Refused(f"The JSON is nested deeper than {MAX_DEPTH} levels.")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + levels + 100)
    try:
        value, end = _scan(text, start)
    except StopIteration:
        raise ValueError("Expecting a JSON value") from None
    finally:
        sys.setrecursionlimit(limit)
    return value, end


def depth(text: str) -> int:
    """The deepest bracket nesting of JSON text, brackets inside strings not counted."""
    outside = _STRING.sub("", text).encode("utf-8", "ignore")
    steps = outside.translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(memoryview(steps).cast("b")), default=0)


def check_escapes(text: str) -> None:
    """Refuse a lone surrogate escape (``"\\ud800"``) anywhere in valid JSON text.

    Python decodes it to a str no UTF-8 encoder accepts; JSON.parse keeps it, and a text
    frame carrying it is invalid UTF-8 for every other client. Outside strings valid JSON has
    no backslash, so the escapes of the whole text are those of its strings.
    """
    if "\\u" not in text:
        return
    for match in _ESCAPE.finditer(text):
        if match.group(1) is not None:
            raise Refused(f"Lone surrogate escape '\\{match.group(1)}' in a JSON string.")


def check(text: str) -> None:
    """Check that ``text`` is one JSON value every client can read (see :func:`scan`)."""
    start = _skip(text, 0).end()
    _, end = scan(text, start)
    if _skip(text, end).end() != len(text):
        raise ValueError("Extra data after the JSON value")
    check_escapes(text)


def value(text: str, levels: int = MAX_DEPTH) -> Any:
    """The one JSON value of ``text``, checked as :func:`check` does (``levels`` deep at
    most: ``MAX_DEPTH + 1`` for an object whose members may be ``MAX_DEPTH`` deep)."""
    start = _skip(text, 0).end()
    found, end = scan(text, start, levels)
    if end != len(text) and _skip(text, end).end() != len(text):
        raise ValueError("Extra data after the JSON value")
    check_escapes(text)
    return found


def members(text: str, keep: str) -> tuple[dict[str, Any], tuple[int, int] | None]:
    """The members of the JSON object ``text`` and the span of its (last) ``keep`` member.

    The object itself is walked here, its values by the C scanner, so the raw text of the
    member is ``text[start:end]`` with no second pass over it. Checked as :func:`check`
    does.

    Raises:
        Refused: a value is not JSON every client can read (see :func:`scan`).
        ValueError: the text is not one JSON object.
    """
    index = 0
    if text[:1] != "{":
        index = _skip(text, 0).end()
        if text[index : index + 1] != "{":
            raise ValueError("Expecting a JSON object")
    index += 1
    found: dict[str, Any] = {}
    span: tuple[int, int] | None = None
    try:
        if text[index] in _WHITESPACE:
            index = _skip(text, index).end()
        if text[index] == "}":
            index += 1
        else:
            while True:
                if text[index] != '"':
                    raise ValueError("Expecting a member name")
                key, index = _scan(text, index)
                if text[index] != ":":
                    index = _skip(text, index).end()
                    if text[index] != ":":
                        raise ValueError("Expecting ':'")
                index += 1
                if text[index] in _WHITESPACE:
                    index = _skip(text, index).end()
                start = index
                found[key], index = scan(text, index)
                if key == keep:
                    span = (start, index)
                char = text[index]
                if char in _WHITESPACE:
                    index = _skip(text, index).end()
                    char = text[index]
                index += 1
                if char == "}":
                    break
                if char != ",":
                    raise ValueError("Expecting ',' or '}'")
                if text[index] in _WHITESPACE:
                    index = _skip(text, index).end()
    except IndexError:
        raise ValueError("Unterminated JSON object") from None
    except StopIteration:
        raise ValueError("Expecting a JSON value") from None
    if index != len(text) and _skip(text, index).end() != len(text):
        raise ValueError("Extra data after the JSON object")
    check_escapes(text)
    return found, span


def lenient_members(text: str, *, past_data: bool) -> Iterator[tuple[str, Any]]:
    """The members of a JSON object as far as they can be read, NaN and all.

    Only for finding an ``ackId`` to answer a frame that is refused or throttled: stops at
    the first member it cannot read, and at ``data`` unless ``past_data``.
    """
    index = _skip(text, 0).end()
    if text[index : index + 1] != "{":
        return
    index = _skip(text, index + 1).end()
    while text[index : index + 1] == '"':
        try:
            key, index = _lenient_scan(text, index)
            index = _skip(text, index).end()
            if text[index : index + 1] != ":" or (key == "data" and not past_data):
                return
            value, index = _lenient_scan(text, _skip(text, index + 1).end())
        except (ValueError, StopIteration, RecursionError):
            return
        yield key, value
        index = _skip(text, index).end()
        if text[index : index + 1] != ",":
            return
        index = _skip(text, index + 1).end()


__all__ = [
    "MAX_DEPTH",
    "Refused",
    "check",
    "depth",
    "lenient_members",
    "members",
    "value",
]
