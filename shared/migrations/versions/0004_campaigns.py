"""Campaigns: definitions, audiences, messages sent and clicked, orders and their credits, and
the campaigns worker's event-time watermarks.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"

tz = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("definition", JSONB, nullable=False),
        sa.Column("starts_at", tz, nullable=False),
        sa.Column("ends_at", tz, nullable=False),
        sa.Column("click_window_s", sa.Integer, nullable=False),
        sa.Column("send_window_s", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="draft"),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("confirmed_at", tz),
        sa.Column("confirmed_by", sa.Text),
        sa.Column("audience_size", sa.Integer),
        sa.Column("sent_at", tz),
        sa.PrimaryKeyConstraint("shop_id", "campaign_id"),
        sa.CheckConstraint("status IN ('draft', 'confirmed')", name="campaigns_status"),
        sa.CheckConstraint("ends_at > starts_at", name="campaigns_window"),
    )
    op.create_table(
        "campaign_audience",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "campaign_id", "member_id"),
    )
    op.create_index("campaign_audience_member", "campaign_audience", ["shop_id", "member_id"])
    op.create_table(
        "campaign_sends",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("sent_at", tz, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "campaign_id", "message_id"),
    )
    op.create_index("campaign_sends_member", "campaign_sends", ["shop_id", "member_id", "sent_at"])
    op.create_table(
        "campaign_clicks",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("clicked_at", tz, nullable=False),
    )
    op.create_index("campaign_clicks_member", "campaign_clicks",
                    ["shop_id", "member_id", "clicked_at"])
    op.create_index("campaign_clicks_message", "campaign_clicks",
                    ["shop_id", "campaign_id", "message_id"])
    # Every paid or completed order (a click may arrive after the order it precedes), with the
    # message it is credited to, if any. Converted at its earliest payment or completion;
    # worth its completed amount (its paid amount until it completes). A refund may come first:
    # then the row waits, unconverted, for the order.
    op.create_table(
        "campaign_orders",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("converted_at", tz),
        sa.Column("paid_cents", sa.BigInteger),
        sa.Column("completed_cents", sa.BigInteger),
        sa.Column("refunded_cents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("credit_kind", sa.Text),
        sa.Column("campaign_id", sa.Text),
        sa.Column("message_id", sa.Text),
        sa.Column("credited_at", tz),
        sa.PrimaryKeyConstraint("shop_id", "order_id"),
        sa.CheckConstraint("credit_kind IN ('click', 'send')", name="campaign_orders_kind"),
    )
    op.create_index("campaign_orders_member", "campaign_orders",
                    ["shop_id", "member_id", "converted_at"])
    op.create_index("campaign_orders_credited", "campaign_orders", ["shop_id", "campaign_id"],
                    postgresql_where=sa.text("campaign_id IS NOT NULL"))
    # The newest event time read from each input partition: an event further behind it than
    # the lateness bound is refused (a dead letter), never applied.
    op.create_table(
        "campaign_watermarks",
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("watermark", tz, nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition"),
    )


def downgrade() -> None:
    for table in ("campaign_watermarks", "campaign_orders",
                  "campaign_clicks", "campaign_sends", "campaign_audience", "campaigns"):
        op.drop_table(table)
