"""Hypothesis settings profiles: a local run draws the examples CI draws.

* ``ci``, loaded by default (in CI, which sets ``CI=true``, and locally alike):
  derandomized, so every run tries the same examples; no deadline (the machines are
  shared); no example database, so nothing saved by an earlier run adds examples; a
  failure prints the ``@reproduce_failure`` blob that replays it.
* ``explore``, with ``HYPOTHESIS_PROFILE=explore``: random examples, 500 for tests
  that do not set their own count, and the example database (``.hypothesis/``), to hunt
  for new failures.

A profile only sets defaults: a test's own ``@settings(max_examples=...)`` still
applies.  The profile is loaded here, before pytest imports a test module, because a
``@settings`` decorator copies the profile loaded when it runs.  ``pytest
--hypothesis-profile NAME`` still overrides the choice.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,  # implies database=None
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    derandomize=False,
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# CI (CI=true) and a plain local run load "ci"; HYPOTHESIS_PROFILE=explore opts in
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "ci")
