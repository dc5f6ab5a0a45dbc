"""The tag rule language (services/tagging/rules.py): parsing, three-valued evaluation, errors,
time thresholds — checked by hand and against a slow reference evaluator written here."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta, timezone
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.tagging.rules import FIELDS, MemberFacts, RuleError, compile_rule

FAST = settings(max_examples=200, deadline=None, database=None)
SHANGHAI = ZoneInfo("Asia/Shanghai")
ZONES = (ZoneInfo("UTC"), SHANGHAI, ZoneInfo("America/New_York"))
CLOCK = datetime(2026, 6, 15, 12, 34, 56, 789012, tzinfo=UTC)
US = timedelta(microseconds=1)
DAY = timedelta(days=1)


def facts(**kw: Any) -> MemberFacts:
    return MemberFacts(**kw)


def truth(text: str, member: MemberFacts, clock: datetime | None = CLOCK,
          tz: ZoneInfo = ZoneInfo("UTC")) -> bool | None:
    rule = compile_rule(text, tz)
    value = rule.truth(member, clock)
    assert rule.holds(member, clock) is (value is True)
    return value


# --- evaluation by hand --------------------------------------------------------------------------


def test_the_operator_examples_compile_and_evaluate() -> None:
    vip = facts(completed_trades=3, spend_cents=50_000, level=2, region="Shanghai", abc_class="B",
                first_purchase_at=datetime(2026, 2, 1, tzinfo=UTC),
                last_purchase_at=CLOCK - 200 * DAY)
    assert truth("spend >= 500 and trades >= 3", vip) is True
    assert truth("spend >= 500 and trades >= 3",
                 facts(spend_cents=49_999, completed_trades=3)) is False
    assert truth("days_since_last_purchase >= 180", vip) is True
    assert truth('(level >= 2 or abc in ["A", "B"]) and region != "Tibet"', vip) is True
    assert truth("first_purchase >= 2026-01-01 and not (aov < 50.5)", vip) is True
    assert truth("region == none", vip) is False
    assert truth("region == none", facts()) is True


def test_a_missing_value_makes_a_comparison_unknown_never_true() -> None:
    nobody = facts()
    assert truth('region != "Tibet"', nobody) is None
    assert truth('not (region == "Tibet")', nobody) is None
    assert truth('region not in ["Tibet"]', nobody) is None
    assert truth('abc in ["A", "B", "C"]', nobody) is None
    assert truth("first_purchase < 2026-01-01", nobody) is None
    assert truth("region != none", nobody) is False
    assert truth("not region == none", nobody) is False


def test_and_or_not_follow_kleene_logic_like_sql() -> None:
    nobody = facts(spend_cents=100)
    assert truth('region == "X" or spend >= 1', nobody) is True     # unknown or true
    assert truth('region == "X" or spend >= 2', nobody) is None     # unknown or false
    assert truth('region == "X" and spend >= 2', nobody) is False   # unknown and false
    assert truth('region == "X" and spend >= 1', nobody) is None    # unknown and true
    assert truth('not (region == "X" and spend >= 2)', nobody) is True
    assert truth("not not spend >= 1", nobody) is True
    assert truth('not region == "X" or spend >= 1 and trades >= 1', nobody) is None  # precedence


def test_aov_is_exact_by_cross_multiplication() -> None:
    third = facts(spend_cents=10_000, completed_trades=3)        # 33.3333...
    assert truth("aov >= 33.33", third) is True
    assert truth("aov > 33.33", third) is True
    assert truth("aov <= 33.33", third) is False
    assert truth("aov == 33.33", third) is False
    assert truth("aov < 33.34", third) is True
    tie = facts(spend_cents=9_999, completed_trades=3)           # exactly 33.33
    assert truth("aov == 33.33", tie) is True
    assert truth("aov in [1, 33.33]", tie) is True
    assert truth("aov > 33.33", tie) is False
    assert truth("aov >= 0", facts(spend_cents=500)) is None     # no completed trades
    assert truth("aov == none", facts(spend_cents=500)) is True
    assert truth("aov != none", tie) is True


def test_days_since_counts_whole_days_to_the_microsecond() -> None:
    exactly = facts(last_purchase_at=CLOCK - 180 * DAY)
    almost = facts(last_purchase_at=CLOCK - 180 * DAY + US)
    assert truth("days_since_last_purchase >= 180", exactly) is True
    assert truth("days_since_last_purchase >= 180", almost) is False
    assert truth("days_since_last_purchase == 179", almost) is True
    assert truth("days_since_last_purchase == 180", exactly) is True
    assert truth("days_since_last_purchase > 180", exactly) is False
    assert truth("days_since_last_purchase <= 180",
                 facts(last_purchase_at=CLOCK - 181 * DAY + US)) is True
    assert truth("days_since_last_purchase in [179, 200]", almost) is True


def test_days_since_a_purchase_after_the_clock_is_negative_rounded_down() -> None:
    future = facts(first_purchase_at=CLOCK + US)
    assert truth("days_since_first_purchase < 0", future) is True
    assert truth("days_since_first_purchase == 0", future) is False
    assert truth("days_since_first_purchase == 0", facts(first_purchase_at=CLOCK)) is True


def test_days_since_without_a_clock_or_a_purchase_is_unknown() -> None:
    bought = facts(last_purchase_at=CLOCK - 400 * DAY)
    assert truth("days_since_last_purchase >= 1", bought, clock=None) is None
    assert truth("days_since_last_purchase == none", bought, clock=None) is True
    assert truth("days_since_last_purchase == none", bought) is False
    assert truth("days_since_first_purchase < 5", bought) is None


def test_dates_are_in_the_shop_time_zone_unless_an_offset_is_given() -> None:
    midnight_shanghai = datetime(2025, 12, 31, 16, tzinfo=UTC)
    before, at = facts(first_purchase_at=midnight_shanghai - US), facts(
        first_purchase_at=midnight_shanghai)
    for text in ("first_purchase >= 2026-01-01", "first_purchase >= 2026-01-01T00:00:00",
                 "first_purchase >= 2025-12-31T16:00:00Z",
                 "first_purchase >= 2026-01-01T00:00:00+08:00"):
        assert truth(text, before, tz=SHANGHAI) is False, text
        assert truth(text, at, tz=SHANGHAI) is True, text
    assert truth("first_purchase < 2026-01-01", at) is True   # a UTC shop's midnight is later
    assert truth("first_purchase == 2026-01-01T00:00:00.000001+08:00",
                 facts(first_purchase_at=midnight_shanghai + US), tz=SHANGHAI) is True


def test_money_literals_are_exact_cents() -> None:
    assert compile_rule("spend >= 0.1").sql()[1] == {"r_0": 10}
    assert compile_rule("spend >= 1234567890123.45").sql()[1] == {"r_0": 123456789012345}
    assert compile_rule("spend >= 10.500").sql()[1] == {"r_0": 1050}   # exact value counts


def test_text_literals_take_both_quotes_and_escapes() -> None:
    assert truth("region == 'it\\'s'", facts(region="it's")) is True
    assert truth('region == "say \\"hi\\" \\\\ bye"', facts(region='say "hi" \\ bye')) is True
    assert truth('region == "北京"', facts(region="北京")) is True


def test_sql_uses_the_given_names_and_prefix() -> None:
    sql, params = compile_rule('spend >= 500 and region in ["A", "B"]').sql(
        facts="m", clock="now()", prefix="t7")
    assert sql == "(m.spend_cents >= %(t7_0)s AND m.region IN (%(t7_1)s, %(t7_2)s))"
    assert params == {"t7_0": 50_000, "t7_1": "A", "t7_2": "B"}
    days_sql, days_params = compile_rule("days_since_last_purchase >= 180").sql(clock="c.now")
    assert "(c.now) - make_interval(hours => %(r_0)s::int)" in days_sql
    assert days_params == {"r_0": 180 * 24}
    with pytest.raises(ValueError, match="prefix"):
        compile_rule("spend >= 1").sql(prefix="x); drop")


def test_fields_and_time_based() -> None:
    rule = compile_rule('spend >= 1 and (region == "X" or days_since_first_purchase > 3)')
    assert rule.fields == {"spend", "region", "days_since_first_purchase"}
    assert rule.time_based
    assert not compile_rule("level in [1, 2]").time_based
    assert set(FIELDS) == {"spend", "gross", "refunded", "aov", "trades", "first_purchase",
                           "last_purchase", "days_since_first_purchase",
                           "days_since_last_purchase", "region", "level", "abc",
                           "rfm_segment"}


@pytest.mark.parametrize(("text", "expected"), [
    ("days_since_last_purchase >= 180", {("last_purchase_at", 180)}),
    ("days_since_last_purchase > 180", {("last_purchase_at", 181)}),
    ("days_since_last_purchase == 180", {("last_purchase_at", 180), ("last_purchase_at", 181)}),
    ("not days_since_first_purchase <= 7", {("first_purchase_at", 8)}),
    ("days_since_first_purchase in [1, 3]", {("first_purchase_at", d) for d in (1, 2, 3, 4)}),
    ("level in [1, 2] and spend > 3", set()),
    ("days_since_last_purchase == none", set()),
])
def test_time_thresholds(text: str, expected: set[tuple[str, int]]) -> None:
    assert compile_rule(text).time_thresholds() == expected


def test_next_change_is_the_next_threshold_after_the_clock() -> None:
    rule = compile_rule("days_since_last_purchase >= 180 or days_since_first_purchase == 30")
    member = facts(first_purchase_at=CLOCK - 40 * DAY, last_purchase_at=CLOCK - 100 * DAY)
    assert rule.next_change(member, CLOCK) == CLOCK + 80 * DAY
    assert rule.next_change(member, CLOCK + 80 * DAY) is None   # every threshold is behind
    assert rule.next_change(facts(), CLOCK) is None
    assert compile_rule("spend > 1").next_change(member, CLOCK) is None


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "column", "fragments"), [
    ("spend >= 500 and spnd > 3", 18, ["unknown field 'spnd'", "»spnd«", "did you mean 'spend'",
                                       "known fields: abc, aov"]),
    ("spend >= ", 10, ["expected a value after '>='"]),
    ("region == 500", 11, ["'region' is text: compare it with a quoted string or none, not 500"]),
    ("aov >= 10.005", 8, ["money has at most 2 decimal places: 10.005", "»10.005«"]),
    ("(spend > 1", 1, ["unbalanced parenthesis", "»(«"]),
    ("spend > 1)", 10, ["unbalanced parenthesis"]),
    ("spend > 1 and and trades > 1", 15, ["unexpected 'and'"]),
    ("spend > 1 trades > 2", 11, ["unexpected text after the end of the rule"]),
    ('abc == "D"', 8, ['\'abc\' is one of "A", "B", "C" or none, not "D"']),
    ('abc in ["A", "E"]', 14, ['not "E"']),
    ("spend >= 500 AND trades > 1", 14, ["keywords are lowercase: 'and'"]),
    ("region == Tibet", 11, ['text must be quoted: "Tibet"']),
    ("spend == none", 10, ["'spend' always has a value"]),
    ('region > "a"', 8, ["'region' is text: use ==, !=, in or not in, not '>'"]),
    ("first_purchase in [2026-01-01]", 16, ["'first_purchase' is a time", "not 'in'"]),
    ("first_purchase >= 500", 19, ["'first_purchase' is a time: compare it with a date"]),
    ("first_purchase >= none", 16, ["none only goes with == and !="]),
    ("first_purchase > 2026-02-30", 18, ["not a valid date or time: 2026-02-30"]),
    ("spend > 2026-01-01", 9, ["'spend' is money"]),
    ("region in []", 12, ["empty list"]),
    ("region in [none]", 12, ["none cannot be in a list"]),
    ('region in ["a" "b"]', 16, ["separate values with ','"]),
    ('region in ["a", "b"', 11, ["'[' is never closed"]),
    ("trades > 2.5", 10, ["'trades' is a whole number, not 2.5"]),
    ("spend >= -1", 10, ["negative numbers are not allowed: -1"]),
    ('region == "abc', 11, ["unterminated string"]),
    ('region == "a\\n"', 11, ["backslash"]),
    ("spend = 5", 7, ["'=' is not a comparison"]),
    ("spend >= 1234567890123456", 10, ["number too large"]),
    ("days_since_last_purchase > 2000000", 28, ["goes up to 1000000 days"]),
    ("not", 4, ["expected a condition after 'not'"]),
    ("spend", 6, ["expected a comparison"]),
    ("region not [1]", 12, ["expected 'in' after 'not'"]),
    ("region == None", 11, ["write none"]),
    ("spend > 1 & trades > 1", 11, ["unexpected character '&'"]),
    ("(" * 41 + "spend > 1" + ")" * 41, 41, ["nested more than 40"]),
])
def test_errors_name_the_offending_part_and_its_column(text: str, column: int,
                                                       fragments: list[str]) -> None:
    with pytest.raises(RuleError) as caught:
        compile_rule(text)
    assert caught.value.column == column
    message = str(caught.value)
    assert f"at column {column} (" in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_rule_is_an_error(text: str) -> None:
    with pytest.raises(RuleError, match="empty rule"):
        compile_rule(text)


WORDS = ["spend", "region", "abc", "aov", "days_since_last_purchase", "first_purchase", "level",
         ">=", "==", "!=", "<", "in", "not", "and", "or", "(", ")", "[", "]", ",", "500", "50.5",
         "10.005", '"A"', "'x'", "none", "2026-01-01", "2026-01-01T08:00:00+08:00", "-1", "=",
         '"', "AND", "0001-01-01"]


@FAST
@given(st.one_of(st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join), st.text()))
def test_any_text_either_compiles_or_raises_a_rule_error(text: str) -> None:
    try:
        rule = compile_rule(text, SHANGHAI)
    except RuleError as err:
        assert 1 <= err.column <= len(text) + 1
        return
    rule.truth(MemberFacts(), CLOCK)
    rule.sql()


# --- random rules against a slow reference evaluator ----------------------------------------------

NONE = object()  # the reference's marker for the `none` literal
DAYS = (0, 1, 2, 30, 180, 181, 365)
MONEY_CENTS = (0, 1, 50, 3333, 5050, 10_000, 50_000)
REGIONS = ("Tibet", "Shanghai", "北京", 'O"Brien', "it's", "back\\slash", "")
SEGMENTS = ("at-risk", "lost", "champions", "others")
COLUMN = {"spend": "spend_cents", "gross": "gross_cents", "refunded": "refunded_cents",
          "trades": "completed_trades", "level": "level", "region": "region", "abc": "abc_class",
          "rfm_segment": "rfm_segment",
          "first_purchase": "first_purchase_at", "last_purchase": "last_purchase_at"}
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
    "!=": operator.ne, "in": lambda x, v: x in v, "not in": lambda x, v: x not in v}
ORDER_OPS = [">=", "<=", ">", "<", "==", "!="]
TIMES_FIELDS = ("first_purchase", "last_purchase")
TIME_POOL = [CLOCK - d * DAY for d in DAYS] + [datetime(2026, 1, 1, 8, tzinfo=UTC)]

Tree = tuple[Any, ...]  # ("cmp", field, op, reference value, text) | ("not", t) | (op, [t, ...])


def money_text(cents: int, style: int) -> str:
    whole, frac = divmod(cents, 100)
    return [f"{whole}.{frac:02d}", f"{whole}.{frac:02d}0",
            f"{whole}.{frac:02d}".rstrip("0").rstrip(".")][style]


def quoted(text: str, quote: str) -> str:
    return quote + text.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


@st.composite
def time_literal(draw: st.DrawFn, tz: ZoneInfo) -> tuple[datetime, str]:
    moment = draw(st.sampled_from(TIME_POOL)) + draw(st.sampled_from([timedelta(0), US, -US]))
    style = draw(st.sampled_from(["Z", "offset", "local", "date"]))
    if style == "Z":
        return moment, moment.replace(tzinfo=None).isoformat() + "Z"
    if style == "offset":
        return moment, moment.astimezone(timezone(timedelta(hours=-5))).isoformat()
    if style == "local":  # the spec: a naive time is read in the shop's zone
        naive = moment.astimezone(tz).replace(tzinfo=None)
        return naive.replace(tzinfo=tz).astimezone(UTC), naive.isoformat()
    day = moment.astimezone(tz).date()
    return datetime.combine(day, time(), tz).astimezone(UTC), day.isoformat()


@st.composite
def leaf(draw: st.DrawFn, tz: ZoneInfo, fields: tuple[str, ...] = tuple(FIELDS)) -> Tree:
    field = draw(st.sampled_from(fields))
    nullable = field not in ("spend", "gross", "refunded", "trades", "level")
    kind = ("text" if field in ("region", "abc", "rfm_segment") else "time" if field in TIMES_FIELDS
            else "number")
    ops = ORDER_OPS + ([] if kind == "time" else ["in", "not in"])
    if kind == "text":
        ops = ["==", "!=", "in", "not in"]
    if nullable and draw(st.integers(0, 5)) == 0:
        return ("cmp", field, draw(st.sampled_from(["==", "!="])), NONE, "none")
    op = draw(st.sampled_from(ops))

    def one() -> tuple[Any, str]:
        if field in ("spend", "gross", "refunded", "aov"):
            cents = draw(st.sampled_from(MONEY_CENTS))
            return cents, money_text(cents, draw(st.integers(0, 2)))
        if kind == "number":
            number = draw(st.sampled_from(DAYS if field.startswith("days") else (0, 1, 2, 3, 5)))
            return number, str(number)
        if kind == "time":
            return draw(time_literal(tz))
        text = draw(st.sampled_from(("A", "B", "C") if field == "abc" else SEGMENTS
                                    if field == "rfm_segment" else REGIONS))
        return text, quoted(text, draw(st.sampled_from(['"', "'"])))

    if op in ("in", "not in"):
        values = [one() for _ in range(draw(st.integers(1, 3)))]
        return ("cmp", field, op, tuple(v for v, _ in values),
                "[" + ", ".join(t for _, t in values) + "]")
    value, text = one()
    return ("cmp", field, op, value, text)


def trees(tz: ZoneInfo, fields: tuple[str, ...] = tuple(FIELDS)) -> st.SearchStrategy[Tree]:
    return st.recursive(leaf(tz, fields), lambda kids: st.one_of(
        st.tuples(st.just("not"), kids),
        st.tuples(st.sampled_from(["and", "or"]), st.lists(kids, min_size=2, max_size=3))),
        max_leaves=6)


PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4}


def render(tree: Tree, full: bool) -> str:
    """Rule text for a tree, with parentheses only where precedence needs them (or everywhere)."""
    if tree[0] == "cmp":
        return f"{tree[1]} {tree[2]} {tree[4]}"
    children = [tree[1]] if tree[0] == "not" else tree[1]
    parts = [f"({render(c, full)})" if full or PREC[c[0]] < PREC[tree[0]] else render(c, full)
             for c in children]
    return f"not {parts[0]}" if tree[0] == "not" else f" {tree[0]} ".join(parts)


def reference(tree: Tree, member: MemberFacts, clock: datetime | None) -> bool | None:
    """SQL's three-valued logic, the slow and obvious way."""
    if tree[0] == "not":
        inner = reference(tree[1], member, clock)
        return None if inner is None else not inner
    if tree[0] in ("and", "or"):
        decisive = bool(tree[0] == "or")   # one True decides an `or`, one False an `and`
        values = [reference(c, member, clock) for c in tree[1]]
        if any(v is decisive for v in values):
            return decisive
        return None if any(v is None for v in values) else not decisive
    _, field, op, value, _ = tree
    x: Any
    if field == "aov":
        trades = member.completed_trades
        x = Fraction(member.spend_cents, trades) if trades else None
    elif field.startswith("days_since_"):
        start = getattr(member, field.removeprefix("days_since_") + "_at")
        x = None if start is None or clock is None else (clock - start) // DAY
    else:
        x = getattr(member, COLUMN[field])
    if value is NONE:
        return (x is None) is bool(op == "==")
    return None if x is None else OPS[op](x, value)


