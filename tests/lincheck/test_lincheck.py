"""The linearizability checker, proven both ways: histories known to be linearizable pass, and
known bad ones (stale reads, lost writes, impossible CAS answers) fail."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from support.lincheck import CAS, GET, PUT, Op, check, check_kv

INF = math.inf


def put(c: int, v: object, call: float, ret: float = INF, key: str = "k") -> Op:
    return Op(c, PUT, key, v, None, call, ret)


def get(c: int, out: object, call: float, ret: float, key: str = "k") -> Op:
    return Op(c, GET, key, None, out, call, ret)


def cas(c: int, exp: object, new: object, out: object, call: float, ret: float = INF, key: str = "k") -> Op:
    return Op(c, CAS, key, (exp, new), out, call, ret)


# ---- hand-written histories ---------------------------------------------------------------------
def test_read_after_completed_write_must_see_it() -> None:
    assert not check([put(1, 1, 0, 1), get(2, None, 2, 3)]).ok
    assert check([put(1, 1, 0, 1), get(2, 1, 2, 3)]).ok  # positive control


def test_concurrent_read_may_see_either() -> None:
    assert check([put(1, 1, 0, 5), get(2, None, 1, 2)]).ok
    assert check([put(1, 1, 0, 5), get(2, 1, 1, 2)]).ok


def test_timed_out_write_may_apply_late_or_never_but_not_undo() -> None:
    assert check([put(1, 1, 0), get(2, None, 5, 6)]).ok  # never applied (or not yet)
    assert check([put(1, 1, 0), get(2, 1, 5, 6)]).ok  # applied
    assert check([put(1, 1, 0), get(2, None, 5, 6), get(2, 1, 7, 8)]).ok  # applied late
    assert not check([put(1, 1, 0), get(2, 1, 5, 6), get(2, None, 7, 8)]).ok  # applied, then undone


def test_stale_read() -> None:
    h = [put(1, 1, 0, 1), put(1, 2, 2, 3), get(2, 1, 4, 5)]
    r = check(h)
    assert r.ok is False
    assert "NOT linearizable" in r.explain() and "get(k) -> 1" in r.explain()
    assert check(h[:2] + [get(2, 2, 4, 5)]).ok


def test_reads_must_agree_on_the_order_of_concurrent_writes() -> None:
    writes = [put(1, 1, 0, 10), put(2, 2, 0, 10)]
    assert check(writes + [get(3, 1, 11, 12), get(3, 1, 13, 14)]).ok
    assert check(writes + [get(3, 2, 11, 12), get(4, 2, 11, 14)]).ok
    assert not check(writes + [get(3, 1, 11, 12), get(3, 2, 13, 14)]).ok
    # Overlapping the writes, the reads may see 1 then 2.
    assert check(writes + [get(3, 1, 1, 2), get(3, 2, 3, 4)]).ok


def test_cas() -> None:
    assert check([cas(1, None, 1, True, 0, 1), get(2, 1, 2, 3)]).ok
    assert not check([cas(1, 5, 1, True, 0, 1)]).ok  # claims a hit on a value never there
    assert not check([put(1, 5, 0, 1), cas(1, 5, 6, False, 2, 3)]).ok  # claims a miss on a hit
    assert check([put(1, 5, 0, 1), cas(1, 5, 6, True, 2, 3), get(2, 6, 4, 5)]).ok
    # Two CAS from the same expected value cannot both succeed.
    assert not check([put(1, 0, 0, 1), cas(1, 0, 1, True, 2, 5), cas(2, 0, 2, True, 2, 5)]).ok
    assert check([put(1, 0, 0, 1), cas(1, 0, 1, True, 2, 5), cas(2, 0, 2, False, 2, 5)]).ok
    # An unknown CAS may have applied...
    assert check([put(1, 0, 0, 1), cas(1, 0, 7, None, 2), get(2, 7, 5, 6)]).ok
    assert check([put(1, 0, 0, 1), cas(1, 0, 7, None, 2), get(2, 0, 5, 6)]).ok
    # ...but only as the register allows: expected 3 never held, so 7 cannot appear.
    assert not check([put(1, 0, 0, 1), cas(1, 3, 7, None, 2), get(2, 7, 5, 6)]).ok


def test_keys_are_checked_separately_and_the_bad_one_is_named() -> None:
    h = [put(1, 1, 0, 1, key="a"), get(2, None, 2, 3, key="b"), put(1, 2, 4, 5, key="b"),
         get(2, 1, 6, 7, key="a")]
    assert check_kv(h).ok
    bad = check_kv(h + [get(3, None, 8, 9, key="b")])
    assert bad.ok is False and bad.key == "b"


def test_gives_up_as_unknown_not_as_a_verdict() -> None:
    h = [put(c, c, 0, 10) for c in range(8)] + [get(9, 99, 11, 12)]
    assert check(h, max_steps=50).ok is None
    assert check(h).ok is False


def _register_history(rng: random.Random, clients: int, per_client: int, unknown: float) -> list[Op]:
    """Clients call put/get/cas on one register; each op takes effect at a random instant inside
    its [call, ret] window, so the history is linearizable by construction."""
    ops: list[tuple[float, float, float, int, str, object]] = []
    for c in range(clients):
        t = rng.random()
        for _ in range(per_client):
            call = t
            ret = call + rng.uniform(0.1, 3.0)
            point = rng.uniform(call, ret)
            kind = rng.choice([PUT, GET, GET, CAS])
            ops.append((point, call, ret, c, kind, rng.randrange(4)))
            t = ret + rng.uniform(0, 0.5)
    ops.sort()
    state: object = None
    out: list[Op] = []
    for n, (_, call, ret, c, kind, arg) in enumerate(ops):
        lost = rng.random() < unknown
        if kind == PUT:
            out.append(put(c, n, call, INF if lost else ret))
            state = n
        elif kind == GET:
            out.append(get(c, state, call, ret))
        else:
            hit = state == arg
            out.append(cas(c, arg, n, None if lost else hit, call, INF if lost else ret))
            state = n if hit else state
    return out


def test_long_realistic_histories_are_quick() -> None:
    rng = random.Random(7)
    for _ in range(5):
        h = _register_history(rng, clients=5, per_client=100, unknown=0.02)
        r = check(h)
        assert r.ok, r.explain()


# ---- property: sequential model histories pass; a stale read planted in one fails -----------------
@st.composite
def histories(draw: st.DrawFn) -> list[Op]:
    """Operations with windows on a shared timeline and a linearization point inside each; the
    outputs come from applying them to a register in point order. Values written are unique."""
    n = draw(st.integers(2, 14))
    raw = []
    for i in range(n):
        call = draw(st.integers(0, 40))
        length = draw(st.integers(1, 12))
        point = draw(st.integers(0, 2 * length)) / 2
        kind = draw(st.sampled_from([PUT, PUT, GET, GET, CAS]))
        unknown = kind != GET and draw(st.integers(0, 9)) == 0
        applied = not unknown or draw(st.booleans())
        raw.append((call + point, i, call, call + length, kind, unknown, applied, draw(st.integers(0, n))))
    raw.sort()
    state: object = None
    ops: list[Op] = []
    for _, i, call, ret, kind, unknown, applied, arg in raw:
        end = INF if unknown else float(ret)
        if kind == PUT:
            ops.append(put(i % 4, 1000 + i, call, end))
            state = 1000 + i if applied else state
        elif kind == GET:
            ops.append(get(i % 4, state, call, ret))
        else:
            expected = state if arg % 2 == 0 else 1000 + arg  # a hit or (mostly) a miss
            hit = state == expected
            ops.append(cas(i % 4, expected, 1000 + i, None if unknown else hit, call, end))
            state = 1000 + i if hit and applied else state
    return ops


@settings(max_examples=300, deadline=None)
@given(histories())
def test_histories_of_a_sequential_register_pass(h: list[Op]) -> None:
    r = check(h)
    assert r.ok, r.explain()


def _stale_read(h: list[Op]) -> list[Op] | None:
    """Make some read return a value that was certainly overwritten before the read began:
    a write W1 of v completed before a known write W2 of another value began, and W2 completed
    before the read began. Every order that respects real time puts W2 between W1 and the read."""
    writes = [op for op in h if op.kind == PUT or (op.kind == CAS and op.output is True)]
    for g in h:
        if g.kind != GET:
            continue
        for w1 in writes:
            value = w1.value if not isinstance(w1.value, tuple) else w1.value[1]
            for w2 in writes:
                if w2 is not w1 and not w2.unknown and w2.kind == PUT and w1.ret < w2.call \
                        and w2.ret < g.call and g.output != value:
                    return [Op(g.client, GET, g.key, None, value, g.call, g.ret) if op is g else op for op in h]
    return None


@settings(max_examples=300, deadline=None)
@given(histories())
def test_a_planted_stale_read_fails(h: list[Op]) -> None:
    mutated = _stale_read(h)
    if mutated is None:
        return  # this history has no place for a certainly-stale read
    r = check(mutated)
    assert r.ok is False, "\n".join(map(str, mutated))


def test_the_stale_read_generator_finds_places() -> None:
    """The property above is not vacuous: most generated histories get a mutation."""
    rng = random.Random(3)
    found = sum(_stale_read(_register_history(rng, 3, 6, 0.0)) is not None for _ in range(50))
    assert found > 25
