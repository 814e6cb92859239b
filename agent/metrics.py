"""The agent's metrics: counters, timings and gauges, shown by `/v1/agent/metrics` as Consul's JSON
(`Timestamp`, `Gauges`, `Points`, `Counters`, `Samples`) or as Prometheus text (prometheus-client).

Names. A metric Consul has keeps Consul's name with Consul's default prefix (`consul.raft.commitTime`,
`consul.memberlist.msg.suspect`, `consul.dns.domain_query`, `consul.api.http`, `consul.state.services`),
so existing Consul dashboards and alerts find them; in Prometheus text the dots become underscores
(`consul_raft_commitTime`), as Consul's Prometheus sink writes them. Metrics Consul does not have
are `murmur.*`. docs/operations.md lists them all.

Kinds and units, as Consul's go-metrics:
- a counter counts events; in Prometheus text it is written under Consul's exact name (untyped),
  not prometheus-client's `<name>_total`, because Consul's own output has no `_total` and
  dashboards query the bare name;
- a sample (a timing) is in milliseconds; in Prometheus text it is a histogram, whose `_sum` and
  `_count` match Consul's summaries (Consul's `quantile` series have no equivalent);
- a gauge is read when the metrics are asked for (members by state, catalog sizes, checks by status).

Unlike Consul's JSON, which shows only the current 10 s interval, every figure here is
cumulative since the agent started (the Prometheus convention); `Rate` is per second over that time.
Everything here runs on the event loop: no locks.
"""

from __future__ import annotations

import bisect
import math
import operator
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Labels = tuple[tuple[str, str], ...]
GaugeReading = tuple[str, dict[str, str], float]

# Histogram bucket bounds in milliseconds: DNS answers in tens of µs, health checks in seconds.
PENDING_MAX = 4096  # raw timings a hot path may hold before they are folded in
BUCKETS_MS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
              5000.0, 10000.0, 30000.0)


def labels_of(labels: dict[str, str] | None) -> Labels:
    return tuple(sorted(labels.items())) if labels else ()


@dataclass
class Aggregate:
    """go-metrics' AggregateSample, plus Prometheus buckets for timings."""

    count: int = 0
    sum: float = 0.0
    sumsq: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    buckets: list[int] = field(default_factory=list)
    # Hot paths (DNS answers) append raw timings here, ~20x cheaper than add(); folded in when
    # read, or every PENDING_MAX values so memory stays bounded.
    pending: list[float] = field(default_factory=list)

    def fold(self) -> None:
        """Take in the pending values in one pass of C-level builtins (sum, min, max, sort)."""
        values, self.pending = self.pending, []
        if not values:
            return
        values.sort()
        self.count += len(values)
        self.sum += math.fsum(values)
        self.sumsq += math.fsum(map(operator.mul, values, values))
        self.min = min(self.min, values[0])
        self.max = max(self.max, values[-1])
        if not self.buckets:
            self.buckets = [0] * len(BUCKETS_MS)
        below = 0
        for i, bound in enumerate(BUCKETS_MS):  # values <= bound, as add() counts them
            upto = bisect.bisect_right(values, bound)
            self.buckets[i] += upto - below
            below = upto

    def add(self, value: float, bucketed: bool) -> None:
        self.count += 1
        self.sum += value
        self.sumsq += value * value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        if bucketed:
            if not self.buckets:
                self.buckets = [0] * len(BUCKETS_MS)
            i = bisect.bisect_left(BUCKETS_MS, value)
            if i < len(BUCKETS_MS):
                self.buckets[i] += 1

    def json(self, name: str, labels: Labels, elapsed: float) -> dict[str, Any]:
        self.fold()
        mean = self.sum / self.count if self.count else 0.0
        var = max(0.0, self.sumsq / self.count - mean * mean) if self.count > 1 else 0.0
        return {"Name": name, "Count": self.count, "Rate": self.sum / elapsed if elapsed > 0 else 0.0,
                "Sum": self.sum, "Min": self.min if self.count else 0.0, "Max": self.max if self.count else 0.0,
                "Mean": mean, "Stddev": math.sqrt(var), "Labels": dict(labels)}


HELP: dict[str, str] = {}  # name -> one line, filled by describe()


