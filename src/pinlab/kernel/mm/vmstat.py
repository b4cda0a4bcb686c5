"""/proc/vmstat counters (v6.1 mm/vmstat.c vmstat_text, include/linux/mmzone.h node_stat_item).

The kernel caches per-CPU deltas and folds them on /proc/sys/vm/stat_refresh;
the model keeps the folded value, which is what a reader sees after a refresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pinlab.kernel.profiles import Profile

# v6.1 include/linux/mmzone.h enum node_stat_item: the pin counters (v5.7+)
NR_FOLL_PIN_ACQUIRED = "nr_foll_pin_acquired"
NR_FOLL_PIN_RELEASED = "nr_foll_pin_released"
# v6.1 mm/vmstat.c vmstat_text: NR_FILE_DIRTY prints as "nr_dirty" (v4.4 too)
NR_FILE_DIRTY = "nr_dirty"
NR_DIRTIED = "nr_dirtied"


@dataclass(slots=True)
class VmStat:
    """Global counters by their /proc/vmstat name."""

    counters: dict[str, int] = field(default_factory=dict)


def mod_node_page_state(vs: VmStat, item: str, delta: int) -> None:
    """v6.1 mm/vmstat.c mod_node_page_state: add `delta` to a node counter."""
    vs.counters[item] = vs.counters.get(item, 0) + delta


def global_node_page_state(vs: VmStat, item: str) -> int:
    """v6.1 include/linux/vmstat.h global_node_page_state."""
    return vs.counters.get(item, 0)


def vmstat_items(profile: Profile) -> tuple[str, ...]:
    """The modelled counters the profile's kernel has, in its vmstat_text order.

    v6.1 mm/vmstat.c vmstat_text: nr_dirty ... nr_dirtied ... nr_foll_pin_acquired,
    nr_foll_pin_released (v5.7 has the pin pair in the same place; v4.4 lacks it).
    """
    pins = (NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED) if profile.vmstat_foll_pin else ()
    return (NR_FILE_DIRTY, NR_DIRTIED, *pins)


def proc_vmstat(vs: VmStat, profile: Profile) -> list[str]:
    """/proc/vmstat lines for the modelled counters (v6.1 mm/vmstat.c vmstat_start/vmstat_show).

    Each line is "name value"; a node counter that is negative reads as 0
    (v6.1 mm/vmstat.c global_node_page_state_pages on CONFIG_SMP).
    """
    return [f"{name} {max(global_node_page_state(vs, name), 0)}" for name in vmstat_items(profile)]
