"""Topic names and the routing of each event type to its topic."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import BROWSING_TYPES, CAMPAIGN_TYPES, CLOCK_TYPES, ORDER_TYPES


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
        """Tiering's outputs: figures, levels and ABC classes of members, and stream clocks."""
        return f"{self.prefix}member-events"

    @property
    def tag_events(self) -> str:
        """Tagging's outputs: member.tags_changed."""
        return f"{self.prefix}tag-events"

    @property
    def credit_events(self) -> str:
        """The campaigns worker's outputs: campaign.order_credited."""
        return f"{self.prefix}credit-events"

    @property
    def dead_letters(self) -> str:
        """Every rejected event with its reason, for an operator to inspect and re-drive."""
        return f"{self.prefix}dead-letters"

    @property
    def inbound(self) -> tuple[str, str, str]:
        return (self.orders, self.campaigns, self.browsing)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.inbound, self.member_events, self.tag_events, self.credit_events,
                self.dead_letters)

    def home(self, event_type: str) -> str | None:
        """The one topic an event type may be read from (None: ticks travel on every inbound
        topic a worker keeping time reads)."""
        return None if event_type in CLOCK_TYPES else self.for_type(event_type)

    def for_type(self, event_type: str) -> str:
        """The inbound topic an event type travels on."""
        # Pipeline ticks travel with the orders: every worker that keeps time reads them.
        if event_type in ORDER_TYPES or event_type in CLOCK_TYPES:
            return self.orders
        if event_type in CAMPAIGN_TYPES:
            return self.campaigns
        if event_type in BROWSING_TYPES:
            return self.browsing
        raise KeyError(event_type)
