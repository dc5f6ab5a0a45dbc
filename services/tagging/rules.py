"""Automatic member tags: the one-line rules a shop operator writes in the shop's YAML config.

A rule says which members get a tag::

    spend >= 500 and trades >= 3
    days_since_last_purchase >= 180
    (level >= 2 or abc in ["A", "B"]) and region != "Tibet"
    rfm_segment in ["at-risk", "hibernating"] and spend >= 1000
    first_purchase >= 2026-01-01 and not (aov < 50.5)
    region == none

A condition compares a field (the names in FIELDS) with a value using `>=  <=  >  <  ==  !=`, or
with a list using `in [...]` / `not in [...]`; `region`, `rfm_segment` and `abc` only take `==`,
`!=` and lists,
times take no lists. Conditions combine with `not`, `and`, `or` (binding in that order) and
parentheses. Keywords are lowercase.

Values: money as a number with at most two decimals (`50.5`); counts, levels and days as whole
numbers; text in double or single quotes (a backslash escapes a quote or a backslash); times as
`2026-01-01` or `2026-01-01T08:00:00` in the shop's time zone, or with `Z` / `+08:00` for an
exact instant; `none` means "has no value" and goes with `==` and `!=` only. `days_since_*`
count whole 24-hour days up to the moment the rule is evaluated.

A missing value makes a condition *unknown*, never true: `aov >= 50` is unknown for a member
without completed trades, `region != "Tibet"` is unknown when the region is not known, `not` of
unknown is unknown, `and` is false as soon as one side is false and `or` true as soon as one side
is true. A member gets the tag only when the whole rule is true. This is SQL's three-valued logic,
so `Rule.holds` here and `Rule.sql` in PostgreSQL tag exactly the same members. Ask for members
without a value with `== none`.

Mistakes are reported when the rule is compiled, naming the column and marking the part:
``unknown field 'spnd' at column 18 (spend >= 500 and »spnd« > 3); did you mean 'spend'? ...``
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import NamedTuple, NoReturn, Protocol
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class MemberFacts:
    """What the rules may look at for one member (times are aware UTC datetimes)."""

    completed_trades: int = 0
    spend_cents: int = 0
    gross_cents: int = 0
    refunded_cents: int = 0
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    region: str | None = None
    level: int = 0
    abc_class: str | None = None
    rfm_segment: str | None = None


class RuleError(ValueError):
    """A rule that does not compile; `.column` is the 1-based position of the offending part."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.column = column


class _Field(NamedTuple):
    name: str
    kind: str      # money | int | time | text | class: which values and operators it takes
    column: str    # the MemberFacts attribute and the SQL column it is read from
    access: str    # plain | aov | days: how the value derives from the column
    nullable: bool
    about: str


_FIELDS = {f.name: f for f in (
    _Field("abc", "class", "abc_class", "plain", True, 'customer ABC class: "A", "B", "C" or none'),
    _Field("aov", "money", "spend_cents", "aov", True, "spend / trades; none without trades"),
    _Field("days_since_first_purchase", "int", "first_purchase_at", "days", True,
           "whole days since the first purchase"),
    _Field("days_since_last_purchase", "int", "last_purchase_at", "days", True,
           "whole days since the last purchase"),
    _Field("first_purchase", "time", "first_purchase_at", "plain", True, "first purchase time"),
    _Field("gross", "money", "gross_cents", "plain", False, "spend before refunds"),
    _Field("last_purchase", "time", "last_purchase_at", "plain", True, "last purchase time"),
    _Field("level", "int", "level", "plain", False, "membership level (0 = none)"),
    _Field("refunded", "money", "refunded_cents", "plain", False, "amount refunded"),
    _Field("region", "text", "region", "plain", True, "region as text, or none"),
    _Field("rfm_segment", "text", "rfm_segment", "plain", True,
           'RFM segment id in the shop\'s map ("at-risk"), or none: no purchase in the RFM period'),
    _Field("spend", "money", "spend_cents", "plain", False, "net spend: gross minus refunded"),
    _Field("trades", "int", "completed_trades", "plain", False, "number of completed trades"),
)}
FIELDS: Mapping[str, str] = MappingProxyType({f.name: f.about for f in _FIELDS.values()})