MOMENTS = st.one_of(
    st.none(),
    st.builds(lambda d, j: CLOCK - d * DAY + j, st.sampled_from((*DAYS, -1, -30)),
              st.sampled_from([timedelta(0), US, -US, timedelta(hours=7)])),
    st.builds(operator.add, st.sampled_from(TIME_POOL), st.sampled_from([-US, US])))
CENTS = st.sampled_from(MONEY_CENTS)


@st.composite
def members(draw: st.DrawFn) -> MemberFacts:
    trades = draw(st.integers(0, 4))
    tie = draw(CENTS) * trades + draw(st.sampled_from([-1, 0, 1]))  # aov ties and near misses
    return MemberFacts(
        completed_trades=trades, spend_cents=max(0, tie if draw(st.booleans()) else draw(CENTS)),
        gross_cents=draw(CENTS), refunded_cents=draw(CENTS),
        first_purchase_at=draw(MOMENTS), last_purchase_at=draw(MOMENTS),
        region=draw(st.one_of(st.none(), st.sampled_from(REGIONS))),
        level=draw(st.integers(0, 5)), abc_class=draw(st.sampled_from([None, "A", "B", "C"])),
        rfm_segment=draw(st.sampled_from([None, *SEGMENTS])))


clocks = st.one_of(st.none(), st.sampled_from([CLOCK, CLOCK + US, CLOCK - US]),
                   st.builds(lambda h: CLOCK + timedelta(hours=h), st.integers(-60, 60)))
