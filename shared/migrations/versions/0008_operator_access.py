"""Operator access: API tokens with shops and rights, and an audit log nobody can rewrite.

- `api_tokens` keeps a token's SHA-256 digest, never the token. A token is 256 random bits, so
  a fast digest is enough: there is nothing to guess from it. `shops` NULL marks a platform
  token spanning every shop. `prefix` (the first characters after `mf_`) names the token in
  listings without revealing it.
- `audit_log` says where an action came from (`address`, `request_id`) and takes entries that
  belong to no single shop (a platform token's creation). The database refuses UPDATE, DELETE
  and TRUNCATE on it, whoever asks: the log is append-only by construction, not by convention.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0008"
down_revision = "0007"

RIGHTS = ("read", "write", "export", "pii", "admin", "ingest")


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("digest", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("shops", ARRAY(sa.Text)),
        sa.Column("rights", ARRAY(sa.Text), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", tz),
        sa.Column("revoked_at", tz),
        sa.Column("last_used_at", tz),
        sa.CheckConstraint("rights <@ ARRAY[" + ", ".join(f"'{r}'" for r in RIGHTS)
                           + "]::text[] AND cardinality(rights) > 0", name="api_tokens_rights"),
        sa.CheckConstraint("shops IS NULL OR cardinality(shops) > 0", name="api_tokens_shops"),
    )
    op.alter_column("audit_log", "shop_id", nullable=True)
    op.add_column("audit_log", sa.Column("address", sa.Text))
    op.add_column("audit_log", sa.Column("request_id", sa.Text))
    # A member's own entries (why they are blacklisted, what was done to them) without reading
    # the shop's whole log.
    op.create_index("audit_log_member", "audit_log", ["shop_id", "member_id", "id"],
                    postgresql_where=sa.text("member_id IS NOT NULL"))
    op.execute("""
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$""")
    op.execute("CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
               "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
    op.execute("CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
               "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()")


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_log_no_truncate ON audit_log")
    op.execute("DROP TRIGGER audit_log_no_change ON audit_log")
    op.execute("DROP FUNCTION audit_log_append_only()")
    op.drop_index("audit_log_member", "audit_log")
    op.drop_column("audit_log", "request_id")
    op.drop_column("audit_log", "address")
    op.alter_column("audit_log", "shop_id", nullable=False)   # fails if platform rows exist
    op.drop_table("api_tokens")
