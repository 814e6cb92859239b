"""Serf's user events and queries, as a sans-I/O layer over Membership.

User events are gossiped to every member with a Lamport time from their own clock. A receiver
witnesses the time, drops an event older than the buffer window (EVENT_BUFFER Lamport ticks
behind its clock), drops one it has seen already (same time, name and payload), and otherwise
delivers it and gossips it on. Queries travel the same way, deduplicated by (time, id) on a clock
of their own; a member that passes the query's filters acks it (if asked) and answers it, sending
straight to the origin and, with a relay factor r, also through r random other members that
forward the answer. The origin keeps one ack and one response per member until the deadline.

The driver calls `pump(now)` after every input of the Membership core: it takes the received user
messages (`Membership.user_messages()`) and puts what they cause back into the core (broadcasts
with `queue_user`, datagrams with `send_user`). Delivered events come out of `events()`, queries
without a registered handler out of `queries()`. Like the rest of gossip/, nothing here touches
a clock, a socket or the global random generator (the core's injected generator is used).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import re2

from . import wire
from .config import GossipConfig
from .membership import Membership
from .wire import Query, QueryResponse, Relay, UserEvent

EVENT_SIZE_LIMIT = 512  # Serf's UserEventSizeLimit: bytes of an encoded user event
QUERY_SIZE_LIMIT = 1024  # Serf's QuerySizeLimit: bytes of an encoded query
RESPONSE_SIZE_LIMIT = 1024  # Serf's QueryResponseSizeLimit: bytes of an encoded response
EVENT_BUFFER = 64  # Lamport ticks of events remembered for deduplication (Serf's EventBuffer)
QUERY_BUFFER = 64  # the same for queries (Serf's QueryBuffer)
QUERY_TIMEOUT_MULT = 16  # default query timeout: gossip_interval * this * ceil(log10(N + 1))
MAX_RELAY_FACTOR = 5  # as Serf: more copies than this add load, not reliability
PING_QUERY = "_murmur_ping"  # built-in query: every member answers with its own name


class UserMessageTooLarge(ValueError):
    """An event, query or response that would exceed its size limit. The message says by how much."""


def default_query_timeout(config: GossipConfig, n: int) -> float:
    """Serf's DefaultQueryTimeout: gossip_interval * QUERY_TIMEOUT_MULT * ceil(log10(N + 1)).
    Long enough for the query to reach everyone by gossip and for the answers to come back."""
    return config.gossip_interval * QUERY_TIMEOUT_MULT * max(1, math.ceil(math.log10(n + 1)))


# ---- filters -------------------------------------------------------------------------------------
_RE_OPTIONS = re2.Options()
_RE_OPTIONS.log_errors = False  # a bad pattern from the network is the sender's problem, not a log line


@functools.lru_cache(maxsize=256)
def compile_filter(pattern: str) -> Any | None:
    """The pattern compiled with RE2 (Go's syntax, as Serf's; linear time, so a pattern that
    arrives over gossip cannot stall the agent as a backtracking one could), or None."""
    try:
        return re2.compile(pattern, _RE_OPTIONS)
    except Exception:  # noqa: BLE001 - re2's error type is not public across versions
        return None


def regex_matches(pattern: str, text: str) -> bool:
    """Go's regexp.MatchString, as Consul and Serf use it: unanchored; "" matches everything.
    A pattern that does not compile matches nothing."""
    if not pattern:
        return True
    rx = compile_filter(pattern)
    return rx is not None and rx.search(text) is not None


def tags_match(filters: Iterable[tuple[str, str]], tags: dict[str, str]) -> bool:
    """Serf's tag filter: every (tag, regex) names a tag we have, and its value matches."""
    return all(tag in tags and regex_matches(rx, tags[tag]) for tag, rx in filters)


def query_matches(q: Query, name: str, tags: dict[str, str]) -> bool:
    """Does a member called `name` with `tags` answer query `q`? (node list, then tag regexes)"""
    if q.filter_nodes and name not in q.filter_nodes:
        return False
    return tags_match(q.filter_tags, tags)