zoned_trees = st.sampled_from(ZONES).flatmap(lambda tz: st.tuples(st.just(tz), trees(tz)))


@FAST
@given(zoned_trees, st.booleans(), st.lists(members(), min_size=1, max_size=8), clocks)
def test_random_rules_agree_with_the_reference(zoned: tuple[ZoneInfo, Tree], full: bool,
                                               people: list[MemberFacts],
                                               clock: datetime | None) -> None:
    tz, tree = zoned
    text = render(tree, full)
    rule = compile_rule(text, tz)
    for member in people:
        expected = reference(tree, member, clock)
        assert rule.truth(member, clock) is expected, (text, member, clock, rule._source)
        assert rule.holds(member, clock) is (expected is True), text
    sql, params = rule.sql(prefix="q")
    assert sorted(re.findall(r"%\((q_\d+)\)s", sql)) == sorted(params)


def days_numbers(tree: Tree) -> set[int]:
    if tree[0] == "cmp":
        value = tree[3]
        values = value if isinstance(value, tuple) else (value,)
        return {v for v in values if tree[1].startswith("days") and isinstance(v, int)}
    return set().union(*(days_numbers(c) for c in ([tree[1]] if tree[0] == "not" else tree[1])))


DAY_FIELDS = ("days_since_first_purchase", "days_since_last_purchase", "spend", "region")


