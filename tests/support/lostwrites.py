"""The lost-write checker: every acknowledged write must read back with the value it wrote."""

from __future__ import annotations

from collections.abc import Callable, Mapping


def lost_writes(acked: Mapping[str, str], read: Callable[[str], tuple[int, bytes]]) -> list[tuple[str, int, bytes]]:
    """(key, status, body) of each acknowledged write that `read(key)` does not return as written
    (`read` answers an HTTP status and the raw value, e.g. a `?consistent&raw` GET)."""
    out = []
    for key, value in acked.items():
        status, body = read(key)
        if status != 200 or body != value.encode():
            out.append((key, status, body))
    return out
