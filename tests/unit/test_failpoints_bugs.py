"""Planted bugs in agent/failpoints.py: off unless named, only `on`, and typos refused."""

from __future__ import annotations

import pytest
from murmur.agent.failpoints import Failpoints


def test_planted_bugs_are_off_unless_named_and_only_take_on() -> None:
    assert not Failpoints("").bug("read.serve_from_follower")
    fp = Failpoints("read.serve_from_follower=on,raft-after-fsync=kill@2")
    assert fp.bug("read.serve_from_follower") and not fp.bug("raft.ack_before_fsync")
    assert fp.armed == {"raft-after-fsync": 2}
    with pytest.raises(ValueError, match="action 'on'"):
        Failpoints("raft.ack_before_fsync=kill")
    with pytest.raises(ValueError, match="unknown failpoint"):
        Failpoints("read.serve_from_folower=on")
