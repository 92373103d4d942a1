"""Sizes of the generated source."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Preset:
    name: str
    customers: int
    inactive_customers: int  # credit limit 0, never ordered (as in the real dump)
    products: int
    orders: int
    order_lines: int | None  # exact total, or None to let it follow ~9.2 lines an order
    start: date
    end: date
    spikes: int
    sales_reps: int

    def scaled(self, factor: float) -> Preset:
        if factor <= 0:
            raise ValueError(f"scale factor must be positive, got {factor}")
        if factor == 1:
            return self

        def scale(value: int, minimum: int) -> int:
            return max(minimum, round(value * factor))

        orders = scale(self.orders, 20)
        return dataclasses.replace(
            self,
            name=f"{self.name}x{factor:g}",
            customers=scale(self.customers, 12),
            inactive_customers=min(scale(self.inactive_customers, 1), scale(self.customers, 12) // 4),
            products=scale(self.products, 14),
            orders=orders,
            order_lines=None if self.order_lines is None else max(orders, scale(self.order_lines, 20)),
            spikes=scale(self.spikes, 1),
            sales_reps=scale(self.sales_reps, 3),
        )


PRESETS = {
    # The sizes of the published classicmodels dump.
    "classic": Preset(
        name="classic",
        customers=122,
        inactive_customers=24,
        products=110,
        orders=326,
        order_lines=2996,
        start=date(2003, 1, 6),
        end=date(2005, 5, 31),
        spikes=2,
        sales_reps=17,
    ),
    # A store of the size the requirements describe: ~100k customers, millions of order lines.
    "prod": Preset(
        name="prod",
        customers=100_000,
        inactive_customers=8_000,
        products=3_000,
        orders=450_000,
        order_lines=None,
        start=date(2023, 11, 1),
        end=date(2026, 10, 31),
        spikes=150,
        sales_reps=120,
    ),
}


def get_preset(name: str, scale: float = 1.0) -> Preset:
    try:
        preset = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return preset.scaled(scale)
