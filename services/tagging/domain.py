"""Pure tagging rules: a member's facts + the shop's tag rules -> the tag changes due. No I/O.

A member's automatic tags are a function of what is known about them and of the shop's clock:

- a tag with a `when` rule is held exactly while the rule holds (added when it starts to hold,
  removed when it stops), so it depends only on the member's latest facts and the clock, never
  on how events were batched or repeated;
- goods rules add their tag when the member completes a trade with one of the rule's SKUs; the
  tag then stays until an operator removes it or the rule changes (buying is a fact that does
  not expire), so the order of purchases does not matter either.

The clock is event time (docs/time.md): the newest event time read on the member's stream,
pipeline ticks included. A time-based rule ("no purchase for 180 days") therefore turns true
when the stream's time passes day 180, whether or not the member (or their shop) sends anything,
and is dated at that instant, in a replay exactly as it was live. `advance` (time passes) and
`on_event` (the facts change) are the two ways a member's tags move.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

from services.tagging.rules import MemberFacts, Rule, compile_rule
from shared.outbound import TagCause
from shared.shopconfig import ShopConfig

MemberKey = tuple[str, str]        # (shop_id, member_id)
DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Holding:
    """Why a member holds a tag: `rule`, `goods` (with the rule's id) or `manual`."""

    cause: TagCause
    rule_id: str | None = None


@dataclass(frozen=True, slots=True)
class TagChange:
    """A tag added to or removed from a member, and what caused it."""

    shop_id: str
    member_id: str
    tag_id: str
    action: str                       # added | removed
    cause: TagCause                   # rule | goods | manual | config
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


@dataclass
class MemberView:
    """What tagging knows of one member: their facts, their tags, and how far in time their
    time-based rules have been judged (`evaluated_at`). Changed in place by `advance` and
    `on_event`."""

    shop_id: str
    member_id: str
    partition: int
    facts: MemberFacts
    holdings: dict[str, Holding]
    evaluated_at: datetime | None = None


def advance(rules: RuleSet, view: MemberView, until: datetime) -> list[TagChange]:
    """Time passes to `until` with the member's facts unchanged.

    Every bar a time-based rule can turn at in (evaluated_at, until] is visited in order and
    the timed rules judged there, so a rule that turns twice records both changes, each dated
    at its bar. The result depends only on the facts and the interval: judging up to a point
    and then on gives the same changes as judging at once.
    """
    start = view.evaluated_at
    if start is not None and until <= start:
        return []
    changes: list[TagChange] = []
    if rules.timed:
        for bar in bars(rules.thresholds, view.facts, start, until):
            changes += _judge(rules, view, rules.timed, bar, None, "rule")
    view.evaluated_at = until
    return changes


def on_event(rules: RuleSet, view: MemberView, facts: MemberFacts, at: datetime,
             skus: Iterable[str], event_id: str | None) -> list[TagChange]:
    """The member's facts became `facts` at `at` (never before what was judged already).

    Time first passes to `at` under the old facts, then every rule is judged under the new ones
    at `at`, and items bought add their goods tags.
    """
    at = max(at, view.evaluated_at) if view.evaluated_at is not None else at
    changes = advance(rules, view, at)
    view.facts = facts
    changes += _judge(rules, view, rules.when, at, event_id, "rule")
    for tag, rule_id in rules.goods_tags(skus).items():
        if tag not in view.holdings:
            change = TagChange(view.shop_id, view.member_id, tag, "added", "goods", at, rule_id,
                               event_id, config_version=rules.version)
            view.holdings[tag] = change.holding
            changes.append(change)
    view.evaluated_at = at
    return changes


def _judge(rules: RuleSet, view: MemberView, which: tuple[tuple[str, str, Rule], ...],
           at: datetime, event_id: str | None, cause: TagCause) -> list[TagChange]:
    changes = []
    for rule_id, tag, rule in which:
        # A tag with a `when` rule is held exactly while the rule holds (configuration keeps
        # other causes off such tags).
        holds = rule.holds(view.facts, at)
        if holds == (tag in view.holdings):
            continue
        change = TagChange(view.shop_id, view.member_id, tag, "added" if holds else "removed",
                           cause, at, rule_id, event_id, config_version=rules.version)
        if holds:
            view.holdings[tag] = change.holding
        else:
            view.holdings.pop(tag, None)
        changes.append(change)
    return changes
