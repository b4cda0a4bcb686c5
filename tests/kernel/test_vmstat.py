"""/proc/vmstat pin counters: counted per base page exactly where the kernel counts them.

Every row drives the model through its system calls and gup entry points and
reads the counters back through the /proc/vmstat renderer.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pinlab.cli.model import EXAMPLES, anon_pinned, file_page, thp_subpage_pinned, vmstat_cmd
from pinlab.interleave import run_to_completion
from pinlab.kernel.mm.gup import get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_LONGTERM, FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_alloc import pool_of
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE
from pinlab.kernel.mm.vmstat import proc_vmstat, vmstat_items
from pinlab.kernel.process import new_task, pagemap, sys_mmap, task_mm
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

ACQ, REL = "nr_foll_pin_acquired", "nr_foll_pin_released"
RW = PROT_READ | PROT_WRITE
# v6.1 include/linux/huge_mm.h HPAGE_PMD_NR on x86-64 (2 MiB / 4 KiB)
HPAGE_PMD_NR = 512


def _proc(k: Kernel) -> dict[str, int]:
    """/proc/vmstat parsed as "name value" lines."""
    out = {}
    for line in proc_vmstat(k.vmstat, k.profile):
        name, value = line.split(" ")
        out[name] = int(value)
    return out


def _gup(k: Kernel, task_pid: int, addr: int, n: int, flags: int, pin: bool) -> list[int]:
    """pin_user_pages / get_user_pages under mmap_read_lock; the pages it returned."""
    mm = task_mm(k, k.tasks[task_pid])
    pages = page_array(n)
    run_to_completion(mmap_read_lock(k, mm))
    call = pin_user_pages if pin else get_user_pages
    ret = run_to_completion(call(k, mm, addr, n, flags, pages))
    mmap_read_unlock(k, mm)
    assert ret == n
    return [int(p) for p in pages[:n]]


def _anon(k: Kernel, length: int, touch: bool) -> tuple[int, int]:
    """A private anon mapping of `length`; a THP-sized one starts PMD-aligned inside it.

    Shorter mappings hold no aligned 2 MiB range, so they fault 4 KiB pages
    (v6.1 mm/huge_memory.c transhuge_vma_suitable).
    """
    task = new_task(k)
    extra = PMD_SIZE if length >= PMD_SIZE else 0
    addr = run_to_completion(
        sys_mmap(k, task, None, length + extra, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    )
    base = (addr + PMD_SIZE - 1) & ~(PMD_SIZE - 1) if extra else addr
    if touch:
        run_to_completion(user_access(k, task, base, True, 1))
    return task.pid, base


# (profile, citation): kernels whose /proc/vmstat has the pin pair
PIN_PROFILES = [
    ("6.1", "v6.1 mm/gup.c try_grab_page / gup_put_folio: node_stat_mod_folio(.., 1)"),
    ("6.5", "v6.5 mm/gup.c try_grab_page / gup_put_folio"),
    ("5.7", "v5.7 mm/gup.c try_grab_page / put_compound_head: mod_node_page_state(.., 1)"),
]


@pytest.mark.parametrize(("profile", "cite"), PIN_PROFILES)
def test_small_page_pin_and_unpin_count_one_each(profile: str, cite: str) -> None:
    k = boot(profile)
    ex = anon_pinned(k)
    assert _proc(k)[ACQ] == 1 and _proc(k)[REL] == 0, cite
    run_to_completion(unpin_user_pages(k, [ex.page], 1))
    assert _proc(k)[ACQ] == 1 and _proc(k)[REL] == 1, cite


@pytest.mark.parametrize(("profile", "cite"), PIN_PROFILES)
def test_thp_counts_per_base_page(profile: str, cite: str) -> None:
    """Pinning a whole 2 MiB THP adds 512: refs are base pages (v6.1 mm/gup.c:176, :249)."""
    k = boot(profile)
    pid, base = _anon(k, PMD_SIZE, touch=True)
    pages = _gup(k, pid, base, HPAGE_PMD_NR, FOLL_WRITE, pin=True)
    assert len({compound_head(k.mem, p) for p in pages}) == 1, "one THP"
    assert _proc(k)[ACQ] == HPAGE_PMD_NR, cite
    run_to_completion(unpin_user_pages(k, pages, len(pages)))
    assert _proc(k)[REL] == HPAGE_PMD_NR, cite


# (profile, counted?, citation) for a FOLL_PIN of the shared zero page
ZERO_PAGE_ROWS = [
    ("6.1", False, "6.1.192 mm/gup.c:136-137, :233-234, :188-189 (backport of v6.5 c8070b787519)"),
    ("6.5", False, "v6.5 mm/gup.c try_grab_page: is_zero_page -> nothing taken"),
    ("5.7", True, "v5.7 mm/gup.c try_grab_page: no zero-page case"),
]


@pytest.mark.parametrize(("profile", "counted", "cite"), ZERO_PAGE_ROWS)
def test_zero_page_pin(profile: str, counted: bool, cite: str) -> None:
    """A read pin of untouched anon memory gets the zero page (v6.1 mm/gup.c follow_page_pte)."""
    k = boot(profile)
    pid, base = _anon(k, PAGE_SIZE, touch=False)
    (page,) = _gup(k, pid, base, 1, 0, pin=True)
    assert page == k.zero_pfn
    assert _proc(k)[ACQ] == int(counted), cite
    run_to_completion(unpin_user_pages(k, [page], 1))
    assert _proc(k)[REL] == int(counted), cite


@pytest.mark.parametrize("profile", ["6.1", "6.5", "5.7", "4.4"])
def test_get_user_pages_never_counts(profile: str) -> None:
    """FOLL_GET takes plain references: no NR_FOLL_PIN_* (v6.1 mm/gup.c try_grab_page)."""
    k = boot(profile)
    pid, base = _anon(k, 4 * PAGE_SIZE, touch=True)
    _gup(k, pid, base, 4, FOLL_WRITE, pin=False)
    stats = _proc(k)
    assert stats.get(ACQ, 0) == 0 and stats.get(REL, 0) == 0


def test_failed_longterm_pin_counts_on_both_sides() -> None:
    """v6.1 mm/gup.c check_and_migrate_movable_pages: a ZONE_MOVABLE page is pinned, unpinned
    (released +1), migrated, and pinned again (acquired +1): acquired 2, released 1."""
    k = boot("6.1", BootParams(normal_mb=8, movable_mb=8))
    task = new_task(k)
    addr = run_to_completion(sys_mmap(k, task, None, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    run_to_completion(user_access(k, task, addr, True, 1))
    assert pool_of(k.free_area, pagemap(k, task, addr).pfn) == "movable"
    (page,) = _gup(k, task.pid, addr, 1, FOLL_WRITE | FOLL_LONGTERM, pin=True)
    assert pool_of(k.free_area, page) == "normal"
    assert (_proc(k)[ACQ], _proc(k)[REL]) == (2, 1)


@pytest.mark.parametrize("fine", [False, True], ids=["range", "page-by-page"])
def test_longterm_pin_migrates_a_movable_thp_whole(fine: bool) -> None:
    """v6.1 mm/gup.c migrate_longterm_unpinnable_pages -> migrate_pages: a ZONE_MOVABLE THP
    moves to a ZONE_NORMAL THP (alloc_migration_target keeps the order; x86-64 migrates it
    PMD-mapped), its contents with it; 512 pins, 512 released, 512 again."""
    k = boot("6.1", BootParams(normal_mb=16, movable_mb=8))
    k.fine_grained = fine
    pid, base = _anon(k, PMD_SIZE, touch=True)
    task = k.tasks[pid]
    old = pagemap(k, task, base).pfn
    assert pool_of(k.free_area, old) == "movable" and int(k.mem.order[old + 1]) == 9
    nr = PMD_SIZE // PAGE_SIZE
    pages = _gup(k, pid, base, nr, FOLL_WRITE | FOLL_LONGTERM, pin=True)
    head = compound_head(k.mem, pages[0])
    assert pages == list(range(head, head + nr))
    assert pool_of(k.free_area, head) == "normal" and int(k.mem.order[head + 1]) == 9
    assert pagemap(k, task, base).pfn == head and int(k.mem.data[head]) == 1
    assert int(k.mem.refcount[old]) == 0
    assert (_proc(k)[ACQ], _proc(k)[REL]) == (2 * nr, nr)


# (profile, has the pin pair, citation)
ITEM_ROWS = [
    ("6.1", True, "v6.1 mm/vmstat.c:1230-1231"),
    ("6.5", True, "v6.5 mm/vmstat.c vmstat_text"),
    ("5.7", True, "v5.7 mm/vmstat.c vmstat_text (merged names acquired/released)"),
    ("4.4", False, "v4.4 mm/vmstat.c: no FOLL_PIN counters (added v5.7)"),
    ("foll-pin-bias-v4", False, "v4 07/12 of the 2020 series: counters came in v5 10/12"),
]


@pytest.mark.parametrize(("profile", "present", "cite"), ITEM_ROWS)
def test_rendered_names_in_kernel_order(profile: str, present: bool, cite: str) -> None:
    """nr_dirty, nr_dirtied, then nr_foll_pin_acquired / _released (vmstat_text order)."""
    k = boot(profile)
    names = [line.split(" ")[0] for line in proc_vmstat(k.vmstat, k.profile)]
    assert names[:2] == ["nr_dirty", "nr_dirtied"]
    assert (names[2:] == [ACQ, REL]) == present, cite
    assert names[2:] == ([ACQ, REL] if present else []), cite


def test_negative_counter_reads_zero() -> None:
    """v6.1 include/linux/vmstat.h global_node_page_state_pages clamps < 0 to 0 (CONFIG_SMP)."""
    k = boot("6.1")
    k.vmstat.counters[REL] = -3
    assert _proc(k)[REL] == 0


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_every_touched_counter_is_rendered(example: str) -> None:
    """A counter the model updates but /proc/vmstat would not show is a renderer gap."""
    k = boot("6.1")
    EXAMPLES[example](k)
    assert set(k.vmstat.counters) <= set(vmstat_items(k.profile))


def test_example_counts_agree_with_dump() -> None:
    """The THP example pins one subpage: acquired 1; the file example pins nothing."""
    k = boot("6.1")
    thp_subpage_pinned(k)
    file_page(k)
    assert (_proc(k)[ACQ], _proc(k)[REL]) == (1, 0)


@pytest.mark.parametrize(
    ("args", "status", "expected"),
    [
        (["--example", "thp-subpage-pinned"], 0, f"nr_dirty 0\nnr_dirtied 0\n{ACQ} 1\n{REL} 0\n"),
        (["--profile", "4.4", "--example", "file-page"], 0, "nr_dirty 0\nnr_dirtied 0\n"),
        (["--profile", "9.9"], 2, None),
    ],
)
def test_cli_vmstat(args: list[str], status: int, expected: str | None) -> None:
    result = CliRunner().invoke(vmstat_cmd, args)
    assert result.exit_code == status, result.output
    if expected is None:
        assert result.output.startswith("pinlab: error: unknown profile '9.9'")
        assert result.output.count("\n") == 1
    else:
        assert result.output == expected
