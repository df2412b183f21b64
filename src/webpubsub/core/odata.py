"""The OData ``filter`` of send and group operations: parse, type-check, evaluate (spec 1.7).

A REST caller may narrow ``:send`` and ``:addToGroups``/``:removeFromGroups`` with a boolean
OData expression over the properties of each candidate connection. :func:`parse_filter` turns
the text into a :class:`Filter` once per request; :meth:`Filter.matches` then runs once per
connection, so the expression is compiled into nested closures rather than walked as a tree.

Grammar (EBNF, lowest precedence first; every rule is left-associative)::

    filter      ::= or_expr                          (must have type bool)
    or_expr     ::= and_expr ('or' and_expr)*
    and_expr    ::= cmp_expr ('and' cmp_expr)*
    cmp_expr    ::= unary (cmp_op unary | 'in' in_rhs)*
    cmp_op      ::= 'eq' | 'ne' | 'gt' | 'ge' | 'lt' | 'le'
    in_rhs      ::= '(' or_expr (',' or_expr)* ')'   (a value list, or one collection)
                  | unary                            (a collection, e.g. groups)
    unary       ::= 'not' unary | primary
    primary     ::= literal | identifier | function '(' or_expr (',' or_expr)* ')'
                  | '(' or_expr ')'
    literal     ::= string | integer | 'true' | 'false' | 'null'
    string      ::= "'" ( [^'] | "''" )* "'"         ('' stands for one quote)
    integer     ::= [+-]? [0-9]+                     (32-bit signed range)
    identifier  ::= 'userId' | 'connectionId' | 'groups' | 'protocol'

``not`` binds tighter than the comparisons, as the docs say: ``not length(userId) gt 5`` negates
``length(userId)`` and is rejected as a type error; write ``not (length(userId) gt 5)``.
Identifiers, keywords and function names are all matched case-insensitively (``UserId``,
``AND``, ``ToLower`` are accepted); string values compare case-sensitively.

Types are checked when the filter is parsed, so a filter that parses can always be evaluated.
The types are ``string``, ``int``, ``bool``, ``collection`` (``groups``) and ``null`` (the
literal). Functions::

    tolower(s) toupper(s) trim(s)           string -> string
    substring(s, i) substring(s, i, n)      string, int[, int] -> string
    concat(a, b)                            string, string -> string
    indexof(a, b)                           string, string -> int (-1 when b is absent)
    length(s | collection)                  -> int
    startswith(a, b) endswith(a, b)         string, string -> bool
    contains(a, b) contains(groups, g)      string, string -> bool; collection, string -> bool

Null semantics (``userId`` and ``protocol`` may be null at evaluation time):

* a string or int function given a null argument returns null (so ``length(userId)`` is null
  for an anonymous connection), and so does ``substring`` given an out-of-range index;
* a bool function given a null argument returns false;
* ``eq``/``ne`` treat null as a value: ``userId eq null`` holds exactly for anonymous
  connections, and ``in`` follows ``eq``;
* ``gt``/``ge``/``lt``/``le`` are false when either side is null.

Strings order by code point; lengths and indexes count code points. The service counts UTF-16
units, which only differs for characters outside the Basic Multilingual Plane.

Limits, because the text comes from the network: at most :data:`MAX_FILTER_LENGTH` characters,
:data:`MAX_DEPTH` levels of nesting (parentheses, ``not``, calls, ``in`` lists) and
:data:`MAX_CLAUSES` clauses (comparisons, ``in`` tests and function calls; the docs advise
staying under about 100). Anything the parser rejects raises :class:`FilterError`, whose text
is meant for the body of the 400 answer.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

__all__ = [
    "MAX_CLAUSES",
    "MAX_DEPTH",
    "MAX_FILTER_LENGTH",
    "Filter",
    "FilterError",
    "FilterTarget",
    "parse_filter",
]

MAX_FILTER_LENGTH: Final = 4096
"""Longest filter text accepted, in characters."""

MAX_DEPTH: Final = 32
"""Deepest nesting accepted; keeps parsing and evaluation far from Python's recursion limit."""

MAX_CLAUSES: Final = 100
"""Most comparisons, ``in`` tests and function calls accepted in one filter."""

_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1
_EXCERPT_LENGTH: Final = 80


