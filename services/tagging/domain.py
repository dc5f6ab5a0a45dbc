"""Pure tagging rules: a member's facts + the shop's tag rules -> the tag changes due. No I/O.

A member's automatic tags are a function of what is known about them and of the shop's clock:

- a tag with a `when` rule is held exactly while the rule holds (added when it starts to hold,
  removed when it stops), so it depends only on the member's latest facts and the clock, never
  on how events were batched or repeated;
- goods rules add their tag when the member completes a trade with one of the rule's SKUs; the
  tag then stays until an operator removes it or the rule changes (buying is a fact that does
  not expire), so the order of purchases does not matter either.

The clock is event time: the newest order event of the shop (see `shared.member_events`). A
time-based rule ("no purchase for 180 days") therefore turns true when the shop's events pass
day 180, in a replay exactly as it did live, whether or not the member sends anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

from services.tagging.rules import MemberFacts, Rule, compile_rule
from shared.member_events import AbcChanged, FiguresChanged, LevelChanged, MemberEventIn
from shared.shopconfig import ShopConfig

MemberKey = tuple[str, str]        # (shop_id, member_id)
ClockKey = tuple[str, int]         # (shop_id, partition of the member-events topic)
DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Holding:
    """Why a member holds a tag: `rule`, `goods` (with the rule's id) or `manual`."""

    cause: str
    rule_id: str | None = None


@dataclass(frozen=True, slots=True)
class TagChange:
    """A tag added to or removed from a member, and what caused it."""

    shop_id: str
    member_id: str
    tag_id: str
    action: str                       # added | removed
    cause: str                        # rule | goods | manual | config
    effective_at: datetime
    rule_id: str | None = None
    event_id: str | None = None       # the member event that triggered it
    operator: str | None = None
    reason: str | None = None
    config_version: int | None = None

    @property
    def holding(self) -> Holding:
        return Holding(self.cause, self.rule_id)


@dataclass(frozen=True)
class RuleSet:
    """One shop's tag rules, compiled, at one configuration version."""

    shop_id: str
    version: int
    when: tuple[tuple[str, str, Rule], ...] = ()                    # (rule id, tag, rule)
    goods: Mapping[str, tuple[tuple[int, str, str], ...]] = field(default_factory=dict)
    # sku -> ((position in the configuration, rule id, tag), ...)

    @classmethod
    def from_config(cls, version: int, config: ShopConfig) -> RuleSet:
        zone = ZoneInfo(config.timezone)
        goods: dict[str, list[tuple[int, str, str]]] = {}
        for position, rule in enumerate(config.tagging.goods_rules()):
            for sku in rule.goods or ():
                goods.setdefault(sku, []).append((position, rule.id, rule.tag))
        return cls(
            config.shop_id, version,
            tuple((r.id, r.tag, compile_rule(r.when, zone))
                  for r in config.tagging.rules if r.when is not None),
            {sku: tuple(pairs) for sku, pairs in goods.items()})

    @cached_property
    def timed(self) -> tuple[tuple[str, str, Rule], ...]:
        """The `when` rules whose verdict can change as time passes."""
        return tuple(r for r in self.when if r[2].time_thresholds())

    @cached_property
    def maintained(self) -> dict[str, str]:
        """Tags kept equal to a condition, with the id of their rule."""
        return {tag: rule_id for rule_id, tag, _ in self.when}

    @cached_property
    def thresholds(self) -> frozenset[tuple[str, int]]:
        """(column, days) pairs at which some time-based rule may change its mind."""
        return frozenset(t for _, _, rule in self.when for t in rule.time_thresholds())

    def holding_rules(self, facts: MemberFacts, clock: datetime | None) -> dict[str, str]:
        """The condition-maintained tags the member should hold now: tag -> rule id."""
        return {tag: rule_id for rule_id, tag, rule in self.when if rule.holds(facts, clock)}

    def goods_tags(self, skus: Iterable[str]) -> dict[str, str]:
        """Tags earned by buying these SKUs: tag -> the first goods rule (in the configuration)
        that gives it."""
        earned = sorted({g for sku in skus for g in self.goods.get(sku, ())})
        out: dict[str, str] = {}
        for _, rule_id, tag in earned:
            out.setdefault(tag, rule_id)
        return out


def decide(rules: RuleSet, member_id: str, holdings: Mapping[str, Holding], facts: MemberFacts,
           clock: datetime | None, skus: Iterable[str], since: datetime | None,
           event_id: str | None, *, time_only: bool = False) -> list[TagChange]:
    """The tag changes due for one member, sorted by tag.

    `since` is when the facts became what they are (the triggering event's time), or for a
    member looked at only because the clock moved, the clock's previous reading. A change takes
    effect then, unless a time-based rule turned later, before `clock`: then at the bar where it
    last turned ("no purchase for 180 days" is true from day 180, whenever that was noticed).
    With `time_only` (the facts did not change, only the clock) other rules are not looked at.
    """
    changes: list[TagChange] = []
    shop = rules.shop_id
    for rule_id, tag, rule in rules.timed if time_only else rules.when:
        holds = rule.holds(facts, clock)
        if holds == (tag in holdings):
            continue
        at = turned(rule, facts, since, clock) or since or clock
        assert at is not None, "a rule changed its mind without an event or a clock"
        changes.append(TagChange(shop, member_id, tag, "added" if holds else "removed", "rule",
                                 at, rule_id, event_id, config_version=rules.version))
    bought_at = since or clock
    if bought_at is not None:
        for tag, rule_id in rules.goods_tags(skus).items():
            if tag not in holdings:
                changes.append(TagChange(shop, member_id, tag, "added", "goods", bought_at,
                                         rule_id, event_id, config_version=rules.version))
    return sorted(changes, key=lambda c: c.tag_id)


def bars(thresholds: Iterable[tuple[str, int]], facts: MemberFacts, after: datetime | None,
         until: datetime) -> list[datetime]:
    """The (column + days) instants in (after, until], in order: where a time-based rule may
    change its mind for these facts between two readings of the clock."""
    out = set()
    for column, days in thresholds:
        start = getattr(facts, column)
        if start is None:
            continue
        try:
            bar = start + timedelta(days=days)
        except OverflowError:
            continue  # beyond the last representable time: never crossed
        if (after is None or bar > after) and bar <= until:
            out.add(bar)
    return sorted(out)


def turned(rule: Rule, facts: MemberFacts, since: datetime | None,
           clock: datetime | None) -> datetime | None:
    """The last bar in (since, clock] at which the rule's verdict on these facts changed, or
    None if it holds at `clock` what it held at `since` (the change is the event's)."""
    if clock is None:
        return None
    crossed = bars(rule.time_thresholds(), facts, since, clock)
    if not crossed:
        return None
    before = since if since is not None else crossed[0] - timedelta(microseconds=1)
    verdict, last = rule.holds(facts, before), None
    for bar in crossed:
        now = rule.holds(facts, bar)
        if now != verdict:
            verdict, last = now, bar
    return last


@dataclass
class MemberUpdate:
    """What one batch of member events tells the tagging worker about one member."""

    partition: int
    facts: MemberFacts
    skus: set[str] = field(default_factory=set)
    event_id: str | None = None       # the last event applied: the trigger of any tag change
    at: datetime | None = None


def fold(known: Mapping[MemberKey, tuple[int, MemberFacts]],
         events: Iterable[tuple[int, MemberEventIn]]) -> dict[MemberKey, MemberUpdate]:
    """Apply member events, in topic order, to the facts known before; clocks are skipped.

    Figures are snapshots, levels and classes are set outright, items bought accumulate: the
    last word on each wins, so a repeated or re-published event changes nothing.
    """
    out: dict[MemberKey, MemberUpdate] = {}
    for partition, event in events:
        if not isinstance(event, FiguresChanged | LevelChanged | AbcChanged):
            continue
        key = (event.shop_id, event.member_id)
        update = out.get(key)
        if update is None:
            _, facts = known.get(key, (partition, MemberFacts()))
            update = out[key] = MemberUpdate(partition, facts)
        update.partition = partition
        if isinstance(event, FiguresChanged):
            f = event.figures
            update.facts = replace(
                update.facts, completed_trades=f.completed_trades, spend_cents=f.spend_cents,
                gross_cents=f.gross_cents, refunded_cents=f.refunded_cents,
                first_purchase_at=f.first_purchase_at, last_purchase_at=f.last_purchase_at,
                region=f.region)
            update.skus.update(event.skus_bought)
        elif isinstance(event, LevelChanged):
            update.facts = replace(update.facts, level=event.new_level)
        else:
            update.facts = replace(update.facts, abc_class=event.new_class)
        update.event_id, update.at = event.event_id, event.occurred_at
    return out
