"""Operator use cases for tags: manual tagging, the important mark, rule changes and previews.

Each runs in the caller's transaction. Every tag change is kept in `tag_changes` with its cause
and its `member.tags_changed` event goes to the outbox (relayed to Kafka by the tagging worker).

Manual operations act on tags without a `when` rule: a tag kept equal to a condition would be
put back (or taken away) by the worker at the member's next event, so changing it by hand is
refused; change the rule instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from services.tagging import store
from services.tagging.config import Tagging
from services.tagging.domain import Holding, TagChange
from services.tagging.rules import Rule, RuleError, compile_rule
from shared.audit import OperationRefused, audit, flag_members
from shared.filters import MemberFilter
from shared.outbox import enqueue
from shared.shopconfig import ShopConfig
from shared.shops import shop_configs

# --- manual tagging ----------------------------------------------------------------------------


@dataclass
class ManualResult:
    selected: int
    changed: int
    missing: list[str] = field(default_factory=list)


def _tagging(conn: Connection, shop_id: str) -> tuple[int, ShopConfig]:
    # A share lock: a configuration being applied meanwhile would change what the tags mean.
    entry = shop_configs(conn, [shop_id], share_lock=True).get(shop_id)
    if entry is None:
        raise OperationRefused(f"shop {shop_id!r} has no configuration; apply one first "
                               "(memberflow config apply SHOP.yaml)")
    return entry


def _manual_tag(config: ShopConfig, tag_id: str) -> None:
    tagging = config.tagging
    if tagging.tag(tag_id) is None:
        known = ", ".join(t.id for t in tagging.tags) or "none"
        raise OperationRefused(f"shop {config.shop_id!r} has no tag {tag_id!r} (tags: {known})")
    rule = tagging.rule_maintained().get(tag_id)
    if rule is not None:
        raise OperationRefused(f"tag {tag_id!r} follows rule {rule.id!r} ({rule.when}); it "
                               "cannot be added or removed by hand: change the rule instead")


def _selected(conn: Connection, shop_id: str, selection: MemberFilter
              ) -> tuple[list[str], list[str]]:
    """The selected members (sorted) and the named ids that are not members of the shop."""
    where, params = selection.where(shop_id)
    found = [r[0] for r in conn.exec_driver_sql(
        f"SELECT m.member_id FROM members m WHERE {where} ORDER BY m.member_id", params)]
    known = set(found)
    return found, [m for m in selection.member_ids if m not in known]


def _commit(conn: Connection, topic: str, shop_id: str, changes: list[TagChange],
            before: Mapping[tuple[str, str], Mapping[str, Holding]], now: datetime) -> None:
    store.record(conn, changes)
    enqueue(conn, "tagging", store.events_for(topic, changes, before, f"op:{now.isoformat()}"))


def add_to(conn: Connection, topic: str, shop_id: str, selection: MemberFilter, tag_id: str,
           operator: str, reason: str, now: datetime) -> ManualResult:
    """Add to (copy): every selected member gains the tag and keeps the tags they hold."""
    return move_to(conn, topic, shop_id, selection, None, tag_id, operator, reason, now)


def move_to(conn: Connection, topic: str, shop_id: str, selection: MemberFilter,
            source: str | None, target: str, operator: str, reason: str,
            now: datetime) -> ManualResult:
    """Move to (cut): selected members holding `source` lose it and gain `target`."""
    version, config = _tagging(conn, shop_id)
    _manual_tag(config, target)
    if source is not None:
        _manual_tag(config, source)
        if source == target:
            raise OperationRefused("moving members to the tag they hold changes nothing; "
                                   "name two different tags")
    members, missing = _selected(conn, shop_id, selection)
    held = store.holdings(conn, ((shop_id, m) for m in members))
    if source is not None:
        members = [m for m in members if source in held.get((shop_id, m), {})]
    changes: list[TagChange] = []
    for m in members:
        tags = held.get((shop_id, m), {})
        if source is not None:
            changes.append(TagChange(shop_id, m, source, "removed", "manual", now,
                                     operator=operator, reason=reason, config_version=version))
        if target not in tags:
            changes.append(TagChange(shop_id, m, target, "added", "manual", now,
                                     operator=operator, reason=reason, config_version=version))
    _commit(conn, topic, shop_id, changes, held, now)
    audit(conn, shop_id, None, "tags.move" if source else "tags.add", operator,
          {"source": source, "target": target, "reason": reason, "selected": len(members),
           "filter": repr(selection)})
    return ManualResult(len(members), len({c.member_id for c in changes}), missing)


def remove(conn: Connection, topic: str, shop_id: str, selection: MemberFilter, tag_id: str,
           operator: str, reason: str, now: datetime) -> ManualResult:
    """Take the tag from every selected member who holds it (bulk removal)."""
    version, config = _tagging(conn, shop_id)
    _manual_tag(config, tag_id)
    members, missing = _selected(conn, shop_id, selection)
    held = store.holdings(conn, ((shop_id, m) for m in members))
    changes = [TagChange(shop_id, m, tag_id, "removed", "manual", now, operator=operator,
                         reason=reason, config_version=version)
               for m in members if tag_id in held.get((shop_id, m), {})]
    _commit(conn, topic, shop_id, changes, held, now)
    audit(conn, shop_id, None, "tags.remove", operator,
          {"tag": tag_id, "reason": reason, "removed": len(changes), "filter": repr(selection)})
    return ManualResult(len(members), len(changes), missing)


def set_important(conn: Connection, shop_id: str, member_ids: list[str], important: bool,
                  operator: str, reason: str) -> int:
    """Mark members important (or take the mark off); returns how many changed."""
    return flag_members(conn, shop_id, member_ids, "important", important, operator, reason)


# --- rule changes and previews -----------------------------------------------------------------


@dataclass(frozen=True)
class TagOutcome:
    """What a configuration does to one tag's holders."""

    tag_id: str
    rules: tuple[str, ...]     # ids of the rules that apply the tag under the new configuration
    before: int
    after: int
    gained: int
    lost: int


