"""Members' RFM scores and segment, and their predicted value, kept by tiering.

- `member_rfm`: each buyer of the shop's RFM period: their values (last purchase, purchase days,
  net spend per purchase day), trades and net spend in the period, as of
  `abc_shops.rfm_values_as_of`; their scores and segment (none until first scored), and since
  when they hold that segment. Members who bought nothing in the period have no row.
- `rfm_pending`: members whose trades changed since their values were read, handed on by the
  ABC recompute that took them off `abc_pending`.
- `rfm_changes`: the score and segment changes a recompute planned and has not applied yet,
  under its run number (the `abc_run` sequence), taken a part per transaction as ABC's are.
- `member_predictions`: each buyer's probability of being active, expected purchases over the
  horizon and their expected value, from the shop's last fit, with the buyer's summary it was
  predicted from.
- `abc_shops` keeps each shop's recompute state for both: `rfm_dirty` is set by the same
  statement that marks the ABC classes stale, so a batch writes nothing more.
- `tag_members.rfm_segment`: the fact tag rules read.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"

_TIMES = ("rfm_computed_at", "rfm_computed_as_of", "rfm_applying_as_of", "rfm_values_as_of",
          "predicted_at", "predicted_as_of")
_TEXTS = ("rfm_settings", "rfm_values_settings", "predicted_settings", "predicted_note")
_JSON = ("rfm_edges", "predicted_fit")


def upgrade() -> None:
    tz = sa.TIMESTAMP(timezone=True)
    op.add_column("abc_shops", sa.Column("rfm_dirty", sa.Boolean, nullable=False,
                                         server_default=sa.true()))
    for column in _TIMES:
        op.add_column("abc_shops", sa.Column(column, tz))
    for column in _TEXTS:
        op.add_column("abc_shops", sa.Column(column, sa.Text))
    for column in _JSON:
        op.add_column("abc_shops", sa.Column(column, JSONB))
    op.create_table(
        "member_rfm",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("last_at", tz, nullable=False),
        sa.Column("days", sa.Integer, nullable=False),
        sa.Column("per_day", sa.BigInteger, nullable=False),
        sa.Column("trades", sa.Integer, nullable=False),
        sa.Column("spend_cents", sa.BigInteger, nullable=False),
        sa.Column("r_score", sa.SmallInteger),
        sa.Column("f_score", sa.SmallInteger),
        sa.Column("m_score", sa.SmallInteger),
        sa.Column("segment", sa.Text),
        sa.Column("since", tz),
        sa.PrimaryKeyConstraint("shop_id", "member_id"),
    )
    op.create_table(
        "rfm_pending",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
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
        sa.Column("repeat_days", sa.Integer, nullable=False),
        sa.Column("days_first_to_last", sa.Integer, nullable=False),
        sa.Column("days_since_first", sa.Integer, nullable=False),
        sa.Column("spend_cents", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "member_id"),
    )
    op.add_column("tag_members", sa.Column("rfm_segment", sa.Text))


def downgrade() -> None:
    op.drop_column("tag_members", "rfm_segment")
    for table in ("member_predictions", "rfm_changes", "rfm_pending", "member_rfm"):
        op.drop_table(table)
    for column in ("rfm_dirty", *_TIMES, *_TEXTS, *_JSON):
        op.drop_column("abc_shops", column)
