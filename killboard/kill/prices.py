"""Unit prices of item types, and the rules that value a kill when zKillboard gave no values."""

from __future__ import annotations

from dataclasses import dataclass, field

from .staticdata import StaticData

# A blueprint copy cannot be sold on the market; valuing it like the original would make a
# freighter of copies look like a trillion-ISK kill. zKillboard counts copies as next to nothing.
BLUEPRINT_COPY_PRICE = 0.01
SINGLETON_BLUEPRINT_COPY = 2
# CCP's base price of ore, ice and moon materials is per refining batch, not per unit: used as
# a unit price it made a mining barge with compressed ore in its hold a 50-billion-ISK kill.
# Without a market price they count as 0 until the ESI price refresh knows them.
CATEGORY_ASTEROID = 25


@dataclass(slots=True)
class PriceBook:
    """Market prices by type id. `market` starts as the bundled snapshot; a refresh replaces it."""

    market: dict[int, float]
    fixed: dict[int, float]
    base: dict[int, float] = field(default_factory=dict)

    def unit_price(self, type_id: int, singleton: int = 0) -> float:
        """Fixed price (hulls with no market) > market average > CCP's base price > 0."""
        if singleton == SINGLETON_BLUEPRINT_COPY:
            return BLUEPRINT_COPY_PRICE
        price = self.fixed.get(type_id)
        if price is None:
            price = self.market.get(type_id)
        if price is None:
            price = self.base.get(type_id, 0.0)
        return price


def price_book(static: StaticData) -> PriceBook:
    """The offline fallback: the bundled Jita snapshot, fixed hull prices, and base prices."""
    base = {
        t.type_id: t.base_price for t in static.types.values() if t.base_price and t.category_id != CATEGORY_ASTEROID
    }
    return PriceBook(market=dict(static.jita_prices), fixed=dict(static.fixed_prices), base=base)
