"""What a pin-tracking design is: the kernel it patches, its hooks, its drivers' calls, its costs.

A design is two things (docs/architecture.md).  *Tracking*: how a pin is recorded
and how the kernel asks "is this page maybe pinned?".  *Response*: what the kernel's
consumers do with such a page.  Both are kernel hooks (pinlab.kernel.hooks) installed
at exactly the places the design's posted patch changed; the design's own state is
kernel state (page flags, ``Kernel.page_ext``), so it is copied, hashed and
snapshotted with the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pinlab.kernel.hooks import Hooks
from pinlab.kernel.profiles import Profile, get_profile
from pinlab.kernel.state import BootParams, Kernel, boot


@dataclass(frozen=True, slots=True)
class Costs:
    """Memory a design spends, each figure cited to its source in the design's module."""

    page_bits: int  # bits taken in every struct page (page->flags or a word of it)
    pin_bytes: int  # bytes spent per pinned page beyond the page itself
    always_on_bytes_per_page: int  # allocated for every page, pinned or not (page_ext)


@dataclass(frozen=True, slots=True)
class Design:
    """One design: pinlab.designs lists them, `pinlab designs` prints them."""

    name: str
    year: int
    source: str  # the seed file in ../shared/seeds/ and the message in it
    idea: str  # one line
    base: str  # the profile it patches
    gup: str  # what its drivers call to take pages
    release: str  # and to give them back
    costs: Costs
    hooks: Hooks = field(default_factory=Hooks)
    # page flags the patch adds to the base's enum pageflags, in enum order after the last
    extra_pageflags: tuple[str, ...] = ()
    # the tracking half's "is this page maybe pinned?", None for a design that tracks nothing
    maybe_pinned: Callable[[Kernel, int], bool] | None = None

    def profile(self) -> Profile:
        """The base profile, patched: its own name when the patch adds page flags."""
        base = get_profile(self.base)
        if not self.extra_pageflags:
            return base
        return replace(
            base,
            name=f"{base.name}+{self.name}",
            release=f"{base.release} with {self.name} ({self.source})",
            pageflags=base.pageflags + self.extra_pageflags,
            pseudo=True,
        )


def boot_design(design: Design, params: BootParams | None = None) -> Kernel:
    """A kernel booted on the design's patched profile with its hooks installed."""
    k = boot(design.profile(), params)
    k.hooks = replace(design.hooks)  # the kernel's own: nothing done to it reaches the design
    return k
