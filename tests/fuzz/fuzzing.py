"""The fuzzing harness of `make fuzz` / `make fuzz-smoke` (tests/fuzz): hypothesis, time-boxed.

Every target is a pytest test built by `fuzz(strategy)`: it runs hypothesis batches of examples
until MURMUR_FUZZ_SECONDS (per target; the CI smoke uses a few seconds, `make fuzz` minutes) have
passed, then stops. Each example is bounded in time (MURMUR_FUZZ_EXAMPLE_TIMEOUT, SIGALRM): an
example that uses more CPU than that (or 12x that in wall time) is a hang, and the test fails
with `Hung` (hypothesis shrinks it).

Hypothesis keeps the failing examples in .hypothesis/ and replays them first on the next run.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SECONDS = float(os.environ.get("MURMUR_FUZZ_SECONDS", "3"))
EXAMPLE_TIMEOUT = float(os.environ.get("MURMUR_FUZZ_EXAMPLE_TIMEOUT", "5"))
# Examples per hypothesis run; runs repeat until the time is spent. Small, because a run generates
# all its examples even after the budget is spent (they then skip the check).
BATCH = 20


class Hung(Exception):
    """An example did not finish within EXAMPLE_TIMEOUT."""


# A wall-clock bound too, for hangs that burn no CPU (a wait that never ends): this many times
# the CPU bound, so that a loaded box, which delays an example without making it spin, is no hang.
WALL_FACTOR = 12


@contextmanager
def bounded(seconds: float = EXAMPLE_TIMEOUT) -> Iterator[None]:
    """Raise Hung in the main thread if the block uses more than `seconds` of CPU (the process's
    user + system time: a spinning decoder) or runs WALL_FACTOR times that in wall time. CPU, not
    wall time, is the main bound because on a loaded CI box a 5 s wall bound once failed a raft
    decoder example that passed on every rerun."""
    def on_cpu(signum: int, frame: Any) -> None:
        raise Hung(f"example used more than {seconds} s of CPU")

    def on_wall(signum: int, frame: Any) -> None:
        raise Hung(f"example still running after {seconds * WALL_FACTOR} s")

    old_prof = signal.signal(signal.SIGPROF, on_cpu)
    old_alrm = signal.signal(signal.SIGALRM, on_wall)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    signal.setitimer(signal.ITIMER_REAL, seconds * WALL_FACTOR)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGPROF, old_prof)
        signal.signal(signal.SIGALRM, old_alrm)


def fuzz(strategy: st.SearchStrategy[Any], seconds: float | None = None
         ) -> Callable[[Callable[[Any], None]], Callable[[], None]]:
    """Decorator: a pytest test that runs `check(example)` on examples of `strategy` for
    `seconds` (default SECONDS), each example bounded by EXAMPLE_TIMEOUT."""
    def deco(check: Callable[[Any], None]) -> Callable[[], None]:
        deadline = [0.0]
        counts = {"examples": 0}

        @settings(max_examples=BATCH, deadline=None, suppress_health_check=list(HealthCheck))
        @given(strategy)
        def batch(example: Any) -> None:
            if time.monotonic() > deadline[0]:
                return  # the budget is spent: the rest of this batch is a no-op
            counts["examples"] += 1
            with bounded():
                check(example)

        def test() -> None:
            budget = SECONDS if seconds is None else seconds
            deadline[0] = time.monotonic() + budget
            for _ in range(1_000_000):
                batch()
                if time.monotonic() > deadline[0]:
                    break
            print(f"{check.__name__}: {counts['examples']} examples in {budget:.0f} s")
            assert counts["examples"] > 0

        test.__name__ = check.__name__
        test.__doc__ = check.__doc__
        return test
    return deco


# ---- strategies shared by the targets ------------------------------------------------------------
# Strings that have broken parsers before, or would: huge durations and numbers, bad regexes.
INTERESTING = ["1" + "0" * 400 + "h", "99999999999999h", "2562048h", "-1s", "1e400", "NaN", "-0", "0x10",
               "18446744073709551616", "(", "[", "a" * 300, "\x00", "10s", "", " "]
leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
                   st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), math.inf, -math.inf, math.nan, 1.5]),
                   st.floats(allow_nan=True), st.text(max_size=12), st.binary(max_size=24),
                   st.sampled_from(INTERESTING))
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=6),
    st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-3, 20)), inner, max_size=5)), max_leaves=12)


def packb(v: Any) -> bytes:
    return bytes(msgpack.packb(v))


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """A structure like `base` (lists and maps of msgpack values) with a few fields replaced,
    removed or added, at any depth: mostly well-formed, wrong in one place."""
    def walk(v: Any, depth: int) -> Any:
        if isinstance(v, list):
            out = [walk(x, depth + 1) for x in v]
            op = draw(st.integers(0, 9))
            if op == 0 and out:
                del out[draw(st.integers(0, len(out) - 1)):]  # truncated
            elif op == 1:
                out.append(draw(values))
            elif op in (2, 3) and out:
                out[draw(st.integers(0, len(out) - 1))] = draw(values)
            return out
        if isinstance(v, dict):
            out_d = {k: walk(x, depth + 1) for k, x in v.items()}
            op = draw(st.integers(0, 9))
            if op == 0 and out_d:
                del out_d[draw(st.sampled_from(sorted(out_d, key=repr)))]
            elif op in (1, 2) and out_d:
                out_d[draw(st.sampled_from(sorted(out_d, key=repr)))] = draw(values)
            elif op == 3:
                out_d[draw(st.text(max_size=4))] = draw(values)
            return out_d
        return draw(values) if draw(st.integers(0, 7)) == 0 else v
    return walk(base, 0)


@st.composite
def byte_mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """`base` with bytes flipped, cut off, or garbage added."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 3))
        if op == 0 and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif op == 2:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += draw(st.binary(max_size=16))
    return bytes(data)
