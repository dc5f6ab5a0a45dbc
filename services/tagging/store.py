"""SQL for tagging: the worker's view of members, shop clocks, tag holdings and their history."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection

from services.tagging.domain import ClockKey, Holding, MemberKey, MemberUpdate, TagChange
from services.tagging.rules import MemberFacts
from shared.consumer import Output
from shared.member_events import member_event

_FACTS = ("completed_trades, spend_cents, gross_cents, refunded_cents, first_purchase_at, "
          "last_purchase_at, region, level, abc_class")


def _keys(keys: Iterable[MemberKey]) -> tuple[list[str], list[str]]:
    ordered = sorted(set(keys))
    return [k[0] for k in ordered], [k[1] for k in ordered]


def lock_facts(conn: Connection, keys: Iterable[MemberKey]
               ) -> dict[MemberKey, tuple[int, MemberFacts]]:
    """The known facts (and member-events partition) of these members, locked for the batch."""
    shops, members = _keys(keys)
    if not shops:
        return {}
    rows = conn.exec_driver_sql(
        f"SELECT shop_id, member_id, partition, {_FACTS} FROM tag_members "
        "WHERE (shop_id, member_id) IN (SELECT * FROM unnest(%b::text[], %b::text[])) "
        "ORDER BY shop_id, member_id FOR UPDATE",
        (shops, members)).all()
    return {(r[0], r[1]): (int(r[2]), MemberFacts(*r[3:])) for r in rows}


def save_facts(conn: Connection, updates: Mapping[MemberKey, MemberUpdate]) -> None:
    if not updates:
        return
    keys = sorted(updates)  # a fixed order keeps concurrent batches from deadlocking
    f = [updates[k].facts for k in keys]
    conn.exec_driver_sql(
        f"INSERT INTO tag_members AS t (shop_id, member_id, partition, {_FACTS}) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::int[], %b::bigint[], "
        "  %b::bigint[], %b::bigint[], %b::timestamptz[], %b::timestamptz[], %b::text[], "
        "  %b::smallint[], %b::text[]) "
        "ON CONFLICT (shop_id, member_id) DO UPDATE SET partition = excluded.partition, "
        "  completed_trades = excluded.completed_trades, spend_cents = excluded.spend_cents, "
        "  gross_cents = excluded.gross_cents, refunded_cents = excluded.refunded_cents, "
        "  first_purchase_at = excluded.first_purchase_at, "
        "  last_purchase_at = excluded.last_purchase_at, region = excluded.region, "
        "  level = excluded.level, abc_class = excluded.abc_class, updated_at = now()",
        ([k[0] for k in keys], [k[1] for k in keys], [updates[k].partition for k in keys],
         [x.completed_trades for x in f], [x.spend_cents for x in f],
         [x.gross_cents for x in f], [x.refunded_cents for x in f],
         [x.first_purchase_at for x in f], [x.last_purchase_at for x in f],
         [x.region for x in f], [x.level for x in f], [x.abc_class for x in f]))


def advance_clocks(conn: Connection, seen: Mapping[ClockKey, datetime]
                   ) -> dict[ClockKey, tuple[datetime | None, datetime]]:
    """Move clocks forward (never back); returns (before, after) of the clocks that moved."""
    if not seen:
        return {}
    keys = sorted(seen)
    shops, parts = [k[0] for k in keys], [k[1] for k in keys]
    before = {(r[0], r[1]): r[2] for r in conn.exec_driver_sql(
        "SELECT shop_id, partition, watermark FROM tag_clocks WHERE (shop_id, partition) IN "
        "(SELECT * FROM unnest(%b::text[], %b::int[])) ORDER BY shop_id, partition FOR UPDATE",
        (shops, parts))}
    moved = {k: (before.get(k), seen[k]) for k in keys
             if k not in before or seen[k] > before[k]}
    if moved:
        order = sorted(moved)
        conn.exec_driver_sql(
            "INSERT INTO tag_clocks AS c (shop_id, partition, watermark) "
            "SELECT * FROM unnest(%b::text[], %b::int[], %b::timestamptz[]) "
            "ON CONFLICT (shop_id, partition) DO UPDATE "
            "SET watermark = GREATEST(c.watermark, excluded.watermark)",
            ([k[0] for k in order], [k[1] for k in order], [moved[k][1] for k in order]))
    return moved


def clocks(conn: Connection, keys: Collection[ClockKey]) -> dict[ClockKey, datetime]:
    if not keys:
        return {}
    ordered = sorted(set(keys))
    return {(r[0], r[1]): r[2] for r in conn.exec_driver_sql(
        "SELECT shop_id, partition, watermark FROM tag_clocks WHERE (shop_id, partition) IN "
        "(SELECT * FROM unnest(%b::text[], %b::int[]))",
        ([k[0] for k in ordered], [k[1] for k in ordered]))}


def crossed(conn: Connection, shop_id: str, partition: int,
            thresholds: Collection[tuple[str, int]], after: datetime | None,
            until: datetime) -> list[str]:
    """Members of one shop and partition for whom some (column, days) bar falls in (after, until].

    `column + days` in (after, until] is `column` in (after - days, until - days], which the
    (shop, partition, column) indexes answer without looking at anyone else.
    """
    parts: list[str] = []
    params: list[object] = [shop_id, partition]
    for column, days in sorted(thresholds):
        assert column in ("first_purchase_at", "last_purchase_at"), column
        span = timedelta(days=days)
        if after is None:
            parts.append(f"{column} <= %s")
            params.append(until - span)
        else:
            parts.append(f"({column} > %s AND {column} <= %s)")
            params += [after - span, until - span]
    if not parts:
        return []
    return [r[0] for r in conn.exec_driver_sql(
        "SELECT member_id FROM tag_members WHERE shop_id = %s AND partition = %s AND ("
        + " OR ".join(parts) + ") ORDER BY member_id", tuple(params))]


def holdings(conn: Connection, keys: Iterable[MemberKey]
             ) -> dict[MemberKey, dict[str, Holding]]:
    """The tags these members hold, and why."""
    shops, members = _keys(keys)
    out: dict[MemberKey, dict[str, Holding]] = {}
    if not shops:
        return out
    # One row per member (arrays), not per tag: members of a busy shop hold dozens of tags.
    for shop_id, member_id, tags, causes, rules in conn.exec_driver_sql(
            "SELECT shop_id, member_id, array_agg(tag_id), array_agg(cause), array_agg(rule_id) "
            "FROM member_tags "
            "WHERE (shop_id, member_id) IN (SELECT * FROM unnest(%b::text[], %b::text[])) "
            "GROUP BY shop_id, member_id",
            (shops, members)):
        out[(shop_id, member_id)] = {t: Holding(c, r) for t, c, r in zip(tags, causes, rules,
                                                                         strict=True)}
    return out


_TYPED_COLUMNS = ("shop_id text, member_id text, tag_id text, action text, cause text, "
                  "rule_id text, operator text, reason text, event_id text, config_version int, "
                  "effective_at timestamptz")


def record(conn: Connection, changes: Sequence[TagChange]) -> None:
    """Apply tag changes to the holdings and keep each one, with its cause, in `tag_changes`."""
    if not changes:
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    columns = ("shop_id, member_id, tag_id, action, cause, rule_id, operator, reason, event_id, "
               "config_version, effective_at")
    with raw.cursor() as cur:
        # One COPY carries every change (a rule change can touch hundreds of thousands of
        # members); the holdings and the history are then written from it in SQL.
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS tag_changes_in (seq serial, "
                    f"{_TYPED_COLUMNS}) ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY tag_changes_in ({columns}) FROM STDIN") as copy:
            for c in changes:
                copy.write_row((c.shop_id, c.member_id, c.tag_id, c.action, c.cause, c.rule_id,
                                c.operator, c.reason, c.event_id, c.config_version,
                                c.effective_at))
        # Removals first: a holding whose cause changes is removed and added in one go.
        cur.execute("DELETE FROM member_tags t USING tag_changes_in u WHERE u.action = 'removed' "
                    "AND t.shop_id = u.shop_id AND t.tag_id = u.tag_id "
                    "AND t.member_id = u.member_id")
        cur.execute("INSERT INTO member_tags (shop_id, tag_id, member_id, cause, rule_id, "
                    "operator, event_id, since) SELECT shop_id, tag_id, member_id, cause, "
                    "rule_id, operator, event_id, effective_at FROM tag_changes_in "
                    "WHERE action = 'added' ORDER BY shop_id, tag_id, member_id "
                    "ON CONFLICT DO NOTHING")
        cur.execute(f"INSERT INTO tag_changes ({columns}) SELECT {columns} FROM tag_changes_in "
                    "ORDER BY seq")
        cur.execute("TRUNCATE tag_changes_in")


def tags_changed_event(topic: str, shop_id: str, member_id: str, changes: Sequence[TagChange],
                       tags_now: Iterable[str], event_id: str) -> Output:
    """`member.tags_changed`: what was added and removed, why, and the member's tags now."""
    def entry(c: TagChange) -> dict[str, object]:
        return {"tag_id": c.tag_id, "cause": c.cause, "rule_id": c.rule_id,
                "operator": c.operator, "reason": c.reason}

    at = max(c.effective_at for c in changes)
    return member_event(topic, "member.tags_changed", event_id, shop_id, member_id, at, {
        "added": [entry(c) for c in changes if c.action == "added"],
        "removed": [entry(c) for c in changes if c.action == "removed"],
        "tags": sorted(tags_now),
        "triggering_event_id": changes[-1].event_id,
    })


def events_for(topic: str, changes: Sequence[TagChange],
               before: Mapping[MemberKey, Mapping[str, Holding]], stamp: str) -> list[Output]:
    """One `member.tags_changed` per member.

    Its id is made from the triggering event, or from `stamp` (an operator action's time) for
    changes no event triggered, so a retry publishes the same id.
    """
    by_member: dict[MemberKey, list[TagChange]] = {}
    for c in changes:
        by_member.setdefault((c.shop_id, c.member_id), []).append(c)
    outputs = []
    for key in sorted(by_member):
        mine = by_member[key]
        tags = set(before.get(key, {}))
        for c in mine:
            (tags.add if c.action == "added" else tags.discard)(c.tag_id)
        cause = mine[-1].event_id or stamp
        outputs.append(tags_changed_event(topic, key[0], key[1], mine, tags,
                                          f"tags:{key[0]}:{key[1]}:{cause}"))
    return outputs
