"""The fault lab needs root, iproute2 and nftables; without them its tests skip, saying why."""

from __future__ import annotations

import pytest

from lab.netns import available


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = available()
    if not why:
        return
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"fault lab: {why}"))
