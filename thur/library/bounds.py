"""`thurvtl library bounds`: how far each count in the `library:` config may move.

For num_slots, num_mail_slots and num_drives, with the other two as configured:
- `min`: the fewest elements that keep every cartridge where it is (the same rule
  `Inventory.fit` applies on start, which refuses anything smaller), and the
  cartridge that blocks going lower (`blocker`: move or unload it first);
- `max`: the most the config accepts (its per-key cap, and one 16-bit element
  address space for all kinds);
- `max_same_addresses`: the most that keeps every element address as it is; above
  it the daemon re-bases the addresses on start (thur/library/identity.py) and
  backup software must re-scan the changer.
Changing a count takes a config edit and a daemon restart.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from thur.config import MAX_DRIVES, MAX_ELEMENTS, MAX_MAIL_SLOTS, MAX_SLOTS
from thur.library.elements import ElementBases, Geometry, Kind
from thur.library.inventory import Inventory

_KEYS = {
    Kind.SLOT: ("num_slots", 1, MAX_SLOTS),
    Kind.MAIL: ("num_mail_slots", 0, MAX_MAIL_SLOTS),
    Kind.DRIVE: ("num_drives", 1, MAX_DRIVES),
}
_FIELD = {Kind.SLOT: "slots", Kind.MAIL: "mail_slots", Kind.DRIVE: "drives"}


def _with(geometry: Geometry, kind: Kind, count: int) -> Geometry:
    return replace(geometry, **{_FIELD[kind]: count})


def _fits(bases: ElementBases, geometry: Geometry) -> bool:
    try:
        bases.layout(geometry)
    except ValueError:
        return False
    return True


def _largest(lo: int, hi: int, ok: Any) -> int:
    """The largest n in [lo, hi] with ok(n), given ok(lo) and ok monotone (true, then false)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def library_bounds(inventory: Inventory, geometry: Geometry, bases: ElementBases,
                   label: Any) -> dict[str, Any]:
    """The safe envelope of each count; `label(location)` names a blocker's element."""
    out: dict[str, Any] = {}
    for kind, (key, config_min, config_max) in _KEYS.items():
        current = geometry.count(kind)
        floor, blocker = inventory.floor(kind)
        others = 1 + sum(geometry.count(k) for k in Kind if k != kind)  # 1: the robot
        cap = min(config_max, MAX_ELEMENTS - others)
        same = _largest(current, max(current, cap),
                        lambda n, k=kind: _fits(bases, _with(geometry, k, n)))
        out[key] = {
            "current": current,
            "min": max(config_min, floor),
            "max": cap,
            "max_same_addresses": same,
            "blocker": None if blocker is None or floor <= config_min else {
                "barcode": blocker.barcode, "element": label(blocker.location)},
        }
    return out