# For each kind of field: the literal it takes and how to say so in an error message.
_EXPECTS = {"money": ("num", "money: compare it with a number like 500 or 50.5"),
            "int": ("num", "a whole number: compare it with a number like 3"),
            "time": ("date", "a time: compare it with a date like 2026-01-01 or 2026-01-01T08:00"),
            "text": ("str", "text: compare it with a quoted string or none"),
            "class": ("str", 'one of "A", "B", "C" or none')}
_KEYWORDS = frozenset({"and", "or", "not", "in", "none"})
_ORDERING = (">=", "<=", ">", "<")
_NEGATED = {">=": "<", "<": ">=", ">": "<=", "<=": ">", "==": "!=", "!=": "==",
            "in": "not in", "not in": "in"}
_SQL_OP = {">=": ">=", "<=": "<=", ">": ">", "<": "<", "==": "=", "!=": "<>"}
# Bounds that keep the generated SQL from failing instead of answering: `clock - N days` must
# stay inside PostgreSQL's timestamps (from 4713 BC), 15-digit numbers inside bigint.
_MAX_DAYS = 1_000_000
_MAX_DEPTH = 40  # nested parentheses and `not`s; far deeper would exhaust Python's recursion
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"""
    (?P<date>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?)
  | (?P<num>\d+(?:\.\d+)?) | (?P<neg>-\d+(?:\.\d+)?) | (?P<word>[^\W\d]\w*)
  | (?P<op>>=|<=|==|!=|>|<|=) | (?P<punct>[()\[\],])
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
""", re.VERBOSE)


class _Tok(NamedTuple):
    kind: str  # date | num | word | op | str | end, or the punctuation itself
    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Cmp:
    field: _Field
    op: str
    # cents, whole number, text or UTC instant; None for `none`; a tuple for `in` / `not in`
    value: int | str | datetime | tuple[int | str, ...] | None


@dataclass(frozen=True, slots=True)
class _Bool:
    op: str  # and | or
    items: tuple[_Node, ...]


_Node = _Cmp | _Bool  # `not` is applied while parsing (see _negate), so no node for it


def _error(text: str, start: int, end: int, what: str, hint: str = "") -> RuleError:
    marked = f"{text[:start]}»{text[start:end]}«{text[end:]}"
    return RuleError(f"{what} at column {start + 1} ({marked})" + (f"; {hint}" if hint else ""),
                     start + 1)


def _tokens(text: str) -> Iterator[_Tok]:
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        m = _TOKEN.match(text, pos)
        if m is None and text[pos] in "\"'":
            raise _error(text, pos, len(text), "unterminated string", f"close it with {text[pos]}")
        if m is None:
            raise _error(text, pos, pos + 1, f"unexpected character {text[pos]!r}")
        kind, word, pos = m.lastgroup or "", m.group(), m.end()
        if kind == "neg":
            raise _error(text, m.start(), pos, f"negative numbers are not allowed: {word}")
        if kind == "num" and len(word.partition(".")[0]) > 15:
            raise _error(text, m.start(), pos, f"number too large: {word}")
        if word == "=":
            raise _error(text, m.start(), pos, "'=' is not a comparison", "use == to compare")
        yield _Tok(word if kind == "punct" else kind, word, m.start(), pos)
    yield _Tok("end", "", len(text), len(text))


def _shown(tok: _Tok) -> str:
    return "end of the rule" if tok.kind == "end" else repr(tok.text)


def _lowercase_hint(tok: _Tok) -> str:
    word = tok.text.lower()
    return f"keywords are lowercase: {word!r}" if word in _KEYWORDS and word != tok.text else ""


