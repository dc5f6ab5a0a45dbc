"""Pure level rules: a member's standing + the shop's policy -> the level they hold. No I/O.

What counts toward a level is the member's **qualifying amount** (every completed trade's amount,
counted once when it completes) and **completed-trade count**. A refund lowers the member's
spend, never these: "refunds lower the spend but not the level". Both only grow as events arrive,
so the level a member reaches does not depend on the order, the batching or the duplication of
the events that carry them — a replay ends where live processing did.

Custom ladders may ask for an amount or trade count within a span of days (recency). Whether a
member ever met such a level is decided over all their trades in event time by the store
(`LevelFacts.windowed`), which is equally independent of arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.tiering.policy import Level, LevelPolicy
from shared.money import to_cents

NO_DISCOUNT = Decimal("1.00")


@dataclass(frozen=True, slots=True)
class LevelFacts:
    """What the rules need to know about one member."""

    level: int
    blacklisted: bool
    completed_trades: int
    qualifying_cents: int
    windowed: frozenset[int] = frozenset()  # custom levels met within their own span of days


def meets(policy: LevelPolicy, number: int, level: Level, facts: LevelFacts) -> bool:
    """Does the member meet this level's bar (ignoring whether it is enabled)?"""
    if policy.preset == "marketplace":
        assert level.threshold is not None
        if policy.basis == "count":
            return facts.completed_trades >= level.threshold
        return facts.qualifying_cents >= to_cents(level.threshold)
    if level.within_days is not None:
        return number in facts.windowed
    return ((level.min_amount is None or facts.qualifying_cents >= to_cents(level.min_amount))
            and (level.min_trades is None or facts.completed_trades >= level.min_trades))


def qualified_level(policy: LevelPolicy, facts: LevelFacts) -> int:
    """The highest enabled level whose bar the member meets (0 if none)."""
    best = 0
    for number, level in policy.enabled_levels():
        if meets(policy, number, level, facts):
            best = number
    return best


def upgraded_level(policy: LevelPolicy | None, facts: LevelFacts) -> int:
    """The level after automatic evaluation: upgrade only, never down, never when blacklisted."""
    if policy is None or not policy.auto_upgrade or facts.blacklisted:
        return facts.level
    return max(facts.level, qualified_level(policy, facts))


def discount(policy: LevelPolicy | None, level: int, blacklisted: bool) -> Decimal:
    """The price factor the member's next order gets.

    Blacklisted members get none. A disabled level grants no discount of its own: the member
    gets that of the highest enabled level at or below theirs.
    """
    if policy is None or blacklisted or level <= 0:
        return NO_DISCOUNT
    best = NO_DISCOUNT
    for number, rung in policy.enabled_levels():
        if number <= level:
            best = rung.discount
    return best


@dataclass(frozen=True, slots=True)
class Completion:
    """One newly completed trade of a member, for naming what triggered an upgrade."""

    event_id: str
    occurred_at: datetime
    amount_cents: int


def climb(policy: LevelPolicy, before: LevelFacts, completions: list[Completion],
          final: LevelFacts) -> list[tuple[Completion, int]]:
    """The upgrades a member's new completed trades bring, one per trade that lifted them.

    Trades are taken in event-time order from the figures `before` them; each trade that lifts
    the member yields (trade, new level), so a member who reached level 1 in March and level 2 in
    May has two changes even when both trades arrive in one batch. `final` holds the figures
    with every trade (and, for windowed levels, what the whole history met); the last change
    ends at the level those give.
    """
    ordered = sorted(completions, key=lambda c: (c.occurred_at, c.event_id))
    target = upgraded_level(policy, final)
    steps: list[tuple[Completion, int]] = []
    level, trades, cents = before.level, before.completed_trades, before.qualifying_cents
    for completion in ordered:
        trades += 1
        cents += completion.amount_cents
        now = upgraded_level(policy, LevelFacts(level, before.blacklisted, trades, cents))
        if now > level:
            steps.append((completion, min(now, target)))
            level = now
    if target > level and ordered:
        steps.append((ordered[-1], target))  # met only through a windowed level
    return [(c, n) for c, n in steps if n > before.level]


def trigger(policy: LevelPolicy, new_level: int, before: LevelFacts,
            completions: list[Completion]) -> Completion | None:
    """The trade (in event-time order) from which the member met `new_level`.

    `before` holds the figures without `completions`. When no single prefix is decisive (a
    windowed level), the latest completion is named.
    """
    ordered = sorted(completions, key=lambda c: (c.occurred_at, c.event_id))
    if not ordered:
        return None
    level = policy.ladder[new_level - 1]
    if level.within_days is None:
        trades, cents = before.completed_trades, before.qualifying_cents
        for completion in ordered:
            trades += 1
            cents += completion.amount_cents
            facts = LevelFacts(before.level, before.blacklisted, trades, cents)
            if meets(policy, new_level, level, facts):
                return completion
    return ordered[-1]
