"""pytest plugin: every kernel booted gets one design hook, with the profile's own body.

Off unless PINLAB_NEUTRAL_HOOK names a field of kernel/hooks.Hooks; loaded only by
``-p tests.hooks_neutral_plugin`` (never by a default run).  Under it every test that
boots a kernel runs with that hook installed, so a hook that changed anything besides
what its design says shows up as a failing test (kernel/hooks.py; run per hook by
tests/kernel/test_hooks_neutral.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from pinlab.kernel import state
from pinlab.kernel.hooks import Hooks
from pinlab.kernel.mm.fork_copy import fork_copy_test
from pinlab.kernel.mm.gup_grab import longterm_pinnable_test, record_pins
from pinlab.kernel.mm.gup_put import release_pins
from pinlab.kernel.mm.pincount import maybe_pinned_test
from pinlab.kernel.mm.types import VmArea
from pinlab.kernel.state import Kernel

ENV = "PINLAB_NEUTRAL_HOOK"


def own_gup_page(k: Kernel, vma: VmArea, page: int, flags: int) -> int:
    """The gup_page hook's own body: never refuse."""
    return 0


def own_gup_returned(k: Kernel, page: int) -> None:
    """The gup_returned hook's own body: nothing."""


def own_unmap_refused(k: Kernel, page: int) -> bool:
    """The unmap_refused hook's own body: never refuse."""
    return False


# The profile's own behaviour for each hook (the bodies kernel/hooks.py names).
OWN_BODIES: dict[str, Callable[..., Any]] = {
    "pin_record": record_pins,
    "pin_release": release_pins,
    "maybe_dma_pinned": maybe_pinned_test,
    "gup_page": own_gup_page,
    "fork_must_copy": fork_copy_test,
    "longterm_pinnable": longterm_pinnable_test,
    "gup_returned": own_gup_returned,
    "unmap_refused": own_unmap_refused,
}

# Tests that cannot hold under the plugin whatever the hooks do, with the reason.
NOT_NEUTRAL = {
    "tests/kernel/test_state_digest.py::test_equal_states_give_equal_digests_in_a_fresh_process": (
        "the fresh process boots without the plugin, and the hooks field is part of the digest"
    ),
    "tests/kernel/test_hooks_neutral.py::test_step_sensitive_files_pass_under_the_hook": (
        "it runs this plugin itself, once per hook"
    ),
}

# Tests that cannot hold under one hook, with the reason.
NOT_NEUTRAL_UNDER = {
    "gup_returned": {
        "tests/kernel/test_gup_fast_44.py::"
        "test_4_4_hands_back_the_page_the_unmap_cleared_and_the_free_waits": (
            "a search within two preemptions: the hook's step after gup-fast's walk is one "
            "more place to preempt, so more outcomes fall within the bound"
        ),
    },
}

HOOK = os.environ.get(ENV, "")
if HOOK:
    if HOOK not in OWN_BODIES or HOOK not in Hooks.__dataclass_fields__:
        raise pytest.UsageError(f"{ENV}={HOOK!r}: not one of {sorted(OWN_BODIES)}")
    _boot = state.boot

    def _hooked_boot(*args: Any, **kwargs: Any) -> Kernel:
        k = _boot(*args, **kwargs)
        setattr(k.hooks, HOOK, OWN_BODIES[HOOK])
        return k

    # Test modules import boot after this plugin is loaded, so they bind this one.
    state.boot = _hooked_boot


def pytest_report_header(config: pytest.Config) -> str | None:
    return f"every kernel booted with hook {HOOK} = its own body" if HOOK else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not HOOK:
        return
    skip = NOT_NEUTRAL.keys() | NOT_NEUTRAL_UNDER.get(HOOK, {}).keys()
    dropped = [item for item in items if item.nodeid.split("[")[0] in skip]
    if dropped:
        items[:] = [item for item in items if item not in dropped]
        config.hook.pytest_deselected(items=dropped)
