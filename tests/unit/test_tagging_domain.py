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
    MemberKey,
    MemberUpdate,
    RuleSet,
    TagChange,
    bars,
    decide,
    fold,
)
from services.tagging.rules import MemberFacts
from shared.member_events import (
    AbcChanged,
    Figures,
    FiguresChanged,
    LevelChanged,
    MemberEventIn,
    ShopClock,
)
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


def figures(member: str = "m1", *, event_id: str = "evt-f", at: datetime = T0, trades: int = 1,
            spend: int = 10_000, refunded: int = 0, first: datetime | None = T0,
            last: datetime | None = T0, region: str | None = None, skus: Iterable[str] = (),
            shop: str = SHOP) -> FiguresChanged:
    return FiguresChanged(shop, member, event_id, at,
                          Figures(trades, spend, spend + refunded, refunded, first, last, region),
                          tuple(skus))


def level(member: str, new_level: int, *, event_id: str = "evt-l", at: datetime = T0,
          shop: str = SHOP) -> LevelChanged:
    return LevelChanged(shop, member, event_id, at, new_level)


def abc(member: str, new_class: str | None, *, event_id: str = "evt-a", at: datetime = T0,
        shop: str = SHOP) -> AbcChanged:
    return AbcChanged(shop, member, event_id, at, new_class)


def shop_clock(at: datetime, event_id: str = "clock-1") -> ShopClock:
    return ShopClock(event_id, {SHOP: at})


def apply_changes(holdings: dict[str, Holding], changes: Iterable[TagChange]) -> None:
    """What the store does with decide's output; a redundant change is a bug in decide."""
    for change in changes:
        if change.action == "added":
            assert change.tag_id not in holdings, change
            holdings[change.tag_id] = change.holding
        else:
            assert change.action == "removed"
            assert change.tag_id in holdings, change
            del holdings[change.tag_id]


# --- decide: tags kept equal to a `when` rule ---------------------------------------------------
# decide(rules, member, holdings, facts, clock, skus, since, event_id): `since` is when the facts
# became what they are (the triggering event's time) or, for a clock-only look, the previous
# clock reading.

BIG = when("r-big", "big-spender", "spend >= 500 and trades >= 3")
BIG_FACTS = MemberFacts(completed_trades=3, spend_cents=50_000)
SMALL_FACTS = MemberFacts(completed_trades=3, spend_cents=49_999)
DORMANT = when("r-dormant", "dormant", "days_since_last_purchase >= 180")


def test_a_when_tag_is_added_when_its_rule_starts_to_hold() -> None:
    changes = decide(ruleset(BIG), "m1", {}, BIG_FACTS, T0, (), AT, "evt-9")
    assert changes == [TagChange(SHOP, "m1", "big-spender", "added", "rule", AT, "r-big",
                                 "evt-9", config_version=7)]


def test_a_when_tag_is_not_added_while_its_rule_does_not_hold() -> None:
    assert decide(ruleset(BIG), "m1", {}, SMALL_FACTS, T0, (), AT, "evt-9") == []


def test_a_when_tag_is_removed_when_its_rule_stops_holding() -> None:
    held = {"big-spender": Holding("rule", "r-big")}
    changes = decide(ruleset(BIG, version=3), "m1", held, SMALL_FACTS, T0, (), AT, "evt-10")
    assert changes == [TagChange(SHOP, "m1", "big-spender", "removed", "rule", AT, "r-big",
                                 "evt-10", config_version=3)]


def test_a_when_tag_already_held_is_not_added_again() -> None:
    held = {"big-spender": Holding("rule", "r-big")}
    assert decide(ruleset(BIG), "m1", held, BIG_FACTS, T0, (), AT, "evt-9") == []


def test_a_when_tag_held_by_hand_still_follows_its_rule() -> None:
    held = {"big-spender": Holding("manual")}
    [change] = decide(ruleset(BIG), "m1", held, SMALL_FACTS, T0, (), AT, None)
    assert (change.tag_id, change.action, change.cause) == ("big-spender", "removed", "rule")


@pytest.mark.parametrize("facts", [BIG_FACTS, SMALL_FACTS, MemberFacts()])
def test_a_manual_tag_without_a_rule_is_never_touched(facts: MemberFacts) -> None:
    rules = ruleset(BIG, goods("g-tea", "tea-lover", ["S1"]))
    held = {"vip-care": Holding("manual", None)}
    changes = decide(rules, "m1", held, facts, T0, ["S1", "S2"], AT, "evt-1")
    assert "vip-care" not in {c.tag_id for c in changes}
    assert changes  # the rules did act: big-spender and/or tea-lover changed


