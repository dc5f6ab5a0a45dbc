"""Members' personal data, kept apart from their figures.

`member_profiles` holds what identifies a person (name, phone, address), one row per member a
shop imported or entered; nothing in the event stream writes it, so a replay of the archive
never brings it back after an erasure. `erased_at` marks a member whose personal data was
removed on request: the row stays, empty, so an import of an old file cannot restore it either.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "member_profiles",
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("member_id", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("address", sa.Text),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("erased_at", tz),
        sa.PrimaryKeyConstraint("shop_id", "member_id"),
        sa.CheckConstraint("erased_at IS NULL OR (name IS NULL AND phone IS NULL "
                           "AND address IS NULL)", name="member_profiles_erased_empty"),
    )
    op.create_table(
        "imports",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("shop_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("digest", sa.LargeBinary, nullable=False),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("at", tz, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("shop_id", "kind", "digest", name="imports_once"),
    )


def downgrade() -> None:
    op.drop_table("imports")
    op.drop_table("member_profiles")
