"""The archive's seal: a key that ingest signs what it archived with, so the archiver passes
over those records without reading them (storefronts producing straight to Kafka cannot sign:
they do not hold the key).

32 random bytes, made here by PostgreSQL (two random UUIDs) and read by every process.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
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
    op.drop_table("pipeline_keys")
