"""The per-CPU LRU-add batch: a reference held on every fresh page until it is drained.

v6.1 mm/swap.c folio_add_lru / folio_batch_move_lru / lru_add_drain.  The LRU
lists themselves hold no reference and are not modelled; only PG_lru and the
batch's reference are, because a user can observe them (refcount, kpageflags).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.memmap import folio_test_large
from pinlab.kernel.mm.page_ref import folio_get, folio_put

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def folio_batch_move_lru(k: Kernel, cpu: int) -> None:
    """v6.1 mm/swap.c folio_batch_move_lru: set PG_lru on each, then drop the batch refs."""
    batch = k.lru_add[cpu]
    k.lru_add[cpu] = []
    lru = k.pf.mask("PG_lru")
    for folio in batch:
        k.mem.flags[folio] |= lru
    for folio in batch:
        folio_put(k, folio)


def folio_add_lru(k: Kernel, folio: int, cpu: int = 0) -> Generator[Yield, None, None]:
    """v6.1 mm/swap.c folio_add_lru: +1 ref into this CPU's batch; flush when full or large.

    v4.4 mm/swap.c __lru_cache_add flushed a full pagevec before adding and let
    compound pages wait in it like any other (profile.lru_add_flush_first).
    """
    yield Point("folio_add_lru", writes=frozenset({("page", folio, "refcount"), ("lru", cpu)}))
    folio_get(k, folio)
    batch = k.lru_add[cpu]
    if k.profile.lru_add_flush_first:
        if len(batch) >= k.profile.pagevec_size:
            folio_batch_move_lru(k, cpu)
        k.lru_add[cpu].append(folio)
        return
    batch.append(folio)
    if len(batch) >= k.profile.pagevec_size or folio_test_large(k.mem, folio):
        folio_batch_move_lru(k, cpu)


def lru_add_drain_cpu(k: Kernel, cpu: int) -> Generator[Yield, None, None]:
    """v6.1 mm/swap.c lru_add_drain_cpu: move `cpu`'s batch to the LRU."""
    if k.lru_add[cpu]:
        yield Point("lru_add_drain", writes=frozenset({("lru", cpu)}))
        folio_batch_move_lru(k, cpu)


def lru_add_drain(k: Kernel, cpu: int = 0) -> Generator[Yield, None, None]:
    """v6.1 mm/swap.c lru_add_drain: drain the current CPU only."""
    yield from lru_add_drain_cpu(k, cpu)


def lru_add_drain_all(k: Kernel) -> Generator[Yield, None, None]:
    """v6.1 mm/swap.c lru_add_drain_all: drain every CPU's batch."""
    for cpu in range(k.nr_cpus):
        yield from lru_add_drain_cpu(k, cpu)


def folio_in_lru_batch(k: Kernel, folio: int) -> int:
    """How many references the per-CPU batches hold on `folio` (for invariants and probes)."""
    return sum(batch.count(folio) for batch in k.lru_add)