def event_matches(node_filter: str, service_filter: str, tag_filter: str, node: str,
                  services: Iterable[tuple[str, Iterable[str]]]) -> bool:
    """Consul's user event filters, applied by each receiver: the node name must match
    `node_filter`; with `service_filter`, some local service must match it and (with `tag_filter`)
    carry a tag matching that. `services` are (service name, tags) of the receiving agent."""
    if not regex_matches(node_filter, node):
        return False
    if not service_filter:
        return True
    return any(regex_matches(service_filter, svc) and (not tag_filter or any(regex_matches(tag_filter, t) for t in tags))
               for svc, tags in services)


# ---- what comes out ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeliveredEvent:
    ltime: int
    name: str
    payload: bytes
    coalesce: bool
    time: float  # when it reached this member


@dataclass
class IncomingQuery:
    """A query this member passes the filters of. Answer with UserLayer.respond before `deadline`."""

    ltime: int
    id: int
    name: str
    payload: bytes
    src: str
    src_addr: str
    src_port: int
    relay_factor: int
    deadline: float
    responded: bool = False


@dataclass
class QueryState:
    """The origin's view of a query it sent: who acked, who answered, until `deadline`."""

    ltime: int
    id: int
    name: str
    want_ack: bool
    relay_factor: int
    start: float
    deadline: float
    acks: dict[str, float] = field(default_factory=dict)  # member -> arrival time
    responses: dict[str, tuple[bytes, float]] = field(default_factory=dict)  # member -> (payload, time)
    duplicates: int = 0  # responses already had from that member (relayed copies, mostly)
    late: int = 0  # arrived after the deadline: not counted


class Coalescer:
    """Serf's user event coalescing: of events with the coalesce flag, only the newest (highest
    Lamport time) of each name is delivered, once `period` has passed since the first one of the
    batch or `quiet` since the last one, whichever comes first."""

    def __init__(self, period: float, quiet: float) -> None:
        self.period = period
        self.quiet = quiet
        self.latest: dict[str, DeliveredEvent] = {}
        self.first = 0.0
        self.last = 0.0

    def add(self, ev: DeliveredEvent, now: float) -> None:
        if not self.latest:
            self.first = now
        self.last = now
        held = self.latest.get(ev.name)
        if held is None or ev.ltime > held.ltime:
            self.latest[ev.name] = ev

    def next_deadline(self) -> float:
        if not self.latest:
            return math.inf
        return min(self.first + self.period, self.last + self.quiet)

    def flush(self, now: float) -> list[DeliveredEvent]:
        """The batch, oldest first, if its time has come; else nothing."""
        if now < self.next_deadline():
            return []
        out = sorted(self.latest.values(), key=lambda e: e.ltime)
        self.latest = {}
        return out


@dataclass
class _Bucket:
    ltime: int
    seen: set[object] = field(default_factory=set)
    events: list[UserEvent] = field(default_factory=list)  # (event buckets only) what push-pull shares


def _check_size(kind: str, encoded: bytes, limit: int) -> None:
    if len(encoded) > limit:
        raise UserMessageTooLarge(f"{kind} exceeds the limit of {limit} bytes: its name, payload and filters "
                                  f"take {len(encoded)} bytes encoded")


QueryHandler = Callable[[IncomingQuery], bytes | None]