def rule_members(conn: Connection, shop_id: str, rule: Rule) -> set[str]:
    """Members of the shop for whom the rule holds now (each at the time they were last judged:
    their stream's clock, or their own latest event when it came after)."""
    condition, params = rule.sql(facts="tm", clock="GREATEST(tm.evaluated_at, c.watermark)",
                                 prefix="r")
    return {r[0] for r in conn.exec_driver_sql(
        "SELECT tm.member_id FROM tag_members tm LEFT JOIN tag_clocks c "
        "ON c.partition = tm.partition "
        f"WHERE tm.shop_id = %(shop)s AND ({condition}) IS TRUE", {"shop": shop_id, **params})}


def goods_buyers(conn: Connection, shop_id: str, rules: list[tuple[str, list[str]]]
                 ) -> dict[str, str]:
    """Members who completed a trade with a SKU of these goods rules -> the first rule's id."""
    skus = sorted({sku for _, goods in rules for sku in goods})
    if not skus:
        return {}
    bought: dict[str, set[str]] = {}
    for member_id, sku in conn.exec_driver_sql(
            "SELECT DISTINCT o.member_id, i.sku FROM order_items i JOIN member_orders o "
            "ON o.shop_id = i.shop_id AND o.order_id = i.order_id "
            "WHERE i.shop_id = %s AND i.sku = ANY(%b) AND o.completed_at IS NOT NULL",
            (shop_id, skus)):
        bought.setdefault(member_id, set()).add(sku)
    return {m: next(rule_id for rule_id, goods in rules if set(goods) & have)
            for m, have in bought.items()}


def _holders(conn: Connection, shop_id: str, tag_id: str) -> dict[str, Holding]:
    return {r[0]: Holding(r[1], r[2]) for r in conn.exec_driver_sql(
        "SELECT member_id, cause, rule_id FROM member_tags WHERE shop_id = %s AND tag_id = %s",
        (shop_id, tag_id))}


def plan_tag(conn: Connection, shop_id: str, tag_id: str, config: ShopConfig | None
             ) -> tuple[dict[str, Holding], dict[str, Holding], int]:
    """Who would gain and who would lose the tag under `config` (None: the tag is deleted).

    Returns (gained, lost, holders now); a lost holding carries the cause to record for its
    removal. A tag with a `when` rule is held by exactly the members the rule holds for; goods
    rules give the tag to everyone whose completed trades include one of the SKUs; holdings an
    operator made stay, and those of rules that no longer apply go.
    """
    current = _holders(conn, shop_id, tag_id)
    tagging = config.tagging if config else Tagging()
    if tagging.tag(tag_id) is None:
        return {}, {m: Holding("config", h.rule_id) for m, h in current.items()}, len(current)
    assert config is not None
    rule = tagging.rule_maintained().get(tag_id)
    if rule is not None:
        assert rule.when is not None
        members = rule_members(conn, shop_id, compile_rule(rule.when, ZoneInfo(config.timezone)))
        gained = {m: Holding("rule", rule.id) for m in sorted(members - set(current))}
        lost = {m: Holding("rule", rule.id) for m in current if m not in members}
        return gained, lost, len(current)
    buyers = goods_buyers(conn, shop_id, [(r.id, list(r.goods or ()))
                                          for r in tagging.goods_rules() if r.tag == tag_id])
    lost = {m: Holding("config", h.rule_id) for m, h in current.items() if h.cause == "rule"}
    lost |= {m: Holding("goods", h.rule_id) for m, h in current.items()
             if h.cause == "goods" and m not in buyers}
    gained = {m: Holding("goods", r) for m, r in sorted(buyers.items())
              if m not in current or m in lost}
    return gained, lost, len(current)


def _signature(config: ShopConfig | None, tag_id: str) -> object:
    """What decides a tag's holders: changed signature, re-evaluated tag."""
    if config is None or config.tagging.tag(tag_id) is None:
        return None
    rules = tuple((r.id, r.when, tuple(r.goods or ()))
                  for r in config.tagging.rules if r.tag == tag_id)
    zone = config.timezone if any(r[1] for r in rules) else None  # dates in rules use it
    return rules, zone


