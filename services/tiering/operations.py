"""Operator use cases for levels: manual changes, blacklist, policy changes and what-if previews.

Each runs in the caller's transaction. Level changes are recorded in `level_changes` (who, when,
why) and their `member.level_changed` events go to the outbox, which the tiering worker relays.
`resync` re-publishes members' current state when a fresh embedded broker lost what tiering had
published before.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from services.tiering import level_store, scores_store
from services.tiering.level_store import LevelChange
from services.tiering.levels import qualified_level, upgraded_level
from services.tiering.policy import LevelPolicy
from shared.audit import OperationRefused, audit, flag_members
from shared.filters import MemberFilter
from shared.outbox import enqueue
from shared.shopconfig import ShopConfig
from shared.shops import shop_configs


def _policy(conn: Connection, shop_id: str) -> tuple[int, LevelPolicy | None]:
    entry = shop_configs(conn, [shop_id]).get(shop_id)
    if entry is None:
        raise OperationRefused(f"shop {shop_id!r} has no configuration; apply one first "
                               "(memberflow config apply SHOP.yaml)")
    return entry[0], entry[1].levels


def _select(conn: Connection, shop_id: str, selection: MemberFilter) -> list[tuple[Any, ...]]:
    where, params = selection.where(shop_id)
    return list(conn.exec_driver_sql(
        f"SELECT m.member_id, m.level, m.blacklisted FROM members m WHERE {where} "
        "ORDER BY m.member_id FOR UPDATE", params).all())


@dataclass
class ManualResult:
    selected: int
    changed: int
    skipped_blacklisted: int = 0
    missing: list[str] = field(default_factory=list)


def set_level(conn: Connection, topic: str, shop_id: str, selection: MemberFilter, level: int,
              operator: str, reason: str, now: datetime) -> ManualResult:
    """Set the level of every selected member by hand (up or down), recorded with who and why."""
    if not reason.strip():
        raise OperationRefused("a reason is required for a manual level change")
    version, policy = _policy(conn, shop_id)
    top = len(policy.ladder) if policy else 0
    if not 0 <= level <= top:
        raise OperationRefused(f"level {level} does not exist for shop {shop_id!r} "
                               f"(levels 0..{top})")
    rows = _select(conn, shop_id, selection)
    found = {r[0] for r in rows}
    result = ManualResult(len(rows), 0, missing=[m for m in selection.member_ids
                                                  if m not in found])
    changes: list[LevelChange] = []
    for member_id, old, blacklisted in rows:
        if old == level:
            continue
        if blacklisted and level > old:
            result.skipped_blacklisted += 1  # a blacklisted member never moves up
            continue
        changes.append(LevelChange(shop_id, member_id, int(old), level, "manual", now,
                                   policy_version=version, operator=operator, reason=reason))
    _record(conn, topic, changes, policy, now, "manual")
    audit(conn, shop_id, None, "levels.set", operator,
                      {"level": level, "reason": reason, "changed": len(changes),
                       "filter": repr(selection)})
    result.changed = len(changes)
    return result


def _record(conn: Connection, topic: str, changes: list[LevelChange],
            policy: LevelPolicy | None, now: datetime, kind: str) -> None:
    level_store.record_changes(conn, changes)
    stamp = now.isoformat()
    enqueue(conn, "tiering", [
        level_store.level_changed_event(
            topic, c, policy, False,
            f"level:{kind}:{c.shop_id}:{c.member_id}:{c.policy_version}:{stamp}")
        for c in changes
    ])


def set_blacklist(conn: Connection, shop_id: str, member_ids: list[str], blacklisted: bool,
                  operator: str, reason: str) -> int:
    """Put members on (or take them off) the blacklist; returns how many changed."""
    return flag_members(conn, shop_id, member_ids, "blacklisted", blacklisted, operator, reason)


def config_changed(conn: Connection, topic: str, old: ShopConfig | None, new: ShopConfig,
                   version: int, now: datetime) -> int:
    """A new configuration was applied: a new level policy re-evaluates every member (upgrades
    only; returns how many moved up), new ABC settings mark the classes stale, and a new RFM
    map, period or horizon (or time zone) the scores and predictions."""
    moved_up = 0
    if new.levels is not None and (old is None or old.levels != new.levels):
        moved_up = reevaluate(conn, topic, new.shop_id, version, new.levels, now)
    if old is None or old.abc != new.abc:
        conn.exec_driver_sql("UPDATE abc_shops SET dirty = true, computed_at = NULL "
                             "WHERE shop_id = %s", (new.shop_id,))
    if old is None or old.rfm != new.rfm or old.timezone != new.timezone:
        scores_store.mark_stale(conn, new.shop_id, predicted=old is None or (
            (old.rfm.period_days, old.rfm.horizon_days, old.timezone)
            != (new.rfm.period_days, new.rfm.horizon_days, new.timezone)))
    return moved_up


def reevaluate(conn: Connection, topic: str, shop_id: str, version: int, policy: LevelPolicy,
               now: datetime) -> int:
    """Upgrade the shop's members who meet a higher level under `policy`; never lowers."""
    facts = level_store.load_facts(conn, shop_id, policy)
    changes = [
        LevelChange(shop_id, m, f.level, new, "policy", now, policy_version=version)
        for m, f in sorted(facts.items())
        if (new := upgraded_level(policy, f)) != f.level
    ]
    _record(conn, topic, changes, policy, now, "policy")
    return len(changes)


