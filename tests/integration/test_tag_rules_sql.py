"""Tag rules evaluated in PostgreSQL (Rule.sql) give exactly the answers of Python (Rule.truth).

A few hundred seeded random members, crowded at the edges (exactly N days, N days ± 1 µs, aov
ties, NULLs), meet a few hundred seeded random rules at several clocks, including no clock and
a clock just after a daylight-saving change with the session in that time zone.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection

from services.tagging.rules import FIELDS, MemberFacts, Rule, compile_rule
from shared.db import make_engine

SHANGHAI = ZoneInfo("Asia/Shanghai")
CLOCK = datetime(2026, 6, 15, 12, 34, 56, 789012, tzinfo=UTC)
DST_CLOCK = datetime(2026, 3, 9, 15, 0, tzinfo=UTC)  # a day after New York's clocks sprang forward
US, DAY = timedelta(microseconds=1), timedelta(days=1)
DAYS = (0, 1, 2, 30, 180, 181, 365)
MONEY_CENTS = (0, 1, 50, 3333, 5050, 10_000, 50_000)
REGIONS = ("Tibet", "Shanghai", "北京", 'O"Brien', "it's", "back\\slash", "")
TIME_POOL = [base - d * DAY for base in (CLOCK, DST_CLOCK) for d in DAYS] + [
    datetime.combine(date(2026, 1, 1), time(), SHANGHAI).astimezone(UTC)]
COLUMNS = ("completed_trades", "spend_cents", "gross_cents", "refunded_cents",
           "first_purchase_at", "last_purchase_at", "region", "level", "abc_class",
           "rfm_segment")
NULLABLE = {"aov", "days_since_first_purchase", "days_since_last_purchase", "first_purchase",
            "last_purchase", "region", "abc", "rfm_segment"}
SEGMENTS = ("at-risk", "lost", "champions", "others")
ORDERING = [">=", "<=", ">", "<", "==", "!="]


def random_moment(rng: random.Random) -> datetime | None:
    roll = rng.random()
    if roll < 0.2:
        return None
    if roll < 0.4:
        return rng.choice(TIME_POOL) + rng.choice([-US, US])
    base = rng.choice([CLOCK, DST_CLOCK])
    return base - rng.choice((*DAYS, -1, -30)) * DAY + rng.choice(
        [timedelta(0), timedelta(0), US, -US, timedelta(hours=rng.randint(-30, 30))])


def random_member(rng: random.Random) -> MemberFacts:
    trades = rng.randint(0, 4)
    tie = rng.choice(MONEY_CENTS) * trades + rng.choice([-1, 0, 1])  # aov ties and near misses
    return MemberFacts(
        completed_trades=trades,
        spend_cents=max(0, tie if rng.random() < 0.6 else rng.randint(0, 10**12)),
        gross_cents=rng.choice(MONEY_CENTS), refunded_cents=rng.choice(MONEY_CENTS),
        first_purchase_at=random_moment(rng), last_purchase_at=random_moment(rng),
        region=rng.choice((None, None, *REGIONS)), level=rng.randint(0, 5),
        abc_class=rng.choice([None, "A", "B", "C"]),
        rfm_segment=rng.choice([None, *SEGMENTS]))


def literal(rng: random.Random, field: str) -> str:
    if field in ("spend", "gross", "refunded", "aov"):
        cents = rng.choice(MONEY_CENTS)
        return f"{cents // 100}.{cents % 100:02d}" if cents % 100 else str(cents // 100)
    if field in ("trades", "level"):
        return str(rng.randint(0, 5))
    if field.startswith("days_since_"):
        return str(rng.choice(DAYS))
    if field == "abc":
        return f'"{rng.choice("ABC")}"'
    if field == "rfm_segment":
        return f'"{rng.choice(SEGMENTS)}"'
    if field == "region":
        text = rng.choice(REGIONS)
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    moment = rng.choice(TIME_POOL) + rng.choice([timedelta(0), US, -US])
    style = rng.randrange(4)
    if style == 0:
        return moment.replace(tzinfo=None).isoformat() + "Z"
    if style == 1:
        return moment.astimezone(timezone(timedelta(hours=-5))).isoformat()
    if style == 2:  # a local time in the shop's zone (Shanghai has no daylight saving)
        return moment.astimezone(SHANGHAI).replace(tzinfo=None).isoformat()
    return moment.astimezone(SHANGHAI).date().isoformat()


def random_condition(rng: random.Random) -> str:
    field = rng.choice(sorted(FIELDS))
    if field in NULLABLE and rng.random() < 0.15:
        return f"{field} {rng.choice(['==', '!='])} none"
    ops = [*ORDERING, "in", "not in"]
    if field in ("region", "abc", "rfm_segment"):
        ops = ["==", "!=", "in", "not in"]
    elif field in ("first_purchase", "last_purchase"):
        ops = ORDERING
    op = rng.choice(ops)
    if op.endswith("in"):
        return f"{field} {op} [{', '.join(literal(rng, field) for _ in range(rng.randint(1, 3)))}]"
    return f"{field} {op} {literal(rng, field)}"


def random_rule(rng: random.Random, depth: int = 3) -> str:
    roll = rng.random()
    if depth == 0 or roll < 0.3:
        return random_condition(rng)
    if roll < 0.45:
        return f"not ({random_rule(rng, depth - 1)})"
    joiner = rng.choice([" and ", " or "])
    return joiner.join(f"({random_rule(rng, depth - 1)})" for _ in range(rng.randint(2, 3)))


@pytest.fixture
def conn(database_url: str) -> Iterator[Connection]:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        connection.exec_driver_sql(
            "CREATE TEMP TABLE tm (member_id text, completed_trades int, spend_cents bigint, "
            "gross_cents bigint, refunded_cents bigint, first_purchase_at timestamptz, "
            "last_purchase_at timestamptz, region text, level smallint, abc_class text, "
            "rfm_segment text)")
        connection.exec_driver_sql("CREATE TEMP TABLE clk (watermark timestamptz)")
        yield connection
    engine.dispose()


def load(conn: Connection, people: dict[str, MemberFacts], clock: datetime | None) -> None:
    conn.exec_driver_sql("TRUNCATE tm, clk")
    conn.exec_driver_sql(
        f"INSERT INTO tm VALUES (%(member_id)s, {', '.join(f'%({c})s' for c in COLUMNS)})",
        [{"member_id": m, **{c: getattr(f, c) for c in COLUMNS}} for m, f in people.items()])
    conn.exec_driver_sql("INSERT INTO clk VALUES (%s)", (clock,))


def sql_truths(conn: Connection, rules: list[Rule]) -> dict[str, tuple[bool | None, ...]]:
    """member -> each rule's three-valued SQL answer, many rules per statement."""
    columns, params = [], {}
    for i, rule in enumerate(rules):
        sql, bound = rule.sql(facts="tm", clock="c.watermark", prefix=f"r{i}")
        columns.append(f"({sql})")
        params.update(bound)
    result = conn.exec_driver_sql(
        f"SELECT tm.member_id, {', '.join(columns)} FROM tm CROSS JOIN clk c", params)
    return {row[0]: tuple(row[1:]) for row in result}


