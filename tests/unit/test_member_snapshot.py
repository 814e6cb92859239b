"""The member snapshot: replay rules, damage tolerance, compaction and the leave marker."""

from __future__ import annotations

from pathlib import Path

from murmur.agent import member_snapshot as ms
from murmur.agent.member_snapshot import MemberSnapshot, replay


def test_replay_keeps_the_last_word_on_each_member_and_the_leave_marker() -> None:
    r = replay("alive a 10.0.0.1:8301\nalive b 10.0.0.2:8301\nnot-alive a\nalive b 10.0.0.3:8301\nleave\n")
    assert r.alive == {"b": "10.0.0.3:8301"}
    assert r.left is True
    assert replay("leave\nstart\n").left is False


def test_damaged_lines_are_skipped_and_counted() -> None:
    r = replay("alive a 10.0.0.1:8301\n\x00\x00garbage\nalive b nope\nalive c 10.0.0.4:99999\nalive d [::1]:8301\n")
    assert r.alive == {"a": "10.0.0.1:8301", "d": "[::1]:8301"}
    assert r.bad_lines == 3


def test_a_restart_sees_what_the_last_run_recorded(tmp_path: Path) -> None:
    s = MemberSnapshot(str(tmp_path), "me")
    assert s.open().alive == {}
    s.member_alive("me", "127.0.0.1", 1)  # ourselves: never recorded
    s.member_alive("a", "127.0.0.1", 7001)
    s.member_alive("b", "127.0.0.1", 7002)
    s.member_gone("a")
    s.close()
    again = MemberSnapshot(str(tmp_path), "me").open()
    assert again.alive == {"b": "127.0.0.1:7002"}
    assert again.left is False


def test_a_leave_is_remembered_until_the_next_start(tmp_path: Path) -> None:
    s = MemberSnapshot(str(tmp_path), "me")
    s.open()
    s.member_alive("a", "127.0.0.1", 7001)
    s.left()
    s.close()
    second = MemberSnapshot(str(tmp_path), "me")
    r = second.open()
    assert r.left is True and r.alive == {"a": "127.0.0.1:7001"}
    second.close()
    assert MemberSnapshot(str(tmp_path), "me").open().left is False  # that start cleared it


def test_the_log_is_compacted_when_it_grows(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ms, "COMPACT_BYTES", 2048)
    s = MemberSnapshot(str(tmp_path), "me")
    s.open()
    for i in range(500):
        s.member_alive(f"n{i % 7}", "127.0.0.1", 7000 + i)
        if i % 3 == 0:
            s.member_gone(f"n{i % 7}")
    assert s.stats["compactions"] > 0
    assert s.path.stat().st_size < 2048 + 200
    expected = dict(s.alive)
    s.close()
    assert MemberSnapshot(str(tmp_path), "me").open().alive == expected
    assert expected  # the test would be vacuous with nobody alive


def test_an_unwritable_dir_is_reported_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    s = MemberSnapshot(str(blocker), "me")  # data_dir is a file: mkdir fails
    try:
        s.open()
    except OSError:
        raise AssertionError("open() must not raise") from None
    assert s.stats["write_errors"] == 1
    s.member_alive("a", "127.0.0.1", 1)  # no file: ignored, still no exception
