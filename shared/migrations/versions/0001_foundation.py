"""Foundation: shops, members, order ledger, idempotency, positions, archive, dead letters.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None

tz = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shops",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("config", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("config_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "shop_config_history",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("config", JSONB, nullable=False),
        sa.Column("applied_by", sa.Text, nullable=False),
        sa.Column("applied_at", tz, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("shop_id", "version"),
    )
    op.create_table(
        "members",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("completed_trades", sa.Integer, nullable=False, server_default="0"),
        sa.Column("gross_cents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("refunded_cents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("spend_cents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("first_purchase_at", tz),
        sa.Column("last_purchase_at", tz),
        sa.Column("region", sa.Text),
        sa.Column("region_at", tz),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("shop_id", "member_id"),
    )
    op.create_table(
        "member_orders",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("amount_cents", sa.BigInteger),
        sa.Column("completed_at", tz),
        sa.Column("completed_event_id", sa.Text),
        sa.Column("refund_requested_cents", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("shop_id", "order_id"),
    )
    op.create_index("member_orders_member", "member_orders", ["shop_id", "member_id"])
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
    )
    op.create_table(
        "consumer_positions",
        sa.Column("consumer", sa.Text, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("consumer", "topic", "partition"),
    )
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text),
        sa.Column("occurred_at", tz, nullable=False),
        sa.Column("archived_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("body", JSONB, nullable=False),
        sa.UniqueConstraint("event_id", name="events_event_id_key"),
    )
    op.create_index("events_shop_time", "events", ["shop_id", "occurred_at"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("dlq_partition", sa.Integer, nullable=False),
        sa.Column("dlq_offset", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_ref", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("rejected_at", tz, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="parked"),
        sa.Column("redriven_at", tz),
        sa.UniqueConstraint("dlq_partition", "dlq_offset", name="dead_letters_position_key"),
    )


def downgrade() -> None:
    for table in ("dead_letters", "events", "consumer_positions", "processed_events",
                  "member_orders", "members", "shop_config_history", "shops"):
        op.drop_table(table)