class _Parser:
    """Recursive descent over the grammar in the module docstring, type-checking as it goes."""

    def __init__(self, text: str, tz: ZoneInfo) -> None:
        self.text, self.tz = text, tz
        self.toks = list(_tokens(text))
        self.pos = self.depth = 0

    def fail(self, tok: _Tok, what: str, hint: str = "") -> NoReturn:
        raise _error(self.text, tok.start, tok.end, what, hint)

    def take(self) -> _Tok:
        tok = self.toks[self.pos]
        self.pos = min(self.pos + 1, len(self.toks) - 1)  # stay on the end token
        return tok

    def accept(self, word: str) -> _Tok | None:
        tok = self.toks[self.pos]
        return self.take() if tok.kind == "word" and tok.text == word else None

    def rule(self) -> _Node:
        node = self.chain("or")
        tok = self.toks[self.pos]
        if tok.kind == ")":
            self.fail(tok, "unbalanced parenthesis: ')' has no matching '('")
        if tok.kind != "end":
            self.fail(tok, "unexpected text after the end of the rule",
                      _lowercase_hint(tok) or "join conditions with 'and' or 'or'")
        return node

    def chain(self, op: str) -> _Node:
        """An or_expr (op "or") or an and_expr (op "and")."""
        items = [self.chain("and") if op == "or" else self.not_expr()]
        while self.accept(op):
            items.append(self.chain("and") if op == "or" else self.not_expr())
        return items[0] if len(items) == 1 else _Bool(op, tuple(items))

    def nested(self, tok: _Tok, parse: Callable[[], _Node]) -> _Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            self.fail(tok, f"rule nested more than {_MAX_DEPTH} levels deep")
        node = parse()
        self.depth -= 1
        return node

    def not_expr(self) -> _Node:
        tok = self.accept("not")
        return self.primary() if tok is None else _negate(self.nested(tok, self.not_expr))

    def primary(self) -> _Node:
        tok = self.take()
        if tok.kind != "(":
            return self.comparison(tok)
        node = self.nested(tok, lambda: self.chain("or"))
        close = self.take()
        if close.kind == "end":
            self.fail(tok, "unbalanced parenthesis: '(' is never closed")
        if close.kind != ")":
            self.fail(close, f"unexpected {_shown(close)}",
                      _lowercase_hint(close) or "expected 'and', 'or' or ')'")
        return node

    def comparison(self, tok: _Tok) -> _Node:
        if tok.kind == "end":
            self.fail(tok, f"expected a condition after {self.toks[self.pos - 1].text!r}")
        if tok.kind != "word" or tok.text in _KEYWORDS:
            self.fail(tok, f"unexpected {_shown(tok)}", "expected a field such as spend or region")
        field = _FIELDS.get(tok.text)
        if field is None:
            close = difflib.get_close_matches(tok.text.lower(), _FIELDS, n=1, cutoff=0.6)
            hint = _lowercase_hint(tok)
            hint = f"{hint}; " if hint else f"did you mean {close[0]!r}? " if close else ""
            self.fail(tok, f"unknown field {tok.text!r}",
                      f"{hint}known fields: {', '.join(sorted(_FIELDS))}")
        op = self.take()
        if op.kind == "word" and op.text == "not" and not self.accept("in"):
            self.fail(self.toks[self.pos], "expected 'in' after 'not'")
        if op.kind == "word" and op.text in ("not", "in"):
            return self.membership(field, op, "not in" if op.text == "not" else "in")
        if op.kind != "op":
            self.fail(op, f"expected a comparison (>=, <=, >, <, ==, !=, in) after {tok.text!r}",
                      _lowercase_hint(op))
        if field.kind in ("text", "class") and op.text in _ORDERING:
            self.fail(op, f"{field.name!r} is {'text' if field.kind == 'text' else 'a class'}: "
                      f"use ==, !=, in or not in, not {op.text!r}")
        value = self.take()
        if value.text != "none" or value.kind != "word":
            return _Cmp(field, op.text, self.value(field, op, value))
        if not field.nullable:
            self.fail(value, f"{field.name!r} always has a value, so it is never none")
        if op.text in _ORDERING:
            self.fail(op, f"none only goes with == and !=, not {op.text!r}")
        return _Cmp(field, op.text, None)

    def membership(self, field: _Field, op: _Tok, kind: str) -> _Node:
        if field.kind == "time":
            self.fail(op, f"{field.name!r} is a time: use >=, <=, >, <, == or !=, not 'in'")
        opening = before = self.take()
        if opening.kind != "[":
            self.fail(opening, "expected '[' after 'in'", 'write a list like ["A", "B"]')
        if self.toks[self.pos].kind == "]":
            self.fail(self.toks[self.pos], "empty list after 'in'")
        values: list[int | str] = []
        while before.kind != "]":
            tok = self.take()
            if tok.kind == "word" and tok.text == "none":
                self.fail(tok, "none cannot be in a list", f"write {field.name} == none instead")
            value = self.value(field, before, tok)
            assert not isinstance(value, datetime)  # time fields were refused above
            if value not in values:
                values.append(value)
            before = self.take()
            if before.kind == "end":
                self.fail(opening, "unbalanced bracket: '[' is never closed")
            if before.kind not in (",", "]"):
                self.fail(before, f"unexpected {_shown(before)} in the list",
                          "separate values with ',' and end the list with ']'")
        if field.access == "plain":
            return _Cmp(field, kind, tuple(values))
        # aov and days_since are computed, not stored: spell the list out as comparisons, which
        # is what SQL's IN means anyway (x IN (a, b) is x = a OR x = b, unknowns included).
        items = tuple(_Cmp(field, "==" if kind == "in" else "!=", v) for v in values)
        return items[0] if len(items) == 1 else _Bool("or" if kind == "in" else "and", items)

    def value(self, field: _Field, after: _Tok, tok: _Tok) -> int | str | datetime:
        if tok.kind not in ("num", "str", "date"):
            hint = ""
            if tok.text in ("None", "null", "NULL", "Null"):
                hint = "write none for a missing value"
            elif tok.text in _FIELDS:
                hint = "a rule compares a field with a value, not with another field"
            elif tok.kind == "word" and field.kind in ("text", "class"):
                hint = f'text must be quoted: "{tok.text}"'
            self.fail(tok, f"expected a value after {after.text!r}", hint)
        wanted, phrase = _EXPECTS[field.kind]
        if tok.kind != wanted:
            self.fail(tok, f"{field.name!r} is {phrase}, not {tok.text}")
        if tok.kind == "date":
            try:
                moment = datetime.fromisoformat(tok.text)
                # A date or a time without offset means the shop's own clock.
                return (moment.replace(tzinfo=self.tz) if moment.tzinfo is None
                        else moment).astimezone(UTC)
            except (ValueError, OverflowError):
                self.fail(tok, f"not a valid date or time: {tok.text}")
        if tok.kind == "str":
            text = re.sub(r"\\(.)", r"\1", tok.text[1:-1])
            if field.kind == "class" and text not in ("A", "B", "C"):
                self.fail(tok, f"{field.name!r} is {phrase}, not {tok.text}")
            if any(c not in "\\\"'" for c in re.findall(r"\\(.)", tok.text)):
                self.fail(tok, "only a quote or a backslash may follow a backslash in text")
            if "\0" in text:  # PostgreSQL text cannot hold NUL: the SQL would fail, not compare
                self.fail(tok, "text cannot contain a NUL character")
            return text
        # An exact ratio: money never passes through a float, nor through Decimal rounding.
        num, den = Decimal(tok.text).as_integer_ratio()
        if field.kind == "money" and num * 100 % den:
            self.fail(tok, f"money has at most 2 decimal places: {tok.text}")
        if field.kind == "money":
            return num * 100 // den
        if den != 1:
            self.fail(tok, f"{field.name!r} is a whole number, not {tok.text}")
        if field.access == "days" and num > _MAX_DAYS:
            self.fail(tok, f"{field.name!r} goes up to {_MAX_DAYS} days, not {tok.text}")
        return num


