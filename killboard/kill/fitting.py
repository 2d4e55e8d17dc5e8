"""A lost ship's fitting as in game (high, mid, low, rig, subsystem and service slots; drones,
cargo) and as EFT text, the format every fitting tool (Pyfa, EVE's own fitting window) imports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .display import en
from .staticdata import FlagInfo, TypeInfo

CATEGORY_CHARGE = 8
# Slot racks in the order the fitting window shows them, by the inventory flag's name prefix.
RACKS: tuple[tuple[str, str], ...] = (
    ("HiSlot", "High slots"),
    ("MedSlot", "Mid slots"),
    ("LoSlot", "Low slots"),
    ("RigSlot", "Rigs"),
    ("SubSystem", "Subsystems"),
    ("StructureServiceSlot", "Service slots"),  # an Upwell structure's services (clone bay …)
)
# EFT lists the racks low first, services last: the order Pyfa and the game's "copy to
# clipboard" write.
EFT_ORDER = ("LoSlot", "MedSlot", "HiSlot", "RigSlot", "SubSystem", "StructureServiceSlot")
BAYS: tuple[tuple[str, str], ...] = (("DroneBay", "Drones"), ("FighterBay", "Fighters"), ("Cargo", "Cargo"))


@dataclass(slots=True)
class Slot:
    index: int  # 0-based position in its rack
    module: str
    charge: str = ""


@dataclass(slots=True)
class Fitting:
    ship: str
    racks: dict[str, list[Slot]] = field(default_factory=dict)  # prefix -> slots in order
    bays: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # prefix -> (name, quantity)

    def rack_rows(self) -> list[tuple[str, list[Slot]]]:
        """(heading, slots) for the page, in game order, empty racks left out."""
        return [(label, self.racks[prefix]) for prefix, label in RACKS if self.racks.get(prefix)]

    def bay_rows(self) -> list[tuple[str, list[tuple[str, int]]]]:
        return [(label, self.bays[prefix]) for prefix, label in BAYS if self.bays.get(prefix)]

    def eft(self, name: str = "killboard") -> str:
        """The EFT text: `[Ship, Fit name]`, the racks low to subsystem with a blank line between,
        then drones and cargo as `Name xN`."""
        blocks = [[f"[{self.ship}, {name}]"]]
        for prefix in EFT_ORDER:
            slots = self.racks.get(prefix) or []
            if slots:
                blocks.append([s.module + (f", {s.charge}" if s.charge else "") for s in slots])
        for prefix, _ in BAYS:
            items = self.bays.get(prefix) or []
            if items:
                blocks.append([f"{item} x{qty}" for item, qty in items])
        return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def fitting(kill: Mapping[str, Any], flags: Mapping[int, FlagInfo], types: Mapping[int, TypeInfo]) -> Fitting:
    """The fitting of an enriched kill's victim (killboard/kill/enrich.py): a slot's module and
    the charge loaded in it (a charge shares its module's flag); bays summed by type."""
    victim = kill.get("victim") or {}
    fit = Fitting(en(victim.get("ship_name")) or f"Type {victim.get('ship_id')}")
    modules: dict[tuple[str, int], Slot] = {}
    charges: dict[tuple[str, int], str] = {}
    bays: dict[str, dict[str, int]] = {}
    # Top-level items only: what is inside a container in the cargo is not part of the fit.
    for item in kill.get("items") or ():
        info = flags.get(int(item.get("flag") or 0))
        if info is None:
            continue
        name = en(item.get("name")) or f"Type {item.get('type_id')}"
        qty = int(item.get("qty_dropped") or 0) + int(item.get("qty_destroyed") or 0)
        rack = next((p for p, _ in RACKS if info.name.startswith(p)), None)
        if rack is not None:
            index = int("".join(c for c in info.name[len(rack) :] if c.isdigit()) or 0)
            typed = types.get(int(item.get("type_id") or 0))
            if typed is not None and typed.category_id == CATEGORY_CHARGE:
                charges[(rack, index)] = name
            else:
                modules[(rack, index)] = Slot(index, name)
            continue
        bay = next((p for p, _ in BAYS if info.name == p), None)
        if bay is not None:
            counts = bays.setdefault(bay, {})
            counts[name] = counts.get(name, 0) + qty
    for (rack, index), slot in sorted(modules.items(), key=lambda pair: pair[0][1]):
        slot.charge = charges.get((rack, index), "")
        fit.racks.setdefault(rack, []).append(slot)
    fit.bays = {bay: sorted(counts.items()) for bay, counts in bays.items()}
    return fit