class FilterError(ValueError):
    """A filter that does not parse or type-check. str(exc) is a clear message for a 400 body.

    ``position`` is the 0-based character offset the message points at, or None when the
    problem concerns the filter as a whole (empty, too long).
    """

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class FilterTarget(Protocol):
    """What a filter can see of a connection."""

    @property
    def connection_id(self) -> str: ...

    @property
    def user_id(self) -> str | None: ...

    @property
    def groups(self) -> Collection[str]: ...  # a set or dict keys: membership must be cheap

    @property
    def subprotocol(self) -> str | None: ...


_Eval = Callable[[FilterTarget], Any]
_Predicate = Callable[[FilterTarget], bool]


@dataclass(frozen=True)
class Filter:
    """A parsed, type-checked filter, ready to test connections.

    ``Filter(text)`` compiles ``text`` and raises :class:`FilterError` like :func:`parse_filter`.
    Equality, hashing and pickling go by the text alone, so a filter can travel inside a command
    to another node and be compiled again there.
    """

    text: str
    _predicate: _Predicate = field(init=False, repr=False, compare=False)
    # What a filter of the two shapes Web PubSub for Socket.IO sends most is exactly, so the
    # hub looks the connections up instead of testing each: ``'g' in groups`` (a broadcast
    # to a namespace or room) and ``connectionId eq 'c'`` (a socket joining a room).
    in_group: str | None = field(init=False, repr=False, compare=False)
    connection_id: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        predicate, tokens = _compile(self.text)
        group, connection_id = _lookup(tokens)
        object.__setattr__(self, "_predicate", predicate)
        object.__setattr__(self, "in_group", group)
        object.__setattr__(self, "connection_id", connection_id)

    def __reduce__(self) -> tuple[type[Filter], tuple[str]]:
        return (Filter, (self.text,))

    def matches(self, target: FilterTarget) -> bool:
        """Whether the filter holds for ``target``. Never raises."""
        return self._predicate(target)


def parse_filter(text: str) -> Filter:
    """Parse and type-check an OData filter.

    Args:
        text: the ``filter`` query parameter, already URL-decoded.

    Returns:
        A :class:`Filter` whose :meth:`~Filter.matches` tests one connection.

    Raises:
        FilterError: the text is empty, too long, too deep or complex, malformed, or not a
            boolean expression.
    """
    return Filter(text)


# --- Types and compiled expressions ------------------------------------------------------------


class _Type(enum.Enum):
    """Static type of an expression; the value is the name used in error messages."""

    NULL = "null"
    BOOL = "bool"
    INT = "int"
    STRING = "string"
    COLLECTION = "collection"


_SCALARS: Final = frozenset({_Type.BOOL, _Type.INT, _Type.STRING})
_ORDERED: Final = frozenset({_Type.INT, _Type.STRING})
_B: Final = frozenset({_Type.BOOL})
_S: Final = frozenset({_Type.STRING})
_I: Final = frozenset({_Type.INT})
_C: Final = frozenset({_Type.COLLECTION})
_SC: Final = frozenset({_Type.STRING, _Type.COLLECTION})

_Span = tuple[int, int]  # start and end offsets of a piece of the filter text


def _accepts(allowed: frozenset[_Type], actual: _Type) -> bool:
    """Whether a value of type ``actual`` may stand where ``allowed`` types are expected.

    The null literal may stand for a string or an int, which are nullable at run time.
    """
    return actual in allowed or (actual is _Type.NULL and not allowed.isdisjoint(_ORDERED))


def _type_names(types: frozenset[_Type]) -> str:
    return " or ".join(f"'{t.value}'" for t in _Type if t in types)


@dataclass(frozen=True, slots=True)
class _Expr:
    """A compiled sub-expression: its type, evaluator and source span.

    When ``const`` is set, ``value`` is the result for every connection and ``fn`` ignores its
    argument; builders use it to fold constants and to specialise the closures they make.
    """

    type: _Type
    fn: _Eval
    start: int
    end: int
    const: bool = False
    value: Any = None

    @property
    def span(self) -> _Span:
        return (self.start, self.end)

    def spanning(self, start: int, end: int) -> _Expr:
        """The same expression, credited with a wider span (its parentheses)."""
        return _Expr(self.type, self.fn, start, end, self.const, self.value)


