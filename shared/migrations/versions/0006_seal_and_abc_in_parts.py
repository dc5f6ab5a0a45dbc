"""Speed: the archive's seal, and customer ABC recomputes that are incremental and applied in
parts.

- `pipeline_keys`: the key ingest signs what it archived with, so the archiver passes over
  those records without reading them (storefronts producing straight to Kafka cannot sign:
  they do not hold the key). 32 random bytes, made here by PostgreSQL (two random UUIDs).
- `abc_shops.applying_as_of`: a recompute is applying its changes, in transactions of their own
  beside the batches; a shop stays due until the last is applied.
- `abc_period`: each member's spend and last purchase over the period as of
  `abc_shops.period_as_of`, with the ranking key stored (negated spend and last purchase, the
  member id in byte order) so that one index orders members exactly as the ranking does;
  `abc_pending`: members whose trades changed since; `abc_shops.period_settings` and the keys
  of the last A and the last B member: what the next recompute starts from, so it only looks at
  what moved. `abc_changes`: the class changes a recompute planned and has not applied yet
  (taken a part per transaction, so a shop of a million members is never held in memory).
- `events.body` is the event's canonical JSON as text, the bytes the broker carries: a fifth
  smaller than `jsonb`, no parsing to store it, and re-published as stored.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.add_column("abc_shops", sa.Column("applying_as_of", tz))
    op.add_column("abc_shops", sa.Column("period_as_of", tz))
    op.add_column("abc_shops", sa.Column("period_settings", sa.Text))
    for cut in ("a", "b"):
        op.add_column("abc_shops", sa.Column(f"{cut}_rank_spend", sa.BigInteger))
        op.add_column("abc_shops", sa.Column(f"{cut}_rank_last", sa.BigInteger))
        op.add_column("abc_shops", sa.Column(f"{cut}_member", sa.Text(collation="C")))
    op.create_table(
        "abc_period",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text(collation="C"), nullable=False),
        sa.Column("spend", sa.BigInteger, nullable=False),
        sa.Column("last", tz, nullable=False),
        sa.Column("rank_spend", sa.BigInteger, nullable=False),   # -spend
        sa.Column("rank_last", sa.BigInteger, nullable=False),    # -(last in epoch microseconds)
        sa.PrimaryKeyConstraint("shop_id", "member_id"),
    )
    op.execute("CREATE INDEX abc_period_rank ON abc_period (shop_id, rank_spend, rank_last, "
               "member_id) WHERE spend > 0")
    op.create_table(
        "abc_pending",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "member_id"),
    )
    op.create_table(
        "abc_changes",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text(collation="C"), nullable=False),
        sa.Column("old", sa.Text),
        sa.Column("new", sa.Text),
        sa.PrimaryKeyConstraint("shop_id", "member_id"),
    )
    op.alter_column("events", "body", type_=sa.Text, postgresql_using="body::text")
    op.create_table(
        "pipeline_keys",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    op.execute("INSERT INTO pipeline_keys (name, key) VALUES ('archive', decode(replace("
               "gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'))")


def downgrade() -> None:
    op.alter_column("events", "body", type_=JSONB, postgresql_using="body::jsonb")
    op.drop_table("abc_changes")
    op.drop_table("abc_pending")
    op.drop_table("abc_period")
    for column in ("applying_as_of", "period_as_of", "period_settings", "a_rank_spend",
                   "a_rank_last", "a_member", "b_rank_spend", "b_rank_last", "b_member"):
        op.drop_column("abc_shops", column)
    op.drop_table("pipeline_keys")
