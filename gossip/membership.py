"""SWIM membership with Lifeguard, as a sans-I/O state machine.

The driver feeds it datagrams (`receive`), stream frames (`handle_stream`, `stream_result`) and
the time (`handle_timer` at `next_deadline()`), and collects what it produced: datagrams to send
(`packets_to_send`), TCP exchanges to make (`streams_to_open`) and member events (`events`).
Nothing here reads a clock, a socket or the global random generator, so a simulation can run a
thousand of these in virtual time and replay any run from its seed.

The rules follow memberlist: incarnation numbers order updates about a member; a member that
hears itself suspected or declared dead refutes with a higher incarnation; suspicion timeouts
shrink with independent confirmations (Lifeguard); local health awareness scales our own probe
interval and timeout when we are the slow one.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import msgpack

from . import wire
from .awareness import Awareness
from .broadcast import BroadcastQueue
from .clock import LamportClock
from .config import GossipConfig
from .suspicion import UNATTRIBUTED, Suspicion
from .wire import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberStateCode,
    Message,
    Nack,
    Ping,
    PushPull,
    PushState,
    Query,
    QueryResponse,
    Relay,
    Suspect,
    UserEvent,
    Vsn,
    WireError,
)

USER_MESSAGES = (UserEvent, Query, QueryResponse, Relay)
_ALIVE_CODE = int(MemberStateCode.ALIVE)

Address = tuple[str, int]
State = MemberStateCode
DEFAULT_VSN: Vsn = (1, 5, 2, 2, 5, 4)
FAR = float("inf")
REFUTE_FANOUT = 32  # members told directly when we refute a verdict of death (see _announce)
NACK_FRACTION = 0.8  # of the probe timeout: how long a relay waits for the target before it nacks
LIVE = (State.ALIVE, State.SUSPECT)
MAX_CONFLICTS_TOLD = 256  # distinct conflicting claimants reported as events (the count goes on)
# A user event or query is sent at least this often by every member, even where the member-update
# limit is lower: nothing repairs a user message that a member missed (member state has probes and
# push-pull), and with retransmit_limit(N) copies per member about e^-limit of the members miss it
# (measured in the simulator, local preset without loss: 11% at N=8, 1.4% at N=20). 12 copies make
# that about 6 in a million.
USER_MIN_TRANSMITS = 12
MAX_TAGS_SIZE = 512  # encoded bytes of a member's tags (memberlist's MetaMaxSize): alive messages must fit a packet


def check_tags(tags: dict[str, str]) -> None:
    """Raise ValueError for tags that could not ride in a gossip packet (or are not strings)."""
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise ValueError("tags must map strings to strings")
    size = len(msgpack.packb(tags))
    if size > MAX_TAGS_SIZE:
        raise ValueError(f"tags take {size} bytes encoded; at most {MAX_TAGS_SIZE} fit in a gossip message")


@dataclass(slots=True)
class Member:
    name: str
    addr: str
    port: int
    incarnation: int
    state: State
    state_change: float
    tags: dict[str, str] = field(default_factory=dict)
    vsn: Vsn = DEFAULT_VSN
    # True for a record several cores hold at once (preload_shared: a simulation of thousands of
    # members); a core copies it before its first change (Membership._own). Never on the wire.
    shared: bool = field(default=False, compare=False, repr=False)

    @property
    def address(self) -> Address:
        return (self.addr, self.port)


def rotation_order(pass_no: int, live: list[str]) -> list[str]:
    """The probe rotation's order of the live members for one pass: every member computes the
    same one from the same live set (see Membership._rotation_target)."""
    return sorted(live, key=lambda name: hashlib.blake2b(f"{pass_no}:{name}".encode(), digest_size=8).digest())


class RotationCache:
    """Rotation orders and live-name lists shared by the cores of one process (a simulation of
    thousands of members, where most cores hold the same live set): each is computed once, not
    once per core, and held once. A pure memo: a core gets exactly what it would compute alone.
    Bounded: when it holds `limit` entries it starts over."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._live: dict[tuple[str, ...], list[str]] = {}
        self._orders: dict[tuple[int, tuple[str, ...]], list[str]] = {}
        self._edits: dict[tuple[int, str, bool], tuple[list[str], list[str]]] = {}

    def live(self, names: list[str]) -> list[str]:
        """The shared list equal to `names` (callers never change it)."""
        key = tuple(names)
        got = self._live.get(key)
        if got is None:
            if len(self._live) >= self.limit:
                self._live.clear()
            got = self._live[key] = names
        return got

    def edit(self, names: list[str], name: str, add: bool) -> list[str]:
        """The sorted list `names` with `name` added (or removed): a new list, shared by every
        caller making the same edit to the same list."""
        key = (id(names), name, add)
        got = self._edits.get(key)
        if got is not None and got[0] is names:
            return got[1]
        new = list(names)
        i = bisect.bisect_left(new, name)
        present = i < len(new) and new[i] == name
        if add and not present:
            new.insert(i, name)
        elif not add and present:
            del new[i]
        if len(self._edits) >= self.limit:
            self._edits.clear()
        self._edits[key] = (names, new)  # holding `names` keeps its id from being reused
        return new

    def order(self, pass_no: int, live: list[str]) -> list[str]:
        key = (pass_no, tuple(live))
        got = self._orders.get(key)
        if got is None:
            if len(self._orders) >= self.limit:
                self._orders.clear()
            got = self._orders[key] = rotation_order(pass_no, live)
        return got


class EventKind(Enum):
    JOIN = "join"
    LEAVE = "leave"
    FAILED = "failed"
    UPDATE = "update"
    REAP = "reap"
    # Another member claims a name we know at another address, or a unique tag value (the agent's
    # node ID) another member holds. The event describes the CLAIMANT, which is not admitted.
    CONFLICT = "conflict"


@dataclass(frozen=True)
class MemberEvent:
    kind: EventKind
    name: str
    addr: str
    port: int
    tags: dict[str, str]
    incarnation: int


class StreamKind(Enum):
    PUSH_PULL = "push_pull"
    JOIN = "join"
    PING = "ping"


@dataclass(frozen=True)
class StreamRequest:
    """A TCP exchange for the driver: connect, send `payload` (a frame), read one frame back,
    and report it with `stream_result(token, reply_payload or None, now)` before `deadline`."""

    token: int
    addr: Address
    payload: bytes
    kind: StreamKind
    deadline: float


@dataclass
class _Probe:
    seq: int
    target: str
    start: float
    direct_deadline: float
    end: float
    indirect: bool = False
    acked: bool = False
    expected_nacks: int = 0
    nacks: int = 0
    tcp_ok: bool = False


@dataclass
class _Relay:
    origin: Address
    origin_seq: int
    nack: bool
    deadline: float


