"""The database schema as SQLAlchemy tables. Changes go through a migration in `migrations/`."""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

shops = Table(
    "shops",
    metadata,
    Column("shop_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("config", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("config_version", Integer, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Every applied configuration, so a shop's settings at any time can be explained.
shop_config_history = Table(
    "shop_config_history",
    metadata,
    Column("shop_id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("config", JSONB, nullable=False),
    Column("applied_by", Text, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("shop_id", "version"),
)

# A member's figures, derived from the order ledger below. Spend is net of refunds.
members = Table(
    "members",
    metadata,
    Column("shop_id", Text, nullable=False),
    Column("member_id", Text, nullable=False),
    Column("completed_trades", Integer, nullable=False, server_default="0"),
    Column("gross_cents", BigInteger, nullable=False, server_default="0"),
    Column("refunded_cents", BigInteger, nullable=False, server_default="0"),
    Column("spend_cents", BigInteger, nullable=False, server_default="0"),
    Column("first_purchase_at", DateTime(timezone=True)),
    Column("last_purchase_at", DateTime(timezone=True)),
    Column("region", Text),
    Column("region_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Levels (upgrade only, by trade, policy or operator) and the customer ABC class.
    Column("level", SmallInteger, nullable=False, server_default="0"),
    Column("level_since", DateTime(timezone=True)),
    Column("blacklisted", Boolean, nullable=False, server_default=false()),
    Column("abc_class", CHAR(1)),
    Column("abc_since", DateTime(timezone=True)),
    PrimaryKeyConstraint("shop_id", "member_id"),
    Index("members_level", "shop_id", "level"),
    Index("members_abc", "shop_id", "abc_class"),
)

# One row per order: completion and refunds meet here whatever order they arrive in, and an
# order counts once however often its events are delivered.
member_orders = Table(
    "member_orders",
    metadata,
    Column("shop_id", Text, nullable=False),
    Column("order_id", Text, nullable=False),
    Column("member_id", Text, nullable=False),
    Column("amount_cents", BigInteger),
    Column("completed_at", DateTime(timezone=True)),
    Column("completed_event_id", Text),
    Column("refund_requested_cents", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("shop_id", "order_id"),
    Index("member_orders_member", "shop_id", "member_id"),
    Index("member_orders_completed", "shop_id", "completed_at",
          postgresql_where=text("completed_at IS NOT NULL")),
)

# Every level change with its cause: which trade, which policy version or which operator.
level_changes = Table(
    "level_changes",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("shop_id", Text, nullable=False),
    Column("member_id", Text, nullable=False),
    Column("old_level", SmallInteger, nullable=False),
    Column("new_level", SmallInteger, nullable=False),
    Column("cause", Text, nullable=False),
    Column("event_id", Text),
    Column("policy_version", Integer),
    Column("operator", Text),
    Column("reason", Text),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("cause IN ('auto', 'manual', 'policy')", name="level_changes_cause"),
    Index("level_changes_member", "shop_id", "member_id", "id"),
)

# The lines of placed orders; they count as product sales once their order completes.
order_items = Table(
    "order_items",
    metadata,
    Column("shop_id", Text, nullable=False),
    Column("order_id", Text, nullable=False),
    Column("line", Integer, nullable=False),
    Column("sku", Text, nullable=False),
    Column("qty", Integer, nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False),
    PrimaryKeyConstraint("shop_id", "order_id", "line"),
)

# Per shop: the event-time watermark that ends the ABC period, and whether classes are stale.
abc_shops = Table(
    "abc_shops",
    metadata,
    Column("shop_id", Text, primary_key=True),
    Column("watermark", DateTime(timezone=True), nullable=False),
    Column("dirty", Boolean, nullable=False, server_default=true()),
    Column("computed_as_of", DateTime(timezone=True)),
    Column("computed_at", DateTime(timezone=True)),
    Column("ranked", Integer, nullable=False, server_default="0"),
    Column("zero_spenders", Integer, nullable=False, server_default="0"),
)

# Member events decided outside a worker's batch (operator commands), published by a relay.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("key", Text),
    Column("value", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True)),
    Index("outbox_pending", "id", postgresql_where=text("published_at IS NULL")),
)

# Operator actions on members and shops (blacklist, manual changes), who and when.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("shop_id", Text, nullable=False),
    Column("member_id", Text),
    Column("action", Text, nullable=False),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("operator", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("audit_log_shop", "shop_id", "id"),
)

# Idempotency: an event id is claimed once per consumer, in the transaction of its effect.
processed_events = Table(
    "processed_events",
    metadata,
    Column("consumer", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    PrimaryKeyConstraint("consumer", "event_id"),
)

# The authoritative read position of each consumer, committed with the state it produced.
consumer_positions = Table(
    "consumer_positions",
    metadata,
    Column("consumer", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "topic", "partition"),
)

# The durable archive of every accepted inbound event (the embedded broker keeps nothing).
events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("shop_id", Text, nullable=False),
    Column("member_id", Text),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("archived_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("body", JSONB, nullable=False),
    UniqueConstraint("event_id", name="events_event_id_key"),
    Index("events_shop_time", "shop_id", "occurred_at"),
)

# Rejected events, parked where an operator can see and re-drive them.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("dlq_partition", Integer, nullable=False),
    Column("dlq_offset", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("source_ref", Text),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("rejected_at", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=False, server_default="parked"),
    Column("redriven_at", DateTime(timezone=True)),
    UniqueConstraint("dlq_partition", "dlq_offset", name="dead_letters_position_key"),
)
