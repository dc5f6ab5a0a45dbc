"""Integrity: content digests for event ids, dead letters keyed by what was rejected, outbox
relays owned by the worker that wrote the message.

- `events.digest` and `processed_events.digest`: the sha256 of an event's canonical form, so the
  same `event_id` with a different body is recognised as a conflict (NULL for events stored
  before this revision: their digest is computed from the stored body when needed).
- `dead_letters.letter_id`: derived from what was rejected (not from a broker offset, which the
  embedded broker restarts at 0), with the shop and event id where known.
- `outbox.owner`: the worker that relays the message (each worker relays its own).
- Time: `events.shop_id` may be empty (pipeline ticks belong to no shop); `events.late` is
  ingest's verdict on lateness for attribution, judged per shop in archive order;
  `archive_clocks` holds each shop's newest archived event time per stream for that verdict;
  `stream_clocks` the clock of every inbound partition as tiering has read it; the campaigns
  worker's watermarks and tagging's clocks become per shop and partition / per partition.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"


tz = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("events", sa.Column("digest", sa.LargeBinary))
    op.add_column("events", sa.Column("late", sa.Boolean))
    op.alter_column("events", "shop_id", nullable=True)
    op.create_table(
        "archive_clocks",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("newest", tz, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "stream"),
    )
    op.execute("INSERT INTO archive_clocks SELECT shop_id, CASE WHEN type LIKE 'order.%' "
               "THEN 'orders' WHEN type LIKE 'campaign.%' THEN 'campaigns' ELSE 'browsing' END, "
               "max(occurred_at) FROM events WHERE shop_id IS NOT NULL GROUP BY 1, 2")
    op.create_table(
        "stream_clocks",
        sa.Column("consumer", sa.Text, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("clock", tz, nullable=False),
        sa.PrimaryKeyConstraint("consumer", "topic", "partition"),
    )
    op.drop_table("campaign_watermarks")
    op.create_table(
        "campaign_watermarks",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("watermark", tz, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "topic", "partition"),
    )
    op.drop_table("tag_clocks")
    op.create_table(
        "tag_clocks",
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("watermark", tz, nullable=False),
    )
    op.add_column("tag_members", sa.Column("evaluated_at", tz))
    # The refund cap (never more than the order's amount) is applied once, in Python, and
    # stored: SQL reads the capped figure instead of applying the cap a second time.
    op.add_column("member_orders", sa.Column("refunded_cents", sa.BigInteger, nullable=False,
                                             server_default="0"))
    op.execute("UPDATE member_orders SET refunded_cents = LEAST(refund_requested_cents, "
               "amount_cents) WHERE completed_at IS NOT NULL")
    # The one clock (see docs/time.md): the newest event time tiering has read on any inbound
    # partition, events and pipeline ticks alike.
    op.execute("CREATE FUNCTION pipeline_clock() RETURNS timestamptz LANGUAGE sql STABLE AS "
               "$$ SELECT max(clock) FROM stream_clocks WHERE consumer = 'tiering' $$")
    op.add_column("processed_events", sa.Column("digest", sa.LargeBinary))

    op.drop_constraint("dead_letters_position_key", "dead_letters", type_="unique")
    op.add_column("dead_letters", sa.Column("letter_id", sa.Text))
    op.execute("UPDATE dead_letters SET letter_id = 'legacy-' || id")
    op.alter_column("dead_letters", "letter_id", nullable=False)
    op.create_unique_constraint("dead_letters_letter_id_key", "dead_letters", ["letter_id"])
    op.drop_column("dead_letters", "dlq_partition")
    op.drop_column("dead_letters", "dlq_offset")
    op.add_column("dead_letters", sa.Column("shop_id", sa.Text))
    op.add_column("dead_letters", sa.Column("event_id", sa.Text))
    op.add_column("dead_letters", sa.Column("problems", JSONB, nullable=False,
                                            server_default=sa.text("'[]'::jsonb")))
    op.add_column("dead_letters", sa.Column("raw_size", sa.Integer, nullable=False,
                                            server_default="0"))
    op.create_index("dead_letters_shop", "dead_letters", ["shop_id", "id"])
    op.create_index("dead_letters_event", "dead_letters", ["event_id"])

    op.add_column("outbox", sa.Column("owner", sa.Text, nullable=False,
                                      server_default="tiering"))
    op.add_column("outbox", sa.Column("partition", sa.Integer))
    op.drop_index("outbox_pending", "outbox")
    op.create_index("outbox_pending", "outbox", ["owner", "id"],
                    postgresql_where=sa.text("published_at IS NULL"))


def downgrade() -> None:
    op.execute("DROP FUNCTION pipeline_clock()")
    op.drop_column("member_orders", "refunded_cents")
    op.drop_column("tag_members", "evaluated_at")
    op.drop_table("tag_clocks")
    op.create_table(
        "tag_clocks",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("watermark", tz, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "partition"),
    )
    op.drop_table("campaign_watermarks")
    op.create_table(
        "campaign_watermarks",
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("watermark", tz, nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition"),
    )
    op.drop_table("stream_clocks")
    op.drop_table("archive_clocks")
    op.execute("DELETE FROM events WHERE shop_id IS NULL")
    op.alter_column("events", "shop_id", nullable=False)
    op.drop_column("events", "late")
    op.drop_index("outbox_pending", "outbox")
    op.drop_column("outbox", "partition")
    op.drop_column("outbox", "owner")
    op.create_index("outbox_pending", "outbox", ["id"],
                    postgresql_where=sa.text("published_at IS NULL"))
    op.drop_index("dead_letters_event", "dead_letters")
    op.drop_index("dead_letters_shop", "dead_letters")
    for column in ("raw_size", "problems", "event_id", "shop_id"):
        op.drop_column("dead_letters", column)
    op.add_column("dead_letters", sa.Column("dlq_partition", sa.Integer, server_default="0"))
    op.add_column("dead_letters", sa.Column("dlq_offset", sa.BigInteger))
    op.execute("UPDATE dead_letters SET dlq_offset = id")
    op.drop_constraint("dead_letters_letter_id_key", "dead_letters", type_="unique")
    op.drop_column("dead_letters", "letter_id")
    op.create_unique_constraint("dead_letters_position_key", "dead_letters",
                                ["dlq_partition", "dlq_offset"])
    op.drop_column("processed_events", "digest")
    op.drop_column("events", "digest")
