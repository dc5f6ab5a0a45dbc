"""Members' RFM scores and segment, and their predicted value, kept by tiering.

- `member_rfm`: each buyer of the shop's RFM period with their scores and segment (members who
  bought nothing in the period have no row), and since when they hold that segment.
- `rfm_changes`: the changes a recompute planned and has not applied yet, under its run number
  (the `abc_run` sequence), taken a part per transaction as ABC's are.
- `member_predictions`: each buyer's probability of being active, expected purchases over the
  horizon and their expected value, from the shop's last fit.
- `abc_shops` keeps each shop's recompute state for both: `rfm_dirty` is set by the same
  statement that marks the ABC classes stale, so a batch writes nothing more.
- `tag_members.rfm_segment`: the fact tag rules read.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"

_SHOP_COLUMNS = ("rfm_dirty", "rfm_computed_at", "rfm_computed_as_of", "rfm_applying_as_of",
                 "rfm_settings", "predicted_at", "predicted_as_of", "predicted_settings",
                 "predicted_note")


def upgrade() -> None:
    tz = sa.TIMESTAMP(timezone=True)
    op.add_column("abc_shops", sa.Column("rfm_dirty", sa.Boolean, nullable=False,
                                         server_default=sa.true()))
    for column in ("rfm_computed_at", "rfm_computed_as_of", "rfm_applying_as_of",
                   "predicted_at", "predicted_as_of"):
        op.add_column("abc_shops", sa.Column(column, tz))
    for column in ("rfm_settings", "predicted_settings", "predicted_note"):
        op.add_column("abc_shops", sa.Column(column, sa.Text))
    op.create_table(
        "member_rfm",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("r_score", sa.SmallInteger, nullable=False),
        sa.Column("f_score", sa.SmallInteger, nullable=False),
        sa.Column("m_score", sa.SmallInteger, nullable=False),
        sa.Column("segment", sa.Text, nullable=False),
        sa.Column("since", tz, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "member_id"),
    )
    op.create_index("member_rfm_segment", "member_rfm", ["shop_id", "segment"])
    op.create_table(
        "rfm_changes",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("run", sa.BigInteger, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("old_segment", sa.Text),
        sa.Column("new_segment", sa.Text),
        sa.Column("r_score", sa.SmallInteger),
        sa.Column("f_score", sa.SmallInteger),
        sa.Column("m_score", sa.SmallInteger),
        sa.PrimaryKeyConstraint("shop_id", "run", "member_id"),
    )
    op.create_table(
        "member_predictions",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("p_alive", sa.Float, nullable=False),
        sa.Column("expected_purchases", sa.Float, nullable=False),
        sa.Column("expected_value_cents", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "member_id"),
    )
    op.add_column("tag_members", sa.Column("rfm_segment", sa.Text))


def downgrade() -> None:
    op.drop_column("tag_members", "rfm_segment")
    for table in ("member_predictions", "rfm_changes", "member_rfm"):
        op.drop_table(table)
    for column in _SHOP_COLUMNS:
        op.drop_column("abc_shops", column)