def _negate(node: _Node) -> _Node:
    """`not node` without a `not`: De Morgan and flipped comparisons hold in SQL's logic too."""
    if isinstance(node, _Bool):
        return _Bool("or" if node.op == "and" else "and", tuple(_negate(i) for i in node.items))
    return replace(node, op=_NEGATED[node.op])  # unknown stays unknown; `none` tests flip


class _PyGen:
    """Python source for one rule: every name and literal in it is generated here."""

    def __init__(self) -> None:
        self.consts: list[object] = []  # datetimes and timedeltas, passed in as closure cells
        self.temps = 0

    def const(self, value: object) -> str:
        if value not in self.consts:
            self.consts.append(value)
        return f"_k{self.consts.index(value)}"

    def leaf(self, node: _Cmp) -> tuple[str, str]:
        """(guard, test): the condition is unknown unless guard holds, and then it is test."""
        field = node.field
        col = f"facts.{field.column}"
        guard = {"aov": "facts.completed_trades != 0",
                 "days": f"clock is not None and {col} is not None"}.get(
                     field.access, f"{col} is not None" if field.nullable else "True")
        if isinstance(node.value, tuple):
            members = ", ".join(repr(v) for v in node.value)  # ints and strs: repr is a literal
            return guard, f"{col} {node.op} {{{members}}}"
        if node.value is None:  # `none` tests are never unknown
            null = {"aov": "facts.completed_trades == 0",
                    "days": f"(clock is None or {col} is None)"}.get(field.access, f"{col} is None")
            return "True", null if node.op == "==" else f"not {null}"
        if field.access == "aov":  # exact: spend / trades >= X  <=>  spend >= X * trades
            return guard, f"facts.spend_cents {node.op} {node.value!r} * facts.completed_trades"
        if field.access != "days":
            value = self.const(node.value) if isinstance(node.value, datetime) else repr(node.value)
            return guard, f"{col} {node.op} {value}"
        # floor(elapsed / 1 day) OP N is elapsed compared with exactly N or N+1 days.
        assert isinstance(node.value, int)
        low, high = (self.const(timedelta(days=node.value + k)) for k in (0, 1))
        elapsed = f"clock - {col}"
        return guard, {">=": f"{elapsed} >= {low}", ">": f"{elapsed} >= {high}",
                       "<": f"{elapsed} < {low}", "<=": f"{elapsed} < {high}",
                       "==": f"{low} <= {elapsed} < {high}",
                       "!=": f"not ({low} <= {elapsed} < {high})"}[node.op]

    def holds(self, node: _Node) -> str:
        """Two-valued code for 'is TRUE': exact because the tree has no `not` to flip it."""
        if isinstance(node, _Bool):
            return "(" + f" {node.op} ".join(self.holds(item) for item in node.items) + ")"
        guard, test = self.leaf(node)
        return f"({test})" if guard == "True" else f"({guard} and {test})"

    def truth(self, node: _Node) -> str:
        """Kleene code: True, False or None."""
        if isinstance(node, _Bool):
            names = [f"_t{self.temps + i}" for i in range(len(node.items))]
            self.temps += len(names)
            stop, other = ("False", "True") if node.op == "and" else ("True", "False")
            decided = " or ".join(f"({n} := {self.truth(item)}) is {stop}"
                                  for n, item in zip(names, node.items, strict=True))
            unknown = " or ".join(f"{n} is None" for n in names)
            return f"({stop} if {decided} else (None if {unknown} else {other}))"
        guard, test = self.leaf(node)
        return f"({test})" if guard == "True" else f"(({test}) if ({guard}) else None)"