def test_a_time_based_rule_holds_from_exactly_180_days_after_the_last_purchase() -> None:
    rules = ruleset(DORMANT)
    last = datetime(2026, 1, 1, 8, 30, 15, 250_000, tzinfo=UTC)
    facts = MemberFacts(completed_trades=1, last_purchase_at=last)
    assert decide(rules, "m1", {}, facts, last + 180 * DAYS - MICRO, (), last, "evt-1") == []
    [change] = decide(rules, "m1", {}, facts, last + 180 * DAYS, (), last, "evt-1")
    assert (change.tag_id, change.action, change.rule_id) == ("dormant", "added", "r-dormant")
    assert change.effective_at == last + 180 * DAYS


def test_a_time_based_tag_noticed_late_takes_effect_at_the_bar_it_crossed() -> None:
    facts = MemberFacts(completed_trades=1, last_purchase_at=T0)
    previous_clock, clock = T0 + 100 * DAYS, T0 + 250 * DAYS
    [change] = decide(ruleset(DORMANT), "m1", {}, facts, clock, (), previous_clock, "clock:x")
    assert (change.action, change.effective_at, change.event_id) == (
        "added", T0 + 180 * DAYS, "clock:x")


def test_a_time_based_tag_already_due_before_the_event_takes_effect_at_the_event() -> None:
    facts = MemberFacts(completed_trades=1, last_purchase_at=T0 - 400 * DAYS, abc_class="C")
    [change] = decide(ruleset(DORMANT), "m1", {}, facts, T0 + DAYS, (), T0, "evt-abc")
    assert (change.action, change.effective_at) == ("added", T0)


def test_without_a_previous_reading_a_time_based_tag_takes_effect_at_its_bar() -> None:
    facts = MemberFacts(completed_trades=1, last_purchase_at=T0 - 400 * DAYS)
    [change] = decide(ruleset(DORMANT), "m1", {}, facts, T0, (), None, "clock:first")
    assert change.effective_at == T0 - 220 * DAYS


def test_a_new_purchase_removes_the_dormant_tag_at_the_purchase() -> None:
    now = T0 + 400 * DAYS
    bought = now - DAYS
    facts = MemberFacts(completed_trades=2, last_purchase_at=bought)
    [change] = decide(ruleset(DORMANT), "m1", {"dormant": Holding("rule", "r-dormant")}, facts,
                      now, (), bought, "evt-order")
    assert (change.action, change.event_id, change.effective_at) == (
        "removed", "evt-order", bought)


def test_a_rule_needing_two_time_bars_takes_effect_when_the_second_is_crossed() -> None:
    rules = ruleset(when("r", "loyal-but-away",
                         "days_since_first_purchase >= 365 and days_since_last_purchase >= 30"))
    facts = MemberFacts(completed_trades=2, first_purchase_at=T0 - 300 * DAYS,
                        last_purchase_at=T0)
    [change] = decide(rules, "m1", {}, facts, T0 + 100 * DAYS, (), T0, "evt-order")
    assert change.effective_at == T0 + 65 * DAYS


def test_a_removal_takes_effect_when_the_rule_last_stopped_holding() -> None:
    rules = ruleset(when("r", "week-after", "days_since_last_purchase == 7 or trades >= 5"))
    held = {"week-after": Holding("rule", "r")}
    refunded = MemberFacts(completed_trades=4, last_purchase_at=T0)   # a refund: 5 -> 4 trades
    [change] = decide(rules, "m1", held, refunded, T0 + 9 * DAYS, (), T0 + DAYS, "evt-refund")
    assert (change.action, change.effective_at) == ("removed", T0 + 8 * DAYS)


def test_a_rule_true_at_the_event_takes_effect_at_the_event_even_if_a_bar_follows() -> None:
    rules = ruleset(when("r", "care", "days_since_last_purchase >= 180 or level >= 3"))
    facts = MemberFacts(completed_trades=1, last_purchase_at=T0 - 10 * DAYS, level=3)
    [change] = decide(rules, "m1", {}, facts, T0 + 200 * DAYS, (), T0, "evt-level")
    assert (change.action, change.effective_at) == ("added", T0)


