"""Applying a shop configuration: one transaction that stores the new version and lets every
capability react to it (level policy re-evaluation, ABC settings, tag rules, campaigns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from services.campaigns import operations as campaigns
from services.tagging import operations as tagging
from services.tagging.operations import TagOutcome
from services.tiering import operations as tiering
from shared.shopconfig import ShopConfig
from shared.shops import apply_config
from shared.topics import Topics


@dataclass
class ConfigResult:
    version: int
    changed: bool
    moved_up: int = 0                                   # members a new level policy upgraded
    tags: list[TagOutcome] = field(default_factory=list)  # tags whose rules changed
    campaigns: list[str] = field(default_factory=list)   # campaigns defined, changed, deleted


def apply_shop_config(conn: Connection, topics: Topics, config: ShopConfig, operator: str,
                      now: datetime) -> ConfigResult:
    """Store `config` as the shop's next version and re-evaluate what it changes.

    Nothing is kept if any part refuses (a non-empty tag group deleted, say): the caller's
    transaction rolls back as a whole.
    """
    version, changed, old = apply_config(conn, config, operator)
    if not changed:
        return ConfigResult(version, changed=False)
    moved = tiering.config_changed(conn, topics.member_events, old, config, version, now)
    tags = tagging.config_changed(conn, topics.tag_events, old, config, version, operator, now)
    defined = campaigns.config_changed(conn, topics.credit_events, old, config, operator)
    return ConfigResult(version, True, moved, tags, defined)
