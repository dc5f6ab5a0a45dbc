"""The pure tagging rules (services/tagging/domain.py): facts + rules -> tag changes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.tagging.domain import (
    Holding,
    MemberView,
    RuleSet,
    TagChange,
    advance,
    bars,
    on_event,
)
from services.tagging.rules import MemberFacts
from shared.shopconfig import ShopConfig, parse

SHOP = "shop-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
AT = datetime(2026, 3, 1, 12, tzinfo=UTC)   # `since`: the time of the triggering event
DAYS = timedelta(days=1)
MICRO = timedelta(microseconds=1)
SKUS = ("S1", "S2", "S3", "S4", "S5")
FAST = settings(max_examples=150, deadline=None, database=None)


# --- building configurations and events --------------------------------------------------------


def when(rule_id: str, tag: str, condition: str) -> dict[str, Any]:
    return {"id": rule_id, "tag": tag, "when": condition}


def goods(rule_id: str, tag: str, skus: Sequence[str]) -> dict[str, Any]:
    return {"id": rule_id, "tag": tag, "goods": list(skus)}


def config(rules: Sequence[dict[str, Any]], extra_tags: Iterable[str] = (),
           timezone: str = "UTC") -> ShopConfig:
    tag_ids = dict.fromkeys([r["tag"] for r in rules] + list(extra_tags))
    return parse({"shop_id": SHOP, "name": "Tea House", "timezone": timezone, "tagging": {
        "tags": [{"id": t, "name": t} for t in tag_ids], "rules": list(rules)}})


def ruleset(*rules: dict[str, Any], version: int = 7, timezone: str = "UTC") -> RuleSet:
    return RuleSet.from_config(version, config(rules, timezone=timezone))


def view(facts: MemberFacts = MemberFacts(), held: dict[str, Holding] | None = None,
         evaluated: datetime | None = None) -> MemberView:
    return MemberView(SHOP, "m1", 0, facts, dict(held or {}), evaluated)


def apply_changes(holdings: dict[str, Holding], changes: Iterable[TagChange]) -> None:
    """What the store does with the changes; a redundant change is a bug in the domain."""
    for change in changes:
        if change.action == "added":
            assert change.tag_id not in holdings, change
            holdings[change.tag_id] = change.holding
        else:
            assert change.action == "removed"
            assert change.tag_id in holdings, change
            del holdings[change.tag_id]


# --- on_event: the member's facts change --------------------------------------------------------

BIG = when("r-big", "big-spender", "spend >= 500 and trades >= 3")
BIG_FACTS = MemberFacts(completed_trades=3, spend_cents=50_000)
SMALL_FACTS = MemberFacts(completed_trades=3, spend_cents=49_999)
DORMANT = when("r-dormant", "dormant", "days_since_last_purchase >= 180")
TEA = goods("g-tea", "tea-lover", ["S1", "S2"])


def test_a_when_tag_is_added_when_its_rule_starts_to_hold() -> None:
    v = view()
    changes = on_event(ruleset(BIG), v, BIG_FACTS, AT, (), "evt-9")
    assert changes == [TagChange(SHOP, "m1", "big-spender", "added", "rule", AT, "r-big",
                                 "evt-9", config_version=7)]
    assert v.holdings == {"big-spender": Holding("rule", "r-big")}
    assert (v.facts, v.evaluated_at) == (BIG_FACTS, AT)


def test_a_when_tag_is_not_added_while_its_rule_does_not_hold() -> None:
    assert on_event(ruleset(BIG), view(), SMALL_FACTS, AT, (), "evt-9") == []


def test_a_when_tag_is_removed_when_its_rule_stops_holding() -> None:
    v = view(BIG_FACTS, {"big-spender": Holding("rule", "r-big")})
    changes = on_event(ruleset(BIG, version=3), v, SMALL_FACTS, AT, (), "evt-10")
    assert changes == [TagChange(SHOP, "m1", "big-spender", "removed", "rule", AT, "r-big",
                                 "evt-10", config_version=3)]
    assert v.holdings == {}


def test_the_same_facts_again_change_nothing() -> None:
    rules = ruleset(BIG, DORMANT, TEA)
    v = view()
    facts = replace(BIG_FACTS, last_purchase_at=T0)
    first = on_event(rules, v, facts, AT, ["S1"], "evt-1")
    assert first
    assert on_event(rules, v, facts, AT, ["S1"], "evt-1") == []


@pytest.mark.parametrize("facts", [BIG_FACTS, SMALL_FACTS, MemberFacts()])
def test_a_manual_tag_without_a_rule_is_never_touched(facts: MemberFacts) -> None:
    rules = ruleset(BIG, goods("g-tea", "tea-lover", ["S1"]))
    v = view(held={"vip-care": Holding("manual", None)})
    changes = on_event(rules, v, facts, AT, ["S1", "S2"], "evt-1")
    assert "vip-care" not in {c.tag_id for c in changes} and "vip-care" in v.holdings
    assert changes  # the rules did act: big-spender and/or tea-lover changed


def test_an_event_judged_before_what_was_judged_already_is_dated_then() -> None:
    # The member's stream had passed AT when a late event arrived: history stays in order.
    v = view(evaluated=AT)
    [change] = on_event(ruleset(BIG), v, BIG_FACTS, AT - 5 * DAYS, (), "evt-late")
    assert change.effective_at == AT and v.evaluated_at == AT


def test_time_passes_under_the_old_facts_before_the_new_ones_apply() -> None:
    # Bought at T0, again at T0 + 200 days: dormant from day 180 to the second purchase.
    v = view(MemberFacts(completed_trades=1, last_purchase_at=T0), evaluated=T0)
    changes = on_event(ruleset(DORMANT), v,
                       MemberFacts(completed_trades=2, last_purchase_at=T0 + 200 * DAYS),
                       T0 + 200 * DAYS, (), "evt-2")
    assert [(c.action, c.effective_at, c.event_id) for c in changes] == [
        ("added", T0 + 180 * DAYS, None), ("removed", T0 + 200 * DAYS, "evt-2")]


def test_dates_in_rules_are_read_in_the_shops_time_zone() -> None:
    rules = ruleset(when("r-new", "new", "first_purchase >= 2026-01-01"), timezone="Asia/Shanghai")
    midnight_in_shanghai = datetime(2025, 12, 31, 16, tzinfo=UTC)
    before = MemberFacts(completed_trades=1, first_purchase_at=midnight_in_shanghai - MICRO)
    on = MemberFacts(completed_trades=1, first_purchase_at=midnight_in_shanghai)
    assert on_event(rules, view(), before, AT, (), None) == []
    assert [c.tag_id for c in on_event(rules, view(), on, AT, (), None)] == ["new"]


def test_buying_a_listed_sku_adds_the_goods_tag_once() -> None:
    v = view()
    changes = on_event(ruleset(TEA, version=4), v, MemberFacts(), AT, ["S2", "S1", "S9"], "evt-5")
    assert changes == [TagChange(SHOP, "m1", "tea-lover", "added", "goods", AT, "g-tea",
                                 "evt-5", config_version=4)]
    assert on_event(ruleset(TEA, version=4), v, MemberFacts(), AT, ["S1"], "evt-6") == []


@pytest.mark.parametrize("cause", ["goods", "manual"])
def test_a_goods_tag_already_held_is_not_added_again(cause: str) -> None:
    v = view(held={"tea-lover": Holding(cause, "g-tea" if cause == "goods" else None)})
    assert on_event(ruleset(TEA), v, MemberFacts(), AT, ["S1"], None) == []


def test_a_goods_tag_is_never_removed_by_the_rules() -> None:
    v = view(held={"tea-lover": Holding("goods", "g-tea")})
    assert on_event(ruleset(TEA), v, BIG_FACTS, AT, [], None) == []
    assert advance(ruleset(TEA), v, AT + 1000 * DAYS) == []


# --- advance: time passes ------------------------------------------------------------------------


def test_a_time_based_rule_holds_from_exactly_180_days_after_the_last_purchase() -> None:
    rules = ruleset(DORMANT)
    last = datetime(2026, 1, 1, 8, 30, 15, 250_000, tzinfo=UTC)
    v = view(MemberFacts(completed_trades=1, last_purchase_at=last), evaluated=last)
    assert advance(rules, v, last + 180 * DAYS - MICRO) == []
    [change] = advance(rules, v, last + 180 * DAYS)
    assert (change.tag_id, change.action, change.rule_id, change.cause) == (
        "dormant", "added", "r-dormant", "rule")
    assert change.effective_at == last + 180 * DAYS and change.event_id is None


def test_a_time_based_tag_noticed_late_takes_effect_at_the_bar_it_crossed() -> None:
    v = view(MemberFacts(completed_trades=1, last_purchase_at=T0), evaluated=T0 + 100 * DAYS)
    [change] = advance(ruleset(DORMANT), v, T0 + 250 * DAYS)
    assert (change.action, change.effective_at) == ("added", T0 + 180 * DAYS)
    assert v.evaluated_at == T0 + 250 * DAYS


def test_a_rule_that_turns_twice_records_both_changes_at_their_bars() -> None:
    rules = ruleset(when("r", "second-month", "days_since_last_purchase >= 30 and "
                                              "days_since_last_purchase < 60"))
    v = view(MemberFacts(completed_trades=1, last_purchase_at=T0), evaluated=T0)
    changes = advance(rules, v, T0 + 100 * DAYS)
    assert [(c.action, c.effective_at) for c in changes] == [
        ("added", T0 + 30 * DAYS), ("removed", T0 + 60 * DAYS)]


def test_a_rule_needing_two_time_bars_takes_effect_when_the_second_is_crossed() -> None:
    rules = ruleset(when("r", "loyal-but-away",
                         "days_since_first_purchase >= 365 and days_since_last_purchase >= 30"))
    v = view(MemberFacts(completed_trades=2, first_purchase_at=T0 - 300 * DAYS,
                         last_purchase_at=T0), evaluated=T0)
    [change] = advance(rules, v, T0 + 100 * DAYS)
    assert change.effective_at == T0 + 65 * DAYS


def test_without_an_earlier_judgement_bars_count_from_the_beginning() -> None:
    v = view(MemberFacts(completed_trades=1, last_purchase_at=T0 - 400 * DAYS))
    [change] = advance(ruleset(DORMANT), v, T0)
    assert change.effective_at == T0 - 220 * DAYS


def test_time_never_runs_backwards() -> None:
    v = view(MemberFacts(completed_trades=1, last_purchase_at=T0), evaluated=T0 + 300 * DAYS)
    assert advance(ruleset(DORMANT), v, T0 + 200 * DAYS) == []
    assert v.evaluated_at == T0 + 300 * DAYS


# --- RuleSet -----------------------------------------------------------------------------------


def test_maintained_maps_when_tags_to_their_rules_and_leaves_goods_tags_out() -> None:
    rules = ruleset(BIG, TEA, DORMANT)
    assert rules.maintained == {"big-spender": "r-big", "dormant": "r-dormant"}


def test_the_first_goods_rule_listing_a_sku_gives_its_tag() -> None:
    rules = ruleset(goods("g1", "tea-lover", ["S1"]), goods("g2", "tea-lover", ["S2", "S1"]))
    assert rules.goods_tags(["S1"]) == {"tea-lover": "g1"}
    assert rules.goods_tags(["S2"]) == {"tea-lover": "g2"}
    assert rules.goods_tags(["S1", "S2"]) == {"tea-lover": "g1"}


def test_the_first_goods_rule_in_configuration_order_wins_across_different_skus() -> None:
    rules = ruleset(goods("g1", "tea-lover", ["S9"]), goods("g2", "tea-lover", ["S1"]))
    assert rules.goods_tags(["S1", "S9"]) == {"tea-lover": "g1"}


def test_one_sku_can_earn_several_tags() -> None:
    rules = ruleset(goods("g-tea", "tea-lover", ["S1"]), goods("g-cup", "cup-buyer", ["S1", "S2"]))
    assert rules.goods_tags(["S1"]) == {"tea-lover": "g-tea", "cup-buyer": "g-cup"}
    assert rules.goods_tags(["S2"]) == {"cup-buyer": "g-cup"}


def test_every_sku_bought_earns_its_tags() -> None:
    rules = ruleset(goods("g-tea", "tea-lover", ["S3"]), goods("g-cup", "cup-buyer", ["S1"]),
                    goods("g-pot", "pot-buyer", ["S2"]))
    assert rules.goods_tags(["S3", "S1", "S9", "S2"]) == {
        "tea-lover": "g-tea", "cup-buyer": "g-cup", "pot-buyer": "g-pot"}


def test_skus_in_no_goods_rule_earn_nothing() -> None:
    rules = ruleset(TEA)
    assert rules.goods_tags(["S3", "S9"]) == {}
    assert rules.goods_tags([]) == {}


def test_thresholds_are_the_day_counts_where_time_based_rules_may_turn() -> None:
    rules = ruleset(BIG, DORMANT,
                    when("r2", "settled", "days_since_first_purchase > 30 or spend >= 1"),
                    when("r3", "week", "days_since_last_purchase == 7"))
    assert rules.thresholds == {("last_purchase_at", 180), ("first_purchase_at", 31),
                                ("last_purchase_at", 7), ("last_purchase_at", 8)}


def test_rules_that_ignore_time_have_no_thresholds() -> None:
    assert ruleset(BIG, TEA).thresholds == frozenset()


# --- bars: where a time-based rule may turn between two clock readings --------------------------


def crossing(thresholds: frozenset[tuple[str, int]], facts: MemberFacts,
             after: datetime | None, until: datetime) -> datetime | None:
    """The earliest bar in (after, until]."""
    return min(bars(thresholds, facts, after, until), default=None)

TIMED = ruleset(DORMANT, when("r2", "veteran", "days_since_first_purchase >= 365")).thresholds
# Bars: last purchase + 180 days = T0 + 180 days; first purchase + 365 days = T0 + 355 days.
TIMED_FACTS = MemberFacts(completed_trades=2, first_purchase_at=T0 - 10 * DAYS,
                          last_purchase_at=T0)


def test_crossing_is_the_earliest_bar_passed_since_the_last_clock() -> None:
    assert crossing(TIMED, TIMED_FACTS, T0 + 100 * DAYS, T0 + 400 * DAYS) == T0 + 180 * DAYS


def test_a_bar_at_the_previous_clock_was_already_crossed_and_one_at_the_new_clock_is() -> None:
    assert crossing(TIMED, TIMED_FACTS, T0 + 180 * DAYS, T0 + 400 * DAYS) == T0 + 355 * DAYS
    assert crossing(TIMED, TIMED_FACTS, T0 + 181 * DAYS, T0 + 355 * DAYS) == T0 + 355 * DAYS


def test_crossing_is_none_when_no_bar_is_passed() -> None:
    assert crossing(TIMED, TIMED_FACTS, T0 + 181 * DAYS, T0 + 355 * DAYS - MICRO) is None
    assert crossing(frozenset(), TIMED_FACTS, None, T0 + 400 * DAYS) is None


def test_without_a_previous_clock_crossing_counts_from_the_beginning() -> None:
    long_ago = replace(TIMED_FACTS, last_purchase_at=T0 - 1000 * DAYS)
    assert crossing(TIMED, long_ago, None, T0) == T0 - 820 * DAYS
    assert crossing(TIMED, long_ago, T0 - 500 * DAYS, T0) is None


def test_crossing_ignores_facts_without_a_value() -> None:
    never_bought = MemberFacts(first_purchase_at=T0 - 10 * DAYS)
    assert crossing(TIMED, never_bought, T0, T0 + 400 * DAYS) == T0 + 355 * DAYS


def test_a_bar_beyond_the_last_representable_time_is_never_crossed() -> None:
    near_the_end = MemberFacts(completed_trades=1,
                               last_purchase_at=datetime(9999, 12, 1, tzinfo=UTC))
    assert crossing(TIMED, near_the_end, None, datetime(9999, 12, 31, tzinfo=UTC)) is None


# --- properties: the history depends on the facts and the stream, not on how it was read ----------

RULES = ruleset(BIG, DORMANT, TEA,
                when("r-month", "second-month",
                     "days_since_last_purchase >= 30 and days_since_last_purchase < 60"),
                when("r-one", "one-timer", "trades == 1"))


@st.composite
def member_streams(draw: st.DrawFn) -> list[tuple[MemberFacts, datetime, tuple[str, ...]]]:
    """One member's figures events in stream order: facts, the stream's clock after each (never
    going back), and items bought."""
    out = []
    clock = T0
    spend = 0
    last: datetime | None = None
    for trades in range(1, draw(st.integers(min_value=1, max_value=8)) + 1):
        step = timedelta(days=draw(st.integers(min_value=0, max_value=120)),
                         hours=draw(st.integers(min_value=0, max_value=23)))
        at = T0 + step if draw(st.booleans()) else clock + step  # late or on time
        clock = max(clock, at)
        spend += draw(st.integers(min_value=0, max_value=40_000))
        last = max(last, at) if last else at
        out.append((MemberFacts(completed_trades=trades, spend_cents=spend, gross_cents=spend,
                                first_purchase_at=T0, last_purchase_at=last), clock,
                    tuple(draw(st.lists(st.sampled_from(SKUS), max_size=2)))))
    return out


def replay_stream(events: list[tuple[MemberFacts, datetime, tuple[str, ...]]],
                  clock_readings: list[list[datetime]], end: datetime) -> list[TagChange]:
    v = view()
    changes: list[TagChange] = []
    for n, (facts, clock, skus) in enumerate(events):
        for reading in clock_readings[n]:
            changes += advance(RULES, v, reading)
        changes += on_event(RULES, v, facts, clock, skus, f"e{n}")
    changes += advance(RULES, v, end)
    return changes


@FAST
@given(member_streams(), st.data())
def test_clock_readings_between_events_never_change_the_history(
        events: list[tuple[MemberFacts, datetime, tuple[str, ...]]], data: st.DataObject) -> None:
    # A reading between two events shows the clock as it was after the earlier one: exactly
    # what tiering's stream clocks carry, however many a batching happens to produce.
    readings = [[] if n == 0 else data.draw(st.lists(
        st.just(events[n - 1][1]), max_size=2)) for n in range(len(events))]
    end = events[-1][1] + 400 * DAYS
    assert replay_stream(events, readings, end) == replay_stream(
        events, [[] for _ in events], end)


@FAST
@given(member_streams(), st.lists(st.integers(min_value=0, max_value=500), max_size=4))
def test_time_can_pass_in_any_steps(events: list[tuple[MemberFacts, datetime, tuple[str, ...]]],
                                    steps: list[int]) -> None:
    facts, clock, _ = events[0]
    once, stepped = view(facts, evaluated=clock), view(facts, evaluated=clock)
    end = clock + 600 * DAYS
    whole = advance(RULES, once, end)
    parts: list[TagChange] = []
    for days in sorted(steps):
        parts += advance(RULES, stepped, clock + days * DAYS)
    parts += advance(RULES, stepped, end)
    assert parts == whole and stepped.holdings == once.holdings


@FAST
@given(member_streams())
def test_history_is_in_order_and_tags_equal_the_rules_at_the_end(
        events: list[tuple[MemberFacts, datetime, tuple[str, ...]]]) -> None:
    end = events[-1][1] + 50 * DAYS
    changes = replay_stream(events, [[] for _ in events], end)
    times = [c.effective_at for c in changes]
    assert times == sorted(times)
    holdings: dict[str, Holding] = {}
    apply_changes(holdings, changes)   # never adds what is held, never removes what is not
    facts = events[-1][0]
    expected = {tag for _, tag, rule in RULES.when if rule.holds(facts, end)}
    assert {t for t, h in holdings.items() if h.cause == "rule"} == expected
    bought = {s for _, _, skus in events for s in skus}
    assert ("tea-lover" in holdings) == bool(bought & {"S1", "S2"})