def _wire_row(m: Member) -> list[Any]:
    """A member as a push-pull row carries it (wire.push_states reads these fields back)."""
    return [m.name, m.addr, m.port, m.incarnation, int(m.state), m.tags, list(m.vsn)]


class SharedTable:
    """A converged member table that many simulated cores hold at once (preload_shared): its
    records (each marked shared), by name, their sorted names and how many are live, computed
    once instead of once per core."""

    def __init__(self, records: list[Member]) -> None:
        assert all(m.shared for m in records), "a SharedTable holds records marked shared"
        self.records = records
        self.by_name = {m.name: m for m in records}
        self.names = sorted(self.by_name)
        self.live_names = [n for n in self.names if self.by_name[n].state in LIVE]
        self.live = len(self.live_names)


@dataclass
class _TableRows:
    """A core's push-pull rows at one table version: packed as the frame carries them, and those
    of members not alive. Only these are kept between exchanges (at 10,000 members the rows by
    their bytes take ~3 MB a core, the packed table ~0.4 MB); _push_pull_news rebuilds that map
    when a frame differs from ours."""
    version: int
    packed: bytes
    not_alive: list[list[Any]]


class Membership:
    # Tests set this: every push-pull rebuilds its rows and fails if the cached ones differ
    # (a change to the table that did not bump _table_version).
    verify_table_cache = False

    def __init__(self, config: GossipConfig, name: str, addr: str, port: int, rng: random.Random, now: float,
                 tags: dict[str, str] | None = None, vsn: Vsn = DEFAULT_VSN, unique_tag: str = "") -> None:
        """`unique_tag`: a tag whose value no two live members may share (the agent's node ID, so a
        cloned VM with a copied data dir is refused and reported instead of taking over)."""
        config.validate()
        check_tags(tags or {})
        self.config = config
        self.name = name
        self.rng = rng
        self.me = Member(name, addr, port, 1, State.ALIVE, now, dict(tags or {}), vsn)
        self.members: dict[str, Member] = {name: self.me}
        # list(members), cached for random picks: names, not records, so replacing a record
        # (_own, once per member per core in a converged simulation) does not invalidate it.
        self._member_names: list[str] | None = None
        self._live_names: list[str] | None = None  # sorted live names, cached for the rotation
        self._dead_at: dict[Address, str] = {}  # address -> member we hold dead there (_tell_dead)
        self.wall_offset = 0.0  # wall clock minus `now`: the driver sets it; the rotation ticks on it
        self._rotation_key: tuple[int, int] | None = None
        self._rotation: list[str] = []
        self._rotation_self = -1  # our position in _rotation (-1: we are not in it)
        # Set by a driver that runs many cores in one process (the simulator): rotation orders and
        # live-name lists computed once and shared by every core whose live set is the same.
        self.rotation_cache: RotationCache | None = None
        # Set to a set by a driver that wants to know which member records a step changed (the
        # simulator's incremental invariant checker drains it after every step); None: not kept.
        self.touched: set[str] | None = None
        # Bumped whenever a record's wire fields change or one is added or removed: our push-pull
        # rows (a 10,000-row table at that size) are built and packed once per version.
        self._table_version = 0
        self._pp_cache: _TableRows | None = None
        self.unique_tag = unique_tag
        self._conflicts_told: set[tuple[str, str, int]] = set()  # CONFLICT events already emitted
        self._live = 1  # members in LIVE states, kept by _set_state (live_count is on every send path)
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.broadcasts = BroadcastQueue(max_size=config.udp_buffer_size - 4 - wire.COMPOUND_OVERHEAD)
        self.clock = LamportClock()
        # Serf's user-event state rides in push-pull (gossip/userevents.py uses it): the event and
        # query clocks, the event time before which a joiner ignores events (they predate it), and
        # a callback giving the recent events we hold, so members that missed one get it.
        self.event_clock = LamportClock()
        self.query_clock = LamportClock()
        self.event_min_time = 0
        self.recent_user_events: Callable[[], tuple[UserEvent, ...]] | None = None
        self.suspicions: dict[str, Suspicion] = {}
        self.probe_order: list[str] = []  # this pass: [:probe_index] probed, the rest still to draw from
        self._probe_order_shared = False  # probe_order is a SharedTable's list: copy before editing it
        self.probe_index = 0
        self.probe: _Probe | None = None
        self.relays: dict[int, _Relay] = {}
        self.streams: dict[int, StreamRequest] = {}
        self.seq = 0
        self.leaving = False
        self._out: list[tuple[Address, bytes]] = []
        self._streams_out: list[StreamRequest] = []
        self._events: list[MemberEvent] = []
        self._user_in: list[tuple[wire.UserMessage, Address]] = []  # for gossip/userevents.py
        self.stats: dict[str, int] = {k: 0 for k in (
            "packets_in", "packets_out", "bad_packets", "unknown_messages", "stale_acks", "misdirected_pings",
            "refutes", "suspects_started", "deaths_declared", "indirect_probes", "tcp_fallback_ok", "nacks_sent",
            "push_pulls", "bad_streams", "stale_accusations", "suspects_told", "dead_told", "suspicions_reasked",
            "suspicions_extended",
            "user_messages_in", "probes", "probes_failed")}
        # Told (seconds taken, answered?) as each probe ends; the agent's metrics listen here.
        self.on_probe: Callable[[float, bool], None] | None = None
        # Spread the first timers so members started together do not tick in lockstep.
        self.next_probe = now + rng.uniform(0, config.probe_interval)
        self.next_gossip = now + rng.uniform(0, config.gossip_interval)
        self.next_push_pull = now + rng.uniform(0.5, 1.5) * config.push_pull_interval if config.push_pull_interval > 0 else FAR
        self.next_reconnect = now + config.reconnect_interval
        self.next_reap = now + min(config.reconnect_interval, 60.0)
        self._queue_alive(self.me)

    # ---- outputs --------------------------------------------------------------------------------
    def packets_to_send(self) -> list[tuple[Address, bytes]]:
        out, self._out = self._out, []
        return out

    def streams_to_open(self) -> list[StreamRequest]:
        out, self._streams_out = self._streams_out, []
        return out

    def events(self) -> list[MemberEvent]:
        out, self._events = self._events, []
        return out

    def user_messages(self) -> list[tuple[wire.UserMessage, Address]]:
        """User events, queries and query responses received since the last call, with their
        sender's address: the input of gossip/userevents.py, which decides what to do with them."""
        out, self._user_in = self._user_in, []
        return out

    # ---- user messages out (gossip/userevents.py) -----------------------------------------------
    def queue_user(self, msg: bytes) -> None:
        """Gossip an encoded user message to everyone: it rides the piggyback queue and is sent
        as often as a member update is (retransmit_limit), but at least USER_MIN_TRANSMITS times.
        User messages never supersede each other."""
        self.broadcasts.queue("", msg, min_transmits=USER_MIN_TRANSMITS)

    def send_user(self, addr: Address, msg: bytes) -> None:
        """Send an encoded user message straight to one member, alone: no piggybacked broadcasts
        (every member answering a query writes to its origin, which would soak up the copies of
        the query itself that the others need; memberlist's SendToAddress does not piggyback either)."""
        self._out.append((addr, wire.pack_packet([msg])))
        self.stats["packets_out"] += 1

    def random_live_members(self, k: int, exclude: set[str], now: float) -> list[Member]:
        """Up to k random members believed alive or suspect, never ourselves nor `exclude`."""
        return self._random_members(k, exclude, now)

    # ---- queries --------------------------------------------------------------------------------
    def live_count(self) -> int:
        """Members believed alive or suspect, ourselves included: N in the timer formulas."""
        return self._live

    def next_deadline(self) -> float:
        times = [self.next_probe, self.next_push_pull, self.next_reconnect, self.next_reap]
        if self.broadcasts.drain_pending():
            # An empty queue makes a gossip round a no-op: no wake-up for it (five a second is most
            # of an idle agent's CPU). Queued news goes out at once, then every gossip_interval.
            times.append(self.next_gossip)
        if self.probe is not None:
            times.append(self.probe.end if self.probe.indirect else self.probe.direct_deadline)
        times.extend(r.deadline for r in self.relays.values())
        times.extend(min(s.deadline, s.reask_at) for s in self.suspicions.values())
        times.extend(s.deadline for s in self.streams.values())
        return min(times)

    # ---- helpers --------------------------------------------------------------------------------
    def _set_state(self, m: Member, state: State, now: float) -> None:
        assert not m.shared, "copy a shared record (_own) before changing it"
        self._table_version += 1
        if self.touched is not None:
            self.touched.add(m.name)
        if (state in LIVE) != (m.state in LIVE):
            self._live += 1 if state in LIVE else -1
            self._live_edit(m.name, state in LIVE)
        if state == State.DEAD:
            self._dead_at[(m.addr, m.port)] = m.name
        elif m.state == State.DEAD and self._dead_at.get((m.addr, m.port)) == m.name:
            del self._dead_at[(m.addr, m.port)]
        m.state = state
        m.state_change = now

    def _own(self, m: Member) -> Member:
        """`m`, or this core's private copy of it if it is a shared record: call before changing it."""
        self._table_version += 1
        if self.touched is not None:
            self.touched.add(m.name)
        if not m.shared:
            return m
        mine = Member(m.name, m.addr, m.port, m.incarnation, m.state, m.state_change, m.tags, m.vsn)
        self.members[m.name] = mine  # (same key, same place in the dict: _member_names stays valid)
        return mine

    def _live_edit(self, name: str, live: bool) -> None:
        """`name` joined (live) or left the live set: the rotation must be recomputed. Without a
        shared cache the live list is rebuilt at the next probe; with one (thousands of cores in
        a simulation), it is edited, and cores making the same edit to the same list share it."""
        if self._live_names is None or self.rotation_cache is None:
            self._live_names = None
            return
        self._live_names = self.rotation_cache.edit(self._live_names, name, live)
        self._rotation_key = None

    def _touch_me(self) -> None:
        self._table_version += 1
        if self.touched is not None:
            self.touched.add(self.name)

    def _event(self, kind: EventKind, m: Member) -> None:
        self._events.append(MemberEvent(kind, m.name, m.addr, m.port, dict(m.tags), m.incarnation))

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _send(self, addr: Address, msgs: list[bytes]) -> None:
        """Queue a datagram of `msgs`, topped up with piggybacked broadcasts."""
        budget = self.config.udp_buffer_size - 4 - sum(len(m) for m in msgs)
        extra = self.broadcasts.get(budget, wire.COMPOUND_OVERHEAD, self.config.retransmit_limit(self.live_count()))
        self._out.append((addr, wire.pack_packet(msgs + extra)))
        self.stats["packets_out"] += 1

    def _queue_alive(self, m: Member) -> None:
        self.broadcasts.queue(m.name, wire.encode_message(Alive(m.incarnation, m.name, m.addr, m.port,
                                                                 dict(m.tags), m.vsn)))

    def _random_members(self, k: int, exclude: set[str], now: float, gossip: bool = False) -> list[Member]:
        """Up to k random members, alive or suspect (for gossip also recently dead).
        The dict's insertion order is deterministic for a given history, so no sort is needed."""
        dead_since = now - self.config.gossip_to_the_dead_time if gossip else FAR

        def wanted(m: Member) -> bool:
            return ((m.state in LIVE or (m.state == State.DEAD and m.state_change >= dead_since))
                    and m.name != self.name and m.name not in exclude)

        table = self.members
        names = self._member_names
        if names is None:  # rebuilt only after an insert or removal, not five times a second
            names = self._member_names = list(table)
        n = len(names)
        if n > 2 * k + 8:
            # Draw distinct random positions, keeping the wanted ones: O(k) when most members are
            # wanted (gossip runs five times a second). Every wanted member is equally likely.
            picked: list[Member] = []
            tried: set[int] = set()
            for _ in range(4 * k + 8):
                i = self.rng.randrange(n)
                if i in tried:
                    continue
                tried.add(i)
                m = table[names[i]]
                if wanted(m):
                    picked.append(m)
                    if len(picked) == k:
                        return picked
        pool = [m for m in table.values() if wanted(m)]
        if len(pool) <= k:
            self.rng.shuffle(pool)
            return pool
        return self.rng.sample(pool, k)

    def _add_to_probe_order(self, name: str) -> None:
        """A new member goes to a random place of the pass: among those already probed (then it
        waits for the next pass), or among those still to come, which are drawn at random."""
        order = self._own_probe_order()
        i = self.rng.randint(0, len(order))
        if i < self.probe_index:
            order.insert(i, name)
            self.probe_index += 1
        else:
            order.append(name)

    # ---- API for the driver ---------------------------------------------------------------------
    def join(self, addrs: list[Address], now: float) -> list[int]:
        """Start a push-pull with each address; the tokens come back through stream_result."""
        tokens = []
        for addr in addrs:
            tokens.append(self._open_push_pull(addr, now, join=True))
        return tokens

    def preload(self, states: list[PushState], now: float) -> None:
        """Install a member table as already known, without events or broadcasts: a simulation
        that starts converged, or (later) a member snapshot read back after a restart."""
        # The tags dict is shared, not copied: members' tags are replaced, never edited in place,
        # and a simulation preloads the same table into thousands of cores.
        self._install([Member(st.name, st.addr, st.port, st.incarnation, st.state, now, st.tags, st.vsn)
                       for st in states if st.name != self.name and st.name not in self.members])

    def preload_shared(self, records: list[Member] | SharedTable) -> None:
        """Like preload, but install the given records themselves, shared with other cores (each
        marked `shared`, copied by a core before it changes one): a converged simulation of N
        members then holds N records, not N², which is what lets 10,000 members fit in memory.
        Given a SharedTable (built once for all the cores), a core that knows only itself takes
        the table in one dict update and its sorted names as its probe order, shared too."""
        table = records if isinstance(records, SharedTable) else SharedTable(records)
        if len(self.members) != 1:
            self._install([m for m in table.records if m.name != self.name and m.name not in self.members])
            return
        members = self.members
        members.update(table.by_name)  # (our own record stays first: updating a key keeps its place)
        members[self.name] = self.me
        mine = table.by_name.get(self.name)
        self._live += table.live - (mine is not None and mine.state in LIVE)
        self._table_version += 1
        if self.touched is not None:
            self.touched.update(n for n in table.names if n != self.name)
        self._member_names = None
        # The sorted live names _rotation_target would list (we are in the table, alive): shared
        # too, since a core replaces its live list and never edits it.
        self._live_names = table.live_names if mine is not None and mine.state in LIVE else None
        self._rotation_key = None
        self.probe_order = table.names  # shared: copied before this core edits it (_own_probe_order)
        self._probe_order_shared = True
        self.probe_index = 0

    def _install(self, records: list[Member]) -> None:
        self._table_version += 1
        for m in records:
            self.members[m.name] = m
            self._live += m.state in LIVE
        if self.touched is not None:
            self.touched.update(m.name for m in records)
        self._member_names = None
        self._live_names = None
        self._new_probe_pass()

    def _new_probe_pass(self) -> None:
        """Start a pass over the current members. The order is drawn as the pass goes (_next_target
        picks each next member uniformly from those not yet probed: a shuffle, drawn lazily), so
        a table installed in thousands of simulated cores costs no up-front shuffle."""
        self.probe_order = [n for n in sorted(self.members) if n != self.name]
        self._probe_order_shared = False
        self.probe_index = 0

    def _own_probe_order(self) -> list[str]:
        if self._probe_order_shared:
            self.probe_order = list(self.probe_order)
            self._probe_order_shared = False
        return self.probe_order

    def leave(self, now: float) -> None:
        """Graceful leave: tell everyone we left (a dead message from ourselves about ourselves)."""
        if self.leaving:
            return
        self.leaving = True
        self.me.incarnation += 1
        self._touch_me()
        self._set_state(self.me, State.LEFT, now)
        self.clock.increment()
        self.broadcasts.queue(self.name, wire.encode_message(Dead(self.me.incarnation, self.name, self.name)))

    def leave_sent(self) -> bool:
        """True once the leave message has been sent as often as a broadcast is (or nobody is left)."""
        return not self.broadcasts.drain_pending() or self.live_count() <= 1 and all(
            m.state != State.DEAD for m in self.members.values() if m.name != self.name)

    def update_tags(self, tags: dict[str, str], now: float) -> None:
        """Change our tags: a new incarnation tells everyone. ValueError if they are too large."""
        check_tags(tags)
        self.me.tags = dict(tags)
        self.me.incarnation += 1
        self._touch_me()  # (bumps _table_version)
        self.clock.increment()
        self._queue_alive(self.me)

    def force_leave(self, name: str, now: float) -> bool:
        """Mark a failed member as left (Serf's force-leave). False if unknown or not failed."""
        m = self.members.get(name)
        if m is None or name == self.name or m.state not in (State.DEAD, State.SUSPECT):
            return False
        self.suspicions.pop(name, None)
        self._dead(Dead(m.incarnation, name, name), now)
        return True

    def prune(self, name: str) -> bool:
        """Forget a left or failed member at once (force-leave -prune)."""
        m = self.members.get(name)
        if m is None or name == self.name or m.state in (State.ALIVE, State.SUSPECT):
            return False
        del self.members[name]
        self._table_version += 1
        self._member_names = None
        self._live_names = None
        self._event(EventKind.REAP, m)
        return True

    # ---- inputs: datagrams ----------------------------------------------------------------------
    def receive(self, data: bytes, src: Address, now: float) -> None:
        """One datagram from `src`. Malformed input is counted and dropped, never raised."""
        self.stats["packets_in"] += 1
        try:
            msgs, unknown = wire.decode_packet(data)
        except WireError:
            self.stats["bad_packets"] += 1
            return
        self.stats["unknown_messages"] += unknown
        for msg in msgs:
            self._handle(msg, src, now)
        if self.suspicions:
            self._tell_suspect(src, now)
        if self._dead_at:
            self._tell_dead(src)

    def _tell_suspect(self, src: Address, now: float) -> None:
        """A datagram came from a member we still suspect: tell it, so it can refute (or, if it
        already did, answer with the alive we missed). Lifeguard's buddy system tells a suspect when
        we probe it; this covers the other direction, when the suspect is the one talking to us.
        The datagram is also evidence of life, which the suspicion's timer weighs (handle_timer)."""
        for name, susp in self.suspicions.items():
            m = self.members.get(name)
            if m is not None and m.state == State.SUSPECT and (m.addr, m.port) == src:
                susp.heard = now
                self.stats["suspects_told"] += 1
                self._send(src, [wire.encode_message(Suspect(m.incarnation, m.name, self.name))])
                return

    def _tell_dead(self, src: Address) -> None:
        """A datagram came from a member we hold dead: tell it. If it is back after a pause or a
        restart it refutes, announcing itself to everyone; if it already refuted (and we missed
        every gossiped copy) it answers us with that alive. Without this we would wait for a
        push-pull, up to 30 s, to learn either."""
        name = self._dead_at.get(src)
        m = self.members.get(name) if name is not None else None
        if m is None or m.state != State.DEAD or (m.addr, m.port) != src:
            self._dead_at.pop(src, None)  # stale: it came back, moved, or was reaped
            return
        self.stats["dead_told"] += 1
        self._send(src, [wire.encode_message(Dead(m.incarnation, m.name, self.name))])

    def _handle(self, msg: Message, src: Address, now: float) -> None:
        if isinstance(msg, Ping):
            self._on_ping(msg, src)
        elif isinstance(msg, IndirectPing):
            self._on_indirect_ping(msg, src, now)
        elif isinstance(msg, Ack):
            self._on_ack(msg.seq, now)
        elif isinstance(msg, Nack):
            if self.probe is not None and self.probe.seq == msg.seq:
                self.probe.nacks += 1
        elif isinstance(msg, Suspect):
            self._suspect(msg, now, src)
        elif isinstance(msg, Alive):
            self._alive(msg, now)
        elif isinstance(msg, Dead):
            self._dead(msg, now, src)
        elif isinstance(msg, USER_MESSAGES):
            self.stats["user_messages_in"] += 1
            self._user_in.append((msg, src))
        # PushPull only travels over streams.

    def _on_ping(self, msg: Ping, src: Address) -> None:
        if msg.target and msg.target != self.name:
            self.stats["misdirected_pings"] += 1  # meant for a member that used to be at this address
            return
        self._send(src, [wire.encode_message(Ack(msg.seq))])

    def _on_indirect_ping(self, msg: IndirectPing, src: Address, now: float) -> None:
        seq = self._next_seq()
        # The nack must reach the asker before its probe ends. The asker sent this request one
        # probe timeout into a probe interval of about two probe timeouts; a relay waiting a full
        # probe timeout answers right at (or after) the asker's deadline, the nack goes uncounted,
        # and every failed probe of a dead member then costs the asker the whole Lifeguard
        # penalty. Waiting NACK_FRACTION of it leaves room for the trip back.
        self.relays[seq] = _Relay(src, msg.seq, msg.nack, now + NACK_FRACTION * self.config.probe_timeout)
        self._send((msg.target_addr, msg.target_port),
                   [wire.encode_message(Ping(seq, msg.target, self.name, self.me.addr, self.me.port))])

    def _on_ack(self, seq: int, now: float) -> None:
        probe = self.probe
        if probe is not None and probe.seq == seq:
            probe.acked = True
            self._conclude(probe, now)  # done: the next probe waits only for the next tick
            self.probe = None
            return
        relay = self.relays.pop(seq, None)
        if relay is not None:
            self._send(relay.origin, [wire.encode_message(Ack(relay.origin_seq))])
            return
        self.stats["stale_acks"] += 1  # a late ack, or a paused member answering its backlog

    # ---- inputs: streams ------------------------------------------------------------------------
    def handle_stream(self, payload: bytes, src: Address, now: float) -> bytes | None:
        """An incoming TCP frame; returns the reply frame, or None to close without one."""
        try:
            msg = self._decode_stream(payload)
        except WireError:
            self.stats["bad_streams"] += 1
            return None
        if isinstance(msg, PushPull):
            self.stats["push_pulls"] += 1
            reply = self._push_pull_frame(join=False)
            self._merge(msg, now, src)
            return reply
        if isinstance(msg, Ping):
            if msg.target and msg.target != self.name:
                self.stats["misdirected_pings"] += 1
                return None
            return wire.frame(Ack(msg.seq))
        self.stats["bad_streams"] += 1
        return None

    def stream_result(self, token: int, payload: bytes | None, now: float) -> bool:
        """The outcome of a StreamRequest: the reply frame's payload, or None if it failed.
        Returns True if the exchange succeeded."""
        req = self.streams.pop(token, None)
        if req is None or payload is None:
            return False
        try:
            msg = self._decode_stream(payload)
        except WireError:
            self.stats["bad_streams"] += 1
            return False
        if req.kind in (StreamKind.PUSH_PULL, StreamKind.JOIN) and isinstance(msg, PushPull):
            if req.kind == StreamKind.JOIN:
                # As Serf: events from before we joined are not ours to deliver (the cluster's
                # recent events would otherwise all replay on a new member).
                self.event_min_time = max(self.event_min_time, msg.event_ltime)
            self._merge(msg, now, req.addr)
            return True
        if req.kind == StreamKind.PING and isinstance(msg, Ack):
            if self.probe is not None and self.probe.seq == msg.seq and now <= self.probe.end:
                self.probe.tcp_ok = True
                return True
            self.stats["stale_acks"] += 1
        return False

    def _push_pull_msg(self, join: bool) -> PushPull:
        states = tuple(PushState(m.name, m.addr, m.port, m.incarnation, m.state, dict(m.tags), m.vsn)
                       for _, m in sorted(self.members.items()))
        events = self.recent_user_events() if self.recent_user_events is not None else ()
        return PushPull(join, self.clock.time, states, self.event_clock.time, self.query_clock.time, events)

    def _push_pull_frame(self, join: bool) -> bytes:
        """wire.frame(self._push_pull_msg(join)), byte for byte, built straight from the table."""
        events = self.recent_user_events() if self.recent_user_events is not None else ()
        return wire.frame_push_pull_packed(join, self.clock.time, self._table_rows().packed, self.event_clock.time,
                                           self.query_clock.time, events)

    @property
    def table_version(self) -> int:
        """Changes whenever a member's row (state, incarnation, address, tags) changes: callers
        may cache what they derive from the member table on it."""
        return self._table_version

    def _table_rows(self) -> _TableRows:
        """Our push-pull rows, by their packed bytes and packed together: built once per table version."""
        cache = self._pp_cache
        if cache is not None and cache.version == self._table_version and not self.verify_table_cache:
            return cache
        rows = [_wire_row(m) for _, m in sorted(self.members.items())]
        packed_rows = [msgpack.packb(r) for r in rows]
        fresh = _TableRows(self._table_version, wire.pack_row_list(packed_rows), [r for r in rows if r[4] != _ALIVE_CODE])
        if cache is not None and cache.version == self._table_version and cache.packed != fresh.packed:
            raise AssertionError(f"{self.name}: push-pull rows changed without a table version bump")
        self._pp_cache = fresh
        return fresh

    def _rows_by_bytes(self) -> dict[bytes, list[Any]]:
        """Our push-pull rows, keyed by each one's packed bytes (built per use: see _TableRows)."""
        rows = [_wire_row(m) for m in self.members.values()]
        return {msgpack.packb(r): r for r in rows}

    def _decode_stream(self, payload: bytes) -> Message:
        """wire.decode_frame_payload(payload), but a push-pull keeps only the rows that can change
        something. A row byte for byte equal to one of our own rows is valid (ours are), and if
        it is of an alive member it is old news that _merge would skip without a change: at
        10,000 members nearly every row is one, and a table equal to ours is one comparison.
        Every other row is decoded and checked as decode_frame_payload checks it, and a bad one
        refuses the frame (WireError) as it would. Anything unusual (a duplicate row or name, a
        row that does not decode) takes decode_frame_payload, which refuses it or decodes it."""
        split = wire.split_push_pull(payload)
        if split is None:
            return wire.decode_frame_payload(payload)
        ours = self._table_rows()
        if split.packed == ours.packed:  # the same table: only the rows that are not alive can matter
            return replace(split.head, states=tuple(wire.push_states(ours.not_alive)))
        found = self._push_pull_news(split)
        if found is None:
            return wire.decode_frame_payload(payload)
        news, skipped = found
        states = wire.push_states(news)  # (WireError at a bad row, as decode_frame_payload would raise)
        names = {st.name for st in states}
        if len(names) != len(states) or not names.isdisjoint(skipped):
            # A name twice: an earlier row could change the member a skipped row is about.
            return wire.decode_frame_payload(payload)
        return replace(split.head, states=tuple(states))

    def _push_pull_news(self, split: wire.SplitPushPull) -> tuple[list[Any], set[str]] | None:
        """The rows of a received push-pull that are not old news (see _decode_stream), decoded but
        not checked, in their order, and the names of the rows skipped; None to take the plain
        decoder."""
        try:
            spans = split.rows()
        except Exception:
            return None
        if len(set(spans)) != len(spans):
            return None
        news: list[Any] = []
        skipped: set[str] = set()
        by_bytes = self._rows_by_bytes()
        for span, mine in zip(spans, map(by_bytes.get, spans), strict=True):
            if mine is None:
                try:
                    news.append(wire.decode_row(span))
                except Exception:
                    return None
            elif mine[4] == _ALIVE_CODE:
                skipped.add(mine[0])
            else:
                news.append(mine)
        return news, skipped

    def _open_push_pull(self, addr: Address, now: float, join: bool) -> int:
        token = self._next_seq()
        req = StreamRequest(token, addr, self._push_pull_frame(join),
                            StreamKind.JOIN if join else StreamKind.PUSH_PULL, now + self.config.tcp_timeout)
        self.streams[token] = req
        self._streams_out.append(req)
        return token

    def _merge(self, msg: PushPull, now: float, src: Address) -> None:
        """Fold a remote member list into ours (memberlist's mergeState), and its user-event state."""
        self.clock.witness(msg.ltime)
        # A clock's time is the next one it will use: the sender has used times below it.
        if msg.event_ltime:
            self.event_clock.witness(msg.event_ltime - 1)
        if msg.query_ltime:
            self.query_clock.witness(msg.query_ltime - 1)
        for ev in msg.events:
            self._user_in.append((ev, src))  # deduplicated (or delivered, if we missed it) by userevents
        members = self.members
        for s in msg.states:
            if s.state == State.ALIVE:
                m = members.get(s.name)
                if (m is not None and s.incarnation <= m.incarnation and s.addr == m.addr and s.port == m.port
                        and s.name != self.name):
                    continue  # old news about a member we hold at that address: _alive would ignore it
                self._alive(Alive(s.incarnation, s.name, s.addr, s.port, s.tags, s.vsn), now)
            elif s.state == State.LEFT:
                self._dead(Dead(s.incarnation, s.name, s.name), now)
            elif s.name == self.name and s.state == State.DEAD and not self.leaving:
                if s.incarnation >= self.me.incarnation:
                    self._refute(s.incarnation, declared_dead=True)
            else:
                # A remote verdict of dead is taken as a suspicion: we give it the chance to refute.
                # Unattributed, not ours (memberlist puts its own name here): we have no evidence of
                # our own, and our word must not count as an independent confirmation at the member
                # that holds the verdict. A member isolated for a while suspects everyone; its first
                # push-pulls after the heal would otherwise make each peer "confirm" its suspicions,
                # collapsing its timers to the minimum (long past) before the suspects can refute:
                # the soak's false dead of 2026-11-25 (seed 2027).
                self._suspect(Suspect(s.incarnation, s.name, UNATTRIBUTED), now)

    # ---- state transitions ----------------------------------------------------------------------
    def _refute(self, accused: int, declared_dead: bool = False) -> None:
        self.me.incarnation = max(self.me.incarnation, accused) + 1
        self._touch_me()
        self.stats["refutes"] += 1
        self.awareness.apply_delta(1)
        self._queue_alive(self.me)
        if declared_dead:
            self._announce()

    def _announce(self) -> None:
        """Send our alive straight to (up to REFUTE_FANOUT of) the members we believe live.

        A member declared dead is no longer probed, and after gossip_to_the_dead_time nobody
        gossips to it either: its refutation has to travel on its own effort. Plain gossip, with
        a retransmit limit of retransmit_mult * ceil(log10(N + 1)) (2 for 5 members on the local
        preset), leaves about one member in eight without the news until the next push-pull,
        seconds to minutes later. Death verdicts are rare, so this one burst is cheap."""
        msg = wire.encode_message(Alive(self.me.incarnation, self.name, self.me.addr, self.me.port,
                                        dict(self.me.tags), self.me.vsn))
        peers = [m for _, m in sorted(self.members.items())
                 if m.name != self.name and m.state in (State.ALIVE, State.SUSPECT)]
        if len(peers) > REFUTE_FANOUT:
            peers = self.rng.sample(peers, REFUTE_FANOUT)
        for m in peers:
            self._out.append((m.address, wire.pack_packet([msg])))
            self.stats["packets_out"] += 1

    def _alive(self, a: Alive, now: float) -> None:
        if a.node == self.name:
            if self.leaving:
                return
            if a.incarnation < self.me.incarnation:
                return
            if (a.addr, a.port) != (self.me.addr, self.me.port):
                # Another process claims our name. Refuting would start an incarnation war that
                # flaps the name between two addresses cluster-wide; report it instead (memberlist
                # does the same), so the agent can resolve it.
                self._conflict(a)
                return
            if a.incarnation == self.me.incarnation and a.tags == self.me.tags:
                return
            self._refute(a.incarnation)  # someone holds a different story about us: ours wins
            return
        m = self.members.get(a.node)
        if m is None:
            if self._unique_value_taken(a):
                self._conflict(a)
                return
            m = Member(a.node, a.addr, a.port, a.incarnation, State.ALIVE, now, dict(a.tags), a.vsn)
            self.members[a.node] = m
            self._table_version += 1
            if self.touched is not None:
                self.touched.add(a.node)
            self._member_names = None
            self._live_edit(a.node, True)
            self._live += 1
            self._add_to_probe_order(a.node)
            self.broadcasts.queue(a.node, wire.encode_message(a))
            self._event(EventKind.JOIN, m)
            return
        if (a.addr, a.port) != (m.addr, m.port) and m.state in (State.ALIVE, State.SUSPECT):
            self._conflict(a)  # two live members claim one name: keep the one we know
            return
        if a.incarnation <= m.incarnation:
            return  # old news (this also keeps a left member's tombstone from being revived by it)
        self.suspicions.pop(a.node, None)
        self.broadcasts.queue(a.node, wire.encode_message(a))
        changed = a.tags != m.tags or (a.addr, a.port) != (m.addr, m.port)
        was = m.state
        m = self._own(m)
        m.incarnation, m.addr, m.port, m.tags, m.vsn = a.incarnation, a.addr, a.port, dict(a.tags), a.vsn
        if was != State.ALIVE:
            self._set_state(m, State.ALIVE, now)
            if was in (State.DEAD, State.LEFT):
                if a.node not in self.probe_order:
                    self._add_to_probe_order(a.node)
                self._event(EventKind.JOIN, m)
            elif changed:
                self._event(EventKind.UPDATE, m)
        elif changed:
            self._event(EventKind.UPDATE, m)

    def _unique_value_taken(self, a: Alive) -> bool:
        """Does a live member other than `a.node` hold a's value of the unique tag?"""
        value = a.tags.get(self.unique_tag) if self.unique_tag else None
        if not value:
            return False
        return any(m.tags.get(self.unique_tag) == value and m.name != a.node and m.state in LIVE
                   for m in self.members.values())

    def _conflict(self, a: Alive) -> None:
        """Count a conflicting claim; emit one CONFLICT event per claimant (name, address)."""
        self.stats["conflicts"] = self.stats.get("conflicts", 0) + 1
        key = (a.node, a.addr, a.port)
        if key in self._conflicts_told or len(self._conflicts_told) >= MAX_CONFLICTS_TOLD:
            return
        self._conflicts_told.add(key)
        self._events.append(MemberEvent(EventKind.CONFLICT, a.node, a.addr, a.port, dict(a.tags), a.incarnation))

    def _answer_accuser(self, src: Address | None) -> None:
        """Send our refutation straight back to whoever told us of the accusation, as well as
        gossiping it: the accuser's timer may be about to fire (an accuser that was cut off hears
        our refutation only after the heal, and gossip may take a few rounds to reach it)."""
        if src is not None and src != self.me.address:
            self._send(src, [wire.encode_message(Alive(self.me.incarnation, self.name, self.me.addr, self.me.port,
                                                       dict(self.me.tags), self.me.vsn))])

    def _answer_stale(self, m: Member, src: Address | None) -> None:
        """`src` accused `m` at an older incarnation than our alive one: it missed the refutation
        (gossip sends each update only a few times, and loss can starve one member of every copy).
        Tell it directly, so it does not time its stale suspicion out into a false death."""
        if src is None or m.state != State.ALIVE or (m is self.me and self.leaving):
            return
        self.stats["stale_accusations"] += 1
        self._send(src, [wire.encode_message(Alive(m.incarnation, m.name, m.addr, m.port, dict(m.tags), m.vsn))])

    def _suspect(self, s: Suspect, now: float, src: Address | None = None) -> None:
        m = self.members.get(s.node)
        if m is None:
            return
        if s.incarnation < m.incarnation:
            self._answer_stale(m, src)
            return
        existing = self.suspicions.get(s.node)
        if existing is not None:
            if existing.confirm(s.sender):
                self.broadcasts.queue(s.node, wire.encode_message(s))
            return
        if m.state != State.ALIVE:
            return
        if s.node == self.name:
            if not self.leaving:
                self._refute(s.incarnation)
                self._answer_accuser(src)
            return
        encoded = wire.encode_message(s)
        self.broadcasts.queue(s.node, encoded)
        m = self._own(m)
        m.incarnation = s.incarnation
        self._set_state(m, State.SUSPECT, now)
        self.stats["suspects_started"] += 1
        n = self.live_count()
        k = self.config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        self.suspicions[s.node] = Suspicion(s.sender, k, self.config.suspicion_min(n),
                                            self.config.suspicion_max(n), now, encoded)

    def _dead(self, d: Dead, now: float, src: Address | None = None) -> None:
        m = self.members.get(d.node)
        if m is None:
            return
        if d.incarnation < m.incarnation:
            self._answer_stale(m, src)
            return
        self.suspicions.pop(d.node, None)
        if m.state == State.LEFT or (m.state == State.DEAD and d.sender != d.node):
            return  # (a leave about a failed member still turns it LEFT: force-leave, or a late leave)
        if d.node == self.name:
            if not self.leaving:
                self._refute(d.incarnation, declared_dead=True)
                self._answer_accuser(src)
            return
        self.broadcasts.queue(d.node, wire.encode_message(d))
        m = self._own(m)
        m.incarnation = d.incarnation
        state = State.LEFT if d.sender == d.node else State.DEAD
        self._set_state(m, state, now)
        if state == State.DEAD:
            self.stats["deaths_declared"] += 1
        self._event(EventKind.LEAVE if state == State.LEFT else EventKind.FAILED, m)

    # ---- timers ---------------------------------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        """Run everything due at `now`. Call at (or after) next_deadline()."""
        self._probe_timers(now)
        for seq in [s for s, r in self.relays.items() if r.deadline <= now]:
            relay = self.relays.pop(seq)
            if relay.nack:
                self._send(relay.origin, [wire.encode_message(Nack(relay.origin_seq))])
                self.stats["nacks_sent"] += 1
        for name, susp in self.suspicions.items():
            if susp.reask_at <= now:
                susp.reask_at = FAR
                if susp.message and not self.broadcasts.has(name):  # a queued update says as much
                    self.stats["suspicions_reasked"] += 1
                    self.broadcasts.queue(name, susp.message)
        for name in [n for n, s in self.suspicions.items() if s.deadline <= now]:
            susp = self.suspicions[name]
            m = self.members.get(name)
            if m is not None and susp.heard_since_checked() and susp.extend(now):
                # It has been talking to us since we began suspecting it (and was told each time):
                # a member isolated for a while suspects everyone, and its timers fire just after
                # the heal, before the refutations get through. Give it the minimum again.
                self.stats["suspicions_extended"] += 1
                self._send(m.address, [wire.encode_message(Suspect(m.incarnation, m.name, self.name))])
                continue
            del self.suspicions[name]
            if m is not None and m.state == State.SUSPECT and m.state_change == susp.start:
                self._dead(Dead(m.incarnation, name, self.name), now)
        for token in [t for t, s in self.streams.items() if s.deadline <= now]:
            del self.streams[token]  # the driver never reported: treat as failed
        if now >= self.next_gossip:
            self.next_gossip = now + self.config.gossip_interval
            self._gossip(now)
        if now >= self.next_push_pull:
            self.next_push_pull = now + self.config.push_pull_scaled(self.live_count())
            peers = self._random_members(1, set(), now)
            if peers and not self.leaving:
                self._open_push_pull(peers[0].address, now, join=False)
        if now >= self.next_reconnect:
            self.next_reconnect = now + self.config.reconnect_interval
            self._reconnect(now)
        if now >= self.next_reap:
            self.next_reap = now + min(self.config.reconnect_interval, 60.0)
            self._reap(now)

    def _gossip(self, now: float) -> None:
        if not self.broadcasts.drain_pending():
            return
        limit = self.config.retransmit_limit(self.live_count())
        for m in self._random_members(self.config.gossip_nodes, set(), now, gossip=True):
            msgs = self.broadcasts.get(self.config.udp_buffer_size - 4, wire.COMPOUND_OVERHEAD, limit)
            if not msgs:
                return
            self._out.append((m.address, wire.pack_packet(msgs)))
            self.stats["packets_out"] += 1

    def _reconnect(self, now: float) -> None:
        """Serf's reconnect: now and then push-pull a failed member, so healed partitions merge."""
        # Filtered, then sorted: the same order as sorting the whole table, without its cost.
        failed = [m for _, m in sorted((n, m) for n, m in self.members.items() if m.state == State.DEAD)]
        if not failed or self.leaving:
            return
        alive = max(1, self.live_count() - 1)
        if self.rng.random() > len(failed) / alive:
            return
        self._open_push_pull(self.rng.choice(failed).address, now, join=False)

    def _reap(self, now: float) -> None:
        gone = (State.DEAD, State.LEFT)  # only these can be reaped: sort just them (same order)
        for name, m in sorted((n, m) for n, m in self.members.items() if m.state in gone):
            if name == self.name:
                continue
            age = now - m.state_change
            if (m.state == State.DEAD and age > self.config.reconnect_timeout) or (
                    m.state == State.LEFT and age > self.config.tombstone_timeout):
                del self.members[name]
                self._table_version += 1
                self._member_names = None
                self._live_names = None
                self._event(EventKind.REAP, m)

    # ---- probing --------------------------------------------------------------------------------
    def _rotation_target(self, now: float) -> Member | None:
        """The member `s` places after us in this pass's shared order (config.probe_rotation).
        At any wall-clock tick, i -> position(i) + s is a bijection: each member is probed once."""
        live = self._live_names
        if live is None:
            live = sorted(n for n, m in self.members.items() if m.state in LIVE)
            if self.rotation_cache is not None:
                live = self.rotation_cache.live(live)
            self._live_names = live
            self._rotation_key = None
        n = len(live)
        if n < 2:
            return None
        tick = math.floor((now + self.wall_offset) / self.config.probe_interval)
        pass_no, step = divmod(tick, n - 1)
        if self._rotation_key != (pass_no, n):
            if self.rotation_cache is not None:
                self._rotation = self.rotation_cache.order(pass_no, live)
            else:
                self._rotation = rotation_order(pass_no, live)
            # Our own place only: a name -> position map would cost a dict entry per member per core.
            try:
                self._rotation_self = self._rotation.index(self.name)
            except ValueError:
                self._rotation_self = -1
            self._rotation_key = (pass_no, n)
        pos = self._rotation_self
        if pos < 0:
            return None
        m = self.members.get(self._rotation[(pos + 1 + step) % n])
        return m if m is not None and m.state in LIVE and m is not self.me else None

    def _next_target(self, now: float) -> Member | None:
        if self.config.probe_rotation:
            target = self._rotation_target(now)
            if target is not None:
                return target
        for _ in range(2):
            while self.probe_index < len(self.probe_order):
                # The next member of a shuffled pass, drawn now (Fisher-Yates, one step at a time).
                i = self.probe_index
                j = self.rng.randrange(i, len(self.probe_order))
                if j != i:
                    order = self._own_probe_order()
                    order[i], order[j] = order[j], order[i]
                name = self.probe_order[i]
                self.probe_index += 1
                m = self.members.get(name)
                if m is not None and m.state in (State.ALIVE, State.SUSPECT) and name != self.name:
                    return m
            # End of a pass: a new shuffled pass over the current members, as SWIM's round-robin requires.
            self._new_probe_pass()
        return None

    def _probe_timers(self, now: float) -> None:
        probe = self.probe
        if probe is not None and not probe.indirect and not probe.acked and now >= probe.direct_deadline:
            self._go_indirect(probe, now)
        if probe is not None and now >= probe.end:
            self._conclude(probe, now)
            self.probe = None
        if now >= self.next_probe and not self.leaving:
            base = self.config.probe_interval
            if self.probe is not None:
                # A probe slowed down by awareness is still running: skip the ticks it overran,
                # as memberlist's ticker does. The penalty lengthens failed probes only; a healthy
                # member goes back to probing every base interval at once.
                while self.next_probe <= now:
                    self.next_probe += base
                return
            self.next_probe = now + base
            target = self._next_target(now)
            if target is not None:
                self._start_probe(target, now, self.awareness.scale(base))

    def _start_probe(self, target: Member, now: float, interval: float) -> None:
        seq = self._next_seq()
        timeout = self.awareness.scale(self.config.probe_timeout)
        self.probe = _Probe(seq, target.name, now, now + timeout, now + interval)
        msgs = [wire.encode_message(Ping(seq, target.name, self.name, self.me.addr, self.me.port))]
        if target.state == State.SUSPECT:
            # Tell a suspect it is suspected, so it can refute at once.
            msgs.append(wire.encode_message(Suspect(target.incarnation, target.name, self.name)))
        self._send(target.address, msgs)

    def _go_indirect(self, probe: _Probe, now: float) -> None:
        probe.indirect = True
        target = self.members.get(probe.target)
        if target is None:
            return
        helpers = self._random_members(self.config.indirect_checks, {probe.target}, now)
        helpers = [h for h in helpers if h.state == State.ALIVE]
        for h in helpers:
            self._send(h.address, [wire.encode_message(IndirectPing(
                probe.seq, target.name, target.addr, target.port, True, self.name, self.me.addr, self.me.port))])
        probe.expected_nacks = len(helpers)
        self.stats["indirect_probes"] += 1
        if not self.config.disable_tcp_pings:
            req = StreamRequest(probe.seq, target.address,
                                wire.frame(Ping(probe.seq, target.name, self.name, self.me.addr, self.me.port)),
                                StreamKind.PING, probe.end)
            self.streams[probe.seq] = req
            self._streams_out.append(req)

    def _conclude(self, probe: _Probe, now: float) -> None:
        ok = probe.acked or probe.tcp_ok
        self.stats["probes"] += 1
        if not ok:
            self.stats["probes_failed"] += 1
        if self.on_probe is not None:
            self.on_probe(now - probe.start, ok)
        if probe.acked or probe.tcp_ok:
            # Any answer, direct, relayed or over TCP, means we could do our part: health improves
            # (memberlist and the Lifeguard paper do the same; only failures count against us).
            self.awareness.apply_delta(-1)
            if not probe.acked:
                self.stats["tcp_fallback_ok"] += 1  # UDP is blocked somewhere, but the member is alive
            return
        if probe.expected_nacks > 0:
            self.awareness.apply_delta(probe.expected_nacks - probe.nacks)
        else:
            self.awareness.apply_delta(1)
        m = self.members.get(probe.target)
        if m is not None:
            self._suspect(Suspect(m.incarnation, m.name, self.name), now)