@pytest.mark.parametrize("condition", [
    "days_since_last_purchase >= 180",
    "not (days_since_last_purchase < 180)",
    "days_since_last_purchase >= 180 or trades >= 100",
])
def test_without_a_clock_time_based_conditions_are_unknown_so_not_held(condition: str) -> None:
    rules = ruleset(when("r", "dormant", condition))
    facts = MemberFacts(completed_trades=1, last_purchase_at=T0 - 1000 * DAYS)
    assert decide(rules, "m1", {}, facts, None, (), AT, None) == []
    assert decide(rules, "m1", {}, facts, T0, (), AT, None) != []  # with a clock it holds


def test_dates_in_rules_are_read_in_the_shops_time_zone() -> None:
    rules = ruleset(when("r-new", "new", "first_purchase >= 2026-01-01"), timezone="Asia/Shanghai")
    midnight_in_shanghai = datetime(2025, 12, 31, 16, tzinfo=UTC)
    before = MemberFacts(completed_trades=1, first_purchase_at=midnight_in_shanghai - MICRO)
    on = MemberFacts(completed_trades=1, first_purchase_at=midnight_in_shanghai)
    assert decide(rules, "m1", {}, before, T0, (), AT, None) == []
    assert [c.tag_id for c in decide(rules, "m1", {}, on, T0, (), AT, None)] == ["new"]


# --- decide: goods tags ------------------------------------------------------------------------

TEA = goods("g-tea", "tea-lover", ["S1", "S2"])


def test_buying_a_listed_sku_adds_the_goods_tag_once() -> None:
    changes = decide(ruleset(TEA, version=4), "m1", {}, MemberFacts(), T0, ["S2", "S1", "S9"],
                     AT, "evt-5")
    assert changes == [TagChange(SHOP, "m1", "tea-lover", "added", "goods", AT, "g-tea",
                                 "evt-5", config_version=4)]


@pytest.mark.parametrize("cause", ["goods", "manual"])
def test_a_goods_tag_already_held_is_not_added_again(cause: str) -> None:
    held = {"tea-lover": Holding(cause, "g-tea" if cause == "goods" else None)}
    assert decide(ruleset(TEA), "m1", held, MemberFacts(), T0, ["S1"], AT, None) == []


def test_decide_never_removes_a_goods_tag() -> None:
    held = {"tea-lover": Holding("goods", "g-tea")}
    assert decide(ruleset(TEA), "m1", held, MemberFacts(), T0, [], AT, None) == []
    assert decide(ruleset(TEA), "m1", held, BIG_FACTS, None, ["S9"], AT, None) == []


def test_buying_nothing_listed_adds_no_goods_tag() -> None:
    assert decide(ruleset(TEA), "m1", {}, MemberFacts(), T0, ["S3", "S9"], AT, None) == []


def test_changes_are_sorted_by_tag_whatever_the_configuration_order() -> None:
    rules = ruleset(when("r1", "zeta", "trades >= 1"), goods("g1", "alpha", ["S1"]),
                    when("r2", "mid", "trades >= 1"), goods("g2", "beta", ["S2"]),
                    when("r3", "omega", "trades >= 5"))
    held = {"omega": Holding("rule", "r3")}
    changes = decide(rules, "m1", held, MemberFacts(completed_trades=1), T0, ["S2", "S1"], AT, None)
    assert [(c.tag_id, c.action) for c in changes] == [
        ("alpha", "added"), ("beta", "added"), ("mid", "added"), ("omega", "removed"),
        ("zeta", "added")]


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


# --- fold --------------------------------------------------------------------------------------

M1: MemberKey = (SHOP, "m1")


def test_figures_are_snapshots_and_the_last_one_wins() -> None:
    out = fold({}, [(0, figures(trades=1, spend=100, region="North", event_id="e1")),
                    (0, figures(trades=3, spend=90, refunded=20, first=T0 - DAYS, last=None,
                                event_id="e2", at=T0 + DAYS))])
    assert out[M1].facts == MemberFacts(completed_trades=3, spend_cents=90, gross_cents=110,
                                        refunded_cents=20, first_purchase_at=T0 - DAYS,
                                        last_purchase_at=None, region=None)
    assert (out[M1].event_id, out[M1].at) == ("e2", T0 + DAYS)


