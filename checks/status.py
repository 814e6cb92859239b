"""The check status machine (pure): probe results in, a debounced status out.

Consul's thresholds, counted over consecutive results:
- success_before_passing: this many successes in a row before a non-passing check turns passing;
- failures_before_warning / failures_before_critical: this many failures in a row before the
  check turns warning / critical. A failure below both thresholds changes only the output.
Both guard against flapping on a single lost probe, at the price of slower reaction.
TTL checks turn critical when no update arrives before their deadline.
"""

from __future__ import annotations

from dataclasses import dataclass

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
STATUSES = (PASSING, WARNING, CRITICAL)
DEFAULT_OUTPUT_MAX = 4096  # bytes of output kept per check (Consul's check_output_max_size)


def truncate_output(output: str, limit: int = DEFAULT_OUTPUT_MAX) -> str:
    """Keep at most `limit` bytes of UTF-8 output, marking the cut."""
    raw = output.encode("utf-8", "replace")
    if len(raw) <= limit:
        return output
    return raw[:limit].decode("utf-8", "ignore") + " ... (output truncated)"


@dataclass
class StatusMachine:
    """Turns a stream of probe results into the check's status and output."""

    status: str = CRITICAL
    output: str = ""
    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0
    output_max_size: int = DEFAULT_OUTPUT_MAX
    successes: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"invalid status {self.status!r}; want one of {', '.join(STATUSES)}")
        if not self.failures_before_warning:
            # Consul: warning threshold defaults to the critical one.
            self.failures_before_warning = self.failures_before_critical

    def record(self, result: str, output: str) -> bool:
        """Feed one probe result. Returns True if status or output changed."""
        if result not in STATUSES:
            raise ValueError(f"invalid status {result!r}")
        before = (self.status, self.output)
        output = truncate_output(output, self.output_max_size)
        if result in (PASSING, WARNING):
            # As Consul: a warning result counts as a success for the thresholds (the service
            # answers, just unhappily), and is reported as warning once enough arrive.
            self.successes += 1
            self.failures = 0
            if self.successes >= self.success_before_passing:
                self.status = result
        else:
            self.successes = 0
            self.failures += 1
            if self.failures >= self.failures_before_critical:
                self.status = CRITICAL
            elif self.failures >= self.failures_before_warning:
                self.status = WARNING
        self.output = output
        return (self.status, self.output) != before

    def force(self, status: str, output: str) -> bool:
        """Set status directly (TTL updates, `check/pass|warn|fail`), bypassing thresholds."""
        if status not in STATUSES:
            raise ValueError(f"invalid status {status!r}; want one of {', '.join(STATUSES)}")
        before = (self.status, self.output)
        self.status = status
        self.output = truncate_output(output, self.output_max_size)
        self.successes = self.failures = 0
        return (self.status, self.output) != before


@dataclass
class TTLTimer:
    """A TTL check's deadline: refreshed by every update, critical once `now` passes it."""

    ttl: float
    deadline: float

    def refresh(self, now: float) -> None:
        self.deadline = now + self.ttl

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    @staticmethod
    def expiry_output(ttl: float) -> str:
        return f"TTL expired (no update within {ttl:g}s)"
