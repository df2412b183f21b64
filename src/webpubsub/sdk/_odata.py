"""Build OData ``filter`` expressions with safely escaped values (spec 1.7).

The Python counterpart of the JS SDK's ``odata`` template tag: values substituted into the
template become OData literals, so a user id holding a quote cannot change the expression.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence, Set
from typing import Any

__all__ = ["odata", "odata_literal"]


def odata_literal(value: object) -> str:
    """One value as an OData literal.

    ``str`` -> ``'it''s'`` (quotes doubled), ``None`` -> ``null``, ``bool`` -> ``true`` /
    ``false``, ``int`` / ``float`` -> the number, a list, tuple or set -> ``('a','b')`` for the
    ``in`` operator.

    Args:
        value: the value to render.

    Returns:
        The literal text.

    Raises:
        TypeError: for any other type (render it to ``str`` first if that is what you mean).
        ValueError: for NaN or infinite floats.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no OData literal.")
        return repr(value)
    if isinstance(value, Sequence | Set) and not isinstance(value, bytes | bytearray):
        items = sorted(value, key=repr) if isinstance(value, Set) else value
        return "(" + ",".join(odata_literal(item) for item in items) + ")"
    raise TypeError(f"Cannot use a {type(value).__name__} in an OData filter.")


class _ODataFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec:
            # A format spec shapes the text first; the result is still quoted as a string.
            return odata_literal(format(value, format_spec))
        return odata_literal(value)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is None:
            return value
        # !s / !r produce text, which is then quoted like any string.
        return super().convert_field(value, conversion)


_formatter = _ODataFormatter()


def odata(template: str, /, *args: object, **kwargs: object) -> str:
    """Fill a filter template, turning every ``{}`` field into an escaped OData literal.

    Example::

        odata("userId eq {} and {group} in groups", "vic's", group="g1")
        # "userId eq 'vic''s' and 'g1' in groups"
        odata("userId in {}", ["a", "b"])
        # "userId in ('a','b')"

    Fields use :meth:`str.format` syntax (positional, named, ``{{`` for a literal brace).

    Args:
        template: the filter text with ``{}`` fields where values go.
        *args: positional values.
        **kwargs: named values.

    Returns:
        The filter text.

    Raises:
        TypeError: when a value has no OData literal (see :func:`odata_literal`).
        ValueError: for NaN or infinite floats.
        KeyError, IndexError: when a field names a value that was not given.
    """
    return _formatter.vformat(template, args, kwargs)
