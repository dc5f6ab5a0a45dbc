"""Speed: the archive's seal, and customer ABC recomputes applied in parts.

- `pipeline_keys`: the key ingest signs what it archived with, so the archiver passes over
  those records without reading them (storefronts producing straight to Kafka cannot sign:
  they do not hold the key). 32 random bytes, made here by PostgreSQL (two random UUIDs).
- `abc_shops.applying_as_of`: a recompute is applying its changes, in transactions of their own
  beside the batches; a shop stays due until the last is applied.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.add_column("abc_shops", sa.Column("applying_as_of", sa.DateTime(timezone=True)))
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
    op.drop_column("abc_shops", "applying_as_of")
    op.drop_table("pipeline_keys")