def _constant(type_: _Type, value: Any, start: int, end: int) -> _Expr:
    return _Expr(type_, lambda _t: value, start, end, const=True, value=value)


# --- Value-level semantics (pure, null-aware, never raise on well-typed input) -----------------


def _tolower(s: str | None) -> str | None:
    return None if s is None else s.lower()


def _toupper(s: str | None) -> str | None:
    return None if s is None else s.upper()


def _trim(s: str | None) -> str | None:
    return None if s is None else s.strip()


def _length(v: str | Collection[str] | None) -> int | None:
    return None if v is None else len(v)


def _concat(a: str | None, b: str | None) -> str | None:
    return None if a is None or b is None else a + b


def _indexof(a: str | None, b: str | None) -> int | None:
    return None if a is None or b is None else a.find(b)


def _substring(s: str | None, start: int | None, length: int | None = None) -> str | None:
    # An index outside the string gives null rather than an error, as the emulator does.
    if s is None or start is None or start < 0 or start > len(s):
        return None
    if length is None:
        return s[start:]
    if length < 0 or length > len(s) - start:
        return None
    return s[start : start + length]


def _substring3(s: str | None, start: int | None, length: int | None) -> str | None:
    # A null length (e.g. from length(userId)) must not mean "to the end".
    return None if length is None else _substring(s, start, length)


