"""Hypothesis settings for the whole suite.

The profile "refimpl" is loaded by default: 50 examples per property (enough to reach
the corners of the small shapes the strategies draw), no deadline (the first call of a
Numba kernel compiles it), and the reproduction blob printed on failure.
HYPOTHESIS_PROFILE=quick runs 10 examples per property; HYPOTHESIS_PROFILE=stress, 500.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "refimpl",
    deadline=None,
    max_examples=50,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("quick", parent=settings.get_profile("refimpl"), max_examples=10)
settings.register_profile("stress", parent=settings.get_profile("refimpl"), max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "refimpl"))