def _sql(node: _Node, facts: str, clock: str, bind: Callable[[object], str]) -> str:
    if isinstance(node, _Bool):
        return "(" + f" {node.op.upper()} ".join(_sql(i, facts, clock, bind)
                                                 for i in node.items) + ")"
    field = node.field
    col = f"{facts}.{field.column}"
    if isinstance(node.value, tuple):
        return f"{col} {node.op.upper()} ({', '.join(bind(v) for v in node.value)})"
    if node.value is None:
        null = {"aov": f"{facts}.completed_trades = 0",
                "days": f"({col} IS NULL OR ({clock}) IS NULL)"}.get(field.access, f"{col} IS NULL")
        return null if node.op == "==" else f"(NOT {null})"
    if field.access == "aov":
        # numeric: X * trades can overflow bigint; NULLIF makes it unknown without trades.
        return (f"{facts}.spend_cents {_SQL_OP[node.op]} {bind(node.value)}::numeric"
                f" * NULLIF({facts}.completed_trades, 0)")
    if field.access != "days":
        return f"{col} {_SQL_OP[node.op]} {bind(node.value)}"
    n = node.value
    assert isinstance(n, int)

    def since(days: int, at_least: bool) -> str:
        # Hours, not days: timestamptz minus '1 day' follows the session time zone's daylight
        # saving changes (23 or 25 hours), while Python and the definition count 24-hour days.
        return (f"{col} {'<=' if at_least else '>'} ({clock})"
                f" - make_interval(hours => {bind(days * 24)}::int)")

    if node.op in ("==", "!="):
        at_least = node.op == "=="
        return f"({since(n, at_least)} {'AND' if at_least else 'OR'} {since(n + 1, not at_least)})"
    return since(n + (node.op in (">", "<=")), node.op in (">=", ">"))


def _leaves(node: _Node) -> Iterator[_Cmp]:
    if isinstance(node, _Bool):
        for item in node.items:
            yield from _leaves(item)
    else:
        yield node


