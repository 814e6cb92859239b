"""The lost-write checker fails on a known-bad history (and passes a good one)."""

from __future__ import annotations

from support.lostwrites import lost_writes


def test_the_checker_sees_a_missing_and_a_changed_write() -> None:
    acked = {"a": "1", "b": "2", "c": "3"}
    store = {"a": b"1", "b": b"2", "c": b"3"}

    def read(key: str) -> tuple[int, bytes]:
        return (200, store[key]) if key in store else (404, b"")

    assert lost_writes(acked, read) == []
    del store["b"]
    store["c"] = b"x"
    assert lost_writes(acked, read) == [("b", 404, b""), ("c", 200, b"x")]