def _removed_groups(old: Tagging, new: Tagging) -> list[str]:
    """A group may be deleted only when empty: no tags and no sub-groups in it."""
    problems = []
    groups = old.group_ids()
    for group in sorted(set(groups) - set(new.group_ids())):
        tags = [t.id for t in old.tags if t.group == group]
        subs = [g for g, parent in groups.items() if parent == group]
        if tags or subs:
            held = ", ".join([f"tag {t!r}" for t in tags] + [f"sub-group {g!r}" for g in subs])
            problems.append(f"tagging.groups: group {group!r} cannot be deleted while it holds "
                            f"{held}; move or delete those first, then delete the group")
    return problems


def changed_tags(old: ShopConfig | None, new: ShopConfig) -> list[str]:
    """Tags whose holders the new configuration may change (new, deleted or re-ruled)."""
    ids = {t.id for t in new.tagging.tags} | ({t.id for t in old.tagging.tags} if old else set())
    return sorted(t for t in ids if _signature(old, t) != _signature(new, t))


def config_changed(conn: Connection, topic: str, old: ShopConfig | None, new: ShopConfig,
                   version: int, operator: str, now: datetime) -> list[TagOutcome]:
    """Re-evaluate the tags a new configuration changes; refuse deleting a non-empty group."""
    problems = _removed_groups(old.tagging, new.tagging) if old else []
    if problems:
        raise OperationRefused("; ".join(problems))
    outcomes: list[TagOutcome] = []
    changes: list[TagChange] = []
    for tag_id in changed_tags(old, new):
        gained, lost, before = plan_tag(conn, new.shop_id, tag_id, new)
        for m, h in sorted(lost.items()):
            changes.append(TagChange(new.shop_id, m, tag_id, "removed", h.cause, now, h.rule_id,
                                     operator=operator, config_version=version))
        for m, h in sorted(gained.items()):
            changes.append(TagChange(new.shop_id, m, tag_id, "added", h.cause, now, h.rule_id,
                                     operator=operator, config_version=version))
        rules = tuple(r.id for r in new.tagging.rules if r.tag == tag_id)
        outcomes.append(TagOutcome(tag_id, rules, before, before + len(gained) - len(lost),
                                   len(gained), len(lost)))
    if changes:
        members = {(c.shop_id, c.member_id) for c in changes}
        before_changes = store.holdings(conn, members)
        _commit(conn, topic, new.shop_id, changes, before_changes, now)
    return outcomes


def preview(conn: Connection, new: ShopConfig) -> list[TagOutcome]:
    """What applying `new` would do to each tag it changes, from stored state; writes nothing."""
    old = shop_configs(conn, [new.shop_id]).get(new.shop_id)
    outcomes = []
    for tag_id in changed_tags(old[1] if old else None, new):
        gained, lost, before = plan_tag(conn, new.shop_id, tag_id, new)
        rules = tuple(r.id for r in new.tagging.rules if r.tag == tag_id)
        outcomes.append(TagOutcome(tag_id, rules, before, before + len(gained) - len(lost),
                                   len(gained), len(lost)))
    return outcomes


def preview_rule(conn: Connection, shop_id: str, when: str) -> int:
    """How many of the shop's members a condition holds for now (refused if it does not parse)."""
    entry = shop_configs(conn, [shop_id]).get(shop_id)
    zone = ZoneInfo(entry[1].timezone) if entry else ZoneInfo("UTC")
    try:
        rule = compile_rule(when, zone)
    except RuleError as exc:
        raise OperationRefused(f"rule: {exc}") from None
    return len(rule_members(conn, shop_id, rule))


def overview(conn: Connection, shop_id: str) -> list[dict[str, Any]] | None:
    """The shop's tags: group path, how each is applied, how many members hold it (None: the
    shop has no configuration)."""
    entry = shop_configs(conn, [shop_id]).get(shop_id)
    if entry is None:
        return None
    counts: dict[str, int] = dict(conn.exec_driver_sql(
        "SELECT tag_id, count(*) FROM member_tags WHERE shop_id = %s GROUP BY tag_id",
        (shop_id,)).tuples().all())
    tagging = entry[1].tagging
    parents = tagging.group_ids()
    rules: dict[str, list[str]] = {}
    for rule in tagging.rules:
        how = f"when {rule.when}" if rule.when else f"buys any of {', '.join(rule.goods or ())}"
        rules.setdefault(rule.tag, []).append(f"{rule.id}: {how}")
    rows: list[dict[str, Any]] = []
    for tag in tagging.tags:
        group = tag.group
        path = "/".join(p for p in (parents.get(group) if group else None, group) if p)
        rows.append({"tag_id": tag.id, "name": tag.name, "group": path or None,
                     "members": int(counts.get(tag.id, 0)), "rules": rules.get(tag.id, [])})
    return rows
