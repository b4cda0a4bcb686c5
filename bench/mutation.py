"""Mutation testing as a bench: do the tests notice a bug-like change to the model?

A curated list of mutants of pinlab's own code, each the kind of slip a kernel or
model-checker author makes: a wrong comparison, a dropped recheck, wait, lock or
counter update, an off-by-one, a swapped argument, a weakened sleep-set rule, a cache
key missing a component.  Each mutant names one file under src/pinlab, an exact
snippet that must occur there exactly once, its replacement, and the test files that
cover that file (the fastest and most specific first: pytest stops at the first
failure).

Every mutant runs in its own copy of the repository: a snapshot of the working tree is
taken once, each worker copies it, applies a mutant, runs

    python -m pytest -x -q -p no:cacheprovider <tests>

with PYTHONPATH=<copy>/src and PYTHONHASHSEED=0 from the copy's directory (and
hypothesis seeded), and restores the file.  <tests> are, by default (--select lines), the
tests that executed one of the mutant's lines on the unmutated tree, its own covering
files' tests first: the baseline measures that once with per-test coverage contexts and
caches it by the content of src/ and tests/ (bench/mutation_cover.py says when it falls
back to every covering file).  A mutant whose lines no test executes survives without
a run.  --select files runs every covering test file instead.

A mutant is killed when pytest fails (any non-zero exit but 5, "no tests ran"; the exit
codes are reported, a negative one being a signal).  Each test has pytest-timeout's
limit of half --timeout (its thread method, as in pyproject.toml, which ends the run:
Hypothesis would catch the signal method's alarm), and a run may go on that long past
--timeout, so that a test that starts within --timeout and hangs is always stopped by
its own limit first: the run fails, a kill.  A run stopped by the bench is "hung",
which counts as a survivor.  Each run's
address space is capped (--memory): a mutant that makes a search explode fails with
MemoryError instead of calling the OOM killer onto a shared machine.  Mutants listed in
tests/mutation-equivalent.md (with the argument why nothing observable changes) are
counted as equivalent and not run.

At start-up every snippet is checked against the snapshot: a mutant whose snippet no
longer occurs exactly once (others edit src/ all the time), or whose mutated file does
not compile, is reported as stale and not run.  Before the mutants, each copy is
checked to be what the tests import (a deliberately broken pinlab must fail them) and,
unless --no-baseline or the cache has it, the covering tests run once on the unmutated
snapshot, split over the workers: a test that fails there (the tree is being edited) is
left out of every mutant's run, and named.

    .venv/bin/python bench/mutation.py --list
    .venv/bin/python bench/mutation.py --workers 1 --only pin_bias_compare_off_by_one
    .venv/bin/python bench/mutation.py --only cow_fault_copy_without_data \
        --tests tests/kernel/test_cow_data.py          # does this new test kill it?
    .venv/bin/python bench/mutation.py            # every mutant, one worker per CPU

The last line is one JSON object: mutants (validated, equivalent included), killed,
equivalent, survived, kill_rate = killed / (mutants - equivalent), seconds, survivors,
stale (the mutants left out because their snippet no longer applies) and interrupted:
Ctrl-C stops the run and reports the mutants judged so far (exit status 130).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mutation_cover import (
    CoverMap,
    cached,
    coverage_args,
    install_plugin,
    not_found,
    read_runs,
    select,
    snippet_lines,
    store,
    tree_key,
)

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT_MD = ROOT / "tests" / "mutation-equivalent.md"
# pytest-timeout's per-test limit is this share of --timeout; a run's own limit is
# --timeout plus that, so a hang late in a run still meets the test's limit first
PER_TEST_SHARE = 0.5
SELF_CHECK_MARK = "pinlab-mutation-self-check"
BASELINE_TIMEOUT = 4 * 3600.0

# ---------------------------------------------------------------------------------------
# Covering tests.  Nearly every kernel test drives the whole model through process.py,
# so a kernel mutant lists the tests of its own area first, then the rest of the fast
# kernel tests, then the harness (kernel threads under the explorer, checked
# footprints) and the traces.  Left out for time: tests/kernel/test_frames.py (80 s,
# restores frames; never judges kernel behaviour), tests/explore/test_kernel_threads.py
# (210 s, compares search modes over the same model; only its restored-as-replayed test
# runs, for the snapshot code), and the tests that boot the real kernel
# (tests/realkernel/test_boot.py, test_model_check.py).
K = "tests/kernel/"
RK = "tests/realkernel/"
EX = "tests/explore/"


def _test_files(folder: str, pattern: str = "test_*.py", leave: tuple[str, ...] = ()) -> list[str]:
    """The test files of ``folder`` matching ``pattern`` but ``leave``: a new test file
    covers mutants at once, no list to keep by hand."""
    return sorted(f"{folder}{p.name}" for p in (ROOT / folder).glob(pattern) if p.name not in leave)


KERNEL_FAST = (
    *_test_files(K, leave=("test_frames.py",)),
    *_test_files("tests/scenarios/", "test_races_*.py"),
    *_test_files("tests/designs/"),
    RK + "test_model_paths.py",
    RK + "test_model_probes.py",
    RK + "test_model_thread.py",
    RK + "test_evaluator.py",
)
RACES = "tests/scenarios/test_races.py"  # searched races each protecting step is there for
KERNEL_SLOW = (RACES, "tests/scenarios/test_harness.py", K + "test_trace.py")
EXPLORE_FAST = (
    "tests/test_interleave.py",
    "tests/anchors/test_anchors.py",
    *_test_files(EX, leave=("test_kernel_threads.py",)),
)
EXPLORE_SLOW = ("tests/scenarios/test_harness.py", "tests/anchors/test_spin.py")


def _ordered(first: Iterable[str], rest: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for path in (*first, *rest):
        if path not in out:
            out.append(path)
    return tuple(out)


def kernel(*first: str) -> tuple[str, ...]:
    """Kernel-model tests: ``first`` (file names under tests/kernel/, or paths from tests/),
    then the rest."""
    paths = (f if f.startswith("tests/") else K + f for f in first)
    return _ordered(paths, (*KERNEL_FAST, *KERNEL_SLOW))


def explorer(*first: str) -> tuple[str, ...]:
    """Explorer tests: ``first`` (paths under tests/), then the rest."""
    return _ordered(("tests/" + f for f in first), (*EXPLORE_FAST, *EXPLORE_SLOW))


PIN = kernel(
    "test_pincount.py",
    "test_grab_edges.py",
    "test_overflow.py",
    "test_gup.py",
    "test_gup_fast.py",
    "test_vmstat.py",
)
FAST = kernel(
    RACES, "test_gup_fast.py", "test_range_equivalence.py", "test_gup.py", "test_vmstat.py"
)
SLOW = kernel("test_gup.py", "test_gup_hooks.py", "test_overflow.py", "test_range_equivalence.py")
FAULT = kernel("test_fault.py", "test_mmap.py", "test_fork.py", "test_filemap.py")
COW = kernel("test_fork.py", "test_fault.py", "test_mmap.py", "test_gup.py")
FORK = kernel("test_fork.py", "test_state_digest.py", "test_gup.py")
THP = kernel("test_fault.py", "test_mmap.py", "test_fork.py", "test_gup.py", "test_vmstat.py")
LONGTERM = kernel("test_gup.py", "test_gup_fast.py", "test_vmstat.py", "test_gup_hooks.py")
WB = kernel(RACES, "test_filemap.py", "test_dirty_folio.py", "test_process.py")
TRUNC = kernel(RACES, "test_truncate_cleanup.py", "test_filemap.py", "test_invariants.py")
DESIGN_TESTS = kernel(
    "tests/designs/test_dma_pinned_flag.py",
    "tests/designs/test_verdicts.py",
    "test_hooks_neutral.py",
)
SEARCH = explorer("explore/test_classics.py", "explore/test_reduction.py", "explore/test_state.py")
# breadth-first search of state machines on arrays
LEVELS = tuple(
    "tests/" + f
    for f in (
        "explore/test_levels.py",
        "explore/test_arrays_bounds.py",
        "explore/test_outcomes.py",
        "anchors/test_anchors.py",
        "explore/test_crosscheck.py",
        "explore/test_classics.py",
        "explore/test_inputs.py",
        "explore/test_state.py",
        "anchors/test_spin.py",
    )
)
# random walk and PCT: only these use them
WALK = tuple(
    EX + f
    for f in (
        "test_pct_shrink_freeze.py",
        "test_inputs.py",
        "test_outcomes.py",
        "test_reduction.py",
    )
)
# generator threads over a world (WorldProgram): not the state-machine-only tests
WORLD_TESTS = (
    "tests/test_interleave.py",
    EX + "test_state.py",
    EX + "test_classics.py",
    EX + "test_outcomes.py",
    EX + "test_fingerprint.py",
    EX + "test_crosscheck.py",
    EX + "test_reduction.py",
    EX + "test_resume.py",
    "tests/scenarios/test_harness.py",
)
CANON = _ordered(
    (EX + "test_state.py", EX + "test_reduction.py", EX + "test_pct_shrink_freeze.py"), WORLD_TESTS
)
# kernel threads restored from snapshots against replayed (a pinned page array is a NumPy
# view that a restored gup must still write through): the one part of the 210 s file
RESUME = _ordered(
    (EX + "test_resume.py", EX + "test_classics.py"),
    (*WORLD_TESTS, EX + "test_kernel_threads.py::test_fault_thread_restored_as_replayed"),
)
REPLAY = explorer("explore/test_inputs.py", "explore/test_outcomes.py", "explore/test_classics.py")[
    : len(EXPLORE_FAST)
]


@dataclass(frozen=True, slots=True)
class Mutant:
    """One change: in src/pinlab/``file``, the one occurrence of ``find`` becomes ``replace``."""

    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]

    @property
    def path(self) -> str:
        return "src/pinlab/" + self.file


MM = "kernel/mm/"
EXP = "explore/"

MUTANTS: tuple[Mutant, ...] = (
    # --- page_ref.py: reference-count arithmetic --------------------------------------
    Mutant("page_ref_add_unless_inverted", MM + "page_ref.py",
           "if int(m.refcount[page]) == unless:", "if int(m.refcount[page]) != unless:", PIN),
    Mutant("page_ref_wrap_wrong_modulus", MM + "page_ref.py",
           "return (value + 2**31) % 2**32 - 2**31", "return (value + 2**31) % 2**31 - 2**31",
           PIN),
    Mutant("page_ref_free_on_underflow", MM + "page_ref.py",
           "if value == 0:\n        free_folio(k, folio)",
           "if value <= 0:\n        free_folio(k, folio)", PIN),
    Mutant("page_ref_underflow_not_reported", MM + "page_ref.py",
           'warn_on_once(k, "page_ref underflow")', "pass", PIN),
    Mutant("get_page_on_tail_page", MM + "page_ref.py",
           "folio_get(k, compound_head(k.mem, page))", "folio_get(k, page)", PIN),
    Mutant("put_page_on_tail_page", MM + "page_ref.py",
           "    folio_put(k, head)\n", "    folio_put(k, page)\n", PIN),
    Mutant("folio_put_refs_drops_one", MM + "page_ref.py",
           "value = page_ref_sub_return(k.mem, folio, refs)",
           "value = page_ref_sub_return(k.mem, folio, 1)", PIN),
    # --- pincount.py: where pins are counted, "maybe DMA-pinned?" ---------------------
    Mutant("exact_pincount_compare_ge_zero", MM + "pincount.py",
           "return folio_pincount(k, folio) > 0", "return folio_pincount(k, folio) >= 0", PIN),
    Mutant("pin_bias_compare_off_by_one", MM + "pincount.py",
           ">= k.profile.pin_bias", "> k.profile.pin_bias", PIN),
    Mutant("pin_bias_signed_compare", MM + "pincount.py",
           "(int(k.mem.refcount[folio]) & 0xFFFF_FFFF)", "int(k.mem.refcount[folio])", PIN),
    Mutant("pincount_read_from_page1", MM + "pincount.py",
           "return int(k.mem.pincount[folio + k.profile.pincount_page])",
           "return int(k.mem.pincount[folio + 1])", PIN),
    Mutant("needs_cow_ignores_mmf_has_pinned", MM + "pincount.py",
           "if not mm_has_pinned(mm):\n        return False", "pass", PIN),
    Mutant("page_maybe_pinned_on_tail_page", MM + "pincount.py",
           "return _maybe_pinned(k, compound_head(k.mem, page))",
           "return _maybe_pinned(k, page)", PIN),
    Mutant("exact_pincount_order_off_by_one", MM + "pincount.py",
           "k.profile.exact_pincount(folio_order(k.mem, folio))",
           "k.profile.exact_pincount(folio_order(k.mem, folio) + 1)", PIN),
    Mutant("mmf_has_pinned_wrong_bit", MM + "pincount.py",
           "return bool(mm.flags >> MMF_HAS_PINNED & 1)",
           "return bool(mm.flags >> (MMF_HAS_PINNED + 1) & 1)", PIN),
    # --- gup_grab.py: taking and dropping gup references and pins ---------------------
    Mutant("try_get_folio_split_recheck_dropped", MM + "gup_grab.py",
           "if compound_head(m, page) == folio:\n            return folio", "return folio", PIN),
    Mutant("try_get_folio_adds_one_ref", MM + "gup_grab.py",
           "page_ref_add_unless(m, folio, refs, 0)", "page_ref_add_unless(m, folio, 1, 0)", PIN),
    Mutant("pin_bias_keeps_the_get_ref", MM + "gup_grab.py",
           "if not design:\n            page_ref_add(m, folio, refs * (k.profile.pin_bias - 1))",
           "if not design:\n            page_ref_add(m, folio, refs * k.profile.pin_bias)", PIN),
    Mutant("pin_exact_adds_one", MM + "gup_grab.py",
           "if not design:\n            m.pincount[folio + k.profile.pincount_page] += refs",
           "if not design:\n            m.pincount[folio + k.profile.pincount_page] += 1",
           PIN),
    Mutant("vmstat_pin_acquired_missing", MM + "gup_grab.py",
           "yield from node_stat_mod_folio(k, NR_FOLL_PIN_ACQUIRED, refs)",
           'yield Point("vmstat")', PIN),
    Mutant("vmstat_pin_acquired_per_folio", MM + "gup_grab.py",
           "yield from node_stat_mod_folio(k, NR_FOLL_PIN_ACQUIRED, refs)",
           "yield from node_stat_mod_folio(k, NR_FOLL_PIN_ACQUIRED, 1)", PIN),
    Mutant("vmstat_counted_without_profile_counters", MM + "gup_grab.py",
           "if k.profile.vmstat_foll_pin:\n        yield", "if True:\n        yield", PIN),
    Mutant("grab_folio_longterm_check_dropped", MM + "gup_grab.py",
           "may not stay here: the slow path migrates it\n"
           "        if flags & FOLL_LONGTERM and not is_longterm_pinnable_page(k, page):",
           "may not stay here: the slow path migrates it\n        if False:", PIN),
    Mutant("grab_page_zero_page_pinned", MM + "gup_grab.py",
           "if k.profile.zero_page_pin_noop and is_zero_page(k, page):\n            return True",
           "pass", PIN),
    Mutant("grab_page_refcount_guard_lt", MM + "gup_grab.py",
           "if int(m.refcount[folio]) <= 0:", "if int(m.refcount[folio]) < 0:", PIN),
    Mutant("grab_page_get_on_tail_page", MM + "gup_grab.py",
           '# :228 folio_ref_inc\n        yield Point("try_grab_page:get", writes=ref_key(folio))\n'
           "        page_ref_add(m, folio, 1)",
           '# :228 folio_ref_inc\n        yield Point("try_grab_page:get", writes=ref_key(folio))\n'
           "        page_ref_add(m, page, 1)", PIN),
    Mutant("unpin_exact_drops_one_pincount", MM + "gup_put.py",
           "else:\n                m.pincount[folio + k.profile.pincount_page] -= refs",
           "else:\n                m.pincount[folio + k.profile.pincount_page] -= 1",
           PIN),
    Mutant("unpin_bias_missing", MM + "gup_put.py",
           "            # :194\n            refs *= k.profile.pin_bias",
           "            # :194\n            pass", PIN),
    Mutant("vmstat_pin_released_missing", MM + "gup_put.py",
           "yield from node_stat_mod_folio(k, NR_FOLL_PIN_RELEASED, refs)",
           'yield Point("vmstat")', PIN),
    Mutant("unpin_zero_page_not_noop", MM + "gup_put.py",
           "if k.profile.zero_page_pin_noop and is_zero_page(k, folio):\n            return",
           "pass", PIN),
    Mutant("unpin_v5_7_exact_drops_bias", MM + "gup_put.py",
           "folio_put_refs(k, folio, 1 if exact or design else k.profile.pin_bias)",
           "folio_put_refs(k, folio, k.profile.pin_bias)", PIN),
    Mutant("longterm_movable_ignores_profile", MM + "gup_grab.py",
           'return not (pool == "movable" and k.profile.longterm_migrates_movable)',
           'return not pool == "movable"', PIN),
    # --- gup_fast.py: the lockless walk --------------------------------------------------
    Mutant("fast_pte_recheck_dropped", MM + "gup_fast_walk.py",
           "or int(table[idx]) != pte", "or False", FAST),
    Mutant("fast_pte_table_recheck_dropped", MM + "gup_fast_walk.py",
           "mm.pgtable.pte.get(slot) is not table", "False", FAST),
    Mutant("fast_unshare_recheck_dropped", MM + "gup_fast_walk.py",
           "or (not pte_write(pte) and gup_must_unshare(k, flags, page, fast=True))",
           "or False", FAST),
    Mutant("fast_write_access_unchecked", MM + "gup_fast_walk.py",
           "need = _PAGE_PRESENT | _PAGE_USER | (_PAGE_RW if write else 0)",
           "need = _PAGE_PRESENT | _PAGE_USER", FAST),
    Mutant("fast_access_any_bit", MM + "gup_fast_walk.py",
           "return entry & need == need", "return entry & need != 0", FAST),
    Mutant("fast_protnone_force_inverted", MM + "gup_fast_walk.py",
           "if pte_protnone(pte) and not flags & FOLL_FORCE:",
           "if pte_protnone(pte) and flags & FOLL_FORCE:", FAST),
    Mutant("fast_special_pte_grabbed", MM + "gup_fast_walk.py",
           "elif pte_special(pte):\n            return False", "pass", FAST),
    Mutant("fast_huge_recheck_dropped", MM + "gup_fast_walk.py",
           "table.get(slot, 0) != orig\n        or not", "False\n        or not", FAST),
    Mutant("fast_huge_refs_off_by_one", MM + "gup_fast_walk.py",
           "refs = (end - addr) >> PAGE_SHIFT", "refs = ((end - addr) >> PAGE_SHIFT) - 1", FAST),
    Mutant("fast_huge_nr_advances_one", MM + "gup_fast_walk.py",
           "w.nr += refs", "w.nr += 1", FAST),
    Mutant("fast_addr_end_unaligned", MM + "pgtable.py",
           "boundary = ((addr + size) & ~(size - 1)) & u64", "boundary = (addr + size) & u64",
           FAST),
    Mutant("fast_addr_end_le", MM + "pgtable.py",
           "(boundary - 1) & u64 < (end - 1) & u64", "(boundary - 1) & u64 <= (end - 1) & u64",
           FAST),
    Mutant("fast_odd_seqcount_ignored", MM + "gup_fast_walk.py",
           "if seq & 1:\n            return 0", "pass", FAST),
    Mutant("fast_seqcount_on_foll_get", MM + "gup_fast_walk.py",
           "pin = bool(flags & FOLL_PIN) and k.profile.write_protect_seq",
           "pin = bool(flags & FOLL_GET) and k.profile.write_protect_seq", FAST),
    Mutant("fast_unpin_lockless_run_overshoots", MM + "gup_fast_walk.py",
           "while i + nr < npages and", "while i + nr <= npages and", FAST),
    Mutant("fast_only_falls_to_slow_path", MM + "gup_fast.py",
           "if nr_pinned == nr or gup_flags & FOLL_FAST_ONLY:", "if nr_pinned == nr:", FAST),
    Mutant("fast_partial_error_loses_count", MM + "gup_fast.py",
           "return nr_pinned if nr_pinned else ret", "return ret", FAST),
    Mutant("fast_access_ok_off_by_one", MM + "gup_fast.py",
           "start <= TASK_SIZE_MAX - length", "start < TASK_SIZE_MAX - length", FAST),
    Mutant("fast_start_not_page_aligned", MM + "gup_fast.py",
           "start &= ~(PAGE_SIZE - 1) & U64", "start &= U64", FAST),
    Mutant("fast_mmf_has_pinned_not_set", MM + "gup_fast.py",
           "    if gup_flags & FOLL_PIN:\n        yield from mm_set_has_pinned_flag(k, mm)\n",
           "", FAST),
    Mutant("fast_referenced_not_set", MM + "gup_fast_walk.py",
           "yield from folio_set_referenced(k, folio)\n        _store(",
           "_store(", FAST),
    Mutant("fast_store_bound_off_by_one", MM + "gup_fast_walk.py",
           "if at >= w.pages.shape[0]:", "if at > w.pages.shape[0]:", FAST),
    Mutant("fast_pte_walk_end_ge", MM + "gup_fast_walk.py",
           "if addr == end:\n            return True", "if addr >= end:\n            return True",
           FAST),
    # --- gup_fast_range.py / gup_range.py: the whole-range steps ------------------------
    Mutant("fast_range_for_empty_range", MM + "gup_fast_range.py",
           "and end > start", "and end >= start", FAST),
    Mutant("fast_range_protnone_unchecked", MM + "gup_fast_range.py",
           "before |= protnone", "pass", FAST),
    Mutant("fast_range_zero_refcount_grabbed", MM + "gup_fast_range.py",
           "if (ref0 <= 0).any()", "if (ref0 < 0).any()", FAST),
    Mutant("fast_range_churn_release_uncounted", MM + "gup_fast_range.py",
           "mod_node_page_state(k.vmstat, NR_FOLL_PIN_RELEASED, int(refs[got]))", "pass", FAST),
    Mutant("fast_range_churn_acquire_uncounted", MM + "gup_fast_range.py",
           "tried = got + 1 if churn else got", "tried = got", FAST),
    Mutant("fast_range_special_grabbed", MM + "gup_fast_range.py",
           "before |= is_pte & ~devmap & ((vals & np.uint64(_PAGE_SPECIAL)) != 0)", "pass",
           FAST),
    Mutant("fast_range_write_unchecked", MM + "gup_fast_range.py",
           "(_PAGE_RW if write else 0)", "0", FAST),
    Mutant("range_used_with_foll_touch", MM + "gup_range.py",
           "if flags & FOLL_TOUCH:\n        return False", "pass", SLOW),
    Mutant("range_refcount_guard_off_by_one", MM + "gup_range.py",
           "(INT_MAX - ref0) // delta + 1, 0)", "(INT_MAX - ref0) // delta, 0)", SLOW),
    Mutant("range_vmstat_acquired_missing", MM + "gup_range.py",
           "mod_node_page_state(k.vmstat, NR_FOLL_PIN_ACQUIRED, int(fcnt.sum()))", "pass", SLOW),
    Mutant("range_unpin_never_frees", MM + "gup_range.py",
           "for folio in folios[final == 0].tolist():\n        free_folio(k, folio)", "pass",
           SLOW),
    Mutant("range_unshare_of_exclusive", MM + "gup_range.py",
           "result: NDArray[np.bool_] = anon & ~excl", "result: NDArray[np.bool_] = anon & excl",
           SLOW),
    # --- gup_follow.py: the slow path --------------------------------------------------
    Mutant("vma_io_pfnmap_allowed", MM + "gup_follow.py",
           "if vm_flags & (VM_IO | VM_PFNMAP):\n        return -errno.EFAULT", "pass", SLOW),
    Mutant("force_write_to_shared_readonly", MM + "gup_follow.py",
           "if not is_cow_mapping(vm_flags):\n                return -errno.EFAULT", "pass",
           SLOW),
    Mutant("read_of_unreadable_vma_allowed", MM + "gup_follow.py",
           "elif not vm_flags & VM_READ:", "elif False:", SLOW),
    Mutant("force_write_hugetlb_check_inverted", MM + "gup_follow.py",
           "hugetlb_force_write_refused and is_vm_hugetlb_page(vma)",
           "hugetlb_force_write_refused and not is_vm_hugetlb_page(vma)", SLOW),
    Mutant("fsdax_longterm_check_inverted", MM + "gup_follow.py",
           "if longterm_dax and not k.profile.fsdax_check_after_pin:",
           "if longterm_dax and k.profile.fsdax_check_after_pin:", SLOW),
    Mutant("longterm_file_write_allowed", MM + "gup_follow.py",
           "return not vma_needs_dirty_tracking(k, vma)", "return True", SLOW),
    Mutant("unshare_hugetlb_checks_subpage", MM + "gup_page.py",
           "if head != page and int(k.mem.dtor[head + 1]) == HUGETLB_PAGE_DTOR:",
           "if False:", SLOW),
    Mutant("force_write_through_shared_mapping", MM + "gup_page.py",
           "if vma.vm_flags & (VM_MAYSHARE | VM_SHARED):\n        return False", "pass", SLOW),
    Mutant("dirty_cow_foll_cow_without_dirty", MM + "gup_page.py",
           "FOLL_FORCE | FOLL_COW and pte_dirty(entry)", "FOLL_FORCE | FOLL_COW", SLOW),
    Mutant("force_write_without_exclusive", MM + "gup_page.py",
           "compound_head(k.mem, page)) and page_anon_exclusive(k, page)",
           "compound_head(k.mem, page))", SLOW),
    Mutant("follow_pte_unshare_dropped", MM + "gup_follow.py",
           "if not pte_write(pte) and gup_must_unshare(k, flags, page, vma):\n"
           "            return -errno.EMLINK",
           "pass", SLOW),
    Mutant("follow_pte_touch_dirty_dropped", MM + "gup_follow.py",
           "                yield from folio_mark_dirty(k, folio)\n",
           "                pass\n", SLOW),
    Mutant("follow_pte_special_pfn_returned", MM + "gup_follow.py",
           "if pfn != k.zero_pfn:\n                return -errno.EEXIST", "pass", SLOW),
    Mutant("follow_pte_grab_failure_ignored", MM + "gup_follow.py",
           "if not (yield from try_grab_page(k, page, flags)):",
           "if not (yield from try_grab_page(k, page, flags)) and False:", SLOW),
    Mutant("follow_thp_returns_head", MM + "huge_memory.py",
           "page = head + ((address >> PAGE_SHIFT) & ((1 << HPAGE_PMD_ORDER) - 1))",
           "page = head", SLOW),
    Mutant("follow_thp_unshare_dropped", MM + "huge_memory.py",
           "if not pte_write(pmd) and gup_must_unshare(k, flags, head, vma):", "if False:", SLOW),
    Mutant("follow_pmd_recheck_under_lock_dropped", MM + "gup_follow.py",
           "if not pmd_trans_huge(mm.pgtable.pmd.get(slot, 0)):", "if False:", SLOW),
    Mutant("faultin_unshare_flag_dropped", MM + "gup_follow.py",
           "    if unshare:\n        fault_flags |= FAULT_FLAG_UNSHARE\n", "", SLOW),
    Mutant("vm_fault_oom_is_efault", MM + "gup_page.py",
           "if vm_fault & VM_FAULT_OOM:\n        return -errno.ENOMEM",
           "if vm_fault & VM_FAULT_OOM:\n        return -errno.EFAULT", SLOW),
    Mutant("hugetlb_refs_ignore_offset", MM + "hugetlb.py",
           "refs = min(nr - pfn_offset, remainder,", "refs = min(nr, remainder,", SLOW),
    Mutant("gup_stale_vma_at_vm_end", MM + "gup_follow.py",
           "if vma is None or start >= vma.vm_end:", "if vma is None or start > vma.vm_end:",
           SLOW),
    Mutant("gup_page_increm_unbounded", MM + "gup_follow.py",
           "page_increm = min(1 + (~(start >> PAGE_SHIFT) & page_mask), nr_pages)",
           "page_increm = 1 + (~(start >> PAGE_SHIFT) & page_mask)", SLOW),
    Mutant("gup_store_bound_off_by_one", MM + "gup_page.py",
           "if at + n > pages.shape[0]:", "if at + n >= pages.shape[0]:", SLOW),
    Mutant("gup_range_fits_strict", MM + "gup_ranged.py",
           "return nr_pages <= int(pages.shape[0]) - at",
           "return nr_pages < int(pages.shape[0]) - at", SLOW),
    # --- gup.py: entry points, long-term pins, unpinning ----------------------------------
    Mutant("mmf_has_pinned_set_as_value", MM + "gup.py",
           "mm.flags |= 1 << MMF_HAS_PINNED", "mm.flags |= MMF_HAS_PINNED", SLOW),
    Mutant("gup_without_foll_get", MM + "gup.py",
           "if pages is not None and not flags & FOLL_PIN:\n        flags |= FOLL_GET", "pass",
           SLOW),
    Mutant("slow_mmf_has_pinned_not_set", MM + "gup.py",
           "        yield from mm_set_has_pinned_flag(k, mm)\n", "        pass\n", SLOW),
    Mutant("longterm_no_retry_after_migration", MM + "gup.py",
           "if rc != -errno.EAGAIN:\n            return rc if rc else nr_pinned",
           "return rc if rc else nr_pinned", LONGTERM),
    Mutant("fsdax_v5_7_pins_leaked", MM + "gup.py",
           "yield from release_longterm_pages(k, pages, nr_pinned, gup_flags)\n"
           "            return -errno.EOPNOTSUPP",
           "return -errno.EOPNOTSUPP", SLOW),
    Mutant("pin_unlocked_takes_refs", MM + "gup.py",
           "flags = gup_flags | FOLL_PIN | FOLL_TOUCH", "flags = gup_flags | FOLL_TOUCH", SLOW),
    Mutant("gup_locked_retry_unlock_dropped", MM + "gup.py",
           "if lock_dropped and locked.held:\n        mmap_read_unlock(k, mm)",
           "if lock_dropped and locked.held:\n        pass", SLOW),
    Mutant("unpin_errno_count_goes_on", MM + "gup_unpin.py",
           'warn_on(k, "mm/gup.c unpin_user_pages IS_ERR_VALUE(npages)")\n        return',
           'warn_on(k, "mm/gup.c unpin_user_pages IS_ERR_VALUE(npages)")', SLOW),
    Mutant("unpin_dirty_without_folio_lock", MM + "gup_unpin.py",
           "yield from folio_lock(k, folio)\n            yield from folio_mark_dirty(k, folio)\n"
           "            folio_unlock(k, folio)",
           "yield from folio_mark_dirty(k, folio)", SLOW),
    Mutant("unpin_range_ignores_subpage_offset", MM + "gup_unpin.py",
           "folio_nr_pages(k.mem, folio) - (nxt - folio))", "folio_nr_pages(k.mem, folio))",
           SLOW),
    Mutant("gup_without_foll_touch", MM + "gup.py",
           "flags = gup_flags | FOLL_TOUCH\n    return", "flags = gup_flags\n    return", SLOW),
    # --- memory.py: faults -----------------------------------------------------------------
    Mutant("pte_fault_recheck_dropped", MM + "memory.py",
           "if entry != orig:\n        pte_unlock(k, mm, address)\n        return 0",
           "if False:\n        return 0", FAULT),
    Mutant("write_fault_pte_not_dirtied", MM + "memory.py",
           "if flags & FAULT_FLAG_WRITE:\n            entry |= _PAGE_DIRTY", "pass", FAULT),
    Mutant("zero_page_install_recheck_dropped", MM + "memory.py",
           "if read_pte(mm.pgtable, address) == 0:\n            set_pte_at(",
           "if True:\n            set_pte_at(", FAULT),
    Mutant("anon_fault_race_leaks_page", MM + "memory.py",
           "        pte_unlock(k, mm, address)\n        put_page(k, page)\n        return 0\n"
           "    page_add_new_anon_rmap",
           "        pte_unlock(k, mm, address)\n        return 0\n    page_add_new_anon_rmap",
           FAULT),
    Mutant("page_referenced_44_walks_every_vma", MM + "rmap_4_4.py",
           "        if not mapcount:\n            break\n", "", kernel("test_reclaim_44.py")),
    Mutant("reclaim_44_truncated_put_ignores_new_ref", MM + "vmscan.py",
           "        if value == 0:\n            free_folio(k, page)\n        return True",
           "        free_folio(k, page)\n        return True", kernel("test_reclaim_44.py")),
    # --- design hooks (kernel/hooks.py): where a design's tracking and response plug in --------
    Mutant("unmap_refused_ignored", MM + "rmap_4_4.py",
           "            ret = SWAP_FAIL\n            break\n        yield from pte_lock",
           "            pass\n        yield from pte_lock", DESIGN_TESTS),
    Mutant("gup_fast_44_marks_nothing", "kernel/arch/x86/mm/gup.py",
           "        yield from gup_returned_hook(k, pages, nr)\n", "", DESIGN_TESTS),
    Mutant("gup_marks_one_page_short", MM + "gup_page.py",
           "    for j in range(nr):\n        yield \"gup_returned\"",
           "    for j in range(nr - 1):\n        yield \"gup_returned\"", DESIGN_TESTS),
    Mutant("page_ext_outlives_the_page", MM + "page_alloc.py",
           "            k.page_ext.pop(page, None)\n", "            pass\n", DESIGN_TESTS),
    Mutant("handle_pte_fault_huge_pmd_not_retried", MM + "memory.py",
           "and pmd_trans_huge(get_pmd(mm.pgtable, address)):", "and False:", FAULT),
    Mutant("pte_alloc_unstable_check_dropped", MM + "pte_alloc.py",
           "return not pmd_trans_unstable(k, mm, address)", "return True", FAULT),
    Mutant("pte_alloc_populates_over_a_huge_pmd", MM + "pte_alloc.py",
           "        if pmd_none(mm.pgtable, address):\n            mm.pgtable.pte[slot]",
           "        if True:\n            mm.pgtable.pte[slot]", FAULT),
    Mutant("anon_fault_lru_add_dropped", MM + "memory.py",
           "    yield from folio_add_lru_vma(k, page, vma, cpu)\n    set_pte_at(",
           "    set_pte_at(", FAULT),
    Mutant("zero_pfn_is_normal_page", MM + "memory.py",
           "if is_zero_pfn(k, pfn):\n        return None", "pass", FAULT),
    Mutant("private_writable_mapped_rw", MM + "memory.py",
           "if vm_flags & (VM_SHARED | VM_WRITE) == VM_SHARED | VM_WRITE:",
           "if vm_flags & VM_WRITE:", FAULT),
    Mutant("writenotify_vma_mapped_rw", MM + "memory.py",
           "        flags &= ~VM_SHARED\n", "        pass\n", FAULT),
    Mutant("private_file_write_to_page_cache", MM + "memory.py",
           "if not vma.vm_flags & VM_SHARED:\n        return (yield from do_cow_fault(",
           "if False:\n        return (yield from do_cow_fault(", FAULT),
    Mutant("cow_fault_copy_without_data", MM + "memory.py",
           "k.mem.data[cow_page] = k.mem.data[page]", "pass", FAULT),
    Mutant("finish_fault_recheck_dropped", MM + "memory.py",
           "if read_pte(mm.pgtable, address) != 0:\n        pte_unlock(k, mm, address)\n"
           "        return VM_FAULT_NOPAGE",
           "if False:\n        return VM_FAULT_NOPAGE", FAULT),
    Mutant("fault_around_dropped", MM + "memory.py",
           "if should_fault_around(k, vma):", "if False:", FAULT),
    Mutant("fault_around_past_vma_end", MM + "memory.py",
           "vma_pages + vma.vm_pgoff - 1,", "vma_pages + vma.vm_pgoff,", FAULT),
    Mutant("maybe_mkwrite_always", MM + "memory.py",
           "return pte | _PAGE_RW if vma.vm_flags & VM_WRITE else pte", "return pte | _PAGE_RW",
           FAULT),
    Mutant("shared_write_fault_rmapped_anon", MM + "memory.py",
           "if write and not vma.vm_flags & VM_SHARED:\n        page_add_new_anon_rmap",
           "if write:\n        page_add_new_anon_rmap", FAULT),
    # --- cow.py: write-protect faults --------------------------------------------------------
    Mutant("wp_reuse_early_threshold_1", MM + "cow.py",
           "if _ref(k, folio) > 3:", "if _ref(k, folio) > 1:", COW),
    Mutant("wp_reuse_with_extra_ref", MM + "cow.py",
           "if _ref(k, folio) > 1:\n        return False",
           "if _ref(k, folio) > 2:\n        return False", COW),
    Mutant("wp_reuse_final_check_lenient", MM + "cow.py",
           "reuse = _ref(k, folio) == 1", "reuse = _ref(k, folio) <= 2", COW),
    Mutant("wp_anon_exclusive_not_reused", MM + "cow.py",
           "if PageAnonExclusive(k, page):\n            return True", "pass", COW),
    Mutant("wp_copy_recheck_dropped", MM + "cow.py",
           "if get_pte(mm.pgtable, address) == orig:", "if True:", COW),
    Mutant("wp_copy_without_data", MM + "cow.py",
           "k.mem.data[new_page] = k.mem.data[old_page]", "pass", COW),
    Mutant("wp_copy_old_rmap_kept", MM + "cow.py",
           "page_remove_rmap(k, old_page, vma, False)", "pass", COW),
    Mutant("wp_unshare_maps_writable", MM + "cow.py",
           "if not unshare:\n            entry = maybe_mkwrite(",
           "if True:\n            entry = maybe_mkwrite(", COW),
    Mutant("reuse_swap_page_mapcount_off_by_one", MM + "cow.py",
           "count = int(m.mapcount[page]) + 1\n        return count <= 1, count",
           "count = int(m.mapcount[page]) + 1\n        return count <= 2, count", COW),
    Mutant("wp_shared_reuse_without_folio_lock", MM + "cow.py",
           "wp_page_reuse(k, mm, vma, address, orig)\n        yield from folio_lock(k, folio)",
           "wp_page_reuse(k, mm, vma, address, orig)", COW),
    Mutant("mkwrite_finish_recheck_dropped", MM + "cow.py",
           "if get_pte(mm.pgtable, address) != orig:\n        pte_unlock(k, mm, address)\n"
           "        return VM_FAULT_NOPAGE",
           "if False:\n        return VM_FAULT_NOPAGE", COW),
    Mutant("wp_reuse_mapcount_rmap_not_moved", MM + "cow.py",
           "if reusable and total == 1:\n        page_move_anon_rmap(k, page, vma)", "pass", COW),
    # --- fork_copy.py: fork's page-table copy ---------------------------------------------
    Mutant("fork_copy_ignores_mmf_has_pinned", MM + "fork_copy.py",
           "if not mm_has_pinned(src_mm):\n        return False", "pass", FORK),
    Mutant("fork_copies_non_exclusive_page", MM + "fork_copy.py",
           "if not PageAnonExclusive(k, page):", "if False:", FORK),
    Mutant("fork_keeps_anon_exclusive", MM + "fork_copy.py",
           "ClearPageAnonExclusive(k, page)\n", "pass\n", FORK),
    Mutant("fork_early_copy_leaks_ref", MM + "fork_copy.py",
           "put_page(k, page)\n                return (yield from copy_present_page(",
           "return (yield from copy_present_page(", FORK),
    Mutant("fork_parent_pte_not_wrprotected", MM + "fork_copy.py",
           "set_pte_at(src.pgtable, addr, pte)\n    return pte", "return pte", FORK),
    Mutant("fork_shared_pte_not_cleaned", MM + "fork_copy.py",
           "if src_vma.vm_flags & VM_SHARED:\n        pte = pte_mkclean(pte)", "pass", FORK),
    Mutant("fork_child_huge_pmd_writable", MM + "fork_copy.py",
           "dst.pgtable.pmd[slot] = pte_mkold(pte_wrprotect(pmd))",
           "dst.pgtable.pmd[slot] = pte_mkold(pmd)", FORK),
    Mutant("fork_pinned_thp_not_split", MM + "fork_copy.py",
           "            yield from split_huge_pmd(k, src, src_vma, haddr)\n", "", FORK),
    Mutant("fork_write_protect_seq_not_written", MM + "fork_copy.py",
           "seq = is_cow_mapping(src_vma.vm_flags) and k.profile.write_protect_seq",
           "seq = False", FORK),
    Mutant("fork_write_protect_seq_never_odd", MM + "fork_copy.py",
           "mm.write_protect_seq += 1", "mm.write_protect_seq += 2", FORK),
    Mutant("fork_prealloc_leaked", MM + "fork_copy.py",
           "    if prealloc:\n        put_page(k, prealloc.pop())\n    return 0",
           "    return 0", FORK),
    # --- huge_memory.py: THP ---------------------------------------------------------------
    Mutant("thp_madvise_policy_inverted", MM + "huge_memory.py",
           'k.thp_enabled == "madvise" and not vma.vm_flags & VM_HUGEPAGE',
           'k.thp_enabled == "madvise" and vma.vm_flags & VM_HUGEPAGE', THP),
    Mutant("thp_suitable_off_by_one", MM + "huge_memory.py",
           "haddr + PMD_SIZE <= vma.vm_end", "haddr + PMD_SIZE < vma.vm_end", THP),
    Mutant("thp_fault_race_leaks_page", MM + "huge_memory.py",
           "pte_unlock(k, mm, haddr)\n        put_page(k, page)\n        return 0",
           "pte_unlock(k, mm, haddr)\n        return 0", THP),
    Mutant("huge_zero_install_recheck_dropped", MM + "huge_memory.py",
           "if pmd_none(mm.pgtable, haddr):\n            mm.pgtable.pmd[slot] =",
           "if True:\n            mm.pgtable.pmd[slot] =", THP),
    Mutant("thp_wp_reuse_with_extra_ref", MM + "huge_memory.py",
           "int(k.mem.refcount[page]) == 1:", "int(k.mem.refcount[page]) <= 2:", THP),
    Mutant("thp_wp_recheck_dropped", MM + "huge_memory.py",
           "        if mm.pgtable.pmd.get(slot, 0) != orig:\n            pte_unlock(k, mm, haddr)\n"
           "            return 0",
           "        if False:\n            return 0", THP),
    Mutant("thp_wp_6_1_trylock_dropped", MM + "huge_memory.py",
           "if not folio_trylock(k, page):", "if False:", THP),
    Mutant("thp_wp_6_1_relock_recheck_dropped", MM + "huge_memory.py",
           "                if mm.pgtable.pmd.get(slot, 0) != orig:",
           "                if False:", THP),
    Mutant("thp_wp_6_1_exclusive_recheck_dropped", MM + "huge_memory.py",
           "            reuse = PageAnonExclusive(k, page)\n            if not reuse and",
           "            if not reuse and", THP),
    Mutant("thp_wp_5_7_relock_recheck_dropped", MM + "huge_pmd_5_7.py",
           "if mm.pgtable.pmd.get(slot, 0) != orig:\n            folio_unlock(k, page)",
           "if False:\n            folio_unlock(k, page)", kernel("test_thp_57_cow.py")),
    Mutant("fork_huge_zero_fresh_inverted", MM + "fork_copy.py",
           "if k.profile.fork_huge_zero_fresh:", "if not k.profile.fork_huge_zero_fresh:",
           kernel("test_huge_zero.py")),
    Mutant("huge_zero_4_4_marks_the_mm", MM + "huge_memory.py",
           "zero = get_huge_zero_page(k)", "zero = mm_get_huge_zero_page(k, mm)",
           kernel("test_huge_zero.py")),
    Mutant("fault_4_4_unstable_pmd_ignored", MM + "memory.py",
           "    if early and not table and not (yield from pte_alloc(k, mm, vma, address)):\n"
           "        return 0",
           "    if early and not table:\n        yield from pte_alloc(k, mm, vma, address)",
           kernel("test_thp_57_cow.py", "test_thp_44.py")),
    Mutant("fault_dirty_5_7_completes", "kernel/fs/__init__.py",
           'return VM_FAULT_COMPLETED if unlock == "completed" else VM_FAULT_RETRY',
           "return VM_FAULT_COMPLETED", kernel("test_fault_dirty_shared.py")),
    Mutant("fault_dirty_truncated_page_unlocks", "kernel/fs/__init__.py",
           "if (dirtied or page_mkwrite) and mapped and unlock",
           "if (dirtied or page_mkwrite) and unlock",
           kernel("test_fault_dirty_shared.py")),
    Mutant("thp_split_refcount_off_by_one", MM + "huge_memory.py",
           "page_ref_add(m, page, HPAGE_PMD_NR - 1)", "page_ref_add(m, page, HPAGE_PMD_NR)", THP),
    Mutant("thp_split_loses_anon_exclusive", MM + "huge_memory.py",
           "if anon_exclusive:\n        for i in range(HPAGE_PMD_NR):",
           "if False:\n        for i in range(HPAGE_PMD_NR):", THP),
    Mutant("thp_split_readonly_becomes_writable", MM + "huge_memory.py",
           "if not pmd & _PAGE_RW:\n        entry &= ~_PAGE_RW", "pass", THP),
    Mutant("thp_split_dirty_lost", MM + "huge_memory.py",
           'if pmd & _PAGE_DIRTY:\n        m.flags[page] |= k.pf.mask("PG_dirty")', "pass", THP),
    Mutant("thp_split_mapcount_missing", MM + "huge_memory.py",
           "    m.mapcount[page : page + HPAGE_PMD_NR] += 1\n    double_map",
           "    double_map", THP),
    Mutant("thp_split_compound_mapcount_kept", MM + "huge_memory.py",
           "m.compound_mapcount[page + 1] -= 1", "pass", THP),
    Mutant("huge_zero_pmd_without_allocated_check", MM + "huge_memory.py",
           "return k.huge_zero_pfn >= 0 and pte_pfn(pmd) == k.huge_zero_pfn",
           "return pte_pfn(pmd) == k.huge_zero_pfn", THP),
    Mutant("thp_write_fault_pmd_not_dirtied", MM + "huge_memory.py",
           "dirty = _PAGE_DIRTY if k.profile.thp_access_dirties else 0",
           "dirty = 0", kernel("test_thp_access.py")),
    Mutant("thp_access_pmd_same_dropped", MM + "huge_memory.py",
           "if mm.pgtable.pmd.get(slot, 0) == orig and write:", "if write:",
           kernel("test_thp_access.py")),
    # --- gup_longterm.py: FOLL_LONGTERM migration -------------------------------------------
    Mutant("longterm_migrates_pinnable_pages", MM + "gup_longterm.py",
           "if is_longterm_pinnable_page(k, folio):\n            continue", "pass", LONGTERM),
    Mutant("longterm_isolates_off_lru_folio", MM + "gup_longterm.py",
           "if not int(k.mem.flags[folio]) & lru:\n        return False", "pass", LONGTERM),
    Mutant("longterm_isolation_without_ref", MM + "gup_longterm.py",
           "    page_ref_add(k.mem, folio, 1)\n    return True", "    return True", LONGTERM),
    Mutant("migrate_despite_extra_refs", MM + "gup_longterm.py",
           "if int(m.refcount[old]) != folio_expected_ref_count(k, old) + 1:\n"
           "        return None",
           "pass", LONGTERM),
    Mutant("migrate_old_keeps_anon_exclusive", MM + "gup_longterm.py",
           'm.flags[src] &= ~np.uint64(k.pf.mask("PG_anon_exclusive"))', "pass", LONGTERM),
    Mutant("migrate_remap_off_by_one", MM + "gup_longterm.py",
           "(pfns < old + nr)", "(pfns <= old + nr)", LONGTERM),
    Mutant("migrate_loses_dirty", MM + "gup_longterm.py",
           '"PG_uptodate",\n    "PG_dirty",\n', '"PG_uptodate",\n', LONGTERM),
    Mutant("migrate_unpins_as_refs", MM + "gup_longterm.py",
           "yield from gup_put_folio(k, compound_head(k.mem, page), 1, FOLL_PIN)",
           "yield from gup_put_folio(k, compound_head(k.mem, page), 1, 0)", LONGTERM),
    Mutant("expected_refs_without_cache_ref", MM + "gup_longterm.py",
           "refs += 1 if page_mapping_id(k, folio) is not None else 0", "pass", LONGTERM),
    Mutant("release_pins_as_refs", MM + "gup_longterm.py",
           "if k.profile.longterm_release_put_page or not gup_flags & FOLL_PIN:",
           "if True:", LONGTERM),
    Mutant("longterm_pretest_dropped", MM + "gup_longterm.py",
           "if not unpinnable(k, pages[:nr_pages]).any():\n        return 0", "pass", LONGTERM),
    # --- page_writeback.py: the fsync pass ---------------------------------------------------
    Mutant("wb_sync_all_wait_dropped", MM + "page_writeback.py",
           "                yield from folio_wait_writeback(k, folio)\n", "", WB),
    Mutant("wb_truncated_folio_recheck_dropped", MM + "page_writeback.py",
           "if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id) or not _has(",
           "if not _has(", WB),
    Mutant("wb_towrite_by_pg_dirty", MM + "page_writeback.py",
           "return {i for i in _range(mapping, start, end) if i in mapping.dirty_marks}",
           'return {i for i, f in _range(mapping, start, end).items() if _has(k, f, "PG_dirty")}',
           WB),
    Mutant("wb_nr_to_write_off_by_one", MM + "page_writeback.py",
           "if wbc.nr_to_write <= 0 and wbc.sync_mode == WB_SYNC_NONE:",
           "if wbc.nr_to_write < 0 and wbc.sync_mode == WB_SYNC_NONE:", WB),
    Mutant("wb_mkclean_skipped", MM + "page_writeback.py",
           "if (yield from folio_mkclean(k, folio)):\n            yield from folio_mark_dirty(",
           "if False:\n            yield from folio_mark_dirty(", WB),
    Mutant("wb_nr_file_dirty_not_uncounted", MM + "page_writeback.py",
           "mod_node_page_state(k.vmstat, NR_FILE_DIRTY, -folio_nr_pages(k.mem, folio))\n"
           "        return True",
           "return True", WB),
    Mutant("wb_mkclean_skips_clean_writable", MM + "page_writeback.py",
           "(pte_dirty(pte) or pte_write(pte))", "pte_dirty(pte)", WB),
    Mutant("wb_mkclean_not_wrprotected", MM + "page_writeback.py",
           "pte_mkclean(pte_wrprotect(pte))", "pte_mkclean(pte)", WB),
    Mutant("wb_nr_written_missing", MM + "page_writeback.py",
           "mod_node_page_state(k.vmstat, NR_WRITTEN, nr)", "pass", WB),
    Mutant("wb_pagevec_resume_skips_one", MM + "page_writeback.py",
           "return found, i + 1", "return found, i + 2", WB),
    Mutant("fsync_does_not_wait", MM + "page_writeback.py",
           "if err != -EIO:\n        yield from __filemap_fdatawait_range(",
           "if False:\n        yield from __filemap_fdatawait_range(", WB),
    Mutant("wb_pagevec_release_no_drain", MM + "page_writeback.py",
           "if not drained:\n        yield from lru_add_drain(k, cpu)", "pass", WB),
    Mutant("wb_noop_fs_written_back", MM + "page_writeback.py",
           "if not mapping.fs.writes_back or not mapping.dirty_marks:",
           "if not mapping.dirty_marks:", WB),
    Mutant("wb_start_counts_every_setter", MM + "page_writeback.py",
           "if not was:\n        mod_node_page_state(k.vmstat, NR_WRITEBACK,",
           "if True:\n        mod_node_page_state(k.vmstat, NR_WRITEBACK,", WB),
    # --- truncate.py -------------------------------------------------------------------------
    Mutant("truncate_writeback_wait_dropped", MM + "truncate.py",
           "            yield from folio_wait_writeback(k, folio)\n", "", TRUNC),
    Mutant("truncate_folio_recheck_dropped", MM + "truncate.py",
           "if int(k.mem.mapping[folio]) == file_mapping_value(mapping.id):", "if True:", TRUNC),
    Mutant("truncate_partial_page_removed", MM + "truncate.py",
           "first = (lstart + unit - 1) // unit", "first = lstart // unit", TRUNC),
    Mutant("truncate_second_unmap_dropped", MM + "truncate.py",
           "yield from truncate_inode_pages_range(k, mapping, size, cpu)\n"
           "        yield from unmap_mapping_range(k, mapping, holebegin, True, cpu)",
           "yield from truncate_inode_pages_range(k, mapping, size, cpu)", TRUNC),
    Mutant("truncate_unmaps_whole_vma", MM + "truncate.py",
           "start = vma.vm_start + (max(first - vma.vm_pgoff, 0) << PAGE_SHIFT)",
           "start = vma.vm_start", TRUNC),
    Mutant("truncate_private_ref_leaked", "kernel/fs/buffer.py",
           'k.mem.flags[folio] &= ~k.pf.mask("PG_private") & _ALL_BITS\n    folio_put(k, folio)',
           'k.mem.flags[folio] &= ~k.pf.mask("PG_private") & _ALL_BITS', TRUNC),
    Mutant("truncate_uncounts_clean_folio", MM + "filemap.py",
           "if was and mapping.fs.writes_back:", "if mapping.fs.writes_back:", TRUNC),
    Mutant("truncate_keeps_block_at_hole", MM + "truncate.py",
           "if i * PAGE_SIZE >= holebegin]", "if i * PAGE_SIZE > holebegin]", TRUNC),
    Mutant("writeback_wait_never_waits", MM + "truncate.py",
           "lambda: not int(k.mem.flags[folio]) & bit", "lambda: True", TRUNC),
    # --- explore/exhaustive.py: depth-first search, sleep sets, cache, bound ---------------
    Mutant("sleep_inherits_dependent_sleepers", EXP + "exhaustive.py",
           "for s, (r, w) in fr.sleep.items():\n                    if s[:2] != mine and indep(",
           "for s, (r, w) in fr.sleep.items():\n                    if s[:2] != mine or indep(",
           SEARCH),
    Mutant("sleep_own_thread_choices_put_to_sleep", EXP + "exhaustive.py",
           "for s, r, w in fr.done:\n                    if s[:2] != mine and indep(",
           "for s, r, w in fr.done:\n                    if indep(", SEARCH),
    Mutant("sleep_done_set_not_recorded", EXP + "exhaustive.py",
           "                fr.done.append((sig, reads, writes))\n            only",
           "            only", SEARCH),
    Mutant("sleep_cache_revisit_always_pruned", EXP + "exhaustive.py",
           "missing = stored - csleep.keys()", "missing = frozenset()", SEARCH),
    Mutant("sleep_cache_stored_set_not_shrunk", EXP + "exhaustive.py",
           "visited[vkey] = stored & csleep.keys()", "visited[vkey] = stored", SEARCH),
    Mutant("dfs_preemption_bound_ge", EXP + "exhaustive.py",
           "if pre > bound:", "if pre >= bound:", SEARCH),
    Mutant("dfs_preemption_counts_blocked_switch", EXP + "exhaustive.py",
           "fr.last != tid and fr.last in fr.enabled:", "fr.last != tid:", SEARCH),
    Mutant("dfs_bound_revisit_at_equal_preemptions", EXP + "exhaustive.py",
           "elif bound is not None and pre < old:", "elif bound is not None and pre <= old:",
           SEARCH),
    Mutant("dfs_bound_cache_key_without_thread", EXP + "exhaustive.py",
           "vkey = ckey if bound is None else (ckey, tid)", "vkey = ckey", SEARCH),
    Mutant("dfs_max_steps_off_by_one", EXP + "exhaustive.py",
           "if max_steps is not None and len(path) >= max_steps:",
           "if max_steps is not None and len(path) > max_steps:", SEARCH),
    Mutant("max_states_off_by_one", EXP + "exhaustive.py",
           "self.rec.result.states >= m:", "self.rec.result.states > m:", SEARCH),
    Mutant("max_schedules_off_by_one", EXP + "exhaustive.py",
           "if m is not None and res.schedules >= m:", "if m is not None and res.schedules > m:",
           SEARCH),
    Mutant("plain_dfs_schedules_off_by_one", EXP + "exhaustive.py",
           "- (len(visited) - 1) - failed", "- len(visited) - failed", SEARCH),
    Mutant("plain_dfs_untaken_not_taken_back", EXP + "exhaustive.py",
           "res.transitions -= sum(length_hint(f[1]) for f in stack)", "pass", SEARCH),
    Mutant("plain_dfs_progress_ignores_top", EXP + "exhaustive.py",
           "below[0] + (length_hint(stack[-1][1]) if stack else 0)", "below[0]", SEARCH),
    Mutant("independence_cache_key_partial", EXP + "exhaustive.py",
           "k = (r1, w1, r2, w2)", "k = (r1, w1, r2)", SEARCH),
    Mutant("independence_ignores_invariants", EXP + "exhaustive.py",
           "independent(r1, w1, r2, w2) and commute(w1, w2, self.inv_reads)",
           "independent(r1, w1, r2, w2)", SEARCH),
    Mutant("por_search_runs_plain", EXP + "exhaustive.py",
           "if cache and not por and bound is None:", "if cache and bound is None:", SEARCH),
    Mutant("bound_counts_states_per_thread", EXP + "exhaustive.py",
           "counted = bound is not None or not cache\n        seen",
           "counted = not cache\n        seen", SEARCH),
    Mutant("dfs_terminal_not_checked", EXP + "exhaustive.py",
           "self.terminal(fr.node, fr.key, path.copy)", "pass", SEARCH),
    # --- explore/dependence.py -----------------------------------------------------------------
    Mutant("indep_ignores_write_write", EXP + "dependence.py",
           "w1 & r2 or w1 & w2 or w2 & r1", "w1 & r2 or w2 & r1", SEARCH),
    Mutant("indep_asymmetric", EXP + "dependence.py",
           "w1 & r2 or w1 & w2 or w2 & r1", "w1 & r2 or w1 & w2", SEARCH),
    Mutant("commute_needs_common_location", EXP + "dependence.py",
           "w1 & reads and w2 & reads", "w1 & w2 & reads", SEARCH),
    # --- explore/breadth.py ----------------------------------------------------------------------
    Mutant("bfs_bound_cache_key_without_thread", EXP + "breadth.py",
           "vkey = ckey if bound is None else (ckey, tid)", "vkey = ckey", SEARCH),
    Mutant("bfs_bound_revisit_at_equal_preemptions", EXP + "breadth.py",
           "(bound is None or pre >= old)", "(bound is None or pre > old)", SEARCH),
    Mutant("bfs_preemption_bound_ge", EXP + "breadth.py",
           "if pre > bound:", "if pre >= bound:", SEARCH),
    Mutant("bfs_max_steps_off_by_one", EXP + "breadth.py",
           "depth >= opts.max_steps:", "depth > opts.max_steps:", SEARCH),
    Mutant("bfs_preemption_counts_blocked_switch", EXP + "breadth.py",
           "last != tid and last in enabled:", "last != tid:", SEARCH),
    Mutant("bfs_new_state_test_redundant", EXP + "breadth.py",
           "if old is None and not counted:", "if not counted:", SEARCH),
    # --- explore/walk.py: random walk and PCT -----------------------------------------------------
    Mutant("pct_priorities_overlap_change_points", EXP + "walk.py",
           "prio = list(range(d, d + n))", "prio = list(range(d - 1, d - 1 + n))", WALK),
    Mutant("pct_change_points_off_by_one", EXP + "walk.py",
           "range(1, max(k, d) + 1)", "range(1, max(k, d))", WALK),
    Mutant("pct_priority_never_changes", EXP + "walk.py",
           "if step in changes:\n                    prio[tid] = changes[step]", "pass", WALK),
    Mutant("pct_run_length_not_learnt", EXP + "walk.py",
           "self.k = max(self.k, len(path))", "pass", WALK),
    Mutant("walk_runs_on_after_invariant_failure", EXP + "walk.py",
           "return bool(bad)", "return False", WALK),
    # --- explore/canon.py: state keys ------------------------------------------------------------
    Mutant("freeze_set_in_hash_order", EXP + "canon.py",
           "members = sorted(_each(((None, x) for x in v), refs, active), key=order_key)",
           "members = list(_each(((None, x) for x in v), refs, active))", CANON),
    Mutant("freeze_dict_in_insertion_order", EXP + "canon.py",
           "tuple(sorted(zip(keys, values, strict=True), key=order_key))",
           "tuple(zip(keys, values, strict=True))", CANON),
    Mutant("freeze_ndarray_without_shape", EXP + "canon.py",
           "(Kind.NDARRAY, v.dtype.str, v.shape, v.tobytes())",
           "(Kind.NDARRAY, v.dtype.str, v.tobytes())", CANON),
    Mutant("freeze_closure_without_cells", EXP + "canon.py",
           "(Kind.CODE, v.__module__, v.__qualname__, _each(cells, refs, active))",
           "(Kind.CODE, v.__module__, v.__qualname__)", CANON),
    Mutant("freeze_world_ref_truthiness", EXP + "canon.py",
           "if ref is not None:\n            return (Kind.REF, ref)",
           "if ref:\n            return (Kind.REF, ref)", CANON),
    Mutant("freeze_cycle_check_dropped", EXP + "canon.py",
           'if id(v) in active:\n        raise Unfreezable(" is cyclic")', "pass", CANON),
    Mutant("frame_locals_memo_not_filled", EXP + "canon.py",
           "memo[id(v)] = frozen", "pass", CANON),
    # --- explore/world.py: generator threads ----------------------------------------------------
    Mutant("world_symmetry_not_canonical", EXP + "world.py",
           "parts[a:b] = sorted(parts[a:b], key=order_key)", "pass", CANON),
    Mutant("world_deadlock_only_when_all_blocked", EXP + "world.py",
           "if any(p is not DONE for p in run.pending):",
           "if all(p is not DONE for p in run.pending):", CANON),
    Mutant("world_await_ignored", EXP + "world.py",
           "return not isinstance(p, Await) or p.ready()", "return True", CANON),
    Mutant("world_run_prefix_unchecked", EXP + "world.py",
           "or tuple(run.path) != path[: len(run.path)]", "", CANON),
    Mutant("world_thread_key_without_line", EXP + "world.py",
           "frames.append((f.f_code.co_qualname, f.f_lineno, live))",
           "frames.append((f.f_code.co_qualname, live))", CANON),
    Mutant("world_thread_key_keeps_control_locals", EXP + "world.py",
           "if k not in CONTROL}", "}", RESUME),
    Mutant("world_never_alone", EXP + "world.py",
           "alone = all(p is DONE for i, p in enumerate(run.pending) if i != tid)",
           "alone = False", CANON),
    Mutant("world_invariant_cache_kept", EXP + "world.py",
           "return self._inv.pop(node[0])", "return self._inv[node[0]]", CANON),
    Mutant("world_restore_cost_sign", EXP + "world.py",
           "- base * self._t_step", "+ base * self._t_step", RESUME),
    # --- explore/snapshots.py, resume.py: snapshots and rebuilt threads ---------------------------
    Mutant("snapshot_evicts_the_last", EXP + "snapshots.py",
           "and len(self._snaps) > 1:", "and len(self._snaps) >= 1:", RESUME),
    Mutant("snapshot_start_done_swapped", EXP + "snapshots.py",
           'threads.append("start" if p is START else "done")',
           'threads.append("done" if p is START else "start")', RESUME),
    Mutant("snapshot_path_one_short", EXP + "snapshots.py",
           "return Snapshot(tuple(run.path), packed)",
           "return Snapshot(tuple(run.path[:-1]), packed)", RESUME),
    Mutant("resume_view_copied", EXP + "resume.py",
           "return (_view, (base, obj.dtype, obj.shape, offset, obj.strides))",
           "return NotImplemented", RESUME),
    Mutant("resume_delta_not_put_back", EXP + "resume.py",
           "ref.obj.put_delta(ref.delta)", "pass", RESUME),
    Mutant("resume_capture_drops_a_local", EXP + "resume.py",
           "{n: loc[n] for n in keep if n in loc}", "{n: loc[n] for n in keep[:-1] if n in loc}",
           RESUME),
    # --- explore/replay.py, shrink.py --------------------------------------------------------
    Mutant("replay_passed_invariants_dropped", EXP + "replay.py",
           "out.passed += [(i, name, detail) for name, detail in system.invariant(node)]",
           "pass", REPLAY),
    Mutant("replay_choice_bound_off_by_one", EXP + "replay.py",
           "if choice >= count:", "if choice > count:", REPLAY),
    Mutant("replay_thread_bound_off_by_one", EXP + "replay.py",
           "if not 0 <= tid < system.n:", "if not 0 <= tid <= system.n:", REPLAY),
    Mutant("replay_final_checks_dropped", EXP + "replay.py",
           "if not system.expand(node):", "if False:", REPLAY),
    Mutant("replay_strict_keys", EXP + "replay.py",
           "return WorldSystem(program, symmetry, strict=cache)",
           "return WorldSystem(program, symmetry, strict=True)", REPLAY),
    Mutant("shrink_switch_counts_choices", EXP + "shrink.py",
           "if a[0] != b[0])", "if a != b)", REPLAY),
    Mutant("shrink_first_step_is_a_switch", EXP + "shrink.py",
           "1 if last not in (-1, tid) else 0", "1 if last != tid else 0", REPLAY),
    Mutant("shrink_keeps_worst_per_pair", EXP + "shrink.py",
           "(csw, cpath) < old[:2]", "(csw, cpath) > old[:2]", REPLAY),
    Mutant("shrink_depth_off_by_one", EXP + "shrink.py",
           "for depth in range(len(moves) + 1):", "for depth in range(len(moves)):", REPLAY),
    Mutant("shrink_first_hit_not_best", EXP + "shrink.py",
           "min(hits[depth], key=_rank)", "hits[depth][0]", REPLAY),
    Mutant("shrink_unmodelled_as_counterexample", EXP + "shrink.py",
           "err.name == name and outcome_kind(err) == kind", "err.name == name", REPLAY),
    # --- explore/levels.py, arrays.py: breadth-first search on arrays -----------------------------
    Mutant("levels_ignore_max_states", EXP + "levels.py",
           "and opts.max_states is None\n", "\n", LEVELS),
    Mutant("levels_ignore_symmetry", EXP + "levels.py",
           "and not system.symmetry\n", "\n", LEVELS),
    Mutant("levels_complete_schedules_without_errors", EXP + "levels.py",
           "res.complete_schedules += errors + ends", "res.complete_schedules += ends", LEVELS),
    Mutant("levels_max_depth_off_by_one", EXP + "levels.py",
           "if new > ends_new:", "if new >= ends_new:", LEVELS),
    Mutant("levels_narrow_check_le", EXP + "levels.py",
           "if res.states - mark < NARROW * NARROW_AFTER:",
           "if res.states - mark <= NARROW * NARROW_AFTER:", LEVELS),
    Mutant("levels_max_steps_off_by_one", EXP + "levels.py",
           "depth >= s.opts.max_steps", "depth > s.opts.max_steps", LEVELS),
    Mutant("levels_local_invariants_judged_once", EXP + "levels.py",
           "if kind == JUDGE and not sys.per_state_invariants:", "if kind == JUDGE:", LEVELS),
    Mutant("arrays_layout_holds_too_much", EXP + "arrays.py",
           "return nshared <= 1 << self.sbits", "return nshared <= 2 << self.sbits", LEVELS),
    Mutant("arrays_bits_off_by_one", EXP + "arrays.py",
           "return max(1, (count - 1).bit_length())", "return max(1, count.bit_length() - 1)",
           LEVELS),
    Mutant("arrays_key_uses_the_sign_bit", EXP + "arrays.py",
           "if sbits + n * lbits <= KEY_BITS:", "if sbits + n * lbits <= KEY_BITS + 1:", LEVELS),
    Mutant("arrays_merge_policy_doubling_only", EXP + "arrays.py",
           "<= max(2 * len(runs[-1]), SMALL_RUN)", "<= 2 * len(runs[-1])", LEVELS),
    Mutant("arrays_shared_delta_absolute", EXP + "arrays.py",
           "dsid.append(nsid - sid)", "dsid.append(nsid)", LEVELS),
    Mutant("arrays_choices_limit_ge", EXP + "arrays.py",
           "if len(steps) > CHOICES:", "if len(steps) >= CHOICES:", LEVELS),
    Mutant("arrays_recode_drops_last_thread", EXP + "arrays.py",
           "for j in range(old.n + 1):", "for j in range(old.n):", LEVELS),
)  # fmt: skip


# ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What became of one mutant."""

    mutant: Mutant
    status: str  # killed, survived, timeout, hung, equivalent, stale, error
    killed: bool = False
    exit_code: int | None = None
    seconds: float = 0.0
    detail: str = ""
    failed: list[str] = field(default_factory=list)


