"""Level policy and ABC settings: the parts of a shop configuration the tiering worker runs on.

Cross-level rules (rising thresholds, deepening discounts, the marketplace preset's caps) raise
`RuleBroken`, which carries the path of the offending key, so an operator reads e.g.
`levels.ladder[2].threshold: must be higher than level 2 (senior)'s 800.00`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.config_types import Amount, RuleBroken

PRESET_MAX_LEVELS = 4
PRESET_MIN_DISCOUNT = Decimal("0.70")

Name = Annotated[str, StringConstraints(min_length=1, max_length=40, strip_whitespace=True)]
Share = Annotated[Decimal, Field(gt=0, lt=1, decimal_places=4)]


class Level(BaseModel):
    """One rung of the ladder. Its number is its position (the first entry is level 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    enabled: bool = True
    discount: Annotated[Decimal, Field(gt=0, le=1, decimal_places=4)] = Field(
        description="price factor from the next order on, e.g. 0.95 = 5% off")
    threshold: Amount | None = Field(
        None, description="marketplace preset: the level's bar on the ladder's basis")
    min_amount: Amount | None = Field(
        None, description="custom ladders: completed-trade amount needed")
    min_trades: Annotated[int, Field(ge=1)] | None = Field(
        None, description="custom ladders: completed trades needed")
    within_days: Annotated[int, Field(ge=1, le=3660)] | None = Field(
        None, description="custom ladders: count min_amount/min_trades over any span of this "
                          "many days (recency) instead of the member's whole history")


class LevelPolicy(BaseModel):
    """How members climb: one basis, up to four levels under the marketplace preset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["marketplace", "custom"] = "marketplace"
    basis: Literal["amount", "count"] | None = Field(
        None, description="marketplace preset: cumulative completed-trade amount or count")
    auto_upgrade: bool = True
    ladder: list[Level] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _rules(self) -> LevelPolicy:
        problems = (_marketplace_problems(self) if self.preset == "marketplace"
                    else _custom_problems(self))
        problems += _ladder_problems(self)
        if problems:
            raise RuleBroken(problems)
        return self

    def enabled_levels(self) -> list[tuple[int, Level]]:
        return [(n, lv) for n, lv in enumerate(self.ladder, start=1) if lv.enabled]

    def windows(self) -> set[int]:
        return {lv.within_days for lv in self.ladder if lv.within_days is not None}

    def name_of(self, level: int) -> str:
        return self.ladder[level - 1].name if 1 <= level <= len(self.ladder) else f"level {level}"


def _label(n: int, level: Level) -> str:
    return f"level {n} ({level.name})"


def _marketplace_problems(policy: LevelPolicy) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if policy.basis is None:
        problems.append(("basis", "required under the marketplace preset (amount or count)"))
    if len(policy.ladder) > PRESET_MAX_LEVELS:
        problems.append(("ladder", f"at most {PRESET_MAX_LEVELS} levels under the marketplace "
                                   f"preset (got {len(policy.ladder)}); use preset: custom for "
                                   "longer ladders"))
    for n, level in enumerate(policy.ladder, start=1):
        at = f"ladder[{n - 1}]"
        if level.threshold is None:
            problems.append((f"{at}.threshold", f"required for {_label(n, level)}"))
        elif policy.basis == "count" and level.threshold != level.threshold.to_integral_value():
            problems.append((f"{at}.threshold", "a count of trades must be a whole number"))
        for key in ("min_amount", "min_trades", "within_days"):
            if getattr(level, key) is not None:
                problems.append((f"{at}.{key}", "only for preset: custom (use threshold)"))
        if level.discount < PRESET_MIN_DISCOUNT:
            problems.append((f"{at}.discount", f"{_label(n, level)}: {level.discount} is deeper "
                                               f"than the preset allows (not below "
                                               f"{PRESET_MIN_DISCOUNT})"))
    return problems


def _custom_problems(policy: LevelPolicy) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if policy.basis is not None:
        problems.append(("basis", "only for the marketplace preset; custom levels name "
                                  "min_amount / min_trades per level"))
    for n, level in enumerate(policy.ladder, start=1):
        at = f"ladder[{n - 1}]"
        if level.threshold is not None:
            problems.append((f"{at}.threshold", "only for the marketplace preset (use min_amount "
                                                "or min_trades)"))
        if level.min_amount is None and level.min_trades is None:
            problems.append((at, f"{_label(n, level)} needs min_amount or min_trades"))
    return problems


def _requirement(level: Level) -> tuple[Decimal, Decimal, Decimal]:
    """Comparable strength of a custom level: amount, trades, and -window (shorter is harder)."""
    return (level.min_amount or Decimal(0), Decimal(level.min_trades or 0),
            Decimal(-(level.within_days or 100_000)))


def _ladder_problems(policy: LevelPolicy) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for n, level in enumerate(policy.ladder, start=1):
        at = f"ladder[{n - 1}]"
        key = level.name.casefold()
        if key in seen:
            problems.append((f"{at}.name", f"{level.name!r} is already the name of level "
                                           f"{seen[key]}"))
        seen.setdefault(key, n)
        if n == 1:
            continue
        below = policy.ladder[n - 2]
        if level.discount > below.discount:
            problems.append((f"{at}.discount", f"{_label(n, level)}: {level.discount} must not be "
                                               f"shallower than {_label(n - 1, below)}'s "
                                               f"{below.discount}"))
        if policy.preset == "marketplace":
            if (level.threshold is not None and below.threshold is not None
                    and level.threshold <= below.threshold):
                problems.append((f"{at}.threshold", f"{_label(n, level)}: {level.threshold} must "
                                                    f"be higher than {_label(n - 1, below)}'s "
                                                    f"{below.threshold}"))
            continue
        mine, theirs = _requirement(level), _requirement(below)
        if any(a < b for a, b in zip(mine, theirs, strict=True)) or mine == theirs:
            problems.append((at, f"{_label(n, level)} must ask for more than "
                                 f"{_label(n - 1, below)} (a higher amount or trade count, or a "
                                 "shorter window, and nothing lower)"))
    return problems


class CustomerAbc(BaseModel):
    """Head-count ABC of members by spend over a rolling period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    period_days: Annotated[int, Field(ge=1, le=3660)] = 365
    a_share: Share = Decimal("0.05")
    b_share: Share = Decimal("0.20")

    @model_validator(mode="after")
    def _order(self) -> CustomerAbc:
        if self.a_share >= self.b_share:
            raise RuleBroken([("a_share", f"{self.a_share} must be below b_share "
                                          f"{self.b_share}")])
        return self


class ProductAbc(BaseModel):
    """Revenue ABC of items by sales over a period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    period_days: Annotated[int, Field(ge=1, le=3660)] = 365
    a_cutoff: Annotated[Decimal, Field(ge=Decimal("0.60"), le=Decimal("0.80"),
                                       decimal_places=4)] = Decimal("0.70")
    b_cutoff: Share = Decimal("0.90")

    @model_validator(mode="after")
    def _order(self) -> ProductAbc:
        if self.a_cutoff >= self.b_cutoff:
            raise RuleBroken([("b_cutoff", f"{self.b_cutoff} must be above a_cutoff "
                                           f"{self.a_cutoff}")])
        return self


class AbcSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: CustomerAbc = CustomerAbc()
    products: ProductAbc = ProductAbc()
