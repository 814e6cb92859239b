"""The fuzz harness's per-example bound: CPU time trips it, a merely slow (waiting) example does
not, and a wait far past the CPU bound still does."""

from __future__ import annotations

import time

import pytest
from fuzz.fuzzing import Hung, bounded


def test_a_spinning_example_is_a_hang_by_cpu_time() -> None:
    t0 = time.monotonic()
    with pytest.raises(Hung, match="CPU"), bounded(0.2):
        while time.monotonic() - t0 < 30:  # bounded: the CPU timer ends it after ~0.2 s of CPU
            pass
    assert time.monotonic() - t0 < 20


def test_waiting_longer_than_the_cpu_bound_is_not_a_hang() -> None:
    with bounded(0.1):
        time.sleep(0.4)  # off the CPU: a loaded box delays an example like this


def test_a_wait_past_the_wall_bound_is_a_hang() -> None:
    with pytest.raises(Hung, match="still running"), bounded(0.05):
        time.sleep(5)  # the wall bound (12 x 0.05 s) ends it