class _Holds(Protocol):
    def __call__(self, facts: MemberFacts, clock: datetime | None) -> bool: ...


class _Truth(Protocol):
    def __call__(self, facts: MemberFacts, clock: datetime | None) -> bool | None: ...


class Rule:
    """A compiled rule: fast Python evaluation, the same rule as SQL, and when it can change."""

    __slots__ = ("_fields", "_source", "_thresholds", "_tree", "holds", "text", "truth")

    # Instance attributes holding the generated functions themselves, not methods: a wrapper
    # call would cost a quarter of the time of a typical evaluation.
    holds: _Holds  # (facts, clock) -> True only if the rule is TRUE
    truth: _Truth  # (facts, clock) -> True, False or None (unknown), SQL's three-valued logic

    def __init__(self, text: str, tree: _Node) -> None:
        self.text, self._tree = text, tree
        leaves = list(_leaves(tree))
        self._fields = frozenset(leaf.field.name for leaf in leaves)
        # Where floor(elapsed / day) OP N flips: elapsed crossing N days (>=, <), N+1 (>, <=).
        steps = {">=": (0,), "<": (0,), ">": (1,), "<=": (1,), "==": (0, 1), "!=": (0, 1)}
        self._thresholds = frozenset(
            (leaf.field.column, leaf.value + k) for leaf in leaves
            if leaf.field.access == "days" and isinstance(leaf.value, int)
            for k in steps[leaf.op])
        gen = _PyGen()
        holds, truth = gen.holds(tree), gen.truth(tree)
        self._source = (f"def _make({', '.join(f'_k{i}' for i in range(len(gen.consts)))}):\n"
                        f"    def holds(facts, clock):\n        return {holds}\n"
                        f"    def truth(facts, clock):\n        return {truth}\n"
                        f"    return holds, truth\n")
        namespace: dict[str, object] = {"__builtins__": {}}  # the code needs no builtins
        exec(compile(self._source, "<tag rule>", "exec"), namespace)
        make = namespace["_make"]
        assert callable(make)
        self.holds, self.truth = make(*gen.consts)

    def __repr__(self) -> str:
        return f"Rule({self.text!r})"

    @property
    def fields(self) -> frozenset[str]:
        """The field names the rule uses."""
        return self._fields

    def texts(self, field: str) -> frozenset[str]:
        """The text values the rule compares `field` with (to check them against a list)."""
        found: set[str] = set()
        for leaf in _leaves(self._tree):
            if leaf.field.name == field:
                values = leaf.value if isinstance(leaf.value, tuple) else (leaf.value,)
                found.update(v for v in values if isinstance(v, str))
        return frozenset(found)

    @property
    def time_based(self) -> bool:
        """Whether the rule uses days_since_*, so its truth can change as the clock moves."""
        return any(_FIELDS[name].access == "days" for name in self._fields)

    def time_thresholds(self) -> frozenset[tuple[str, int]]:
        """(column, days) pairs: truth can only change when the clock passes column + days."""
        return self._thresholds

    def next_change(self, facts: MemberFacts, clock: datetime) -> datetime | None:
        """The earliest instant after `clock` at which the rule's truth may change, or None."""
        best: datetime | None = None
        for column, days in self._thresholds:
            start = getattr(facts, column)
            try:
                at = None if start is None else start + timedelta(days=days)
            except OverflowError:  # after year 9999: no clock reaches it
                continue
            if at is not None and at > clock and (best is None or at < best):
                best = at
        return best

    def sql(self, facts: str = "tm", clock: str = "c.watermark",
            prefix: str = "r") -> tuple[str, dict[str, object]]:
        """The rule as a three-valued SQL expression with psycopg parameters %(prefix_N)s."""
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"parameter prefix must be an identifier, not {prefix!r}")
        params: dict[str, object] = {}

        def bind(value: object) -> str:
            params[f"{prefix}_{len(params)}"] = value
            return f"%({prefix}_{len(params) - 1})s"

        return _sql(self._tree, facts, clock, bind), params


def compile_rule(text: str, tz: ZoneInfo = ZoneInfo("UTC")) -> Rule:
    """Parse and type-check one rule (dates without an offset are in `tz`); raises RuleError."""
    if not text.strip():
        raise RuleError("empty rule", 1)
    return Rule(text, _Parser(text, tz).rule())
