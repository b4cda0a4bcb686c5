"""/proc/vmstat counters (v6.1 mm/vmstat.c vmstat_text, include/linux/mmzone.h node_stat_item).

The kernel caches per-CPU deltas and folds them on /proc/sys/vm/stat_refresh;
the model keeps the folded value, which is what a reader sees after a refresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# v6.1 include/linux/mmzone.h enum node_stat_item: the pin counters (v5.7+)
NR_FOLL_PIN_ACQUIRED = "nr_foll_pin_acquired"
NR_FOLL_PIN_RELEASED = "nr_foll_pin_released"


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
