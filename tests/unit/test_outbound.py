"""The outbound contract (shared/outbound.py): one typed model per published event, one codec,
ids that determine the content, and the JSON Schemas published in docs/ kept true."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events import json_schema as inbound_schema
from shared.outbound import (
    OUTBOUND_TYPES,
    AbcChanged,
    AbcPayload,
    ClockPayload,
    CreditBody,
    CreditPayload,
    Figures,
    FiguresChanged,
    FiguresPayload,
    LevelChanged,
    LevelPayload,
    MemberState,
    OrderCredited,
    OutboundModel,
    RfmChanged,
    RfmPayload,
    StatePayload,
    StreamClock,
    TagEntry,
    TagsChanged,
    TagsPayload,
    UnreadableOutbound,
    decode,
    encode,
    json_schema,
    output,
)

DOCS = Path(__file__).parents[2] / "docs"
T0 = datetime(2026, 5, 1, 8, tzinfo=UTC)
FAST = settings(max_examples=100, deadline=None, database=None)


def examples() -> list[OutboundModel]:
    base = {"shop_id": "s1", "member_id": "m1", "occurred_at": T0}
    figures = Figures.of(3, 12_345, 15_000, 2_655, T0 - timedelta(days=9), T0, "华东")
    return [
        FiguresChanged(event_id="figures:e1:m1", **base, payload=FiguresPayload(
            **figures.fields(), cause_event_id="e1", skus_bought=["A", "B"], clock=T0)),
        MemberState(event_id="state:s1:m1", **base, payload=StatePayload(
            **figures.fields(), level=2, abc_class="B", clock=None)),
        LevelChanged(event_id="level:s1:m1:e1:2", **base, payload=LevelPayload(
            old_level=1, new_level=2, old_level_name="普通会员", new_level_name="高级会员",
            cause="auto", triggering_event_id="e1", effective_from=T0, discount="0.95",
            policy_version=4, operator=None, reason=None)),
        AbcChanged(event_id="abc:s1:m1", **base, payload=AbcPayload(
            old_class=None, new_class="A", as_of=T0, period_days=365)),
        RfmChanged(event_id="rfm:s1:m1", **base, payload=RfmPayload(
            old_segment="loyal", new_segment="at-risk", r_score=2, f_score=3, m_score=4,
            as_of=T0, period_days=365)),
        TagsChanged(event_id="tags:s1:m1:e1", **base, payload=TagsPayload(
            added=[TagEntry(tag_id="vip", cause="rule", rule_id="r", effective_at=T0)],
            removed=[], tags=["vip"], triggering_event_id="e1")),
        OrderCredited(event_id="credit:s1:o1:none->click:c:m", **base, payload=CreditPayload(
            order_id="o1", credit=CreditBody(kind="click", campaign_id="c", message_id="m",
                                             credited_at=T0), previous=None)),
        StreamClock(event_id="clock:orders:0:2026-05-01T08:00:00Z",
                    payload=ClockPayload(partition=0, clock=T0)),
    ]


def test_every_type_has_an_example_and_each_round_trips_byte_for_byte() -> None:
    assert {e.type for e in examples()} == OUTBOUND_TYPES
    for event in examples():
        wire = encode(event)
        back = decode(wire)
        assert back == event and encode(back) == wire
        body = json.loads(wire)
        assert body["occurred_at" if "occurred_at" in body else "payload"]  # plain JSON
        assert "Z" in wire.decode()   # times in UTC with a Z


def test_money_is_two_decimal_text_and_readers_get_cents_back() -> None:
    figures = Figures.of(1, -50, 0, 50, None, None, None)
    assert (figures.spend, figures.refunded) == ("-0.50", "0.50")
    assert (figures.spend_cents, figures.refunded_cents) == (-50, 50)


def test_member_events_are_keyed_by_member_and_clocks_go_to_their_partition() -> None:
    [figures, *_, clock] = examples()
    assert output("t", figures).key == b"s1/m1"
    out = output("t", clock, partition=3)
    assert out.key is None and out.partition == 3 and out.type == "stream.clock"


@pytest.mark.parametrize("raw", [b"{}", b"not json", b'{"type": "member.figures_changed"}',
                                 b'{"type": "shop.clock", "event_id": "x"}'])
def test_a_message_memberflow_did_not_write_is_refused_naming_the_field(raw: bytes) -> None:
    with pytest.raises(UnreadableOutbound):
        decode(raw)


@FAST
@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**12),
       st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                    timezones=st.just(UTC)))
def test_any_figures_snapshot_survives_the_wire(trades: int, cents: int, at: datetime) -> None:
    event = FiguresChanged(event_id="f", shop_id="s", member_id="m", occurred_at=at,
                           payload=FiguresPayload(**Figures.of(
                               trades, cents, cents, 0, at, at, None).fields(),
                               cause_event_id="e", clock=at))
    assert decode(encode(event)) == event


def test_the_published_json_schemas_are_the_ones_the_code_uses() -> None:
    """docs/ holds what `memberflow schema` prints; regenerate with `make schema`."""
    assert json.loads((DOCS / "event.schema.json").read_text()) == inbound_schema()
    assert json.loads((DOCS / "member-event.schema.json").read_text()) == json_schema()


def test_only_the_archive_key_seals_a_record_and_only_its_very_bytes() -> None:
    from shared.archive import seal, sealed

    key, other = b"k" * 32, b"o" * 32
    value = b'{"event_id":"e1"}'
    assert sealed(key, value, seal(key, value))
    assert not sealed(key, value, seal(other, value))
    assert not sealed(key, value + b" ", seal(key, value))
    assert not sealed(key, value, None)
