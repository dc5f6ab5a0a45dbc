"""The pure level rules (services/tiering/levels.py): qualify, upgrade, discount, trigger."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.tiering.domain import apply
from services.tiering.levels import (
    NO_DISCOUNT,
    Completion,
    LevelFacts,
    discount,
    qualified_level,
    trigger,
    upgraded_level,
)
from services.tiering.policy import Level, LevelPolicy
from shared.events import OrderCompleted, OrderRefunded, validate

FAST = settings(max_examples=150, deadline=None, database=None)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
TAOBAO_NAMES = ["普通会员", "高级会员", "VIP会员", "至尊VIP会员"]


def marketplace(basis: str, thresholds: list[str], discounts: list[str] | None = None,
                enabled: list[bool] | None = None, auto_upgrade: bool = True) -> LevelPolicy:
    discounts = discounts or ["0.98", "0.95", "0.90", "0.85"][:len(thresholds)]
    enabled = enabled or [True] * len(thresholds)
    return LevelPolicy(preset="marketplace", basis=basis, auto_upgrade=auto_upgrade, ladder=[
        Level(name=TAOBAO_NAMES[i], threshold=Decimal(t), discount=Decimal(d), enabled=on)
        for i, (t, d, on) in enumerate(zip(thresholds, discounts, enabled, strict=True))])


def custom(*levels: dict[str, Any]) -> LevelPolicy:
    return LevelPolicy(preset="custom", ladder=[
        Level(name=f"tier {i}", discount=Decimal("0.99") - Decimal(i) / 100, **spec)
        for i, spec in enumerate(levels, start=1)])


# Taobao's ladder by amount: 100.00, 500.00, 2000.00, 5000.00.
BY_AMOUNT = marketplace("amount", ["100.00", "500.00", "2000.00", "5000.00"])
# The same by count of completed trades: 1, 3, 10, 30.
BY_COUNT = marketplace("count", ["1", "3", "10", "30"])


def facts(level: int = 0, trades: int = 0, cents: int = 0, blacklisted: bool = False,
          windowed: frozenset[int] = frozenset()) -> LevelFacts:
    return LevelFacts(level=level, blacklisted=blacklisted, completed_trades=trades,
                      qualifying_cents=cents, windowed=windowed)


# --- qualifying and upgrading -----------------------------------------------------------------


def test_member_exactly_at_the_amount_threshold_qualifies() -> None:
    assert upgraded_level(BY_AMOUNT, facts(trades=1, cents=500_00)) == 2
    assert upgraded_level(BY_AMOUNT, facts(trades=1, cents=100_00)) == 1


def test_one_cent_below_the_amount_threshold_does_not_qualify() -> None:
    assert upgraded_level(BY_AMOUNT, facts(trades=1, cents=500_00 - 1)) == 1
    assert upgraded_level(BY_AMOUNT, facts(trades=1, cents=100_00 - 1)) == 0


def test_amount_threshold_with_cents_is_compared_exactly() -> None:
    policy = marketplace("amount", ["99.99"])
    assert upgraded_level(policy, facts(trades=1, cents=9999)) == 1
    assert upgraded_level(policy, facts(trades=1, cents=9998)) == 0


def test_member_exactly_at_the_trade_count_qualifies_one_trade_less_does_not() -> None:
    assert upgraded_level(BY_COUNT, facts(trades=10, cents=1)) == 3
    assert upgraded_level(BY_COUNT, facts(trades=9, cents=1)) == 2
    assert upgraded_level(BY_COUNT, facts(trades=0, cents=0)) == 0


def test_count_basis_ignores_the_amount() -> None:
    assert upgraded_level(BY_COUNT, facts(trades=2, cents=10**9)) == 1


def test_amount_basis_ignores_the_trade_count() -> None:
    assert upgraded_level(BY_AMOUNT, facts(trades=1000, cents=99_99)) == 0


def test_one_big_trade_climbs_several_levels_at_once() -> None:
    assert upgraded_level(BY_AMOUNT, facts(level=0, trades=1, cents=6000_00)) == 4
    assert upgraded_level(BY_AMOUNT, facts(level=1, trades=2, cents=2000_00)) == 3


def test_level_is_never_lowered_automatically() -> None:
    # Held by hand or from an older, easier policy: figures below the bar keep the level.
    assert upgraded_level(BY_AMOUNT, facts(level=3, trades=1, cents=1_00)) == 3
    assert upgraded_level(BY_AMOUNT, facts(level=4, trades=0, cents=0)) == 4


def test_blacklisted_member_never_upgrades() -> None:
    assert upgraded_level(BY_AMOUNT, facts(level=1, trades=50, cents=10**8,
                                           blacklisted=True)) == 1
    assert upgraded_level(BY_AMOUNT, facts(level=0, trades=50, cents=10**8,
                                           blacklisted=True)) == 0


def test_auto_upgrade_off_changes_no_level() -> None:
    off = marketplace("amount", ["100.00", "500.00"], auto_upgrade=False)
    assert upgraded_level(off, facts(level=0, trades=5, cents=10**7)) == 0
    assert upgraded_level(off, facts(level=1, trades=5, cents=10**7)) == 1
    # The bar is still there: only the automatic change is off.
    assert qualified_level(off, facts(level=0, trades=5, cents=10**7)) == 2


def test_without_a_policy_no_level_changes() -> None:
    assert upgraded_level(None, facts(level=0, trades=99, cents=10**9)) == 0
    assert upgraded_level(None, facts(level=2, trades=99, cents=10**9)) == 2


def test_disabled_level_is_skipped_but_higher_enabled_levels_are_reached() -> None:
    policy = marketplace("amount", ["100.00", "500.00", "2000.00", "5000.00"],
                         enabled=[True, False, True, False])
    assert upgraded_level(policy, facts(trades=1, cents=500_00)) == 1
    assert upgraded_level(policy, facts(trades=1, cents=2000_00)) == 3
    assert upgraded_level(policy, facts(trades=1, cents=9000_00)) == 3
    assert qualified_level(policy, facts(trades=1, cents=99_99)) == 0


def test_ladder_with_every_level_disabled_qualifies_nobody() -> None:
    policy = marketplace("count", ["1", "2"], enabled=[False, False])
    assert upgraded_level(policy, facts(trades=100, cents=10**8)) == 0


def test_qualified_level_ignores_the_current_level() -> None:
    assert qualified_level(BY_AMOUNT, facts(level=4, trades=1, cents=150_00)) == 1


def test_custom_level_needs_both_its_amount_and_its_trade_count() -> None:
    policy = custom({"min_amount": Decimal("100.00"), "min_trades": 2},
                    {"min_amount": Decimal("1000.00"), "min_trades": 5})
    assert upgraded_level(policy, facts(trades=1, cents=10**8)) == 0
    assert upgraded_level(policy, facts(trades=100, cents=99_99)) == 0
    assert upgraded_level(policy, facts(trades=2, cents=100_00)) == 1
    assert upgraded_level(policy, facts(trades=4, cents=10**8)) == 1
    assert upgraded_level(policy, facts(trades=5, cents=1000_00)) == 2


def test_custom_ladder_may_have_more_than_four_levels() -> None:
    policy = custom(*({"min_trades": n} for n in (1, 2, 4, 8, 16)))
    assert upgraded_level(policy, facts(trades=16)) == 5
    assert upgraded_level(policy, facts(trades=15)) == 4


def test_windowed_custom_level_is_met_only_through_the_store_verdict() -> None:
    policy = custom({"min_amount": Decimal("100.00")},
                    {"min_amount": Decimal("100.00"), "within_days": 30})
    rich = facts(trades=40, cents=10**8)
    assert upgraded_level(policy, rich) == 1
    assert upgraded_level(policy, replace(rich, windowed=frozenset({2}))) == 2


def test_refund_lowers_spend_but_never_the_level() -> None:
    def event(type_: str, event_id: str, amount: str) -> Any:
        return validate({"event_id": event_id, "type": type_, "schema_version": 1,
                         "shop_id": "s1", "member_id": "m1", "occurred_at": T0.isoformat(),
                         "payload": {"order_id": "o1", "amount": amount}})

    done, back = event("order.completed", "e1", "500.00"), event("order.refunded", "e2", "450.00")
    assert isinstance(done, OrderCompleted) and isinstance(back, OrderRefunded)
    _, deltas = apply({}, [done, back])
    delta = deltas[("s1", "m1")]
    assert delta.spend_cents == 50_00  # spend went down...
    member = facts(trades=delta.completed_trades, cents=delta.gross_cents)
    assert upgraded_level(BY_AMOUNT, member) == 2  # ...the level did not
    # and a member already at level 2 keeps it whatever is refunded afterwards
    assert upgraded_level(BY_AMOUNT, facts(level=2, trades=1, cents=delta.gross_cents)) == 2


# --- properties --------------------------------------------------------------------------------


@st.composite
def marketplace_policies(draw: st.DrawFn) -> LevelPolicy:
    basis = draw(st.sampled_from(["amount", "count"]))
    n = draw(st.integers(min_value=1, max_value=4))
    if basis == "amount":
        cents = sorted(draw(st.lists(st.integers(0, 1_000_000), min_size=n, max_size=n,
                                     unique=True)))
        thresholds = [Decimal(c) / 100 for c in cents]
    else:
        thresholds = [Decimal(t) for t in sorted(draw(st.lists(
            st.integers(0, 40), min_size=n, max_size=n, unique=True)))]
    discounts = sorted(draw(st.lists(st.integers(70, 100), min_size=n, max_size=n)),
                       reverse=True)
    enabled = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return LevelPolicy(preset="marketplace", basis=basis, ladder=[
        Level(name=f"L{i}", threshold=t, discount=Decimal(d) / 100, enabled=on)
        for i, (t, d, on) in enumerate(zip(thresholds, discounts, enabled, strict=True))])


@st.composite
def custom_policies(draw: st.DrawFn) -> LevelPolicy:
    """Custom ladders over the whole history (no windows), each level asking for more."""
    n = draw(st.integers(min_value=1, max_value=6))
    uses = draw(st.sampled_from(["amount", "trades", "both"]))
    cents = sorted(draw(st.lists(st.integers(1, 1_000_000), min_size=n, max_size=n, unique=True)))
    trades = sorted(draw(st.lists(st.integers(1, 40), min_size=n, max_size=n, unique=True)))
    enabled = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return LevelPolicy(preset="custom", ladder=[
        Level(name=f"T{i}", discount=Decimal("0.95"), enabled=enabled[i],
              min_amount=Decimal(cents[i]) / 100 if uses != "trades" else None,
              min_trades=trades[i] if uses != "amount" else None)
        for i in range(n)])


policies = st.one_of(marketplace_policies(), custom_policies())
member_facts = st.builds(
    LevelFacts, level=st.integers(0, 4), blacklisted=st.booleans(),
    completed_trades=st.integers(0, 60), qualifying_cents=st.integers(0, 1_200_000))


def expected_qualified(policy: LevelPolicy, trades: int, cents: int) -> int:
    """The rule read off the policy, comparing amounts as Decimal rather than cents."""
    amount = Decimal(cents) / 100
    met = [0]
    for n, lv in enumerate(policy.ladder, start=1):
        if not lv.enabled:
            continue
        if policy.preset == "marketplace":
            assert lv.threshold is not None
            ok = (trades if policy.basis == "count" else amount) >= lv.threshold
        else:
            ok = ((lv.min_amount is None or amount >= lv.min_amount)
                  and (lv.min_trades is None or trades >= lv.min_trades))
        if ok:
            met.append(n)
    return max(met)


@FAST
@given(policies, member_facts)
def test_level_is_the_higher_of_current_and_highest_enabled_level_met(
        policy: LevelPolicy, member: LevelFacts) -> None:
    qualified = expected_qualified(policy, member.completed_trades, member.qualifying_cents)
    assert qualified_level(policy, member) == qualified
    expected = member.level if member.blacklisted else max(member.level, qualified)
    assert upgraded_level(policy, member) == expected
    assert upgraded_level(policy, member) >= member.level


@FAST
@given(policies, member_facts)
def test_no_automatic_change_without_policy_with_auto_off_or_when_blacklisted(
        policy: LevelPolicy, member: LevelFacts) -> None:
    off = policy.model_copy(update={"auto_upgrade": False})
    assert upgraded_level(off, member) == member.level
    assert upgraded_level(None, member) == member.level
    assert upgraded_level(policy, replace(member, blacklisted=True)) == member.level


@FAST
@given(policies, member_facts, st.integers(0, 20), st.integers(0, 300_000))
def test_more_trades_or_more_spend_never_gives_a_lower_level(
        policy: LevelPolicy, member: LevelFacts, more_trades: int, more_cents: int) -> None:
    richer = replace(member, completed_trades=member.completed_trades + more_trades,
                     qualifying_cents=member.qualifying_cents + more_cents)
    assert upgraded_level(policy, richer) >= upgraded_level(policy, member)
    assert qualified_level(policy, richer) >= qualified_level(policy, member)


@FAST
@given(policies, member_facts)
def test_upgrading_twice_is_the_same_as_once(policy: LevelPolicy, member: LevelFacts) -> None:
    once = upgraded_level(policy, member)
    assert upgraded_level(policy, replace(member, level=once)) == once


@FAST
@given(policies, st.integers(0, 3), st.lists(st.integers(1, 200_000), min_size=1, max_size=8),
       st.data())
def test_completions_in_any_order_end_at_the_same_level(
        policy: LevelPolicy, start: int, amounts: list[int], data: st.DataObject) -> None:
    def one_by_one(order: list[int]) -> int:
        level, trades, cents = start, 0, 0
        for amount in order:
            trades, cents = trades + 1, cents + amount
            level = upgraded_level(policy, facts(level, trades, cents))
        return level

    shuffled = data.draw(st.permutations(amounts))
    all_at_once = upgraded_level(policy, facts(start, len(amounts), sum(amounts)))
    assert one_by_one(amounts) == one_by_one(shuffled) == all_at_once


# --- discount ----------------------------------------------------------------------------------


def test_level_zero_gets_no_discount() -> None:
    assert discount(BY_AMOUNT, 0, blacklisted=False) == Decimal("1.00")


def test_each_level_gets_its_own_discount() -> None:
    assert [discount(BY_AMOUNT, n, blacklisted=False) for n in (1, 2, 3, 4)] == [
        Decimal("0.98"), Decimal("0.95"), Decimal("0.90"), Decimal("0.85")]


def test_blacklisted_member_gets_no_member_discount() -> None:
    assert discount(BY_AMOUNT, 4, blacklisted=True) == Decimal("1.00")


def test_without_a_policy_there_is_no_discount() -> None:
    assert discount(None, 3, blacklisted=False) == NO_DISCOUNT == Decimal("1.00")


def test_disabled_level_grants_the_discount_of_the_highest_enabled_level_below() -> None:
    policy = marketplace("amount", ["100.00", "500.00", "2000.00", "5000.00"],
                         enabled=[True, False, False, True])
    assert discount(policy, 2, blacklisted=False) == Decimal("0.98")
    assert discount(policy, 3, blacklisted=False) == Decimal("0.98")
    assert discount(policy, 4, blacklisted=False) == Decimal("0.85")


def test_disabled_level_with_no_enabled_level_below_gets_no_discount() -> None:
    policy = marketplace("amount", ["100.00", "500.00"], enabled=[False, True])
    assert discount(policy, 1, blacklisted=False) == Decimal("1.00")
    assert discount(policy, 2, blacklisted=False) == Decimal("0.95")


def test_everyone_gets_the_same_discount_with_equal_discounts() -> None:
    policy = marketplace("count", ["1", "2", "3"], discounts=["0.90", "0.90", "0.90"],
                         auto_upgrade=False)
    assert {discount(policy, n, blacklisted=False) for n in (1, 2, 3)} == {Decimal("0.90")}


@FAST
@given(policies, st.integers(-1, 8), st.booleans())
def test_discount_is_that_of_the_highest_enabled_level_at_or_below(
        policy: LevelPolicy, level: int, blacklisted: bool) -> None:
    got = discount(policy, level, blacklisted)
    assert isinstance(got, Decimal)
    granting = [lv.discount for n, lv in enumerate(policy.ladder, start=1)
                if lv.enabled and n <= level]
    expected = Decimal("1.00") if blacklisted or level <= 0 or not granting else granting[-1]
    assert got == expected
    # Deeper levels never pay more.
    assert discount(policy, level + 1, blacklisted) <= got


# --- trigger -----------------------------------------------------------------------------------


def completion(event_id: str, hours: int, cents: int) -> Completion:
    return Completion(event_id=event_id, occurred_at=T0 + timedelta(hours=hours),
                      amount_cents=cents)


def test_trigger_is_the_completion_that_first_met_the_level_in_event_time() -> None:
    trades = [completion("e3", 3, 300_00), completion("e1", 1, 150_00),
              completion("e2", 2, 100_00)]
    # 150.00 at hour 1, 250.00 at hour 2, 550.00 at hour 3: level 2 from e3, level 1 from e1.
    assert trigger(BY_AMOUNT, 2, facts(), trades) == trades[0]
    assert trigger(BY_AMOUNT, 1, facts(), trades) == trades[1]


def test_trigger_counts_the_figures_from_before_the_batch() -> None:
    trades = [completion("e1", 1, 50_00), completion("e2", 2, 50_00)]
    assert trigger(BY_AMOUNT, 2, facts(level=1, trades=3, cents=450_00), trades) == trades[0]
    assert trigger(BY_COUNT, 2, facts(level=1, trades=1, cents=1), trades) == trades[1]


def test_trigger_breaks_a_tie_in_time_by_event_id() -> None:
    trades = [completion("evt-b", 5, 600_00), completion("evt-a", 5, 600_00)]
    assert trigger(BY_AMOUNT, 2, facts(), trades).event_id == "evt-a"  # type: ignore[union-attr]


def test_trigger_of_a_jump_over_several_levels_is_the_trade_reaching_the_top_one() -> None:
    trades = [completion("e1", 1, 120_00), completion("e2", 2, 6000_00)]
    assert trigger(BY_AMOUNT, 4, facts(), trades) == trades[1]
    assert trigger(BY_AMOUNT, 1, facts(), trades) == trades[0]


def test_trigger_of_a_windowed_level_is_the_latest_completion() -> None:
    policy = custom({"min_amount": Decimal("100.00")},
                    {"min_amount": Decimal("100.00"), "within_days": 30})
    trades = [completion("e2", 48, 10_00), completion("e9", 1, 500_00),
              completion("e1", 24, 10_00)]
    assert trigger(policy, 2, facts(), trades) == trades[0]
    assert trigger(policy, 1, facts(), trades) == trades[1]


def test_trigger_without_completions_is_none() -> None:
    assert trigger(BY_AMOUNT, 1, facts(), []) is None


completions = st.lists(
    st.builds(lambda i, h, c: completion(f"evt-{i:03d}", h, c), st.integers(0, 999),
              st.integers(0, 5), st.integers(1, 300_000)),
    min_size=1, max_size=8, unique_by=lambda c: c.event_id)


@FAST
@given(policies, completions, st.data())
def test_trigger_is_the_first_completion_meeting_the_new_level_whatever_the_arrival(
        policy: LevelPolicy, batch: list[Completion], data: st.DataObject) -> None:
    total = facts(0, len(batch), sum(c.amount_cents for c in batch))
    new_level = upgraded_level(policy, total)
    if new_level == 0:
        return
    found = trigger(policy, new_level, facts(), batch)
    assert found is not None
    assert trigger(policy, new_level, facts(), data.draw(st.permutations(batch))) == found
    ordered = sorted(batch, key=lambda c: (c.occurred_at, c.event_id))
    upto = ordered.index(found) + 1
    through = facts(0, upto, sum(c.amount_cents for c in ordered[:upto]))
    before = facts(0, upto - 1, sum(c.amount_cents for c in ordered[:upto - 1]))
    assert qualified_level(policy, through) == new_level
    if qualified_level(policy, facts()) >= new_level:
        assert found == ordered[0]  # a zero bar is met before any trade: the first one is named
    else:
        assert qualified_level(policy, before) < new_level


def test_taobao_ladder_names_are_kept() -> None:
    assert [BY_AMOUNT.name_of(n) for n in (1, 2, 3, 4)] == TAOBAO_NAMES
    assert BY_AMOUNT.name_of(5) == "level 5"