def _startswith(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.startswith(b)


def _endswith(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.endswith(b)


def _contains_text(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and b in a


def _contains_member(c: Collection[str], b: str | None) -> bool:
    return b is not None and b in c


def _eq(a: Any, b: Any) -> bool:
    return bool(a == b)


def _ne(a: Any, b: Any) -> bool:
    return bool(a != b)


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def ordered(a: Any, b: Any) -> bool:
        return a is not None and b is not None and compare(a, b)

    return ordered


_COMPARATORS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "eq": _eq,
    "ne": _ne,
    "gt": _ordered(operator.gt),
    "ge": _ordered(operator.ge),
    "lt": _ordered(operator.lt),
    "le": _ordered(operator.le),
}
_MIRRORED: Final = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}


@dataclass(frozen=True, slots=True)
class _Signature:
    """One overload of a function: parameter types, result type and implementation."""

    params: tuple[frozenset[_Type], ...]
    result: _Type
    impl: Callable[..., Any]


_FUNCTIONS: Final[dict[str, tuple[_Signature, ...]]] = {
    "tolower": (_Signature((_S,), _Type.STRING, _tolower),),
    "toupper": (_Signature((_S,), _Type.STRING, _toupper),),
    "trim": (_Signature((_S,), _Type.STRING, _trim),),
    "length": (_Signature((_SC,), _Type.INT, _length),),
    "concat": (_Signature((_S, _S), _Type.STRING, _concat),),
    "indexof": (_Signature((_S, _S), _Type.INT, _indexof),),
    "startswith": (_Signature((_S, _S), _Type.BOOL, _startswith),),
    "endswith": (_Signature((_S, _S), _Type.BOOL, _endswith),),
    "contains": (
        _Signature((_C, _S), _Type.BOOL, _contains_member),
        _Signature((_S, _S), _Type.BOOL, _contains_text),
    ),
    "substring": (
        _Signature((_S, _I), _Type.STRING, _substring),
        _Signature((_S, _I, _I), _Type.STRING, _substring3),
    ),
}

_IDENTIFIERS: Final[dict[str, tuple[_Type, _Eval]]] = {
    "userid": (_Type.STRING, operator.attrgetter("user_id")),
    "connectionid": (_Type.STRING, operator.attrgetter("connection_id")),
    "groups": (_Type.COLLECTION, operator.attrgetter("groups")),
    "protocol": (_Type.STRING, operator.attrgetter("subprotocol")),
}

_KEYWORDS: Final = frozenset(
    {"and", "or", "not", "in", "eq", "ne", "gt", "ge", "lt", "le", "true", "false", "null"}
)

# Binding power of each infix keyword: a higher number binds tighter (``not`` is tighter still).
_INFIX: Final = {"or": 1, "and": 2, "eq": 3, "ne": 3, "gt": 3, "ge": 3, "lt": 3, "le": 3, "in": 3}


# --- Tokenizer ---------------------------------------------------------------------------------


class _Kind(enum.Enum):
    NAME = "name"
    STRING = "string"
    INT = "integer"
    LPAREN = "'('"
    RPAREN = "')'"
    COMMA = "','"
    END = "end of filter"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    value: Any  # decoded string, int, or lower-cased name
    start: int
    end: int


_SPACE: Final = frozenset(" \t\r\n")
_DIGITS: Final = frozenset("0123456789")
_NAME_START: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_PART: Final = _NAME_START | _DIGITS
_PUNCTUATION: Final = {"(": _Kind.LPAREN, ")": _Kind.RPAREN, ",": _Kind.COMMA}


def _syntax_error(position: int, detail: str) -> FilterError:
    return FilterError(f"Invalid filter syntax at position {position}: {detail}", position)


def _tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens, ending with an END token."""
    tokens: list[_Token] = []
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
        elif c in _PUNCTUATION:
            tokens.append(_Token(_PUNCTUATION[c], c, i, i + 1))
            i += 1
        elif c == "'":
            start = i
            parts: list[str] = []
            i += 1
            while True:
                close = text.find("'", i)
                if close < 0:
                    raise _syntax_error(start, "unterminated string literal.")
                parts.append(text[i:close])
                if close + 1 < n and text[close + 1] == "'":  # '' is an escaped quote
                    parts.append("'")
                    i = close + 2
                else:
                    i = close + 1
                    break
            tokens.append(_Token(_Kind.STRING, "".join(parts), start, i))
        elif c in _DIGITS or (c in "+-" and i + 1 < n and text[i + 1] in _DIGITS):
            start = i
            i += 1
            while i < n and text[i] in _DIGITS:
                i += 1
            if i < n and text[i] in _NAME_PART:
                raise _syntax_error(start, f"invalid number '{text[start : i + 1]}'.")
            digits = text[start:i]
            if len(digits) > 11 or not _INT_MIN <= int(digits) <= _INT_MAX:
                raise _syntax_error(start, f"integer {_clip(digits)} is out of the 32-bit range.")
            tokens.append(_Token(_Kind.INT, int(digits), start, i))
        elif c in _NAME_START:
            start = i
            i += 1
            while i < n and text[i] in _NAME_PART:
                i += 1
            tokens.append(_Token(_Kind.NAME, text[start:i].lower(), start, i))
        else:
            raise _syntax_error(i, f"unexpected character {c!r}.")
    tokens.append(_Token(_Kind.END, None, n, n))
    return tokens


def _clip(s: str) -> str:
    return s if len(s) <= _EXCERPT_LENGTH else s[: _EXCERPT_LENGTH - 3] + "..."


# --- Parser and compiler -----------------------------------------------------------------------


def _compile(text: str) -> tuple[_Predicate, list[_Token]]:
    """Parse, check and compile ``text`` into a predicate over connections; its tokens."""
    if not isinstance(text, str):
        raise FilterError(f"Filter must be a string, not {type(text).__name__}.")
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(
            f"Filter is too long: {len(text)} characters, the limit is {MAX_FILTER_LENGTH}."
        )
    if not text.strip():
        raise FilterError("Filter is empty.")
    parser = _Parser(text)
    expr = parser.parse()
    if expr.const:
        result = bool(expr.value)
        return (lambda _t: result), parser.tokens
    fn: _Predicate = expr.fn
    return fn, parser.tokens


def _lookup(tokens: list[_Token]) -> tuple[str | None, str | None]:
    """(group, connection id) of a compiled filter that is exactly ``'g' in groups`` or
    ``connectionId eq 'c'`` (names are case-insensitive, as the parser reads them)."""
    if len(tokens) != 4:  # three and END
        return None, None
    first, middle, last = ((t.kind, t.value) for t in tokens[:3])
    if first[0] is _Kind.STRING and middle == (_Kind.NAME, "in") and last == _GROUPS:
        return first[1], None
    if first == _CONNECTION_ID and middle == (_Kind.NAME, "eq") and last[0] is _Kind.STRING:
        return None, last[1]
    return None, None


_GROUPS: Final = (_Kind.NAME, "groups")
_CONNECTION_ID: Final = (_Kind.NAME, "connectionid")


class _Parser:
    """Recursive-descent (Pratt) parser that type-checks and compiles as it goes."""

    def __init__(self, text: str) -> None:
        self._text = text
        self.tokens = _tokenize(text)
        self._index = 0
        self._depth = 0
        self._clauses = 0

    # -- token helpers --

    def _peek(self) -> _Token:
        return self.tokens[self._index]

    def _next(self) -> _Token:
        token = self.tokens[self._index]
        if token.kind is not _Kind.END:
            self._index += 1
        return token

    def _expect(self, kind: _Kind, context: str) -> _Token:
        token = self._next()
        if token.kind is not kind:
            raise self._unexpected(token, f"{kind.value} {context}")
        return token

    def _describe(self, token: _Token) -> str:
        if token.kind is _Kind.END:
            return "the end of the filter"
        return f"'{_clip(self._text[token.start : token.end])}'"

    def _unexpected(self, token: _Token, wanted: str) -> FilterError:
        return _syntax_error(token.start, f"expected {wanted}, found {self._describe(token)}.")

    # -- limits --

    def _enter(self, token: _Token) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise FilterError(
                f"Filter is nested too deeply at position {token.start}: "
                f"the limit is {MAX_DEPTH} levels.",
                token.start,
            )

    def _leave(self) -> None:
        self._depth -= 1

    def _clause(self, token: _Token) -> None:
        self._clauses += 1
        if self._clauses > MAX_CLAUSES:
            raise FilterError(
                f"Filter is too complex at position {token.start}: the limit is {MAX_CLAUSES} "
                "clauses (comparisons, 'in' tests and function calls).",
                token.start,
            )

    # -- type checks --

    def _type_error(self, span: _Span, actual: _Type, expected: str) -> FilterError:
        start, end = span
        excerpt = _clip(self._text[start:end].strip())
        return FilterError(
            f"Invalid syntax for '{excerpt}' at position {start}: "
            f"Type '{actual.value}', expect {expected}.",
            start,
        )

    def _require(self, expr: _Expr, allowed: frozenset[_Type], span: _Span) -> None:
        """Fail, quoting ``span``, unless ``expr`` has one of the ``allowed`` types."""
        if not _accepts(allowed, expr.type):
            raise self._type_error(span, expr.type, _type_names(allowed))

    # -- grammar --

    def parse(self) -> _Expr:
        expr = self._expression(0)
        token = self._peek()
        if token.kind is not _Kind.END:
            raise self._unexpected(token, "an operator or the end of the filter")
        self._require(expr, _B, expr.span)
        return expr

    def _expression(self, min_power: int) -> _Expr:
        left = self._unary()
        while True:
            token = self._peek()
            if token.kind is not _Kind.NAME:
                return left
            power = _INFIX.get(token.value)
            if power is None or power <= min_power:
                return left
            self._next()
            if token.value in ("and", "or"):
                operands = [left, self._expression(power)]
                while self._peek().kind is _Kind.NAME and self._peek().value == token.value:
                    self._next()
                    operands.append(self._expression(power))
                left = self._logical(token.value, operands)
            elif token.value == "in":
                self._clause(token)
                left = self._in(left)
            else:
                self._clause(token)
                left = self._comparison(token.value, left, self._expression(power))

    def _unary(self) -> _Expr:
        token = self._next()
        kind = token.kind
        if kind is _Kind.STRING:
            return _constant(_Type.STRING, token.value, token.start, token.end)
        if kind is _Kind.INT:
            return _constant(_Type.INT, token.value, token.start, token.end)
        if kind is _Kind.LPAREN:
            self._enter(token)
            inner = self._expression(0)
            close = self._expect(_Kind.RPAREN, f"to close the '(' at position {token.start}")
            self._leave()
            return inner.spanning(token.start, close.end)
        if kind is not _Kind.NAME:
            raise self._unexpected(token, "a value")
        name = token.value
        if name == "not":
            self._enter(token)
            operand = self._unary()
            self._leave()
            return self._not(operand, token.start)
        if name in ("true", "false"):
            return _constant(_Type.BOOL, name == "true", token.start, token.end)
        if name == "null":
            return _constant(_Type.NULL, None, token.start, token.end)
        if self._peek().kind is _Kind.LPAREN:
            return self._call(token)
        if name in _IDENTIFIERS:
            type_, fn = _IDENTIFIERS[name]
            return _Expr(type_, fn, token.start, token.end)
        if name in _KEYWORDS:
            raise self._unexpected(token, "a value")
        raise _syntax_error(
            token.start,
            f"unknown identifier {self._describe(token)}; "
            "expected userId, connectionId, groups or protocol.",
        )

    def _arguments(self, open_token: _Token) -> tuple[list[_Expr], _Token]:
        """Parse ``expr (',' expr)* ')'`` after ``open_token``, within one nesting level."""
        self._enter(open_token)
        items = [self._expression(0)]
        while self._peek().kind is _Kind.COMMA:
            self._next()
            items.append(self._expression(0))
        close = self._expect(_Kind.RPAREN, "or ','")
        self._leave()
        return items, close

    # -- builders --

    def _call(self, name_token: _Token) -> _Expr:
        name = name_token.value
        signatures = _FUNCTIONS.get(name)
        if signatures is None:
            raise _syntax_error(
                name_token.start,
                f"unknown function {self._describe(name_token)}; expected one of "
                f"{', '.join(sorted(_FUNCTIONS))}.",
            )
        self._clause(name_token)
        open_token = self._next()
        if self._peek().kind is _Kind.RPAREN:
            args: list[_Expr] = []
            close = self._next()
        else:
            args, close = self._arguments(open_token)
        span = (name_token.start, close.end)
        by_arity = [s for s in signatures if len(s.params) == len(args)]
        if not by_arity:
            counts = " or ".join(str(n) for n in sorted({len(s.params) for s in signatures}))
            raise _syntax_error(
                name_token.start,
                f"function '{name}' takes {counts} argument{'' if counts == '1' else 's'}, "
                f"got {len(args)}.",
            )
        # Take the first overload the arguments fit; when none fits, the last one (the
        # documented string form) words the type error.
        signature = by_arity[-1]
        for candidate in by_arity:
            if all(_accepts(p, a.type) for p, a in zip(candidate.params, args, strict=True)):
                signature = candidate
                break
        for arg, allowed in zip(args, signature.params, strict=True):
            self._require(arg, allowed, span)
        return _apply(signature.impl, signature.result, args, *span)

    def _not(self, operand: _Expr, start: int) -> _Expr:
        self._require(operand, _B, (start, operand.end))
        if operand.const:
            return _constant(_Type.BOOL, not operand.value, start, operand.end)
        fn = operand.fn
        return _Expr(_Type.BOOL, lambda t: not fn(t), start, operand.end)

    def _logical(self, op: str, operands: list[_Expr]) -> _Expr:
        for operand in operands:
            self._require(operand, _B, operand.span)
        start, end = operands[0].start, operands[-1].end
        # 'and' is decided by the first false operand, 'or' by the first true one.
        decisive = op == "or"
        if any(o.const and o.value is decisive for o in operands):
            return _constant(_Type.BOOL, decisive, start, end)
        fns = [o.fn for o in operands if not o.const]
        if not fns:
            return _constant(_Type.BOOL, not decisive, start, end)
        if len(fns) == 1:
            return _Expr(_Type.BOOL, fns[0], start, end)
        if len(fns) == 2:
            a, b = fns
            if decisive:
                return _Expr(_Type.BOOL, lambda t: a(t) or b(t), start, end)
            return _Expr(_Type.BOOL, lambda t: a(t) and b(t), start, end)
        functions = tuple(fns)
        if decisive:
            return _Expr(_Type.BOOL, lambda t: any(f(t) for f in functions), start, end)
        return _Expr(_Type.BOOL, lambda t: all(f(t) for f in functions), start, end)

    def _check_comparable(self, op: str, left: _Expr, right: _Expr, span: _Span) -> None:
        """Both sides of ``op`` must be of one type it orders (or equates), or null."""
        allowed = _SCALARS if op in ("eq", "ne") else _ORDERED
        for side in (left, right):
            if side.type is not _Type.NULL and side.type not in allowed:
                raise self._type_error(span, side.type, _type_names(allowed))
        if _Type.NULL not in (left.type, right.type) and left.type is not right.type:
            raise self._type_error(span, right.type, f"'{left.type.value}'")

    def _comparison(self, op: str, left: _Expr, right: _Expr) -> _Expr:
        start, end = left.start, right.end
        self._check_comparable(op, left, right, (start, end))
        compare = _COMPARATORS[op]
        if left.const and right.const:
            return _constant(_Type.BOOL, compare(left.value, right.value), start, end)
        if left.const:
            left, right, op = right, left, _MIRRORED[op]
            compare = _COMPARATORS[op]
        return _Expr(_Type.BOOL, _compare_fn(op, compare, left, right), start, end)

    def _in(self, left: _Expr) -> _Expr:
        if self._peek().kind is _Kind.LPAREN:
            open_token = self._next()
            items, close = self._arguments(open_token)
            if len(items) == 1 and items[0].type is _Type.COLLECTION:
                return self._member(left, items[0].spanning(open_token.start, close.end))
            return self._in_list(left, items, close.end)
        collection = self._unary()
        self._require(collection, _C, (left.start, collection.end))
        return self._member(left, collection)

    def _member(self, left: _Expr, collection: _Expr) -> _Expr:
        """``left in collection``: an O(1) membership test on the connection's groups."""
        start, end = left.start, collection.end
        self._require(left, _S, (start, end))
        fc = collection.fn
        if left.const:
            if left.value is None:
                return _constant(_Type.BOOL, False, start, end)
            v = left.value
            return _Expr(_Type.BOOL, lambda t: v in fc(t), start, end)
        fa = left.fn
        return _Expr(_Type.BOOL, lambda t: _contains_member(fc(t), fa(t)), start, end)

    def _in_list(self, left: _Expr, items: Sequence[_Expr], end: int) -> _Expr:
        """``left in (a, b, ...)``: true when ``left eq`` any item."""
        start = left.start
        span = (start, end)
        for item in items:
            self._check_comparable("eq", left, item, span)
        # The items agree with left, so they agree with one another unless left is null.
        typed = {item.type for item in items} - {_Type.NULL}
        if len(typed) > 1:
            first, second = sorted(typed, key=lambda t: t.value)[:2]
            raise self._type_error(span, second, f"'{first.value}'")
        values = frozenset(item.value for item in items if item.const)
        dynamic = tuple(item.fn for item in items if not item.const)
        if left.const and not dynamic:
            return _constant(_Type.BOOL, left.value in values, start, end)
        fa = left.fn
        if not dynamic:
            return _Expr(_Type.BOOL, lambda t: fa(t) in values, start, end)

        def in_list(t: FilterTarget) -> bool:
            v = fa(t)
            return v in values or any(f(t) == v for f in dynamic)

        return _Expr(_Type.BOOL, in_list, start, end)


def _apply(
    impl: Callable[..., Any], result: _Type, args: Sequence[_Expr], start: int, end: int
) -> _Expr:
    """Compile a function call, folding it when every argument is constant."""
    if all(a.const for a in args):
        return _constant(result, impl(*(a.value for a in args)), start, end)
    return _Expr(result, _call_fn(impl, args), start, end)


def _call_fn(impl: Callable[..., Any], args: Sequence[_Expr]) -> _Eval:
    """A closure calling ``impl`` on the arguments, with the common shapes unrolled."""
    if len(args) == 1:
        fa = args[0].fn
        return lambda t: impl(fa(t))
    if len(args) == 2 and args[1].const:
        fa, bv = args[0].fn, args[1].value
        return lambda t: impl(fa(t), bv)
    if len(args) == 2:
        fa, fb = args[0].fn, args[1].fn
        return lambda t: impl(fa(t), fb(t))
    fns = tuple(a.fn for a in args)
    return lambda t: impl(*(f(t) for f in fns))


def _compare_fn(op: str, compare: Callable[[Any, Any], bool], left: _Expr, right: _Expr) -> _Eval:
    """A closure for ``left op right`` where ``left`` is not constant.

    Comparing with a constant, the usual case, skips a call and a closure lookup.
    """
    fa = left.fn
    if not right.const:
        fb = right.fn
        return lambda t: compare(fa(t), fb(t))
    v = right.value
    if op == "eq":
        return (lambda t: fa(t) is None) if v is None else (lambda t: fa(t) == v)
    if op == "ne":
        return (lambda t: fa(t) is not None) if v is None else (lambda t: fa(t) != v)
    return lambda t: compare(fa(t), v)  # an ordering with null folds to false inside compare