def describe(name: str, text: str) -> str:
    HELP[name] = text
    return name


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.counters: dict[tuple[str, Labels], Aggregate] = {}
        self.samples: dict[tuple[str, Labels], Aggregate] = {}
        self.gauge_sources: list[Callable[[], Iterable[GaugeReading]]] = []
        self.counter_sources: list[Callable[[], Iterable[GaugeReading]]] = []

    # ---- recording ----------------------------------------------------------------------------
    def incr(self, name: str, value: float = 1.0, labels: dict[str, str] | None = None) -> None:
        key = (name, labels_of(labels))
        agg = self.counters.get(key)
        if agg is None:
            agg = self.counters[key] = Aggregate()
        agg.add(value, False)

    def counter(self, name: str, labels: dict[str, str] | None = None) -> Aggregate:
        """The aggregate of one counter series, for hot paths to add to directly (`agg.add(1, False)`)."""
        key = (name, labels_of(labels))
        agg = self.counters.get(key)
        if agg is None:
            agg = self.counters[key] = Aggregate()
        return agg

    def sample(self, name: str, labels: dict[str, str] | None = None) -> Aggregate:
        """The aggregate of one timing series, for hot paths to add to directly (`agg.add(ms, True)`)."""
        key = (name, labels_of(labels))
        agg = self.samples.get(key)
        if agg is None:
            agg = self.samples[key] = Aggregate()
        return agg

    def observe_ms(self, name: str, ms: float, labels: dict[str, str] | None = None) -> None:
        key = (name, labels_of(labels))
        agg = self.samples.get(key)
        if agg is None:
            agg = self.samples[key] = Aggregate()
        agg.add(ms, True)

    def gauges(self, source: Callable[[], Iterable[GaugeReading]]) -> None:
        """Register a function read at every scrape, yielding (name, labels, value)."""
        self.gauge_sources.append(source)

    def counts(self, source: Callable[[], Iterable[GaugeReading]]) -> None:
        """Register a function read at every scrape, yielding (name, labels, total) of counters
        that a core keeps itself (its stats dict): shown like counters incremented by 1."""
        self.counter_sources.append(source)

    def read_counters(self) -> list[tuple[tuple[str, Labels], Aggregate]]:
        out = dict(self.counters)
        for source in self.counter_sources:
            for name, labels, total in source():
                n = int(total)
                out[(name, labels_of(labels))] = Aggregate(n, float(total), float(total), 1.0 if n else math.inf,
                                                           1.0 if n else -math.inf)
        return sorted(out.items())

    def read_gauges(self) -> list[tuple[str, Labels, float]]:
        out: list[tuple[str, Labels, float]] = []
        for source in self.gauge_sources:
            for name, labels, value in source():
                out.append((name, labels_of(labels), float(value)))
        return sorted(out)

    # ---- rendering ----------------------------------------------------------------------------
    def as_json(self, wall: float | None = None) -> dict[str, Any]:
        elapsed = max(self.clock() - self.started, 1e-9)
        ts = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(time.time() if wall is None else wall))
        return {
            "Timestamp": ts,
            "Gauges": [{"Name": n, "Value": v, "Labels": dict(lb)} for n, lb, v in self.read_gauges()],
            "Points": [],
            "Counters": [agg.json(n, lb, elapsed) for (n, lb), agg in self.read_counters()],
            "Samples": [agg.json(n, lb, elapsed) for (n, lb), agg in sorted(self.samples.items())],
        }

    def as_prometheus(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

        metrics = self

        def group(items: Iterable[tuple[tuple[str, Labels], Any]]) -> dict[str, list[tuple[Labels, Any]]]:
            out: dict[str, list[tuple[Labels, Any]]] = {}
            for (name, labels), value in items:
                out.setdefault(name, []).append((labels, value))
            return out

        class Collector:
            def collect(self) -> Iterable[Metric]:
                gauges: dict[str, list[tuple[Labels, float]]] = {}
                for name, labels, value in metrics.read_gauges():
                    gauges.setdefault(name, []).append((labels, value))
                for name, rows in sorted(gauges.items()):
                    keys = sorted({k for labels, _ in rows for k, _ in labels})
                    g = GaugeMetricFamily(prom_name(name), HELP.get(name, name), labels=keys)
                    for labels, value in rows:
                        d = dict(labels)
                        g.add_metric([d.get(k, "") for k in keys], value)
                    yield g
                for name, crows in sorted(group(metrics.read_counters()).items()):
                    # Consul's name exactly (no `_total`): see the module docstring.
                    c = Metric(prom_name(name), HELP.get(name, name), "unknown")
                    for labels, agg in crows:
                        c.add_sample(prom_name(name), dict(labels), agg.sum)
                    yield c
                for name, srows in sorted(group(metrics.samples.items()).items()):
                    keys = sorted({k for labels, _ in srows for k, _ in labels})
                    h = HistogramMetricFamily(prom_name(name), HELP.get(name, name) + " (milliseconds)",
                                              labels=keys)
                    for labels, agg in srows:
                        agg.fold()
                        d = dict(labels)
                        cum, buckets = 0, []
                        for bound, n in zip(BUCKETS_MS, agg.buckets or [0] * len(BUCKETS_MS), strict=True):
                            cum += n
                            buckets.append((repr(bound), cum))
                        buckets.append(("+Inf", agg.count))
                        h.add_metric([d.get(k, "") for k in keys], buckets, agg.sum)
                    yield h

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector())
        return generate_latest(registry)


def prom_name(name: str) -> str:
    """`consul.raft.commitTime` -> `consul_raft_commitTime` (Consul's Prometheus spelling)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


class Timer:
    """`with Timer(metrics, name, labels):` observes the block's wall time in milliseconds."""

    __slots__ = ("labels", "metrics", "name", "t0")

    def __init__(self, metrics: Metrics | None, name: str, labels: dict[str, str] | None = None) -> None:
        self.metrics, self.name, self.labels, self.t0 = metrics, name, labels, 0.0

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.metrics is not None:
            self.metrics.observe_ms(self.name, (time.perf_counter() - self.t0) * 1000.0, self.labels)
