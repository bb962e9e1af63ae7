"""How the console writes limits, sizes and prices."""

from __future__ import annotations

from django import template

register = template.Library()

UNITS = ("B", "KB", "MB", "GB", "TB")


@register.filter
def limit(value: int | None) -> str:
    """A plan limit: None is unlimited."""
    return "unlimited" if value is None else f"{value:,}"


@register.filter(name="bytes")
def size(value: int | None) -> str:
    if value is None:
        return "unlimited"
    amount = float(value)
    for unit in UNITS:
        if amount < 1024 or unit == UNITS[-1]:
            return (
                f"{amount:,.0f} {unit}"
                if unit == "B"
                else f"{amount:,.1f} {unit}".replace(".0 ", " ")
            )
        amount /= 1024
    return f"{value} B"


@register.filter
def limit_bytes(value: int | None) -> str:
    return size(value)


@register.filter
def price(cents: int | None) -> str:
    if cents is None:
        return "custom"
    if cents == 0:
        return "$0"
    return f"${cents / 100:,.0f} / month"
