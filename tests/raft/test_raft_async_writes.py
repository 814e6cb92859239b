"""Asynchronous storage writes in the core (etcd-io/raft's AsyncStorageWrites): a leader hands its
entries to storage, sends its AppendEntries at once and counts its own copy toward a commit only
once the write is reported durable (RawNode.persisted). Followers ack only after their own write
(raftnet's nodes persist each Ready before sending its messages).

The in-memory network (tests/support/raftnet.py) drives the followers synchronously; the leader's
Ready is handled by hand here, with its write "still running" until the test says it is done.
"""

from __future__ import annotations

from murmur.raft.messages import EntryType, Message, Ready
from support.raftnet import Net


class DriverNet(Net):
    """As the agent's driver persists: a hard state whose only change is the commit index waits
    for the next synced write (so it never reaches the disk before the entries it covers, which
    may still be in the leader's running write)."""

    def _drain(self, i: int) -> list[Message]:
        node = self.nodes[i]
        out: list[Message] = []
        while node.has_ready():
            rd = node.ready()
            if rd.must_sync:
                hard = rd.hard_state or (node.prev_hard if self.pending.pop(i, False) else None)
                self.disks[i].persist(hard, rd.entries, rd.snapshot)
            elif rd.hard_state is not None:
                self.pending[i] = True
            out.extend(rd.messages)
            self.applied[i].extend(rd.committed_entries)
            node.advance(rd)
        return out

    def __init__(self, n: int) -> None:
        self.pending: dict[int, bool] = {}
        super().__init__(n)


def _leader_net(n: int = 3) -> Net:
    net = DriverNet(n)
    net.campaign(1)
    assert net.leader() == 1
    net.tick_all(2)  # settle: the noop committed and applied everywhere
    return net


def _elect(net: Net, among: tuple[int, ...]) -> int:
    """Tick `among` (the others are down or cut off) until one of them leads."""
    for _ in range(100):
        for i in among:
            net.tick(i)
        leads = [i for i in among if net.node(i).is_leader]
        if leads:
            return leads[0]
    raise AssertionError("no leader elected")


def _start_write(net: Net, data: bytes) -> tuple[Ready, int]:
    """The leader proposes `data` and starts its write without waiting: returns its Ready (whose
    messages the caller delivers) and the new entry's index."""
    leader = net.node(1)
    leader.propose(data)
    rd = leader.ready()
    assert rd.must_sync and rd.entries and rd.entries[-1].data == data
    leader.advance(rd, durable=False)
    return rd, rd.entries[-1].index


def _finish_write(net: Net, rd: Ready) -> None:
    """The leader's write is durable now: on its disk, then reported."""
    net.disks[1].persist(rd.hard_state, rd.entries)
    net.node(1).persisted(rd)
    net.deliver(net._drain(1))
    assert net.disks[1].hard.commit <= net.disks[1].entries[-1].index


def _on_disk(net: Net, i: int) -> list[bytes]:
    return [e.data for e in net.disks[i].entries if e.type == EntryType.NORMAL]


def test_the_leader_does_not_count_itself_before_its_write_is_durable() -> None:
    net = _leader_net()
    net.cut |= {(1, 3), (3, 1)}  # one follower only: it and the leader's copy make a majority
    leader = net.node(1)
    rd, index = _start_write(net, b"x")
    assert leader.raft.prs[1].match < index  # appended, handed to storage, not counted
    assert leader.raft.log.stabled < index <= leader.raft.log.in_progress
    net.deliver(rd.messages)  # follower 2 persists and acks
    assert leader.raft.prs[2].match == index
    # Two copies exist, but only one is durable: not committed, not applied, not acknowledged.
    assert leader.raft.log.committed < index
    assert b"x" not in net.data(1) and b"x" not in net.data(2)
    # Positive control: the same leader, once its write is durable, commits.
    _finish_write(net, rd)
    assert leader.raft.prs[1].match == index and leader.raft.log.committed == index
    assert b"x" in net.data(1)


def test_a_single_voter_commits_only_after_its_write() -> None:
    net = DriverNet(1)
    net.campaign(1)
    leader = net.node(1)
    rd, index = _start_write(net, b"solo")
    assert not leader.has_ready() and leader.raft.log.committed < index
    _finish_write(net, rd)
    assert leader.raft.log.committed == index and net.data(1) == [b"solo"]