EXAMPLES = ["spend >= 500 and trades >= 3", "days_since_last_purchase >= 180",
            '(level >= 2 or abc in ["A", "B"]) and region != "Tibet"',
            "first_purchase >= 2026-01-01 and not (aov < 50.5)", "region == none",
            "days_since_first_purchase == 180 or days_since_last_purchase != 1",
            "aov in [33.33, 50.5] or aov == none", "days_since_last_purchase in [0, 1, 365]"]


@pytest.mark.parametrize("session_zone", ["UTC", "America/New_York"])
def test_sql_and_python_agree_on_every_member_rule_and_clock(conn: Connection,
                                                              session_zone: str) -> None:
    rng = random.Random(20260615)
    people = {f"m{i:03d}": random_member(rng) for i in range(400)}
    rules = [compile_rule(text, SHANGHAI)
             for text in EXAMPLES + [random_rule(rng) for _ in range(250)]]
    # The session's zone must not matter: days are 24 hours even across daylight saving.
    conn.exec_driver_sql(f"SET TIME ZONE '{session_zone}'")
    for clock in (CLOCK, CLOCK + US, CLOCK - US, DST_CLOCK, None):
        load(conn, people, clock)
        for start in range(0, len(rules), 60):
            batch = rules[start:start + 60]
            answers = sql_truths(conn, batch)
            assert answers.keys() == people.keys()
            for j, rule in enumerate(batch):
                for member_id, member in people.items():
                    assert answers[member_id][j] is rule.truth(member, clock), (
                        rule.text, member, clock, rule.sql())


def test_the_documented_where_clause_selects_the_python_set(conn: Connection) -> None:
    rng = random.Random(7)
    people = {f"m{i:03d}": random_member(rng) for i in range(300)}
    load(conn, people, CLOCK)
    for text in EXAMPLES + [random_rule(rng) for _ in range(40)]:
        rule = compile_rule(text, SHANGHAI)
        sql, params = rule.sql()
        selected = {r[0] for r in conn.exec_driver_sql(
            f"SELECT tm.member_id FROM tm CROSS JOIN clk c WHERE ({sql}) IS TRUE", params)}
        assert selected == {m for m, f in people.items() if rule.holds(f, CLOCK)}, text
