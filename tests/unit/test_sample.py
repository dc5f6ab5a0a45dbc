"""The sample shop generator: deterministic, valid, realistic, and an oracle that is right."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from memberflow.sample import bad_lines, expected_figures, generate, write_jsonl
from shared.events import EventRejected, decode, validate

END = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def history() -> list[dict[str, Any]]:
    return generate(members=300, seed=3)


def first_occurrences(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for e in events:
        if e["event_id"] not in seen:
            seen.add(e["event_id"])
            out.append(e)
    return out


def test_generation_is_deterministic_for_a_seed(history: list[dict[str, Any]]) -> None:
    assert generate(members=300, seed=3) == history
    assert generate(members=300, seed=4) != history


def test_every_event_satisfies_the_contract_and_is_json_ready(
        history: list[dict[str, Any]]) -> None:
    for event in history:
        validate(event)
        assert set(event) == {"event_id", "type", "schema_version", "shop_id", "member_id",
                              "occurred_at", "payload"}
        assert event["occurred_at"].endswith("Z")
    assert json.loads(json.dumps(history)) == history
    assert {e["type"] for e in history} == {
        "order.placed", "order.paid", "order.completed", "order.refunded",
        "campaign.message_sent", "campaign.message_clicked", "member.viewed", "member.carted"}


def test_history_is_in_time_order_and_nothing_happens_after_the_end(
        history: list[dict[str, Any]]) -> None:
    times = [datetime.fromisoformat(e["occurred_at"]) for e in first_occurrences(history)]
    assert times == sorted(times)
    assert max(times) <= END


def test_amounts_are_exact_item_sums_and_follow_the_order(history: list[dict[str, Any]]) -> None:
    placed: dict[str, str] = {}
    for e in history:
        p = e["payload"]
        if e["type"] == "order.placed":
            total = sum(Decimal(i["unit_price"]) * i["qty"] for i in p["items"])
            assert Decimal(p["amount"]) == total
            assert all(isinstance(i["unit_price"], str) and Decimal(i["unit_price"]).as_tuple()
                       .exponent == -2 for i in p["items"])
            placed[p["order_id"]] = p["amount"]
        elif e["type"] in ("order.paid", "order.completed"):
            assert p["amount"] == placed[p["order_id"]]


def test_refunds_never_exceed_the_order_amount(history: list[dict[str, Any]]) -> None:
    amounts: dict[str, Decimal] = {}
    refunded: dict[str, Decimal] = defaultdict(Decimal)
    for e in first_occurrences(history):
        if e["type"] == "order.placed":
            amounts[e["payload"]["order_id"]] = Decimal(e["payload"]["amount"])
        elif e["type"] == "order.refunded":
            refunded[e["payload"]["order_id"]] += Decimal(e["payload"]["amount"])
    assert refunded
    for order_id, amount in refunded.items():
        assert Decimal(0) < amount <= amounts[order_id]


def test_activity_is_skewed_and_realistic(history: list[dict[str, Any]]) -> None:
    figures = expected_figures(history)
    spend = sorted((f["spend_cents"] for f in figures.values() if f["completed_trades"]),
                   reverse=True)
    assert sum(spend[: len(spend) // 5]) > 0.5 * sum(spend)
    buyers = {e["member_id"] for e in history if e["type"] == "order.placed"}
    browsers = {e["member_id"] for e in history if e["type"] == "member.viewed"} - buyers
    assert 0.08 < len(browsers) / 300 < 0.25
    regions = defaultdict(set)
    for e in history:
        if e["type"] == "order.placed":
            regions[e["member_id"]].add(e["payload"]["region"])
    assert all(len(r) == 1 for r in regions.values())
    messages = [e["payload"]["message_id"] for e in first_occurrences(history)
                if e["type"] == "campaign.message_sent"]
    assert len(messages) == len(set(messages)) > 0


def test_storefront_retries_repeat_events_verbatim_later(history: list[dict[str, Any]]) -> None:
    counts = Counter(e["event_id"] for e in history)
    repeated = [i for i, n in counts.items() if n > 1]
    assert repeated and max(counts.values()) == 2
    for event_id in repeated:
        first, second = (i for i, e in enumerate(history) if e["event_id"] == event_id)
        assert history[first] == history[second] and history[first] is not history[second]
    assert len(first_occurrences(history)) == len(history) - len(repeated)
    no_retries = generate(members=300, seed=3, duplicate_rate=0)
    assert len({e["event_id"] for e in no_retries}) == len(no_retries)


def ev(n: int, type_: str, member: str, at: str, **payload: Any) -> dict[str, Any]:
    return {"event_id": f"e{n}", "type": type_, "schema_version": 1, "shop_id": "s",
            "member_id": member, "occurred_at": at, "payload": payload}


def test_expected_figures_on_a_hand_written_history() -> None:
    item = [{"sku": "SKU-0001", "qty": 1, "unit_price": "100.00"}]
    completed_a = ev(3, "order.completed", "m1", "2026-01-05T10:00:00Z", order_id="A",
                     amount="100.00")
    over_refund = ev(11, "order.refunded", "m1", "2026-03-01T00:00:00Z", order_id="C",
                     amount="15.00")
    history = [
        ev(1, "order.placed", "m1", "2026-01-01T10:00:00Z", order_id="A", items=item,
           amount="100.00"),
        ev(2, "order.paid", "m1", "2026-01-01T10:05:00Z", order_id="A", amount="100.00"),
        completed_a,
        dict(completed_a),  # a storefront retry: counted once
        ev(4, "order.completed", "m1", "2026-01-09T00:00:00Z", order_id="A", amount="100.00"),
        ev(5, "order.refunded", "m1", "2026-02-01T00:00:00Z", order_id="B", amount="30.00"),
        ev(6, "order.completed", "m1", "2026-02-03T08:00:00+08:00", order_id="B", amount=50),
        ev(10, "order.completed", "m1", "2026-02-20T00:00:00Z", order_id="C", amount="20.00"),
        over_refund,
        dict(over_refund),  # a retried refund is not a second refund
        ev(12, "order.refunded", "m1", "2026-03-02T00:00:00Z", order_id="C", amount="10.00"),
        ev(20, "order.placed", "m2", "2026-01-02T00:00:00Z", order_id="D", items=item,
           amount="100.00"),
        ev(30, "member.viewed", "m3", "2026-01-02T00:00:00Z", sku="SKU-0001"),
        ev(40, "order.refunded", "m4", "2026-01-02T00:00:00Z", order_id="E", amount="5.00"),
    ]
    for event in history:
        validate(event)
    zero = {"completed_trades": 0, "gross_cents": 0, "refunded_cents": 0, "spend_cents": 0,
            "first_purchase_at": None, "last_purchase_at": None}
    assert expected_figures(history) == {
        ("s", "m1"): {"completed_trades": 3, "gross_cents": 17000, "refunded_cents": 5000,
                      "spend_cents": 12000, "first_purchase_at": "2026-01-05T10:00:00Z",
                      "last_purchase_at": "2026-02-20T00:00:00Z"},
        ("s", "m2"): zero,
        ("s", "m4"): zero,
    }


def test_bad_lines_are_all_rejected_by_the_contract() -> None:
    lines = bad_lines()
    assert 3 <= len(lines) <= 4
    reasons = []
    for line in lines:
        with pytest.raises(EventRejected) as rejected:
            decode(line)
        reasons.append(rejected.value.reason)
    assert any("not valid JSON" in r for r in reasons)
    assert any("unknown event type" in r for r in reasons)
    assert any("member_id: required" in r for r in reasons)
    assert any("qty" in r for r in reasons)


def test_write_jsonl_spreads_the_extra_lines_through_the_file(tmp_path: Path) -> None:
    events = generate(members=20, days=30, seed=1)
    path = tmp_path / "history.jsonl"
    assert write_jsonl(events, path, extra_lines=bad_lines()) == len(events) + len(bad_lines())
    lines = path.read_text(encoding="utf-8").splitlines()
    positions = [lines.index(line) for line in bad_lines()]
    assert positions == sorted(positions) and positions[0] > 0 and positions[-1] < len(lines) - 1
    assert [json.loads(line) for line in lines if line not in bad_lines()] == events
