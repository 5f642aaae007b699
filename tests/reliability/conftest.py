"""Hypothesis profiles of the reliability suite.

``ci`` (the default) keeps the fuzz tests to a bounded number of examples so the suite stays
within CI's time limit; ``fuzz`` runs a long session::

    HYPOTHESIS_PROFILE=fuzz python -m pytest tests/reliability -k fuzz
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                        HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=40, derandomize=True, **_COMMON)
settings.register_profile("fuzz", max_examples=20_000, **_COMMON)
settings.register_profile("dev", max_examples=10, **_COMMON)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
