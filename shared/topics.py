"""Topic names and the routing of each event type to its topic."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import BROWSING_TYPES, CAMPAIGN_TYPES, ORDER_TYPES


@dataclass(frozen=True)
class Topics:
    """The pipeline's topics under one prefix (tests use their own on a shared broker)."""

    prefix: str = "memberflow."

    @property
    def orders(self) -> str:
        return f"{self.prefix}orders"

    @property
    def campaigns(self) -> str:
        return f"{self.prefix}campaigns"

    @property
    def browsing(self) -> str:
        return f"{self.prefix}browsing"

    @property
    def member_events(self) -> str:
        """Outputs: member.level_changed, member.tags_changed, member.abc_changed."""
        return f"{self.prefix}member-events"

    @property
    def dead_letters(self) -> str:
        """Every rejected event with its reason, for an operator to inspect and re-drive."""
        return f"{self.prefix}dead-letters"

    @property
    def inbound(self) -> tuple[str, str, str]:
        return (self.orders, self.campaigns, self.browsing)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.inbound, self.member_events, self.dead_letters)

    def for_type(self, event_type: str) -> str:
        """The inbound topic an event type travels on."""
        if event_type in ORDER_TYPES:
            return self.orders
        if event_type in CAMPAIGN_TYPES:
            return self.campaigns
        if event_type in BROWSING_TYPES:
            return self.browsing
        raise KeyError(event_type)
