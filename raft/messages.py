"""Raft's vocabulary: entries, messages, hard state, and the Ready bundle.

Entries and messages are plain frozen dataclasses; `codec.py` turns them into bytes. Message and
entry types are append-only enums: their numbers travel on the wire and sit in the log on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class EntryType(IntEnum):
    """Only append."""

    NORMAL = 0  # a command for the state machine
    CONF_CHANGE = 1  # a change of the voter set
    NOOP = 2  # the empty entry a new leader appends to commit its term


class MessageType(IntEnum):
    """Only append. HUP and BEAT are local: they never cross the network."""

    HUP = 0  # start an election (local)
    BEAT = 1  # leader: send heartbeats now (local)
    PROP = 2  # propose entries (local, or forwarded)
    APP = 3  # append entries
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    PRE_VOTE = 7
    PRE_VOTE_RESP = 8
    HEARTBEAT = 9
    HEARTBEAT_RESP = 10
    SNAP = 11  # install a snapshot
    TIMEOUT_NOW = 12  # leadership transfer: campaign at once
    READ_INDEX = 13  # reject=True: confirm with a quorum even under a lease (a `consistent` read)
    READ_INDEX_RESP = 14
    SNAP_STATUS = 15  # the driver reports how sending a snapshot went (local; reject: it failed)


LOCAL_MESSAGES = frozenset({MessageType.HUP, MessageType.BEAT, MessageType.SNAP_STATUS})
# Messages a leader may send before its own write of the same Ready is durable (Raft thesis
# §10.2.1): they promise nothing about the sender's disk; the leader counts its own copy toward a
# commit only once its write is reported durable (RawNode.persisted).
EARLY_SEND = frozenset({MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP})


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


NONE = 0  # "no node": node IDs are positive integers


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


class ConfChangeType(IntEnum):
    """Only append."""

    ADD_VOTER = 0  # add a voter, or promote a learner to one
    REMOVE_VOTER = 1  # remove a voter or a learner
    ADD_LEARNER = 2  # add a non-voter: it gets the log, but neither votes nor counts for commits


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-server membership change (Raft thesis §4.1), the data of a CONF_CHANGE entry. It
    carries the whole voter set it leads to, so a server replaying the log from any conf entry
    (a new one catching up from index 1, say) knows the configuration without the bootstrap set."""

    type: ConfChangeType
    node: int
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()  # the non-voters the change leads to (a fourth field when any)

    def encode(self) -> bytes:
        text = f"{self.type.name.lower()} {self.node} {','.join(map(str, self.voters))}"
        if self.learners:
            text += " " + ",".join(map(str, self.learners))
        return text.encode()

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Raises ValueError for anything that is not an encoded ConfChange."""
        parts = data.decode("ascii").split(" ")
        if len(parts) not in (3, 4):
            raise ValueError("a conf change is 'type node voters [learners]'")
        try:
            kind = ConfChangeType[parts[0].upper()]
        except KeyError as exc:
            raise ValueError(f"unknown conf change type {parts[0]!r}") from exc
        voters = tuple(int(v) for v in parts[2].split(",")) if parts[2] else ()
        learners = tuple(int(v) for v in parts[3].split(",")) if len(parts) == 4 and parts[3] else ()
        node = int(parts[1])
        if node <= 0 or any(v <= 0 for v in voters + learners):
            raise ValueError("node ids are positive")
        if set(voters) & set(learners):
            raise ValueError("a server is a voter or a learner, not both")
        return cls(kind, node, voters, learners)


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot ends: the last index and term it covers, and the voters as of then."""

    index: int = 0
    term: int = 0
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine's state as of `meta.index`, as opaque bytes (the application's format)."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None


def malformed(m: Message) -> str | None:
    """Why a message from the network cannot be right, or None. Raft trusts its peers' logic, not
    the bytes: a message that no correct peer sends (negative numbers, entries that are not the
    run index+1, index+2, ... of terms between log_term and the message's term) is dropped, since
    stepping it could corrupt the log or raise."""
    if not isinstance(m.type, MessageType):
        return "unknown message type"
    for x in (m.to, m.frm, m.term, m.log_term, m.index, m.commit, m.reject_hint):
        if type(x) is not int or x < 0:  # bool is not an int here
            return "a negative or non-integer field"
    if not isinstance(m.context, bytes) or not isinstance(m.reject, bool) or not isinstance(m.entries, tuple):
        return "a field of the wrong type"
    if m.snapshot is not None and not isinstance(m.snapshot, Snapshot):
        return "a snapshot of the wrong type"
    if m.entries and m.type != MessageType.APP:
        return "entries on a message that carries none"
    if m.type == MessageType.SNAP:
        if m.snapshot is None:
            return "a snapshot message without a snapshot"
        meta = m.snapshot.meta
        if not isinstance(m.snapshot.data, bytes) or not isinstance(meta.voters, tuple) \
                or not isinstance(meta.learners, tuple):
            return "a snapshot of the wrong shape"
        for x in (meta.index, meta.term, *meta.voters, *meta.learners):
            if type(x) is not int or x < 0:
                return "a negative or non-integer snapshot field"
        if meta.index == 0 or meta.term == 0 or meta.term > m.term or not meta.voters:
            return "a snapshot that covers nothing, or is newer than its message"
    if m.type == MessageType.APP:
        if m.log_term > m.term:
            return "log_term above the message term"
        prev_term = m.log_term
        for k, e in enumerate(m.entries):
            if not isinstance(e, Entry) or not isinstance(e.type, EntryType) or not isinstance(e.data, bytes):
                return "an entry of the wrong shape"
            if type(e.index) is not int or e.index != m.index + 1 + k:
                return "entries out of sequence"
            if type(e.term) is not int or not prev_term <= e.term <= m.term:
                return "entry terms out of order"
            prev_term = e.term
    return None


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SoftState:
    lead: int
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the applied index reaches `index`."""

    index: int
    context: bytes


@dataclass
class Ready:
    """Everything the driver must do, in order: persist `hard_state`, `snapshot` and `entries`
    (durably), then send `messages`, then restore the state machine from `snapshot` (a leader's,
    replacing the log up to its index) and apply `committed_entries` (which follow it); then call
    advance()."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    # True when this Ready must be durable before its messages go out: new entries, or a new
    # term or vote (etcd's MustSync). A change of the commit index alone need not be synced: it
    # can be recomputed from the leader after a crash.
    must_sync: bool = False
    # The log's truncation count when this Ready was made (RaftLog.epoch): a write report for it
    # is ignored if the log has been truncated since.
    log_epoch: int = 0

    def empty(self) -> bool:
        return not (self.soft_state or self.hard_state or self.entries or self.snapshot
                    or self.committed_entries or self.messages or self.read_states)
