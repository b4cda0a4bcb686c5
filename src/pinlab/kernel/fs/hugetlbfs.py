"""hugetlbfs files: huge pages from the hugetlb pool (v6.1 fs/hugetlbfs/inode.c).

Faults on hugetlb VMAs are handled by mm/hugetlb.py (v6.1 mm/hugetlb.c hugetlb_fault).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pinlab.kernel.fs import File, new_inode
from pinlab.kernel.mm.pgtable import HPAGE_PMD_ORDER
from pinlab.kernel.mm.types import FsType

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def hugetlb_file_setup(k: Kernel, size: int, order: int = HPAGE_PMD_ORDER) -> File:
    """v6.1 fs/hugetlbfs/inode.c hugetlb_file_setup: MAP_HUGETLB and MFD_HUGETLB's inode."""
    return File(new_inode(k, FsType.HUGETLBFS, size, huge_order=order).id)


def hugetlbfs_create(
    k: Kernel, size: int = 0, order: int = HPAGE_PMD_ORDER, writable: bool = True
) -> File:
    """A file on a hugetlbfs mount with pagesize 2**order pages."""
    return File(new_inode(k, FsType.HUGETLBFS, size, huge_order=order).id, writable=writable)
