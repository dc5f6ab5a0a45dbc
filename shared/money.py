"""Money as integer cents: exact arithmetic, two decimals on the wire, never a binary float."""

from __future__ import annotations

from decimal import Decimal

CENT = Decimal("0.01")


def to_cents(amount: Decimal) -> int:
    """Convert an amount with at most two decimals to integer cents (exact)."""
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{amount} has more than two decimals")
    return int(cents)


def from_cents(cents: int) -> Decimal:
    """Integer cents back to a two-decimal amount."""
    return (Decimal(cents) / 100).quantize(CENT)


def format_cents(cents: int) -> str:
    """Human-readable amount with thousands separators, e.g. 1,234.50."""
    return f"{from_cents(cents):,.2f}"


def cents_text(cents: int) -> str:
    """Integer cents as the two-decimal wire string (`12345` -> `"123.45"`), without Decimal."""
    sign, whole = ("-", -cents) if cents < 0 else ("", cents)
    return f"{sign}{whole // 100}.{whole % 100:02d}"