@FAST
@given(trees(ZoneInfo("UTC"), DAY_FIELDS), members(),
       st.builds(lambda h: CLOCK + timedelta(hours=h), st.integers(-100 * 24, 100 * 24)),
       st.lists(st.floats(0, 1), max_size=5))
def test_truth_is_constant_until_next_change(tree: Tree, member: MemberFacts, clock: datetime,
                                             fractions: list[float]) -> None:
    rule = compile_rule(render(tree, False))
    change = rule.next_change(member, clock)
    if change is not None:
        assert change > clock
        assert any(getattr(member, col) + days * DAY == change
                   for col, days in rule.time_thresholds() if getattr(member, col) is not None)
    end = change or clock + 1000 * DAY
    # Probe where a flip would really happen: around start + N days for every N the rule uses.
    probes = {clock, end - US} | {clock + (end - clock) * f for f in fractions}
    for start in (member.first_purchase_at, member.last_purchase_at):
        for n in days_numbers(tree):
            if start is not None:
                probes |= {start + k * DAY + j for k in (n, n + 1) for j in (-US, timedelta(0))}
    before = rule.truth(member, clock)
    for probe in probes:
        if clock <= probe < end:
            assert rule.truth(member, probe) is before, (probe, change)


def test_next_change_ignores_thresholds_in_the_past() -> None:
    rule = compile_rule("days_since_last_purchase >= 180")
    assert rule.next_change(facts(last_purchase_at=CLOCK - 400 * DAY), CLOCK) is None
    assert rule.next_change(facts(last_purchase_at=CLOCK - 180 * DAY), CLOCK) is None
    assert rule.next_change(facts(last_purchase_at=CLOCK - 180 * DAY + US), CLOCK) == CLOCK + US
    far = facts(last_purchase_at=datetime(9999, 12, 1, tzinfo=UTC))   # + 180 days overflows
    assert rule.next_change(far, CLOCK) is None
