"""A linearizability checker for key-value histories: Wing & Gong's search with Lowe's memo.

A history is a list of `Op`s, each with the time it was called and the time its answer came
back, on one clock. It is linearizable if every operation can be given a single instant between
its call and its return such that, taken in that order, the answers are those of a sequential
register per key. Operations whose outcome is unknown (a timeout: `ret = math.inf`, `output`
None) may take effect at any instant after their call, or never.

The search (Wing & Gong 1993, with Lowe's 2017 cache): walk the calls in time order and try to
linearize one whose call came before every pending return; on reaching a return whose operation
is not linearized yet, undo the last choice. The cache of (set of linearized ops, state) pairs
already explored keeps the search from repeating itself; it stays exponential in the number of
overlapping operations, so split histories per key (P-compositionality: a register per key) and
keep concurrency per key small (the reliability notes measured 10 clients fine, 20 not).

    result = check_kv(ops)
    assert result.ok, result.explain()
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

PUT, GET, CAS = "put", "get", "cas"


@dataclass(frozen=True)
class Op:
    """One client operation. put: `value` is written, output None. get: output is the value read
    (None: absent). cas: `value` is (expected, new), output is True/False, or None if unknown."""

    client: int
    kind: str
    key: str
    value: Hashable
    output: Hashable
    call: float
    ret: float = math.inf

    @property
    def unknown(self) -> bool:
        return self.ret == math.inf

    def __str__(self) -> str:
        ret = "?" if self.unknown else f"{self.ret:g}"
        arg = "" if self.kind == GET else f" {self.value!r}"
        out = "" if self.kind == PUT else f" -> {'?' if self.unknown else repr(self.output)}"
        return f"c{self.client} {self.kind}({self.key}{arg}){out} [{self.call:g}, {ret}]"


Step = Callable[[Hashable, Op], "tuple[bool, Hashable]"]


def register_step(state: Hashable, op: Op) -> tuple[bool, Hashable]:
    """The sequential register: may `op` take effect on `state`, and what state follows?"""
    if op.kind == PUT:
        return True, op.value
    if op.kind == GET:
        return op.output == state, state
    if op.kind == CAS:
        assert isinstance(op.value, tuple)
        expected, new = op.value
        hit = state == expected
        after = new if hit else state
        if op.unknown:
            return True, after
        return op.output == hit, after
    raise ValueError(f"unknown operation {op.kind!r}")


@dataclass
class Result:
    """ok: True (linearizable), False (not), None (gave up after max_steps: unknown)."""

    ok: bool | None
    key: str = ""
    ops: int = 0
    steps: int = 0
    # When not ok: the longest order found that linearizes a prefix, and the operations that
    # were pending where it got stuck (one of them cannot be placed).
    prefix: list[Op] = field(default_factory=list)
    stuck: list[Op] = field(default_factory=list)

    def explain(self) -> str:
        if self.ok:
            return f"key {self.key!r}: linearizable ({self.ops} ops, {self.steps} steps)"
        if self.ok is None:
            return f"key {self.key!r}: unknown, gave up after {self.steps} steps ({self.ops} ops)"
        lines = [f"key {self.key!r}: NOT linearizable ({self.ops} ops). Longest linearizable prefix:"]
        lines += [f"  {op}" for op in self.prefix[-10:]]
        lines.append("then none of these can take effect next:")
        lines += [f"  {op}" for op in self.stuck]
        return "\n".join(lines)


class _Ev:
    __slots__ = ("op", "is_call", "match", "prev", "next")

    def __init__(self, op: int, is_call: bool) -> None:
        self.op = op
        self.is_call = is_call
        self.match: _Ev | None = None
        self.prev: _Ev | None = None
        self.next: _Ev | None = None


def check(ops: Sequence[Op], init: Hashable = None, step: Step = register_step, key: str = "",
          max_steps: int = 2_000_000) -> Result:
    """Is this single-object history linearizable?"""
    ops = [op for op in ops if not (op.kind == GET and op.unknown)]  # an unanswered read says nothing
    n = len(ops)
    if n == 0:
        return Result(True, key)
    events: list[tuple[float, int, _Ev]] = []
    for i, op in enumerate(ops):
        if op.ret < op.call:
            raise ValueError(f"{op} returns before it is called")
        c, r = _Ev(i, True), _Ev(i, False)
        c.match = r
        events += [(op.call, 0, c), (op.ret, 1, r)]  # at equal times, calls first: concurrent
    events.sort(key=lambda t: (t[0], t[1]))
    head = _Ev(-1, False)
    last = head
    for _, _, ev in events:
        last.next, ev.prev, last = ev, last, ev

    def lift(c: _Ev) -> None:
        for e in (c, c.match):
            assert e is not None and e.prev is not None
            e.prev.next = e.next
            if e.next is not None:
                e.next.prev = e.prev

    def unlift(c: _Ev) -> None:
        for e in (c.match, c):
            assert e is not None and e.prev is not None
            e.prev.next = e
            if e.next is not None:
                e.next.prev = e

    remaining = sum(1 for op in ops if not op.unknown)  # known ops still to place
    state: Hashable = init
    done = 0  # bitset of linearized ops
    seen: set[tuple[int, Hashable]] = set()
    stack: list[tuple[_Ev, Hashable]] = []
    best: list[int] = []
    steps = 0
    e: _Ev | None = head.next
    while remaining:
        steps += 1
        if steps > max_steps:
            return Result(None, key, n, steps)
        assert e is not None  # a known op's return is always still in the list
        if e.is_call:
            op = ops[e.op]
            ok, after = step(state, op)
            if ok:
                bits = done | 1 << e.op
                if (bits, after) not in seen:
                    seen.add((bits, after))
                    stack.append((e, state))
                    state, done = after, bits
                    remaining -= 0 if op.unknown else 1
                    lift(e)
                    if len(stack) > len(best):
                        best = [c.op for c, _ in stack]
                    e = head.next
                    continue
            e = e.next
        else:
            if not stack:
                placed = set(best)
                rest = [op for i, op in enumerate(ops) if i not in placed]
                first_ret = min(op.ret for op in rest)
                return Result(False, key, n, steps, [ops[i] for i in best],
                              sorted((op for op in rest if op.call <= first_ret), key=lambda o: o.call))
            c, state = stack.pop()
            done &= ~(1 << c.op)
            remaining += 0 if ops[c.op].unknown else 1
            unlift(c)
            e = c.next
    return Result(True, key, n, steps)


def check_kv(ops: Sequence[Op], max_steps: int = 2_000_000) -> Result:
    """Check a key-value history key by key (absent keys start as None); the first key that
    fails (or cannot be decided) is the result, else an ok summary."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    total = Result(True, "*")
    for k in sorted(by_key):
        r = check(by_key[k], key=k, max_steps=max_steps)
        total.ops += r.ops
        total.steps += r.steps
        if not r.ok:
            return r
    return total
