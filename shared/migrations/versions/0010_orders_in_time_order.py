"""A member's orders in the order they completed.

The member-orders index takes the completion time into its key (it carried it as an included
column): whatever walks a member's trades in time order (the growth report's "last trade
before each month's end", `lead()` over every member's trades) reads the index in that order
instead of sorting every order of the shop. Lookups by shop and member use it as before.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.drop_index("member_orders_member", "member_orders")
    op.create_index("member_orders_member", "member_orders",
                    ["shop_id", "member_id", "completed_at"],
                    postgresql_include=["amount_cents", "refunded_cents"])


def downgrade() -> None:
    op.drop_index("member_orders_member", "member_orders")
    op.create_index("member_orders_member", "member_orders", ["shop_id", "member_id"],
                    postgresql_include=["completed_at", "amount_cents", "refunded_cents"])
