"""Campaign definitions: who is targeted, with what offer, over which channels and when, and how
long after a click (or a mere send) an order still counts as the campaign's conversion.

```yaml
campaigns:
  - id: double-11
    name: Double 11 win-back
    target: {levels: [2, 3], tags: [dormant-180], abc: [A, B], dormant_days: 90}   # or {all: true}
    offer: {kind: cash_off, amount: "20.00", min_spend: "199.00"}
    channels: [sms, in_app]
    starts_at: 2026-11-01T00:00:00+08:00
    ends_at: 2026-11-11T23:59:59+08:00
    attribution: {click_window_hours: 48, send_window_hours: 24}
```

Definitions live in the shop configuration or are created from the command line; either way
they are kept in the `campaigns` table. Once a campaign is confirmed (its audience resolved and
recorded) it is frozen: its time window, target, channels and windows can no longer change.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.config_types import Amount, Key, Name, RuleBroken
from shared.filters import MemberFilter

Channel = Literal["sms", "email", "in_app", "im"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Strict):
    """Who a campaign reaches: every member (`all: true`) or those meeting every condition."""

    all: bool = False
    levels: list[Annotated[int, Field(ge=0, le=20)]] = Field(default_factory=list)
    tags: list[Key] = Field(default_factory=list, description="holding every one of these")
    abc: list[Literal["A", "B", "C", "none"]] = Field(default_factory=list)
    dormant_days: Annotated[int, Field(ge=1, le=3660)] | None = None
    min_spend: Amount | None = None
    max_spend: Amount | None = None
    important: bool | None = None
    rfm_segments: list[Key] = Field(default_factory=list,
                                    description='in one of these RFM segments ("none": no '
                                                "purchase in the RFM period)")
    max_p_alive: Annotated[Decimal, Field(ge=0, le=1, decimal_places=4)] | None = Field(
        None, description="predicted probability of being active at most this")
    min_expected_value: Amount | None = Field(
        None, description="predicted value over the shop's horizon at least this")

    @model_validator(mode="after")
    def _something(self) -> Target:
        conditions = self.filter()
        if self.all and not conditions.empty:
            raise RuleBroken([("all", "all: true targets every member; drop the other "
                                      "conditions or all")])
        if not self.all and conditions.empty:
            raise RuleBroken([("all", "name a condition (levels, tags, abc, dormant_days, "
                                      "min_spend, max_spend, important, rfm_segments, "
                                      "max_p_alive, min_expected_value) or set all: true")])
        return self

    def filter(self) -> MemberFilter:
        return MemberFilter(levels=tuple(self.levels), abc_classes=tuple(self.abc),
                            min_spend=self.min_spend, max_spend=self.max_spend,
                            dormant_days=self.dormant_days, tags=tuple(self.tags),
                            important=self.important, rfm_segments=tuple(self.rfm_segments),
                            max_p_alive=self.max_p_alive,
                            min_expected_value=self.min_expected_value)


class Offer(_Strict):
    """What members are offered: a discount rate, cash off, or a shop coupon with conditions."""

    kind: Literal["discount", "cash_off", "coupon"]
    rate: Annotated[Decimal, Field(gt=0, lt=1, decimal_places=4)] | None = Field(
        None, description="discount: the price factor, e.g. 0.90")
    amount: Amount | None = Field(None, description="cash_off and coupon: money off")
    min_spend: Amount | None = Field(None, description="the order value the offer needs")
    code: Key | None = Field(None, description="coupon: the code members enter")
    valid_days: Annotated[int, Field(ge=1, le=366)] | None = Field(
        None, description="coupon: days it can be used after the message")

    @model_validator(mode="after")
    def _fits_kind(self) -> Offer:
        problems: list[tuple[str, str]] = []
        needs = {"discount": ("rate",), "cash_off": ("amount",),
                 "coupon": ("amount", "code", "valid_days")}[self.kind]
        allowed = set(needs) | {"min_spend"}
        for key in ("rate", "amount", "code", "valid_days"):
            value = getattr(self, key)
            if key in needs and value is None:
                problems.append((key, f"required for a {self.kind} offer"))
            elif key not in allowed and value is not None:
                problems.append((key, f"not part of a {self.kind} offer"))
        if (self.amount is not None and self.min_spend is not None
                and self.amount >= self.min_spend):
            problems.append(("amount", f"{self.amount} off must be less than the minimum spend "
                                       f"{self.min_spend}"))
        if problems:
            raise RuleBroken(problems)
        return self

    def describe(self) -> str:
        condition = f" on orders of {self.min_spend} or more" if self.min_spend else ""
        if self.kind == "discount":
            return f"{(1 - (self.rate or Decimal(1))) * 100:.0f}% off{condition}"
        if self.kind == "cash_off":
            return f"{self.amount} off{condition}"
        return (f"coupon {self.code}: {self.amount} off{condition}, valid {self.valid_days} "
                "days")


class Attribution(_Strict):
    click_window_hours: Annotated[int, Field(ge=1, le=720)] = Field(
        48, description="an order this long after a click is the click's conversion")
    send_window_hours: Annotated[int, Field(ge=0, le=720)] = Field(
        24, description="an order this long after a message that was not clicked (0: never)")

    @property
    def click_window(self) -> timedelta:
        return timedelta(hours=self.click_window_hours)

    @property
    def send_window(self) -> timedelta:
        return timedelta(hours=self.send_window_hours)


class CampaignDefinition(_Strict):
    id: Key
    name: Name
    target: Target
    offer: Offer
    channels: Annotated[list[Channel], Field(min_length=1, max_length=4)]
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    attribution: Attribution = Attribution()

    @model_validator(mode="after")
    def _window(self) -> CampaignDefinition:
        problems: list[tuple[str, str]] = []
        if self.ends_at <= self.starts_at:
            problems.append(("ends_at", f"must be after starts_at ({self.starts_at.isoformat()})"))
        repeated = sorted(c for c, n in Counter(self.channels).items() if n > 1)
        if repeated:
            problems.append(("channels", f"{', '.join(repeated)} listed more than once"))
        if problems:
            raise RuleBroken(problems)
        return self

    def frozen_part(self) -> dict[str, Any]:
        """What may not change once the campaign is confirmed (everything but its name)."""
        return self.model_dump(mode="json", exclude={"name"})


def campaign_problems(campaigns: list[CampaignDefinition], tags: set[str]
                      ) -> list[tuple[str, str]]:
    """Rules across a shop's campaigns: unique ids, targeted tags that exist."""
    problems = [("campaigns", f"campaign id {c!r} is used more than once")
                for c, n in Counter(c.id for c in campaigns).items() if n > 1]
    for i, campaign in enumerate(campaigns):
        for j, tag in enumerate(campaign.target.tags):
            if tag not in tags:
                problems.append((f"campaigns[{i}].target.tags[{j}]",
                                 f"no tag {tag!r} in tagging.tags"))
    return problems