class UserLayer:
    def __init__(self, m: Membership) -> None:
        self.m = m
        self.event_clock = m.event_clock  # kept by the core: push-pull carries them
        self.query_clock = m.query_clock
        m.recent_user_events = self.recent_events
        self._event_buf: dict[int, _Bucket] = {}
        self._query_buf: dict[int, _Bucket] = {}
        self.pending: dict[int, QueryState] = {}  # queries we sent, by id
        # Handlers answer a query at once; a query with none goes out through queries() instead.
        self.handlers: dict[str, QueryHandler] = {PING_QUERY: lambda q: self.m.name.encode()}
        self._events: list[DeliveredEvent] = []
        self._queries: list[IncomingQuery] = []
        self.stats: dict[str, int] = dict.fromkeys((
            "events", "events_duplicate", "events_too_old", "events_before_join", "queries", "queries_duplicate", "queries_too_old",
            "queries_filtered", "responses", "responses_duplicate", "responses_late", "responses_unknown",
            "relayed", "too_large"), 0)

    # ---- outputs --------------------------------------------------------------------------------
    def events(self) -> list[DeliveredEvent]:
        out, self._events = self._events, []
        return out

    def queries(self) -> list[IncomingQuery]:
        out, self._queries = self._queries, []
        return out

    # ---- driving --------------------------------------------------------------------------------
    def pump(self, now: float) -> None:
        """Handle every user message the core received since the last call."""
        for msg, _src in self.m.user_messages():
            if isinstance(msg, UserEvent):
                self._on_event(msg, now)
            elif isinstance(msg, Query):
                self._on_query(msg, now)
            elif isinstance(msg, QueryResponse):
                self._on_response(msg, now)
            else:
                self._on_relay(msg, now)

    # ---- events ---------------------------------------------------------------------------------
    def fire(self, name: str, payload: bytes, now: float, coalesce: bool = False) -> UserEvent:
        """Fire a user event: delivered here at once and gossiped to everyone.
        UserMessageTooLarge if it would exceed EVENT_SIZE_LIMIT."""
        msg = UserEvent(self.event_clock.time, name, payload, coalesce)
        encoded = wire.encode_message(msg)
        try:
            _check_size("user event", encoded, EVENT_SIZE_LIMIT)
        except UserMessageTooLarge:
            self.stats["too_large"] += 1
            raise
        self.event_clock.increment()
        self._on_event(msg, now, encoded)
        return msg

    def _on_event(self, msg: UserEvent, now: float, encoded: bytes | None = None) -> None:
        self.event_clock.witness(msg.ltime)
        if msg.ltime < self.m.event_min_time:
            self.stats["events_before_join"] += 1
            return
        if not self._fresh(self._event_buf, self.event_clock.time, EVENT_BUFFER, msg.ltime, (msg.name, msg.payload),
                           "events"):
            return
        self._event_buf[msg.ltime % EVENT_BUFFER].events.append(msg)
        self.m.queue_user(encoded or wire.encode_message(msg))
        self.stats["events"] += 1
        self._events.append(DeliveredEvent(msg.ltime, msg.name, msg.payload, msg.coalesce, now))

    def recent_events(self) -> tuple[UserEvent, ...]:
        """The events in our buffer window, oldest first: sent in every push-pull (Serf does the
        same), so a member that missed one by gossip gets it from the next exchange."""
        low = self.event_clock.time - EVENT_BUFFER
        return tuple(e for b in sorted(self._event_buf.values(), key=lambda b: b.ltime) if b.ltime >= low
                     for e in b.events)

    def _fresh(self, buf: dict[int, _Bucket], clock: int, window: int, ltime: int, key: object, kind: str) -> bool:
        """True the first time (ltime, key) is seen inside the window; counts the rest."""
        if clock > window and ltime < clock - window:
            self.stats[f"{kind}_too_old"] += 1
            return False
        slot = ltime % window
        bucket = buf.get(slot)
        if bucket is None or bucket.ltime != ltime:
            bucket = buf[slot] = _Bucket(ltime)
        if key in bucket.seen:
            self.stats[f"{kind}_duplicate"] += 1
            return False
        bucket.seen.add(key)
        return True

    # ---- queries: the origin ----------------------------------------------------------------------
    def query(self, name: str, payload: bytes, now: float, *, filter_nodes: Iterable[str] = (),
              filter_tags: dict[str, str] | None = None, want_ack: bool = False, relay_factor: int = 0,
              timeout: float | None = None) -> QueryState:
        """Send a query to everyone (and to ourselves). The answers collect in the returned state
        until its deadline; call finish() when done with it. UserMessageTooLarge if too large."""
        if timeout is None or timeout <= 0:
            timeout = default_query_timeout(self.m.config, self.m.live_count())
        relay_factor = max(0, min(relay_factor, MAX_RELAY_FACTOR))
        qid = self.m.rng.getrandbits(32)
        while qid in self.pending:
            qid = self.m.rng.getrandbits(32)
        msg = Query(self.query_clock.time, qid, name, payload, self.m.name, self.m.me.addr, self.m.me.port,
                    tuple(filter_nodes), tuple(sorted((filter_tags or {}).items())), want_ack, relay_factor,
                    max(1, round(timeout * 1000)))
        encoded = wire.encode_message(msg)
        try:
            _check_size("query", encoded, QUERY_SIZE_LIMIT)
        except UserMessageTooLarge:
            self.stats["too_large"] += 1
            raise
        self.query_clock.increment()
        state = QueryState(msg.ltime, qid, name, want_ack, relay_factor, now, now + timeout)
        self.pending[qid] = state
        self._on_query(msg, now, encoded)
        return state

    def finish(self, state: QueryState) -> None:
        """Stop collecting for a query (later answers are counted late and dropped)."""
        self.pending.pop(state.id, None)

    def _on_response(self, r: QueryResponse, now: float) -> None:
        state = self.pending.get(r.id)
        if state is None or state.ltime != r.ltime:
            self.stats["responses_unknown"] += 1
            return
        if now > state.deadline:
            state.late += 1
            self.stats["responses_late"] += 1
            return
        if r.ack:
            if r.src in state.acks:
                state.duplicates += 1
                self.stats["responses_duplicate"] += 1
            else:
                state.acks[r.src] = now
            return
        if r.src in state.responses:
            state.duplicates += 1
            self.stats["responses_duplicate"] += 1
            return
        state.responses[r.src] = (r.payload, now)
        self.stats["responses"] += 1

    # ---- queries: every member --------------------------------------------------------------------
    def _on_query(self, q: Query, now: float, encoded: bytes | None = None) -> None:
        self.query_clock.witness(q.ltime)
        if not self._fresh(self._query_buf, self.query_clock.time, QUERY_BUFFER, q.ltime, q.id, "queries"):
            return
        self.m.queue_user(encoded or wire.encode_message(q))
        if not query_matches(q, self.m.name, self.m.me.tags):
            self.stats["queries_filtered"] += 1
            return
        self.stats["queries"] += 1
        incoming = IncomingQuery(q.ltime, q.id, q.name, q.payload, q.src, q.src_addr, q.src_port,
                                 min(q.relay_factor, MAX_RELAY_FACTOR), now + q.timeout_ms / 1000)
        if q.want_ack:
            self._answer(incoming, QueryResponse(q.ltime, q.id, self.m.name, True, b""), now)
        handler = self.handlers.get(q.name)
        if handler is None:
            self._queries.append(incoming)
            return
        answer = handler(incoming)
        if answer is not None:
            try:
                self.respond(incoming, answer, now)
            except UserMessageTooLarge:
                pass  # counted; a handler's bad answer must not stop the gossip loop

    def respond(self, q: IncomingQuery, payload: bytes, now: float) -> bool:
        """Answer a query (once, before its deadline). False if too late or already answered;
        UserMessageTooLarge if the payload does not fit RESPONSE_SIZE_LIMIT."""
        if q.responded or now > q.deadline:
            return False
        resp = QueryResponse(q.ltime, q.id, self.m.name, False, payload)
        encoded = wire.encode_message(resp)
        try:
            _check_size("query response", encoded, RESPONSE_SIZE_LIMIT)
        except UserMessageTooLarge:
            self.stats["too_large"] += 1
            raise
        q.responded = True
        self._answer(q, resp, now, encoded)
        return True

    def _answer(self, q: IncomingQuery, resp: QueryResponse, now: float, encoded: bytes | None = None) -> None:
        """To the origin directly, and through relay_factor random other members."""
        if q.src == self.m.name:
            self._on_response(resp, now)  # our own query: no network
            return
        self.m.send_user((q.src_addr, q.src_port), encoded or wire.encode_message(resp))
        if q.relay_factor:
            relay = wire.encode_message(Relay(q.src_addr, q.src_port, resp))
            for peer in self.m.random_live_members(q.relay_factor, {q.src}, now):
                self.m.send_user(peer.address, relay)

    def _on_relay(self, r: Relay, now: float) -> None:
        self.stats["relayed"] += 1
        if (r.dest_addr, r.dest_port) == (self.m.me.addr, self.m.me.port):
            self._on_response(r.response, now)  # we are the origin ourselves
            return
        self.m.send_user((r.dest_addr, r.dest_port), wire.encode_message(r.response))
