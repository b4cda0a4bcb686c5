"""`pinlab dump-page` and `pinlab vmstat`: run a small built-in example through the model.

Each example is performed by a process through the model's system calls
(sys_mmap, a user store or load via user_access) and, where it pins,
pin_user_pages under mmap_read_lock as a driver would (get_user_pages where the
profile's kernel predates FOLL_PIN, as 4.4's drivers did); the per-CPU LRU-add
batch is drained first so the counts are the settled ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import click

from pinlab.cli.errors import BadInput
from pinlab.interleave import run_to_completion
from pinlab.kernel.mm.debug import dump_page
from pinlab.kernel.mm.gup import get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.vmstat import proc_vmstat
from pinlab.kernel.process import ext4_create, new_task, sys_mmap, task_mm
from pinlab.kernel.profiles import PROFILES, NotInKernel
from pinlab.kernel.state import Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE
# The subpage of the THP example that gets pinned (any non-head subpage will do).
THP_SUBPAGE = 3


@dataclass(frozen=True, slots=True)
class Example:
    """What an example built: the page to dump and the reason to print."""

    page: int
    reason: str


def _gup_api(k: Kernel) -> str:
    """How a driver takes a DMA reference on this kernel: a FOLL_PIN pin where it exists."""
    return "pin_user_pages" if k.profile.has_foll_pin else "get_user_pages"


def _pin_one(k: Kernel, task_pid: int, addr: int) -> int:
    """pin_user_pages (or get_user_pages)(addr, 1, FOLL_WRITE) by the task's driver."""
    mm = task_mm(k, k.tasks[task_pid])
    pages = page_array(1)
    gup = pin_user_pages if k.profile.has_foll_pin else get_user_pages
    run_to_completion(mmap_read_lock(k, mm))
    ret = run_to_completion(gup(k, mm, addr, 1, FOLL_WRITE, pages))
    mmap_read_unlock(k, mm)
    if ret != 1:
        raise BadInput(f"{_gup_api(k)} returned {ret}")
    return int(pages[0])


def anon_pinned(k: Kernel) -> Example:
    """One private anonymous 4 KiB page, written by the process, then pinned."""
    task = new_task(k)
    addr = run_to_completion(sys_mmap(k, task, None, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    run_to_completion(user_access(k, task, addr, True, 1))
    run_to_completion(lru_add_drain(k, task.cpu))
    return Example(_pin_one(k, task.pid, addr), f"{_gup_api(k)}(FOLL_WRITE) of an anon page")


def thp_subpage_pinned(k: Kernel) -> Example:
    """A 2 MiB anonymous THP, faulted by a store, with one subpage pinned."""
    task = new_task(k)
    addr = run_to_completion(sys_mmap(k, task, None, 2 * PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    base = (addr + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    run_to_completion(user_access(k, task, base, True, 1))
    run_to_completion(lru_add_drain(k, task.cpu))
    page = _pin_one(k, task.pid, base + (THP_SUBPAGE << PAGE_SHIFT))
    return Example(page, f"{_gup_api(k)}(FOLL_WRITE) of one THP subpage")


def file_page(k: Kernel) -> Example:
    """A page of an ext4-like file mapped MAP_SHARED and read by the process."""
    task = new_task(k)
    file = ext4_create(k, PAGE_SIZE)
    addr = run_to_completion(sys_mmap(k, task, None, PAGE_SIZE, RW, MAP_SHARED, file))
    run_to_completion(user_access(k, task, addr, False))
    run_to_completion(lru_add_drain(k, task.cpu))
    page = k.mappings[file.mapping].i_pages[0]
    return Example(page, "read fault on a MAP_SHARED ext4 page")


EXAMPLES: dict[str, Callable[[Kernel], Example]] = {
    "anon-pinned": anon_pinned,
    "thp-subpage-pinned": thp_subpage_pinned,
    "file-page": file_page,
}


def run_example(profile: str, example: str) -> tuple[Kernel, Example]:
    """Boot the profile's kernel and perform the example; bad names raise BadInput."""
    if profile not in PROFILES:
        raise BadInput(f"unknown profile {profile!r} (known: {', '.join(sorted(PROFILES))})")
    if example not in EXAMPLES:
        raise BadInput(f"unknown example {example!r} (known: {', '.join(EXAMPLES)})")
    k = boot(profile)
    try:
        return k, EXAMPLES[example](k)
    except NotInKernel as err:
        raise BadInput(str(err)) from None


_profile_option = click.option(
    "--profile", default="6.1", show_default=True, help="Kernel profile to model."
)
_example_option = click.option(
    "--example",
    default="anon-pinned",
    show_default=True,
    help=f"Built-in example: {', '.join(EXAMPLES)}.",
)


@click.command("dump-page")
@_profile_option
@_example_option
def dump_page_cmd(profile: str, example: str) -> None:
    """Print dump_page() for a built-in example, as the profile's kernel prints it."""
    k, ex = run_example(profile, example)
    for line in dump_page(k, ex.page, ex.reason):
        click.echo(line)


@click.command("vmstat")
@_profile_option
@_example_option
def vmstat_cmd(profile: str, example: str) -> None:
    """Print the model's /proc/vmstat counters after a built-in example."""
    k, _ = run_example(profile, example)
    for line in proc_vmstat(k.vmstat, k.profile):
        click.echo(line)
