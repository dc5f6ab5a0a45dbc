"""Member selections an operator acts on: by id, level, ABC class, spend, dormancy, blacklist,
tags, the important mark, RFM segment and predicted value.

One filter type serves listing, manual level changes and (later) tagging and campaign targets, so
"the members I listed" and "the members I changed" are the same set.

Dormancy has one definition, the tag rules' (services/tagging/rules.py): a day is 24 hours, not
a calendar day. "Dormant N days" means no completed trade in the N x 24 hours before the shop's
clock (a last trade exactly N x 24 hours before it counts as dormant), or never a completed
trade: the members for whom the rule `days_since_last_purchase >= N` holds, plus those who never
bought. The SQL is that rule's own, so the answer does not depend on the database session's time
zone or on daylight saving changes (PostgreSQL's `timestamptz - N days` would move by calendar
days in the session's zone: 23 or 25 hours across a change). The shop's clock is
`_shop_clock_sql()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.tagging.rules import RuleError, compile_rule
from shared.money import to_cents


def _shop_clock_sql() -> str:
    """The shop's clock in SQL: the one place the filters spell it. It is the pipeline clock
    (docs/time.md: the newest event time read, ticks included), or the database's now() for a
    state that has read nothing yet."""
    # A scalar subquery: evaluated once per statement (an InitPlan). Called bare, the function
    # (an aggregate over the partitions' clocks) ran once per member: 5 s over 1M members.
    return "(SELECT COALESCE(pipeline_clock(), now()))"


def _dormant_sql(days: int) -> tuple[str, dict[str, Any]]:
    """No completed trade in the `days` x 24 hours before the shop's clock, or never one."""
    try:
        rule = compile_rule(f"days_since_last_purchase >= {int(days)}")
    except RuleError as exc:
        why = str(exc).split(" at column")[0]
        raise ValueError(f"dormant_days={days}: not a day count the tag rules take ({why})"
                         ) from None
    sql, params = rule.sql(facts="m", clock=_shop_clock_sql(), prefix="f_dormant")
    return f"(m.last_purchase_at IS NULL OR {sql})", params


@dataclass(frozen=True)
class MemberFilter:
    """All given conditions must hold; an empty filter selects every member of the shop."""

    member_ids: tuple[str, ...] = ()
    levels: tuple[int, ...] = ()
    abc_classes: tuple[str, ...] = ()       # "A", "B", "C", or "none" for unclassified
    min_spend: Decimal | None = None
    max_spend: Decimal | None = None
    dormant_days: int | None = None          # no completed trade in this many 24-hour days
                                             # before the shop's clock (or never); see above
    blacklisted: bool | None = None
    tags: tuple[str, ...] = ()               # holding every one of these tags
    important: bool | None = None
    rfm_segments: tuple[str, ...] = ()       # segment ids, or "none": no purchase in the period
    max_p_alive: Decimal | None = None       # predicted probability of being active, at most
    min_expected_value: Decimal | None = None  # predicted value over the horizon, at least

    @property
    def empty(self) -> bool:
        return self == MemberFilter()

    def where(self, shop_id: str) -> tuple[str, dict[str, Any]]:
        """A WHERE clause over `members m` and its parameters (psycopg named style)."""
        parts = ["m.shop_id = %(f_shop)s"]
        params: dict[str, Any] = {"f_shop": shop_id}
        if self.member_ids:
            parts.append("m.member_id = ANY(%(f_ids)s)")
            params["f_ids"] = list(self.member_ids)
        if self.levels:
            parts.append("m.level = ANY(%(f_levels)s)")
            params["f_levels"] = list(self.levels)
        if self.abc_classes:
            named = [c for c in self.abc_classes if c != "none"]
            clause = "m.abc_class = ANY(%(f_abc)s)"
            if "none" in self.abc_classes:
                clause = f"({clause} OR m.abc_class IS NULL)"
            parts.append(clause)
            params["f_abc"] = named
        if self.min_spend is not None:
            parts.append("m.spend_cents >= %(f_min)s")
            params["f_min"] = to_cents(self.min_spend)
        if self.max_spend is not None:
            parts.append("m.spend_cents <= %(f_max)s")
            params["f_max"] = to_cents(self.max_spend)
        if self.dormant_days is not None:
            clause, dormant = _dormant_sql(self.dormant_days)
            parts.append(clause)
            params.update(dormant)
        if self.blacklisted is not None:
            parts.append("m.blacklisted = %(f_black)s")
            params["f_black"] = self.blacklisted
        for i, tag in enumerate(sorted(set(self.tags))):
            # A semi-join per tag: the planner knows how many hold each tag, and joins the
            # holders in one pass (a count per member took ~1 s over 100,000 members).
            parts.append(
                f"EXISTS (SELECT 1 FROM member_tags t{i} WHERE t{i}.shop_id = m.shop_id "
                f"AND t{i}.member_id = m.member_id AND t{i}.tag_id = %(f_tag{i})s)")
            params[f"f_tag{i}"] = tag
        if self.important is not None:
            parts.append("m.important = %(f_important)s")
            params["f_important"] = self.important
        if self.rfm_segments:
            named = [s for s in self.rfm_segments if s != "none"]
            clause = ("EXISTS (SELECT 1 FROM member_rfm r WHERE r.shop_id = m.shop_id "
                      "AND r.member_id = m.member_id AND r.segment = ANY(%(f_rfm)s))")
            if "none" in self.rfm_segments:
                clause = (f"({clause} OR NOT EXISTS (SELECT 1 FROM member_rfm r "
                          "WHERE r.shop_id = m.shop_id AND r.member_id = m.member_id))")
            parts.append(clause)
            params["f_rfm"] = named
        if self.max_p_alive is not None or self.min_expected_value is not None:
            # Members without a prediction (no purchase in the period, or a shop too small to
            # fit) are not selected: nothing is known of them.
            parts.append(
                "EXISTS (SELECT 1 FROM member_predictions p WHERE p.shop_id = m.shop_id "
                "AND p.member_id = m.member_id "
                "AND (%(f_alive)s::float8 IS NULL OR p.p_alive <= %(f_alive)s::float8) "
                "AND (%(f_value)s::bigint IS NULL OR p.expected_value_cents >= %(f_value)s))")
            params["f_alive"] = (float(self.max_p_alive) if self.max_p_alive is not None
                                 else None)
            params["f_value"] = (to_cents(self.min_expected_value)
                                 if self.min_expected_value is not None else None)
        return " AND ".join(parts), params
