"""SQL for tagging: the worker's view of members, shop clocks, tag holdings and their history."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection

from services.tagging.domain import Holding, MemberKey, MemberView, TagChange
from services.tagging.rules import MemberFacts
from shared.consumer import Output
from shared.outbound import TagEntry, TagsChanged, TagsPayload, iso, output

_FACTS = ("completed_trades, spend_cents, gross_cents, refunded_cents, first_purchase_at, "
          "last_purchase_at, region, level, abc_class, rfm_segment")


def _keys(keys: Iterable[MemberKey]) -> tuple[list[str], list[str]]:
    ordered = sorted(set(keys))
    return [k[0] for k in ordered], [k[1] for k in ordered]


def lock_views(conn: Connection, keys: Iterable[MemberKey]
               ) -> dict[MemberKey, tuple[int, MemberFacts, datetime | None]]:
    """The known facts, member-events partition and judged-up-to time of these members, locked
    for the batch."""
    shops, members = _keys(keys)
    if not shops:
        return {}
    rows = conn.exec_driver_sql(
        f"SELECT shop_id, member_id, partition, evaluated_at, {_FACTS} FROM tag_members "
        "WHERE (shop_id, member_id) IN (SELECT * FROM unnest(%b::text[], %b::text[])) "
        "ORDER BY shop_id, member_id FOR UPDATE",
        (shops, members)).all()
    return {(r[0], r[1]): (int(r[2]), MemberFacts(*r[4:]), r[3]) for r in rows}


def save_views(conn: Connection, views: Mapping[MemberKey, MemberView]) -> None:
    if not views:
        return
    keys = sorted(views)  # a fixed order keeps concurrent batches from deadlocking
    v = [views[k] for k in keys]
    f = [x.facts for x in v]
    conn.exec_driver_sql(
        f"INSERT INTO tag_members AS t (shop_id, member_id, partition, evaluated_at, {_FACTS}) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::timestamptz[], %b::int[], "
        "  %b::bigint[], %b::bigint[], %b::bigint[], %b::timestamptz[], %b::timestamptz[], "
        "  %b::text[], %b::smallint[], %b::text[], %b::text[]) "
        "ON CONFLICT (shop_id, member_id) DO UPDATE SET partition = excluded.partition, "
        "  evaluated_at = excluded.evaluated_at, "
        "  completed_trades = excluded.completed_trades, spend_cents = excluded.spend_cents, "
        "  gross_cents = excluded.gross_cents, refunded_cents = excluded.refunded_cents, "
        "  first_purchase_at = excluded.first_purchase_at, "
        "  last_purchase_at = excluded.last_purchase_at, region = excluded.region, "
        "  level = excluded.level, abc_class = excluded.abc_class, "
        "  rfm_segment = excluded.rfm_segment, updated_at = now()",
        ([k[0] for k in keys], [k[1] for k in keys], [x.partition for x in v],
         [x.evaluated_at for x in v],
         [x.completed_trades for x in f], [x.spend_cents for x in f],
         [x.gross_cents for x in f], [x.refunded_cents for x in f],
         [x.first_purchase_at for x in f], [x.last_purchase_at for x in f],
         [x.region for x in f], [x.level for x in f], [x.abc_class for x in f],
         [x.rfm_segment for x in f]))


def lock_clocks(conn: Connection, partitions: Collection[int]) -> dict[int, datetime]:
    """The clock tagging has judged time-based rules up to, per member-events partition."""
    if not partitions:
        return {}
    return {int(r[0]): r[1] for r in conn.exec_driver_sql(
        "SELECT partition, watermark FROM tag_clocks WHERE partition = ANY(%b) "
        "ORDER BY partition FOR UPDATE", (sorted(partitions),))}


def save_clocks(conn: Connection, clocks: Mapping[int, datetime]) -> None:
    keys = sorted(clocks)
    if keys:
        conn.exec_driver_sql(
            "INSERT INTO tag_clocks AS c (partition, watermark) "
            "SELECT * FROM unnest(%b::int[], %b::timestamptz[]) ON CONFLICT (partition) "
            "DO UPDATE SET watermark = GREATEST(c.watermark, excluded.watermark)",
            (keys, [clocks[k] for k in keys]))


def shops_on(conn: Connection, partition: int) -> list[str]:
    """Shops with members on a partition."""
    return [r[0] for r in conn.exec_driver_sql(
        "SELECT DISTINCT shop_id FROM tag_members WHERE partition = %s", (partition,))]


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
        # A tag may be added and removed again within one batch: the holding is what the last
        # change of each member and tag says, written after clearing what was there.
        cur.execute("DELETE FROM member_tags t USING (SELECT DISTINCT shop_id, member_id, "
                    "tag_id FROM tag_changes_in) u WHERE t.shop_id = u.shop_id "
                    "AND t.tag_id = u.tag_id AND t.member_id = u.member_id")
        cur.execute("INSERT INTO member_tags (shop_id, tag_id, member_id, cause, rule_id, "
                    "operator, event_id, since) SELECT shop_id, tag_id, member_id, cause, "
                    "rule_id, operator, event_id, effective_at FROM (SELECT DISTINCT ON "
                    "(shop_id, member_id, tag_id) * FROM tag_changes_in "
                    "ORDER BY shop_id, member_id, tag_id, seq DESC) last "
                    "WHERE action = 'added' ORDER BY shop_id, tag_id, member_id")
        cur.execute(f"INSERT INTO tag_changes ({columns}) SELECT {columns} FROM tag_changes_in "
                    "ORDER BY seq")
        cur.execute("DELETE FROM tag_changes_in")  # cheaper than TRUNCATE; emptied at COMMIT too


def events_for(topic: str, changes: Sequence[TagChange],
               before: Mapping[MemberKey, Mapping[str, Holding]], stamp: str | None = None
               ) -> list[Output]:
    """`member.tags_changed` messages for changes given in the order they happened.

    One message per member and cause: the triggering event, or for changes no event triggered,
    the instant a time rule turned (or `stamp`, an operator action). Its id is made from that
    cause, so a retry publishes the same id with the same content.
    """
    tags: dict[MemberKey, set[str]] = {}
    groups: list[tuple[MemberKey, str, list[TagChange]]] = []
    index: dict[tuple[MemberKey, str], list[TagChange]] = {}
    for c in changes:
        key = (c.shop_id, c.member_id)
        cause = c.event_id or stamp or f"at:{iso(c.effective_at)}"
        if (key, cause) not in index:
            index[(key, cause)] = []
            groups.append((key, cause, index[(key, cause)]))
        index[(key, cause)].append(c)
    outputs = []
    for key, cause, mine in groups:
        held = tags.setdefault(key, set(before.get(key, {})))
        for c in mine:
            (held.add if c.action == "added" else held.discard)(c.tag_id)

        def entry(c: TagChange) -> TagEntry:
            return TagEntry(tag_id=c.tag_id, cause=c.cause,
                            rule_id=c.rule_id, operator=c.operator, reason=c.reason,
                            effective_at=c.effective_at)

        outputs.append(output(topic, TagsChanged(
            event_id=f"tags:{key[0]}:{key[1]}:{cause}", shop_id=key[0], member_id=key[1],
            occurred_at=max(c.effective_at for c in mine), payload=TagsPayload(
                added=[entry(c) for c in mine if c.action == "added"],
                removed=[entry(c) for c in mine if c.action == "removed"],
                tags=sorted(held), triggering_event_id=mine[-1].event_id))))
    return outputs
