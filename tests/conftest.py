"""Suite-wide options: `--runslow` runs the tests marked `slow` (make test-full); hypothesis's profile."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

# CI machines are shared 2-core boxes: a property example that takes 200 ms under load is not a
# failure, so no per-example deadline (and no too-slow health check); examples stay bounded by
# each test's max_examples.
settings.register_profile("murmur", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("murmur")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow (soaks, long simulations)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (make test-full)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