def test_entries_in_progress_are_not_handed_out_again() -> None:
    net = _leader_net()
    leader = net.node(1)
    rd1, i1 = _start_write(net, b"a")
    rd2, i2 = _start_write(net, b"b")  # proposed while the first write runs
    assert [e.index for e in rd2.entries] == [i2] and i2 == i1 + 1
    # Reports may come in order, each counting only what it wrote.
    net.disks[1].persist(rd1.hard_state, rd1.entries)
    leader.persisted(rd1)
    assert leader.raft.prs[1].match == i1
    net.disks[1].persist(rd2.hard_state, rd2.entries)
    leader.persisted(rd2)
    assert leader.raft.prs[1].match == i2


def test_three_nodes_commit_on_two_durable_followers_while_the_leaders_disk_is_slow() -> None:
    net = _leader_net()
    leader = net.node(1)
    rd, index = _start_write(net, b"x")
    net.deliver(rd.messages)  # both followers persist and ack
    assert leader.raft.log.stabled < index  # the leader's own write is still running ...
    assert leader.raft.log.committed == index  # ... yet the entry is committed: 2 durable of 3
    assert b"x" in net.data(1)  # and applied on the leader: the client's ack may go out
    assert b"x" in _on_disk(net, 2) and b"x" in _on_disk(net, 3) and b"x" not in _on_disk(net, 1)
    # More proposals keep committing while the slow write runs.
    rd2, index2 = _start_write(net, b"y")
    net.deliver(rd2.messages)
    assert leader.raft.log.committed == index2 and net.data(1)[-2:] == [b"x", b"y"]
    # The late reports change nothing that matters, and the log is whole.
    _finish_write(net, rd)
    _finish_write(net, rd2)
    assert leader.raft.prs[1].match == index2 and _on_disk(net, 1)[-2:] == [b"x", b"y"]


def test_a_leader_crash_before_its_fsync_loses_no_acknowledged_entry() -> None:
    net = _leader_net()
    leader = net.node(1)
    rd, index = _start_write(net, b"acked")
    net.deliver(rd.messages)
    assert leader.raft.log.committed == index and b"acked" in net.data(1)  # acknowledged
    # And a second entry that reaches one follower's disk and the leader's memory: one durable
    # copy of three, so not committed, never acknowledged.
    net.cut |= {(1, 3), (3, 1)}
    rd2, index2 = _start_write(net, b"never-acked")
    net.deliver(rd2.messages)
    assert leader.raft.prs[2].match == index2
    assert leader.raft.log.committed < index2 and b"never-acked" not in net.data(1)
    # kill -9 before the leader's write reaches its disk: neither entry is there.
    net.crash(1)
    assert b"acked" not in _on_disk(net, 1) and b"never-acked" not in _on_disk(net, 1)
    net.heal()
    # The followers elect a leader among themselves; it holds the acknowledged entry.
    new = _elect(net, (2, 3))
    net.propose(new, b"after")
    # The old leader restarts from its disk and catches up.
    net.start(1)
    net.tick(new, 3)
    # (The unacknowledged entry may survive, if node 2 won: a client that saw no answer cannot
    # tell; the acknowledged one must.)
    for i in (1, 2, 3):
        data = net.data(i)
        assert data[-1] == b"after" and data.count(b"acked") == 1, (i, data)
        assert data.index(b"acked") < data.index(b"after")
        assert b"acked" in _on_disk(net, i) and _on_disk(net, i)[-1] == b"after"


def test_a_write_report_from_before_a_truncation_is_ignored() -> None:
    """A deposed leader's write of entries that a newer leader then overwrote: the late report
    must not mark the new entries durable."""
    net = _leader_net()
    old = net.node(1)
    net.cut |= {(1, 2), (1, 3)}
    rd, index = _start_write(net, b"doomed")
    net.deliver(rd.messages)
    net.heal()
    net.isolate(1)
    new = _elect(net, (2, 3))
    net.propose(new, b"winner")
    net.heal()
    net.tick(new, 2)  # node 1 hears of term 2, follows, and its log is overwritten at `index`
    assert old.raft.log.term(index) != rd.entries[-1].term
    stabled, epoch = old.raft.log.stabled, old.raft.log.epoch
    old.persisted(rd)  # the doomed write's report arrives late
    assert old.raft.log.stabled == stabled and old.raft.log.epoch == epoch
    assert net.data(1)[-1:] == [b"winner"]

