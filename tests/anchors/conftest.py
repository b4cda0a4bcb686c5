"""Print the seed of the randomly chosen SPIN cases."""

from __future__ import annotations

import os
import time

SPIN_SEED = int(os.environ.get("PINLAB_SPIN_SEED", str(time.time_ns() % 1_000_000)))


def pytest_report_header() -> str:
    """Show the seed, so that a failing random SPIN comparison can be rerun."""
    return f"SPIN comparison cases drawn with PINLAB_SPIN_SEED={SPIN_SEED}"
