from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Fixed seeds keep CI reproducible. "default" keeps the fast suite quick; CI also runs the heavy-marked tests with
# the "large" profile once.
settings.register_profile("default", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("large", max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
