"""Alias checks (pure): a check whose status is that of another service instance or node.

The aliased checks are the node-level checks of the aliased node and, when a service is aliased,
that service's own checks (the same set that decides the instance's health in the catalog). Worst
status wins; with no such checks the alias passes, as Consul's does.
"""

from __future__ import annotations

from collections.abc import Iterable

from .status import CRITICAL, PASSING, WARNING


def alias_status(checks: Iterable[tuple[str, str, str]], service_id: str, own_id: str = "") -> tuple[str, str]:
    """(status, output) from the aliased node's checks, given as (check ID, service ID, status).
    `service_id` "" aliases the node alone; `own_id` (the alias check itself) is never counted."""
    worst = PASSING
    culprit = ""
    seen = 0
    for cid, sid, status in sorted(checks):
        if cid == own_id or sid not in ("", service_id):
            continue
        seen += 1
        if status == CRITICAL and worst != CRITICAL:
            worst, culprit = CRITICAL, cid
        elif status == WARNING and worst == PASSING:
            worst, culprit = WARNING, cid
    if not seen:
        return PASSING, "No checks found."
    if worst == PASSING:
        return PASSING, "All checks passing."
    return worst, f"Aliased check {culprit!r} is {worst}"
