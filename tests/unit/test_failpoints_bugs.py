"""Planted bugs in agent/failpoints.py: off unless named, only `on`, and typos refused."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from murmur.agent.failpoints import Failpoints, watch_file


def test_planted_bugs_are_off_unless_named_and_only_take_on() -> None:
    assert not Failpoints("").bug("read.serve_from_follower")
    fp = Failpoints("read.serve_from_follower=on,raft-after-fsync=kill@2")
    assert fp.bug("read.serve_from_follower") and not fp.bug("raft.ack_before_fsync")
    assert fp.armed == {"raft-after-fsync": 2}
    with pytest.raises(ValueError, match="action 'on'"):
        Failpoints("raft.ack_before_fsync=kill")
    with pytest.raises(ValueError, match="unknown failpoint"):
        Failpoints("read.serve_from_folower=on")


def test_arm_replaces_the_kill_failpoints_and_refuses_bugs_and_bad_counts() -> None:
    fp = Failpoints("raft-after-fsync=kill@2")
    fp.hits["raft-after-fsync"] = 1
    fp.arm("raft-before-apply=kill@5, raft-after-apply=kill")
    assert fp.armed == {"raft-before-apply": 5, "raft-after-apply": 1} and fp.hits == {}
    for bad in ("read.serve_from_follower=on", "raft-after-fsync=kill@0", "raft-after-fsync=kill@x",
                "raft-after-fsync=stop"):
        with pytest.raises(ValueError):
            fp.arm(bad)
        assert fp.armed == {"raft-before-apply": 5, "raft-after-apply": 1}  # unchanged by a bad spec
    fp.arm("")
    assert fp.armed == {}


def test_watch_file_arms_what_the_lab_file_names_and_ignores_a_bad_spec(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "failpoints"
    fp = Failpoints("")
    seen: list[dict[str, int]] = []

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(watch_file, str(path), fp, 0.5)
            await trio.sleep(0.6)
            seen.append(dict(fp.armed))  # no file: nothing armed
            path.write_text("raft-after-fsync=kill@3\n")
            await trio.sleep(1.0)
            seen.append(dict(fp.armed))
            path.write_text("no-such-point=kill")
            await trio.sleep(1.0)
            seen.append(dict(fp.armed))  # a typo leaves what was armed
            path.unlink()
            await trio.sleep(1.0)
            seen.append(dict(fp.armed))
            n.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert seen == [{}, {"raft-after-fsync": 3}, {"raft-after-fsync": 3}, {}]
