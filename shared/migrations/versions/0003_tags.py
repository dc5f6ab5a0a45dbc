"""Tags: the tagging worker's view of members, shop clocks per partition, tag holdings and
their history; the "important" mark on members.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

tz = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("members", sa.Column("important", sa.Boolean, nullable=False,
                                       server_default=sa.false()))
    # What the tagging worker knows of each member, from the member-events topic: its own copy,
    # so rules see figures, level and class exactly as far as it has read.
    op.create_table(
        "tag_members",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("completed_trades", sa.Integer, nullable=False, server_default="0"),
        sa.Column("spend_cents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("gross_cents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("refunded_cents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("first_purchase_at", tz),
        sa.Column("last_purchase_at", tz),
        sa.Column("region", sa.Text),
        sa.Column("level", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("abc_class", sa.Text),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("shop_id", "member_id"),
    )
    # Time-based rules look members up by when a day count crosses its bar.
    op.create_index("tag_members_last", "tag_members", ["shop_id", "partition",
                                                        "last_purchase_at"])
    op.create_index("tag_members_first", "tag_members", ["shop_id", "partition",
                                                         "first_purchase_at"])
    op.create_table(
        "tag_clocks",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("watermark", tz, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "partition"),
    )
    op.create_table(
        "member_tags",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("tag_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("rule_id", sa.Text),
        sa.Column("operator", sa.Text),
        sa.Column("event_id", sa.Text),
        sa.Column("since", tz, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "tag_id", "member_id"),
        sa.CheckConstraint("cause IN ('rule', 'goods', 'manual')", name="member_tags_cause"),
    )
    op.create_index("member_tags_member", "member_tags", ["shop_id", "member_id"])
    op.create_table(
        "tag_changes",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("tag_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("rule_id", sa.Text),
        sa.Column("operator", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("event_id", sa.Text),
        sa.Column("config_version", sa.Integer),
        sa.Column("effective_at", tz, nullable=False),
        sa.Column("recorded_at", tz, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("action IN ('added', 'removed')", name="tag_changes_action"),
        sa.CheckConstraint("cause IN ('rule', 'goods', 'manual', 'config')",
                           name="tag_changes_cause"),
    )
    op.create_index("tag_changes_member", "tag_changes", ["shop_id", "member_id", "id"])
    # Goods rules are re-evaluated (and previewed) from the items of completed trades.
    op.create_index("order_items_sku", "order_items", ["shop_id", "sku"])


def downgrade() -> None:
    op.drop_index("order_items_sku", "order_items")
    for table in ("tag_changes", "member_tags", "tag_clocks", "tag_members"):
        op.drop_table(table)
    op.drop_column("members", "important")