def test_levels_and_classes_are_set_outright_and_figures_keep_them() -> None:
    known = {M1: (0, MemberFacts(completed_trades=9, level=1, abc_class="C"))}
    out = fold(known, [(0, level("m1", 3)), (0, abc("m1", "A")), (0, level("m1", 2)),
                       (0, figures(trades=4, spend=700)), (0, abc("m1", None))])
    assert out[M1].facts == MemberFacts(completed_trades=4, spend_cents=700, gross_cents=700,
                                        first_purchase_at=T0, last_purchase_at=T0, level=2,
                                        abc_class=None)


def test_figures_do_not_reset_what_is_known_of_level_and_class() -> None:
    known = {M1: (2, MemberFacts(level=3, abc_class="B"))}
    out = fold(known, [(2, figures(trades=1, spend=5))])
    assert (out[M1].facts.level, out[M1].facts.abc_class) == (3, "B")


def test_skus_bought_accumulate_over_the_batch() -> None:
    out = fold({}, [(0, figures(skus=["S1", "S2"])), (0, level("m1", 1)),
                    (0, figures(skus=["S2", "S3"]))])
    assert out[M1].skus == {"S1", "S2", "S3"}


def test_shop_clocks_are_skipped() -> None:
    assert fold({}, [(0, shop_clock(T0)), (1, shop_clock(T0 + DAYS))]) == {}
    out = fold({}, [(0, figures(event_id="e1", at=T0)), (1, shop_clock(T0 + DAYS, "clock-9"))])
    assert (out[M1].partition, out[M1].event_id, out[M1].at) == (0, "e1", T0)


def test_the_partition_is_the_last_one_seen() -> None:
    out = fold({M1: (5, MemberFacts())}, [(1, level("m1", 1)), (3, level("m1", 2))])
    assert out[M1].partition == 3


def test_members_of_different_shops_are_kept_apart() -> None:
    out = fold({}, [(0, level("m1", 2)), (0, level("m1", 1, shop="shop-2")),
                    (0, level("m2", 3))])
    assert {k: u.facts.level for k, u in out.items()} == {
        (SHOP, "m1"): 2, ("shop-2", "m1"): 1, (SHOP, "m2"): 3}


def test_only_members_with_events_are_returned() -> None:
    known = {M1: (0, BIG_FACTS), (SHOP, "m2"): (0, SMALL_FACTS)}
    assert set(fold(known, [(0, abc("m2", "A"))])) == {(SHOP, "m2")}


# --- properties --------------------------------------------------------------------------------

MEMBERS = ("m1", "m2")
SHOPS = (SHOP, "shop-2")
times = st.integers(-800, 800).map(lambda hours: T0 + hours * timedelta(hours=6))
maybe_times = st.none() | times
regions = st.sampled_from([None, "North", "South"])
classes = st.sampled_from([None, "A", "B", "C"])
facts_st = st.builds(
    MemberFacts, completed_trades=st.integers(0, 6), spend_cents=st.integers(0, 200_000),
    gross_cents=st.integers(0, 200_000), refunded_cents=st.integers(0, 50_000),
    first_purchase_at=maybe_times, last_purchase_at=maybe_times, region=regions,
    level=st.integers(0, 4), abc_class=classes)
figures_st = st.builds(
    Figures, completed_trades=st.integers(0, 6), spend_cents=st.integers(0, 200_000),
    gross_cents=st.integers(0, 200_000), refunded_cents=st.integers(0, 50_000),
    first_purchase_at=maybe_times, last_purchase_at=maybe_times, region=regions)


def member_event_st(shops: Sequence[str], members: Sequence[str]) -> st.SearchStrategy[Any]:
    head: dict[str, Any] = {"shop_id": st.sampled_from(shops),
                            "member_id": st.sampled_from(members),
                            "event_id": st.just(""), "occurred_at": times}
    return st.one_of(
        st.builds(FiguresChanged, **head, figures=figures_st,
                  skus_bought=st.lists(st.sampled_from(SKUS), max_size=3, unique=True).map(tuple)),
        st.builds(LevelChanged, **head, new_level=st.integers(0, 4)),
        st.builds(AbcChanged, **head, new_class=classes),
        st.builds(ShopClock, event_id=st.just(""),
                  watermarks=st.dictionaries(st.sampled_from(shops), times, max_size=2)),
    )


@st.composite
def streams(draw: st.DrawFn, shops: Sequence[str] = SHOPS, members: Sequence[str] = MEMBERS,
            partitions: int = 3, max_size: int = 20) -> list[tuple[int, MemberEventIn]]:
    """Member events in topic order, each with a distinct event id."""
    raw = draw(st.lists(st.tuples(st.integers(0, partitions - 1),
                                  member_event_st(shops, members)), max_size=max_size))
    return [(p, replace(e, event_id=f"evt-{i}")) for i, (p, e) in enumerate(raw)]


