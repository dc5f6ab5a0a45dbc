"""Campaign attribution figures (printed, never asserted).

    python benchmarks/campaigns.py [--sends 1000000] [--clicks 100000] [--orders 100000]

A shop with 10 campaigns has sent N messages to 250k members and M of them were clicked, all
within their attribution windows (outstanding). Then:

1. orders arrive (`order.paid`, 5,000 per transaction) through the worker's batch path without
   Kafka (read with `contract.read`, ids claimed with `claim_event_ids`, then
   `CampaignHandler.apply`), each decided against the stored clicks and sends: attributed
   orders per second;
2. late clicks arrive after the orders they precede and re-open them: clicks per second;
3. what the open windows cost: the worker's peak resident memory (the windows live in
   PostgreSQL, not in the process) and the size of the tables that hold them.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from workload import fresh_database, postgres

from services.campaigns.handlers import CampaignHandler
from shared.consumer import Batch, Delivery, Record, _settle_garbage_collector, claim_event_ids
from shared.topics import Topics

SHOP = "bench-shop"
TOPICS = Topics("bench.")
NOW = datetime(2026, 11, 11, tzinfo=UTC)
MEMBERS = 250_000
CAMPAIGNS = 10


def load(engine: Any, sends: int, clicks: int) -> list[tuple[str, str, str, datetime]]:
    """Sends and clicks in the last day (all within their windows); returns the clicks."""
    rng = random.Random(3)
    clicked: list[tuple[str, str, str, datetime]] = []
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            with cur.copy("COPY campaign_sends (shop_id, campaign_id, message_id, member_id, "
                          "channel, sent_at) FROM STDIN") as copy:
                for i in range(sends):
                    campaign = f"c{i % CAMPAIGNS:02d}"
                    member = f"m{rng.randrange(MEMBERS):06d}"
                    at = NOW - timedelta(seconds=rng.randrange(86_400))
                    copy.write_row((SHOP, campaign, f"{campaign}:{i}", member,
                                    rng.choice(("sms", "email", "in_app", "im")), at))
                    if len(clicked) < clicks and rng.random() < clicks / sends * 1.2:
                        clicked.append((campaign, f"{campaign}:{i}", member,
                                        at + timedelta(seconds=rng.randrange(3600))))
            with cur.copy("COPY campaign_clicks (event_id, shop_id, campaign_id, message_id, "
                          "member_id, clicked_at) FROM STDIN") as copy:
                for n, (campaign, message, member, at) in enumerate(clicked):
                    copy.write_row((f"k{n}", SHOP, campaign, message, member, at))
            for c in range(CAMPAIGNS):
                cur.execute(
                    "INSERT INTO campaigns (shop_id, campaign_id, definition, starts_at, ends_at, "
                    "click_window_s, send_window_s, source) VALUES (%s, %s, '{}', %s, %s, %s, "
                    "%s, 'bench')", (SHOP, f"c{c:02d}", NOW - timedelta(days=2),
                                     NOW + timedelta(days=2), 172_800 if c % 2 else 86_400,
                                     86_400))
            cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    return clicked


def event(event_id: str, type_: str, member: str, at: datetime, **payload: Any) -> bytes:
    return json.dumps({"event_id": event_id, "type": type_, "schema_version": 1,
                       "shop_id": SHOP, "member_id": member,
                       "occurred_at": at.isoformat().replace("+00:00", "Z"),
                       "payload": payload}).encode()


def feed(engine: Any, handler: CampaignHandler, values: list[bytes], topic: str) -> int:
    """BatchWorker.process without Kafka (no positions, no publishing): read, claim, apply."""
    credited = 0
    contract = handler.contract
    for start in range(0, len(values), 5000):
        chunk = [Delivery(topic, n % 4, start + n, None, v, 0)
                 for n, v in enumerate(values[start:start + 5000])]
        records = []
        for d in chunk:
            decoded = contract.read(d.value)
            if decoded is not None:
                records.append(Record(d, *decoded))
        with engine.begin() as conn:
            claims = claim_event_ids(conn, handler.name, [r for r in records
                                                          if r.event.type in contract.claims])
            fresh = {id(r) for r in claims.fresh}
            batch = Batch([r for r in records if r.event.type not in contract.claims
                           or id(r) in fresh], chunk)
            credited += sum(1 for o in handler.apply(conn, batch)
                            if o.type == "campaign.order_credited")
        if batch.parked or claims.conflicts:
            # Refused events (too late, one id twice) would flatter the rate: say so loudly.
            print(f"   WARNING: {len(batch.parked) + len(claims.conflicts)} events of this "
                  f"batch were refused: {batch.parked[:1] or claims.conflicts[:1]}")
    return credited


def table_sizes(engine: Any) -> str:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname IN "
            "('campaign_sends', 'campaign_clicks', 'campaign_orders') ORDER BY 1").all()
    return ", ".join(f"{name} {size / 2**20:,.0f} MiB" for name, size in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=1_000_000)
    parser.add_argument("--clicks", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(5)
    with tempfile.TemporaryDirectory(prefix="memberflow-bench-campaigns-") as tmp, \
            postgres(Path(tmp)) as db:
        _, engine = fresh_database(db, "bench_campaigns")
        try:
            started = time.perf_counter()
            clicked = load(engine, args.sends, args.clicks)
            print(f"loaded {args.sends:,} sends and {len(clicked):,} clicks outstanding "
                  f"({time.perf_counter() - started:.1f} s); {table_sizes(engine)}")
            _settle_garbage_collector()
            handler = CampaignHandler(TOPICS, lateness=timedelta(days=7))
            # Half the orders come from members who clicked, half from members only messaged.
            orders = []
            for i in range(args.orders):
                if i % 2 and clicked:
                    _, _, member, at = clicked[rng.randrange(len(clicked))]
                else:
                    member, at = f"m{rng.randrange(MEMBERS):06d}", NOW
                when = at + timedelta(seconds=rng.randrange(1, 20 * 3600))
                orders.append(event(f"p{i}", "order.paid", member, when, order_id=f"o{i}",
                                    amount=f"{rng.randrange(10, 900)}.{rng.randrange(100):02d}"))
            started = time.perf_counter()
            credited = feed(engine, handler, orders, TOPICS.orders)
            seconds = time.perf_counter() - started
            print(f"1. {len(orders):,} orders attributed in {seconds:.1f} s: "
                  f"{len(orders) / seconds:,.0f} orders/s, {credited:,} credited")

            late = []
            for n in range(min(20_000, len(orders))):
                member = json.loads(orders[n])["member_id"]
                at = datetime.fromisoformat(json.loads(orders[n])["occurred_at"])
                late.append(event(f"late{n}", "campaign.message_clicked", member,
                                  at - timedelta(minutes=5), campaign_id="c01",
                                  message_id=f"late:{n}"))
            started = time.perf_counter()
            moved = feed(engine, handler, late, TOPICS.campaigns)
            seconds = time.perf_counter() - started
            print(f"2. {len(late):,} late clicks re-opened their orders in {seconds:.1f} s: "
                  f"{len(late) / seconds:,.0f} clicks/s, {moved:,} credits moved")
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"3. worker process peak RSS {peak:,.0f} MiB (windows are held in "
                  f"PostgreSQL); {table_sizes(engine)}")
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