def equivalent_names(path: Path = EQUIVALENT_MD) -> dict[str, str]:
    """Mutant names listed in tests/mutation-equivalent.md (``- `name`: why``), with why."""
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*[-*]\s+`([^`]+)`\s*[:—–-]?\s*(.*)", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def validate(mutant: Mutant, root: Path) -> str | None:
    """Why ``mutant`` cannot be applied to the tree at ``root`` (None: it can)."""
    path = root / mutant.path
    if not path.exists():
        return f"{mutant.path} does not exist"
    text = path.read_text()
    count = text.count(mutant.find)
    if count != 1:
        return f"snippet occurs {count} times in {mutant.path}"
    if mutant.find == mutant.replace:
        return "the replacement is the snippet"
    try:
        compile(text.replace(mutant.find, mutant.replace, 1), str(path), "exec")
    except SyntaxError as err:
        return f"the mutated file does not compile: {err.msg} (line {err.lineno})"
    missing = [t for t in mutant.tests if not (root / t.split("::")[0]).exists()]
    if missing:
        return f"covering tests missing: {', '.join(missing)}"
    return None


def repo_files(root: Path) -> list[str]:
    """The repository's files: tracked and untracked, not ignored (else a fixed set)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        files = [f for f in out.split("\0") if f and (root / f).is_file()]
        if files:
            return files
    except (OSError, subprocess.CalledProcessError):
        pass
    files = []
    for top in ("src", "tests", "bench", "docs"):
        for p in (root / top).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p):
                files.append(str(p.relative_to(root)))
    return [*files, "pyproject.toml", "README.md"]


def snapshot(root: Path, dest: Path) -> None:
    """Copy the working tree at ``root`` to ``dest`` (files only, as they are now)."""
    for rel in repo_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)


def make_copy(base: Path, workdir: Path, shared: Path | None) -> Path:
    """A worker's copy of the snapshot at ``workdir/main``.

    ``main/pinlab`` links to ``main/src/pinlab`` so that a test's subprocess that sets
    PYTHONPATH to the repository root (tests/explore/test_fingerprint.py) or runs from
    it still imports the copy, not the editable install; ``workdir/shared`` links to the
    shared directory beside the repository (tests/anchors reads ../shared).
    """
    copy = workdir / "main"
    shutil.copytree(base, copy, symlinks=True)
    install_plugin(copy)
    (copy / "pinlab").symlink_to(Path("src") / "pinlab", target_is_directory=True)
    if shared is not None and shared.is_dir():
        (workdir / "shared").symlink_to(shared, target_is_directory=True)
    return copy


def run_env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy / "src")
    # the same set orders in every run: a test takes the same path mutated as measured
    env["PYTHONHASHSEED"] = "0"
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("CI", None)  # unavailable real-kernel fixtures skip instead of failing
    return env


def _forget_bytecode(path: Path) -> None:
    """Drop the compiled form of ``path``: a mutant of the same size written in the same
    second would otherwise leave a .pyc that still looks current."""
    for pyc in (path.parent / "__pycache__").glob(path.stem + ".*.pyc"):
        pyc.unlink(missing_ok=True)


@dataclass(slots=True)
class RunResult:
    code: int | None  # None: the run went over the time limit and was killed
    output: str
    seconds: float


class Runner:
    """Runs pytest in copies; kills every run still going on interrupt."""

    def __init__(self, python: str, timeout: float, memory: int) -> None:
        self.python = python
        self.timeout = timeout
        self.memory = memory  # bytes of address space a run (and what it starts) may use
        self.per_test = max(1, min(600, int(timeout * PER_TEST_SHARE)))
        self._procs: set[subprocess.Popen[bytes]] = set()
        # tests that fail unmutated (the tree is being edited): left out of every run
        self.deselect: set[str] = set()
        self.broken_files: set[str] = set()
        self._lock = threading.Lock()

    def pytest(
        self,
        copy: Path,
        tests: Iterable[str],
        baseline: bool = False,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> RunResult:
        """pytest on ``tests`` in ``copy``: stop at the first failure, unless this is the
        baseline, which runs everything (and goes on past files that fail to collect)."""
        shutil.rmtree(copy / ".hypothesis", ignore_errors=True)  # no examples carried over
        cmd = [self.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
        cmd += ["--continue-on-collection-errors"] if baseline else ["-x"]
        cmd += ["-o", f"timeout={self.per_test}", "-o", "timeout_method=thread"]
        cmd += ["--hypothesis-seed=0"]
        for node in sorted(self.deselect):
            cmd += ["--deselect", node]
        tests = [t for t in tests if t.split("::")[0] not in self.broken_files]
        tests = [t for t in tests if t not in self.deselect]
        # the baseline runs every test of many mutants, measured: its limit is per test only
        limit = BASELINE_TIMEOUT if baseline else self.timeout + self.per_test
        return self.run([*cmd, *tests], copy, env, limit)

    def run(
        self,
        cmd: list[str],
        copy: Path,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=copy,
            env={**run_env(copy), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with self._lock:
            self._procs.add(proc)
        # A mutant can make a search grow without bound: capped, it fails with MemoryError
        # instead of waking the kernel's OOM killer on a machine shared with others.  Set
        # just after the start (preexec_fn is unsafe with threads); children inherit it.
        with contextlib.suppress(ProcessLookupError, ValueError, OSError):
            resource.prlimit(proc.pid, resource.RLIMIT_AS, (self.memory, self.memory))
        try:
            out, _ = proc.communicate(timeout=timeout or self.timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            _kill(proc)
            out, _ = proc.communicate()
            code = None
        finally:
            with self._lock:
                self._procs.discard(proc)
        return RunResult(code, out.decode(errors="replace"), time.monotonic() - started)

    def kill_all(self) -> None:
        with self._lock:
            for proc in list(self._procs):
                _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """End a run and everything it started (its own session, by its process group id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# "FAILED <node id> - <message>" in pytest's short summary (ids may hold spaces)
FAILED_LINE = re.compile(r"^(FAILED|ERROR) (.+?)(?: - .*)?$", re.M)
# pytest-timeout's thread method prints this line and ends the run with exit status 1
TIMEOUT_BANNER = re.compile(r"^\++ Timeout \++$", re.M)


def judge(mutant: Mutant, res: RunResult) -> Outcome:
    """Killed, survived, timeout or hung, from a pytest run of the mutant."""
    failed = [m.group(2) for m in FAILED_LINE.finditer(res.output)]
    if res.code is None:
        # pytest-timeout ends the run itself, so a run the bench had to stop is a hang
        return Outcome(mutant, "hung", seconds=res.seconds, detail=f"over {res.seconds:.0f} s")
    if res.code == 0:
        return Outcome(mutant, "survived", exit_code=0, seconds=res.seconds)
    if res.code == 5:
        return Outcome(mutant, "survived", exit_code=5, seconds=res.seconds, detail="no tests ran")
    if res.code == 4 and "ERROR: not found" in res.output:
        # a measured test id that pytest cannot address again: the bench's fault, no kill
        return Outcome(mutant, "error", exit_code=4, seconds=res.seconds, detail="test not found")
    detail = "" if res.code == 1 else _last_error(res.output)
    status = "timeout" if TIMEOUT_BANNER.search(res.output) else "killed"
    return Outcome(mutant, status, True, res.code, res.seconds, detail=detail, failed=failed)


def _last_error(output: str) -> str:
    """The most telling line of a run that did not just fail a test (exit 2, 3, 4)."""
    for line in reversed(output.splitlines()):
        if re.search(r"Error|error", line):
            return line.strip()[:160]
    return output.strip().splitlines()[-1][:160] if output.strip() else ""


def apply(copy: Path, mutant: Mutant) -> str:
    """Write the mutant into ``copy``; the original text, to restore."""
    path = copy / mutant.path
    original = path.read_text()
    assert original.count(mutant.find) == 1, mutant.name
    _forget_bytecode(path)
    path.write_text(original.replace(mutant.find, mutant.replace, 1))
    return original


def restore(copy: Path, mutant: Mutant, original: str) -> None:
    path = copy / mutant.path
    path.write_text(original)
    _forget_bytecode(path)


def check_copy(runner: Runner, copy: Path) -> str | None:
    """Why ``copy`` is not what its tests import (None: it is).

    Asks a Python started as the tests are where pinlab comes from, then breaks the
    copy's pinlab on purpose: a test run must then fail with the breakage's message.
    """
    probe = runner.run(
        [runner.python, "-c", "import os, pinlab; print(os.path.realpath(pinlab.__file__))"],
        copy,
    )
    where = probe.output.strip().splitlines()[-1] if probe.output.strip() else ""
    if probe.code != 0 or not Path(where).is_relative_to(copy.resolve()):
        return f"pinlab imports from {where or probe.output!r}, not from the copy {copy}"
    init = copy / "src" / "pinlab" / "__init__.py"
    original = init.read_text()
    try:
        _forget_bytecode(init)
        init.write_text(f"raise ImportError({SELF_CHECK_MARK!r})\n" + original)
        res = runner.pytest(copy, ["tests/test_interleave.py"])
    finally:
        init.write_text(original)
        _forget_bytecode(init)
    if res.code in (0, None) or SELF_CHECK_MARK not in res.output:
        return "a deliberately broken pinlab in the copy did not fail the tests"
    return None


def _describe(o: Outcome) -> str:
    """Name, file, what went on and the change, escaped for rich's markup."""
    detail = f", {o.detail}" if o.detail else ""
    return escape(f"{o.mutant.name} ({o.mutant.path}{detail}): ") + _change(o.mutant)


def _change(m: Mutant) -> str:
    def one(s: str) -> str:
        return " / ".join(part.strip() for part in s.strip().splitlines()) or "(nothing)"

    return escape(f"{one(m.find)}  ->  {one(m.replace)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated mutant names to run")
    ap.add_argument("--list", action="store_true", help="list the mutants and whether they apply")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's run")
    ap.add_argument(
        "--memory", type=float, default=4.0, help="GiB of address space per run (RLIMIT_AS)"
    )
    ap.add_argument(
        "--no-baseline", action="store_true", help="skip the unmutated run of the tests"
    )
    ap.add_argument(
        "--deselect", action="append", default=[], help="a test id to leave out (repeatable)"
    )
    ap.add_argument(
        "--select",
        choices=("lines", "files"),
        default="lines",
        help="run each mutant against the tests that executed its lines (measured once by "
        "the baseline, cached), or against all its covering test files",
    )
    ap.add_argument(
        "--tests",
        help="comma-separated test files or ids to run every selected mutant against, "
        "instead of its own (no baseline, no coverage): does a new test kill it?",
    )
    ap.add_argument("--log", type=Path, help="write each mutant's pytest output to this dir")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies")
    args = ap.parse_args(argv)
    # Started in the background by a shell, SIGINT is ignored, and an ignored signal stays
    # ignored in every child: tests that interrupt a subprocess would then hang.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    console = Console(highlight=False, soft_wrap=True)
    started = time.monotonic()

    names = [m.name for m in MUTANTS]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        console.print(f"[red]duplicate mutant names: {', '.join(dupes)}[/red]")
        return 2
    selected = list(MUTANTS)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            console.print(f"[red]unknown mutants: {', '.join(unknown)}[/red]")
            return 2
        selected = [m for m in MUTANTS if m.name in wanted]
    if args.tests:
        tests = tuple(t.strip() for t in args.tests.split(",") if t.strip())
        selected = [replace(m, tests=tests) for m in selected]
        args.no_baseline, args.select = True, "files"
    equivalent = equivalent_names()
    for name in sorted(set(equivalent) - set(names)):
        console.print(f"[yellow]{EQUIVALENT_MD.name} lists an unknown mutant: {name}[/yellow]")

    tmp = Path(tempfile.mkdtemp(prefix="pinlab-mutation-"))
    base = tmp / "base" / "main"
    try:
        snapshot(ROOT, base)
        problems = {m.name: validate(m, base) for m in selected}
        if args.list:
            for m in selected:
                why = problems[m.name]
                state = "equivalent" if m.name in equivalent else "ok" if why is None else "STALE"
                print(
                    f"{m.name:44} {m.file:28} {state:10} {len(m.tests):2} test files"
                    + (f"  ({why})" if why else "")
                )
            print(f"{len(selected)} mutants")
            return 0
        ran = run_all(args, console, tmp, base, selected, problems, equivalent)
        if ran is None:
            return 2
    finally:
        if args.keep:
            console.print(f"copies kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return report(console, *ran, time.monotonic() - started)


def baseline(
    args: argparse.Namespace,
    console: Console,
    runner: Runner,
    copies: queue.Queue[Path],
    tests: Sequence[str],
    workers: int,
    tmp: Path,
) -> CoverMap | None:
    """Run ``tests`` unmutated, split over the workers, measuring which lines each test
    runs (unless --select files); None if a run did not complete."""
    groups: list[list[str]] = [[] for _ in range(workers)]
    for i, test in enumerate(tests):
        groups[i % workers].append(test)
    measure = args.select == "lines"
    console.print(f"baseline: {len(tests)} test files on the unmutated snapshot ...")

    def part(i: int) -> tuple[RunResult, Path, Path]:
        copy = copies.get()
        try:
            data, spawns = tmp / f"coverage.{i}", tmp / f"spawns.{i}"
            extra, env = coverage_args(data, spawns) if measure else ([], {})
            return runner.pytest(copy, groups[i], True, extra, env), data, spawns
        finally:
            copies.put(copy)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        runs = list(pool.map(part, [i for i, g in enumerate(groups) if g]))
    failed: list[str] = []
    for res, _, _ in runs:
        found = [m.group(2) for m in FAILED_LINE.finditer(res.output)]
        if res.code != 0 and (res.code not in (1, 2) or not found):
            console.print(res.output[-4000:])
            console.print(f"[red]the baseline run did not complete (exit {res.code})[/red]")
            return None
        failed += found
    console.print(f"baseline done in {max(r.seconds for r, _, _ in runs):.0f} s")
    if not measure:
        return CoverMap(failed=failed)
    cover = read_runs([d for _, d, _ in runs], [s for _, _, s in runs])
    cover.failed = failed
    return cover


def run_all(
    args: argparse.Namespace,
    console: Console,
    tmp: Path,
    base: Path,
    selected: list[Mutant],
    problems: dict[str, str | None],
    equivalent: dict[str, str],
) -> tuple[list[Outcome], bool] | None:
    """Set up the copies, check them, run the baseline and every mutant; the outcomes, and
    whether Ctrl-C stopped the run first."""
    outcomes: list[Outcome] = []
    todo: list[Mutant] = []
    for m in selected:
        why = problems[m.name]
        if why is not None:
            outcomes.append(Outcome(m, "stale", detail=why))
        elif m.name in equivalent:
            outcomes.append(Outcome(m, "equivalent", detail=equivalent[m.name]))
        else:
            todo.append(m)
    runner = Runner(sys.executable, args.timeout, int(args.memory * (1 << 30)))
    workers = max(1, min(args.workers, len(todo) or 1))
    shared = ROOT.parent / "shared"
    copies: queue.Queue[Path] = queue.Queue()
    for i in range(workers):
        copy = make_copy(base, tmp / f"w{i}", shared)
        why = check_copy(runner, copy)
        if why is not None:
            console.print(f"[red]copy {i}: {why}[/red]")
            return None
        copies.put(copy)
    cover: CoverMap | None = None
    if todo:
        tests = _ordered((t for m in todo for t in m.tests), ())
        key = tree_key(base, tests)
        cover = cached(key) if args.select == "lines" else None
        if cover is not None:
            console.print(f"baseline: the coverage of {len(tests)} test files, from the cache")
        elif not args.no_baseline:
            cover = baseline(args, console, runner, copies, tests, workers, tmp)
            if cover is None:
                return None
            if args.select == "lines":
                store(key, cover)
            else:
                cover = CoverMap(failed=cover.failed)
        for node in cover.failed if cover else ():
            (runner.deselect if "::" in node else runner.broken_files).add(node)
            console.print(f"[yellow]fails unmutated, left out of every run:[/yellow] {node}")
        if cover is not None and not cover.lines:
            cover = None
    for node in args.deselect:
        runner.deselect.add(node)
    if args.log is not None:
        args.log.mkdir(parents=True, exist_ok=True)

    def one(m: Mutant) -> Outcome:
        tests: Sequence[str] = m.tests
        if cover is not None:
            text = (base / m.path).read_text()
            chosen = select(cover, m.path, snippet_lines(text, m.find), m.tests)
            if chosen == []:
                return Outcome(m, "survived", detail="no test executes its lines")
            tests = m.tests if chosen is None else chosen
        copy = copies.get()
        try:
            original = apply(copy, m)
            try:
                res = runner.pytest(copy, tests)
                lost = not_found(res.output, copy)
                if res.code == 4 and lost:
                    # a measured id this run's collection does not have (seen with a
                    # parametrised SPIN test): run those tests' whole files instead
                    tests = _ordered(
                        (t.split("::")[0] if t.split("[")[0] in lost else t for t in tests), ()
                    )
                    res = runner.pytest(copy, tests)
            finally:
                restore(copy, m, original)
        except Exception as err:  # a broken copy must not stop the others
            return Outcome(m, "error", detail=f"{type(err).__name__}: {err}")
        finally:
            copies.put(copy)
        if args.log is not None:
            (args.log / f"{m.name}.txt").write_text(res.output)
        return judge(m, res)

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("mutants", total=len(todo))
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            for out in pool.map(one, todo):
                outcomes.append(out)
                progress.advance(bar)
                if not out.killed:
                    progress.console.print(f"[red]{out.status}[/red] {_describe(out)}")
        except KeyboardInterrupt:
            runner.kill_all()
            pool.shutdown(wait=True, cancel_futures=True)
            done = sum(o.status not in ("stale", "equivalent") for o in outcomes)
            console.print(f"[yellow]interrupted[/yellow] after {done} of {len(todo)} mutants")
            return outcomes, True
        pool.shutdown(wait=True)
    return outcomes, False


def report(console: Console, outcomes: list[Outcome], interrupted: bool, seconds: float) -> int:
    """Print the summary and the JSON line; 130 if the run was interrupted (the figures are
    then those of the mutants run so far)."""
    by = {s: [o for o in outcomes if o.status == s] for s in ("killed", "timeout", "hung")}
    run = [o for o in outcomes if o.status not in ("stale", "equivalent")]
    killed = [o for o in run if o.killed]
    survivors = [o for o in run if not o.killed]
    equivalent = [o for o in outcomes if o.status == "equivalent"]
    stale = [o for o in outcomes if o.status == "stale"]
    codes: dict[str, int] = {}
    for o in killed:
        key = "timeout" if o.status == "timeout" else str(o.exit_code)
        codes[key] = codes.get(key, 0) + 1
    console.print()
    console.print(
        f"{len(killed)} killed (exit codes: "
        + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items()))
        + f"), {len(survivors)} survived, {len(equivalent)} equivalent, {len(stale)} stale"
    )
    for o in by["timeout"]:
        console.print(f"killed by pytest-timeout: {_describe(o)}")
    for o in stale:
        console.print(f"[yellow]stale[/yellow] {_describe(o)}")
    for o in survivors:
        console.print(f"[red]SURVIVED ({o.status})[/red] {_describe(o)}")
    total = len(run) + len(equivalent)
    judged = total - len(equivalent)
    line = {
        "mutants": total,
        "killed": len(killed),
        "equivalent": len(equivalent),
        "survived": len(survivors),
        "kill_rate": round(len(killed) / judged, 4) if judged else None,
        "seconds": round(seconds, 1),
        "survivors": [o.mutant.name for o in survivors],
        "stale": [o.mutant.name for o in stale],
        "interrupted": interrupted,
    }
    print(json.dumps(line), flush=True)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
