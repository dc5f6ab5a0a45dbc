"""Levels and ABC: member level/blacklist/class, level change audit, order items, ABC
bookkeeping per shop, the outbox for events decided outside a worker, and an audit log.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"

tz = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("members", sa.Column("level", sa.SmallInteger, nullable=False,
                                       server_default="0"))
    op.add_column("members", sa.Column("level_since", tz))
    op.add_column("members", sa.Column("blacklisted", sa.Boolean, nullable=False,
                                       server_default=sa.false()))
    op.add_column("members", sa.Column("abc_class", sa.CHAR(1)))
    op.add_column("members", sa.Column("abc_since", tz))
    op.create_index("members_level", "members", ["shop_id", "level"])
    op.create_index("members_abc", "members", ["shop_id", "abc_class"])
    op.create_index("member_orders_completed", "member_orders", ["shop_id", "completed_at"],
                    postgresql_where=sa.text("completed_at IS NOT NULL"))
    op.create_table(
        "level_changes",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("old_level", sa.SmallInteger, nullable=False),
        sa.Column("new_level", sa.SmallInteger, nullable=False),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text),
        sa.Column("policy_version", sa.Integer),
        sa.Column("operator", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("effective_from", tz, nullable=False),
        sa.Column("recorded_at", tz, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("cause IN ('auto', 'manual', 'policy')", name="level_changes_cause"),
    )
    op.create_index("level_changes_member", "level_changes", ["shop_id", "member_id", "id"])
    op.create_table(
        "order_items",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("sku", sa.Text, nullable=False),
        sa.Column("qty", sa.Integer, nullable=False),
        sa.Column("unit_price_cents", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "order_id", "line"),
    )
    op.create_table(
        "abc_shops",
        sa.Column("shop_id", sa.Text, primary_key=True),
        sa.Column("watermark", tz, nullable=False),
        sa.Column("dirty", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("computed_as_of", tz),
        sa.Column("computed_at", tz),
        sa.Column("ranked", sa.Integer, nullable=False, server_default="0"),
        sa.Column("zero_spenders", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("created_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", tz),
    )
    op.create_index("outbox_pending", "outbox", ["id"],
                    postgresql_where=sa.text("published_at IS NULL"))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("detail", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("at", tz, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("audit_log_shop", "audit_log", ["shop_id", "id"])


def downgrade() -> None:
    for table in ("audit_log", "outbox", "abc_shops", "order_items", "level_changes"):
        op.drop_table(table)
    op.drop_index("member_orders_completed", "member_orders")
    op.drop_index("members_abc", "members")
    op.drop_index("members_level", "members")
    for column in ("abc_since", "abc_class", "blacklisted", "level_since", "level"):
        op.drop_column("members", column)