known_st = st.dictionaries(st.tuples(st.sampled_from(SHOPS), st.sampled_from(MEMBERS)),
                           st.tuples(st.integers(0, 2), facts_st), max_size=3)


WHEN_POOL = (
    "spend >= 500 and trades >= 3",
    "days_since_last_purchase >= 180",
    'level >= 2 or abc in ["A", "B"]',
    'region != "North"',
    "aov < 50.5",
    "days_since_first_purchase > 30 and not (spend < 100)",
    "region == none",
    "days_since_last_purchase == 7 or last_purchase < 2026-01-01",
    "not (days_since_last_purchase <= 20) and abc == \"A\"",
    "days_since_first_purchase >= 365 and days_since_last_purchase >= 30",
)
TIME_POOL = (
    "days_since_last_purchase >= 180",
    "days_since_first_purchase > 30",
    "days_since_last_purchase < 90",
    "days_since_last_purchase == 7",
    "days_since_first_purchase >= 365 and spend >= 100",
)
# Rules whose verdict, for fixed facts, turns at most once as the clock advances and only at
# their one bar: a single time comparison, or no time at all.
ONE_BAR_POOL = (
    "spend >= 500 and trades >= 3",
    'level >= 2 or abc in ["A", "B"]',
    "region == none",
    "days_since_last_purchase >= 180",
    "days_since_first_purchase > 30",
    "not (days_since_last_purchase <= 20)",
    "days_since_last_purchase < 90",
)


@st.composite
def rule_sets(draw: st.DrawFn, pool: Sequence[str] = WHEN_POOL, min_when: int = 0) -> RuleSet:
    conditions = draw(st.lists(st.sampled_from(pool), unique=True, min_size=min_when,
                               max_size=5))
    goods_specs = draw(st.lists(st.tuples(
        st.sampled_from(["g-a", "g-b", "g-c"]),
        st.lists(st.sampled_from(SKUS), min_size=1, max_size=3, unique=True)), max_size=4))
    rules = [when(f"r{i}", f"w{i}", c) for i, c in enumerate(conditions)]
    rules += [goods(f"g{i}", tag, skus) for i, (tag, skus) in enumerate(goods_specs)]
    ordered = draw(st.permutations(rules))
    return RuleSet.from_config(draw(st.integers(1, 99)), config(ordered, ["vip-care"]))


def summary(update: MemberUpdate) -> tuple[Any, ...]:
    return (update.partition, update.facts, update.skus, update.event_id, update.at)


@FAST
@given(known=known_st, events=streams(), data=st.data())
def test_folding_in_chunks_equals_folding_at_once(
        known: dict[MemberKey, tuple[int, MemberFacts]], events: list[tuple[int, MemberEventIn]],
        data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(events)), label="cut")
    first, rest = events[:cut], events[cut:]
    whole = fold(known, events)
    a = fold(known, first)
    b = fold(dict(known) | {k: (u.partition, u.facts) for k, u in a.items()}, rest)
    assert set(whole) == set(a) | set(b)
    for key, update in whole.items():
        last = b.get(key) or a[key]
        assert update.facts == last.facts
        assert (update.partition, update.event_id, update.at) == (
            last.partition, last.event_id, last.at)
        assert update.skus == (a[key].skus if key in a else set()) | (
            b[key].skus if key in b else set())


@FAST
@given(known=known_st, events=streams())
def test_every_event_delivered_twice_changes_nothing(
        known: dict[MemberKey, tuple[int, MemberFacts]],
        events: list[tuple[int, MemberEventIn]]) -> None:
    twice = [pair for pair in events for _ in range(2)]
    assert {k: summary(u) for k, u in fold(known, twice).items()} == {
        k: summary(u) for k, u in fold(known, events).items()}


@FAST
@given(facts=facts_st, clock=maybe_times, skus=st.sets(st.sampled_from(SKUS)),
       data=st.data())
def test_deciding_again_on_the_same_facts_changes_nothing(
        facts: MemberFacts, clock: datetime | None, skus: set[str], data: st.DataObject) -> None:
    rules = data.draw(rule_sets(), label="rules")
    holdings = {"vip-care": Holding("manual")}
    apply_changes(holdings, decide(rules, "m1", holdings, facts, clock, skus, T0, "e1"))
    assert decide(rules, "m1", holdings, facts, clock, skus, T0, "e1") == []


