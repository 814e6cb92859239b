"""A statistical CPU profiler for a running agent: `MURMUR_SAMPLE=/path/report.txt murmur agent ...`.

SIGPROF fires every 5 ms of the process's CPU time (ITIMER_PROF, so idle time is never sampled)
and its handler, which Python runs in the main thread, counts the interrupted stack per function:
how often it was running (self) and how often it was on the stack (total). Time spent in a C call
or a syscall is charged to the Python function that made it. The report is rewritten every 200
samples, so it survives a SIGKILL; `touch PATH.reset` starts the counts afresh (bench/checks.py does
so at the start of its steady window). Costs ~1% of the CPU it samples, unlike cProfile, which
slows every call and so distorts an event loop's load. For benchmarks, not for production.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from types import FrameType
from typing import Any

PERIOD = 0.005  # seconds of CPU time between samples
WRITE_EVERY = 200  # samples (1 s of CPU)


def _key(frame: FrameType) -> str:
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno} {code.co_name}"


class Sampler:
    def __init__(self, path: str) -> None:
        self.path = path
        self.own: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.samples = 0

    def start(self) -> None:
        signal.signal(signal.SIGPROF, self.on_signal)
        signal.setitimer(signal.ITIMER_PROF, PERIOD, PERIOD)

    def on_signal(self, signum: int, frame: FrameType | None) -> Any:
        if frame is None:
            return
        self.samples += 1
        self.own[_key(frame)] += 1
        seen = set()
        cur: FrameType | None = frame
        for _ in range(200):
            if cur is None:
                break
            k = _key(cur)
            if k not in seen:
                seen.add(k)
                self.total[k] += 1
            cur = cur.f_back
        if self.samples % WRITE_EVERY == 0:
            self.write()

    def write(self) -> None:
        if os.path.exists(self.path + ".reset"):
            os.unlink(self.path + ".reset")
            self.own.clear()
            self.total.clear()
            self.samples = 0
            return
        n = max(self.samples, 1)
        lines = [f"{self.samples} samples, one per {PERIOD * 1000:g} ms of CPU", "", "self %  function"]
        lines += [f"{100 * c / n:6.2f}  {k}" for k, c in self.own.most_common(60)]
        lines += ["", "total %  function (on the stack)"]
        lines += [f"{100 * c / n:6.2f}  {k}" for k, c in self.total.most_common(150)]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.path)


def start_from_env() -> Sampler | None:
    path = os.environ.get("MURMUR_SAMPLE", "")
    if not path:
        return None
    path = path.replace("{pid}", str(os.getpid()))  # one report per agent when several share the env
    s = Sampler(path)
    s.start()
    return s