@dataclass
class Preview:
    members: int
    holding: dict[int, int]      # level -> members holding it after applying the policy
    qualifying: dict[int, int]   # level -> members whose figures alone meet it (no history)
    moved_up: int


def preview(conn: Connection, shop_id: str, policy: LevelPolicy) -> Preview:
    """What `policy` would do to the shop's members, from stored history, changing nothing."""
    facts = level_store.load_facts(conn, shop_id, policy)
    holding: Counter[int] = Counter()
    qualifying: Counter[int] = Counter()
    moved = 0
    for f in facts.values():
        new = upgraded_level(policy, f)
        holding[new] += 1
        qualifying[qualified_level(policy, f)] += 1
        moved += new > f.level
    levels = range(0, max(len(policy.ladder), *holding, 0) + 1)
    return Preview(len(facts), {n: holding[n] for n in levels},
                   {n: qualifying[n] for n in levels}, moved)


def resync(conn: Connection, topic: str, since: datetime | None) -> int:
    """Publish (through the outbox) every member's current figures, level and class, and every
    stream clock, for members changed since `since` (all members when None).

    A fresh embedded broker starts empty: what tiering published to the old one and its readers
    had not read yet is gone. These snapshots carry the member's state as it is now; readers
    apply them like any other (a snapshot, not a delta), so nothing is counted twice."""
    from services.tiering.resync import snapshots

    outputs = snapshots(conn, topic, since)
    enqueue(conn, "tiering", outputs)
    return len(outputs)


def blacklisted(conn: Connection, shop_id: str) -> list[dict[str, Any]]:
    """The shop's blacklisted members, each with the latest audited reason for it."""
    rows = conn.exec_driver_sql(
        "SELECT m.member_id, a.operator, a.detail->>'reason' AS reason, a.at "
        "FROM members m LEFT JOIN LATERAL (SELECT operator, detail, at FROM audit_log "
        "  WHERE shop_id = m.shop_id AND member_id = m.member_id AND action = 'blacklist.add' "
        "  ORDER BY id DESC LIMIT 1) a ON true "
        "WHERE m.shop_id = %s AND m.blacklisted ORDER BY m.member_id", (shop_id,)).all()
    return [{"member_id": r.member_id, "operator": r.operator, "reason": r.reason,
             "since": r.at.isoformat() if r.at else None} for r in rows]


def level_overview(conn: Connection, shop_id: str) -> list[dict[str, Any]]:
    """The shop's ladder as it stands: each level's name, what earns it, its discount, and how
    many members hold it now (level 0 included)."""
    counts: dict[int, int] = dict(conn.exec_driver_sql(
        "SELECT level, count(*) FROM members WHERE shop_id = %s GROUP BY level",
        (shop_id,)).tuples().all())
    _, policy = _policy(conn, shop_id)
    rows: list[dict[str, Any]] = [{"level": 0, "name": "no level", "earned_by": None,
                                   "discount": "1.00", "enabled": True,
                                   "members": int(counts.get(0, 0))}]
    if policy is None:
        return rows
    for n, step in enumerate(policy.ladder, start=1):
        rows.append({"level": n, "name": step.name, "earned_by": _earned_by(policy, step),
                     "discount": str(step.discount), "enabled": step.enabled,
                     "members": int(counts.get(n, 0))})
    return rows


def _earned_by(policy: LevelPolicy, step: Any) -> str:
    """What earns a level, in an operator's words."""
    if step.threshold is not None:
        unit = "completed trades" if policy.basis == "count" else "net spend"
        return f"{unit} >= {step.threshold}"
    parts = []
    if step.min_trades is not None:
        parts.append(f"trades >= {step.min_trades}")
    if step.min_amount is not None:
        parts.append(f"spend >= {step.min_amount}")
    text = " and ".join(parts) or "by hand"
    return f"{text} within {step.within_days} days" if step.within_days else text
