"""Hypothesis settings for the fuzz suite: bounded and derandomized, so that
`make test` runs the same examples every time, on every machine.

HYPOTHESIS_PROFILE=deep runs many more examples, drawn at random (and
MINISAGA_FUZZ_EXAMPLES sets how many), to look further than CI does.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

COMMON = settings(
    deadline=None,  # a call's time is the machine's business, not a property
    database=None,  # no .hypothesis folder in the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("minisaga", COMMON, max_examples=30, derandomize=True)
settings.register_profile(
    "deep", COMMON, max_examples=int(os.environ.get("MINISAGA_FUZZ_EXAMPLES", "1000"))
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "minisaga"))