@FAST
@given(facts=facts_st, moments=st.lists(times, min_size=2, max_size=2, unique=True),
       data=st.data())
def test_no_verdict_turns_between_the_previous_clock_and_the_crossing(
        facts: MemberFacts, moments: list[datetime], data: st.DataObject) -> None:
    rules = data.draw(rule_sets(TIME_POOL, min_when=2), label="rules")
    after, until = sorted(moments)
    at = crossing(rules.thresholds, facts, after, until)
    bars = {getattr(facts, column) + days * DAYS for column, days in rules.thresholds
            if getattr(facts, column) is not None}
    if at is not None:
        assert after < at <= until
        assert at in bars
    end = until + MICRO if at is None else at   # the verdicts stand on [after, end)
    inside = data.draw(st.integers(0, (end - after) // MICRO - 1), label="µs after") * MICRO
    for moment in (after, after + inside, end - MICRO):
        assert rules.holding_rules(facts, moment) == rules.holding_rules(facts, after), moment


@FAST
@given(rules=rule_sets(ONE_BAR_POOL), facts=facts_st, since=maybe_times, clock=times,
       data=st.data())
def test_a_rule_change_takes_effect_when_the_verdict_turned(
        rules: RuleSet, facts: MemberFacts, since: datetime | None, clock: datetime,
        data: st.DataObject) -> None:
    held = data.draw(st.sets(st.sampled_from(sorted(rules.maintained) or ["none"])), label="held")
    holdings = {t: Holding("rule", r) for t, r in rules.maintained.items() if t in held}
    conditions = {tag: rule for _, tag, rule in rules.when}
    for change in decide(rules, "m1", holdings, facts, clock, (), since, "e1"):
        rule, at = conditions[change.tag_id], change.effective_at
        verdict = change.action == "added"
        assert rule.holds(facts, clock) == verdict
        assert since is None or at >= since
        if at <= clock:   # from the change on, the verdict stands
            assert rule.holds(facts, at) == verdict
            assert rule.holds(facts, at + (clock - at) / 2) == verdict
        if at != (since or clock):   # a bar crossed: the verdict turned right there
            assert rule.holds(facts, at - MICRO) != verdict


@FAST
@given(rules=rule_sets(), events=streams(shops=[SHOP], members=["m1"], partitions=1,
                                         max_size=25), data=st.data())
def test_tags_after_every_chunk_end_where_one_decision_on_the_final_facts_ends(
        rules: RuleSet, events: list[tuple[int, MemberEventIn]], data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=6), label="cuts"))
    chunks = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    manual = {"vip-care": Holding("manual")}

    holdings = dict(manual)
    known: dict[MemberKey, tuple[int, MemberFacts]] = {}
    clock: datetime | None = None
    bought: set[str] = set()
    for chunk in chunks:
        before = clock
        for _, event in chunk:
            if isinstance(event, ShopClock) and SHOP in event.watermarks:
                mark = event.watermarks[SHOP]
                clock = mark if clock is None else max(clock, mark)
        update = fold(known, chunk).get(M1)
        if update is not None and update.at is not None:   # the member's own events
            known[M1] = (update.partition, update.facts)
            bought |= update.skus
            apply_changes(holdings, decide(rules, "m1", holdings, update.facts, clock,
                                           update.skus, update.at, update.event_id))
        elif M1 in known and clock is not None:            # only the clock moved
            apply_changes(holdings, decide(rules, "m1", holdings, known[M1][1], clock, (),
                                           before, f"clock:{clock.isoformat()}"))

    at_once = dict(manual)
    if M1 in known:
        apply_changes(at_once, decide(rules, "m1", at_once, known[M1][1], clock, bought, AT,
                                      None))
        assert {t: h.rule_id for t, h in holdings.items() if h.cause == "rule"} == (
            rules.holding_rules(known[M1][1], clock))
    assert {t: h for t, h in holdings.items() if h.cause != "goods"} == {
        t: h for t, h in at_once.items() if h.cause != "goods"}
    earned = {tag for sku in bought for _, _, tag in rules.goods.get(sku, ())}
    assert {t for t, h in holdings.items() if h.cause == "goods"} == earned
    assert {t for t, h in at_once.items() if h.cause == "goods"} == earned
    assert holdings["vip-care"] == Holding("manual")
