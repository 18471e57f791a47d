"""Shared test configuration: hypothesis is derandomized in CI so a failure reproduces, and
slow tests are scheduled first."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_collection_modifyitems(config, items):
    """Slow tests (real training in subprocesses, minutes each) first: with `-n 2` the workers
    then share them from the start instead of one finishing the last of them alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
