"""User events and queries in the agent: Consul's event envelope, the ring behind
`/v1/event/list`, and the glue between the gossip driver's UserLayer and the HTTP API.

A Consul event rides as a Serf user event named `consul:event:<name>` whose payload is our
envelope: a msgpack array `[id (16 bytes), payload, node filter, service filter, tag filter,
version]`. Every receiver (the sender too) applies the filters against its own node name and
services and, if they pass, keeps the event in a ring of the last EVENT_RING (256, as Consul).
Events from other code (no prefix) go only to the hooks in `on_event`; those with the coalesce
flag are coalesced first (COALESCE_PERIOD / COALESCE_QUIET).

Queries: `query()` sends one and waits until its deadline; built-in handlers answer at once
(`_murmur_ping`), `register_handler` adds more, and `on_query` hooks get the queries nobody
handles, to `respond()` to later (before the query's deadline).
"""

from __future__ import annotations

import base64
import collections
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import msgpack
import trio
from murmur.gossip.userevents import (
    Coalescer,
    DeliveredEvent,
    IncomingQuery,
    QueryHandler,
    QueryState,
    UserLayer,
    compile_filter,
    event_matches,
)

if TYPE_CHECKING:
    from murmur.gossip.membership import Membership

    from .drivers.gossip import GossipDriver
    from .local_state import LocalState

log = logging.getLogger("murmur.events")

CONSUL_EVENT_PREFIX = "consul:event:"
EVENT_RING = 256  # events kept for /v1/event/list (Consul keeps 256)
EVENT_VERSION = 1
COALESCE_PERIOD = 5.0  # Serf's coalesce_period for user events delivered to hooks
COALESCE_QUIET = 1.0  # Serf's quiescent_period


class EventError(ValueError):
    """A user event or query the caller got wrong (bad regex, a tag filter without a service filter)."""


@dataclass(frozen=True)
class ConsulEvent:
    id: str
    name: str
    payload: bytes | None
    node_filter: str = ""
    service_filter: str = ""
    tag_filter: str = ""
    version: int = EVENT_VERSION
    ltime: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"ID": self.id, "Name": self.name,
                "Payload": base64.b64encode(self.payload).decode() if self.payload else None,
                "NodeFilter": self.node_filter, "ServiceFilter": self.service_filter,
                "TagFilter": self.tag_filter, "Version": self.version, "LTime": self.ltime}

    def encode(self) -> bytes:
        """The Serf payload: everything but the name (in the Serf event's name) and LTime (Serf's)."""
        return bytes(msgpack.packb([uuid.UUID(self.id).bytes, self.payload or b"", self.node_filter,
                                    self.service_filter, self.tag_filter, self.version]))

    @classmethod
    def decode(cls, name: str, data: bytes, ltime: int) -> ConsulEvent:
        """ValueError for anything that is not our envelope."""
        try:
            f = msgpack.unpackb(data, raw=False)
            if not (isinstance(f, list) and len(f) >= 6 and type(f[0]) is bytes and type(f[1]) is bytes
                    and all(type(x) is str for x in f[2:5]) and type(f[5]) is int):
                raise ValueError("not a murmur event envelope")
            return cls(str(uuid.UUID(bytes=f[0])), name, f[1] or None, f[2], f[3], f[4], f[5], ltime)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ValueError(f"undecodable event {name!r}: {exc}") from exc


def event_index(events: list[ConsulEvent]) -> int:
    """Consul's X-Consul-Index for an event list: made from the last event's ID (its two 64-bit
    halves XORed), or 1 for no events. It changes when a new event arrives, but does not grow, so
    a blocking list waits while the index *equals* the one asked for."""
    if not events:
        return 1
    v = uuid.UUID(events[-1].id).int
    return (v >> 64) ^ (v & ((1 << 64) - 1))


class EventRing:
    def __init__(self, size: int = EVENT_RING) -> None:
        self.events: collections.deque[ConsulEvent] = collections.deque(maxlen=size)

    def add(self, ev: ConsulEvent) -> None:
        self.events.append(ev)

    def list(self, name: str | None = None) -> list[ConsulEvent]:
        return [e for e in self.events if not name or e.name == name]


class UserEvents:
    """The agent's side of user events and queries (see the module doc)."""

    def __init__(self, driver: GossipDriver, membership: Membership, local: LocalState) -> None:
        self.driver = driver
        self.local = local
        self.layer = UserLayer(membership)
        self.ring = EventRing()
        self.changed = trio.Event()
        self.coalescer = Coalescer(COALESCE_PERIOD, COALESCE_QUIET)
        self._wake = trio.Event()
        self.on_event: list[Callable[[DeliveredEvent], None]] = []  # hooks: every non-Consul event
        self.on_query: list[Callable[[IncomingQuery], None]] = []  # hooks: queries without a handler
        self.stats = {"consul_events": 0, "consul_events_filtered": 0, "bad_events": 0, "queries_unhandled": 0}

    # ---- from the driver ------------------------------------------------------------------------
    def pump(self) -> None:
        """Called by the driver before it flushes the core's outputs."""
        now = trio.current_time()
        self.layer.pump(now)
        for ev in self.layer.events():
            self._deliver(ev, now)
        for q in self.layer.queries():
            if not self.on_query:
                self.stats["queries_unhandled"] += 1
            for hook in self.on_query:
                hook(q)

    def _deliver(self, ev: DeliveredEvent, now: float) -> None:
        if not ev.name.startswith(CONSUL_EVENT_PREFIX):
            if ev.coalesce:
                self.coalescer.add(ev, now)
                self._wake.set()
            else:
                for hook in self.on_event:
                    hook(ev)
            return
        try:
            cev = ConsulEvent.decode(ev.name[len(CONSUL_EVENT_PREFIX):], ev.payload, ev.ltime)
        except ValueError as exc:
            self.stats["bad_events"] += 1
            log.debug("%s", exc)
            return
        services = [(s.name, s.tags) for s in self.local.services.values()]
        if not event_matches(cev.node_filter, cev.service_filter, cev.tag_filter, self.local.node.name, services):
            self.stats["consul_events_filtered"] += 1
            return
        self.stats["consul_events"] += 1
        self.ring.add(cev)
        log.debug("user event %s (%s), ltime %d", cev.name, cev.id, cev.ltime)
        self.changed.set()
        self.changed = trio.Event()

    async def run(self) -> None:
        """Deliver coalesced events to the hooks when their window closes."""
        while True:
            self._wake = trio.Event()
            with trio.move_on_at(self.coalescer.next_deadline()):
                await self._wake.wait()
                continue
            for ev in self.coalescer.flush(trio.current_time()):
                for hook in self.on_event:
                    hook(ev)

    # ---- from the API ---------------------------------------------------------------------------
    def fire(self, name: str, payload: bytes, node_filter: str = "", service_filter: str = "",
             tag_filter: str = "") -> ConsulEvent:
        """Fire a Consul event. EventError for bad filters; UserMessageTooLarge over the limit."""
        if not name:
            raise EventError("Missing name")
        if tag_filter and not service_filter:
            raise EventError("Cannot provide tag filter without service filter")
        for label, rx in (("node", node_filter), ("service", service_filter), ("tag", tag_filter)):
            if rx and compile_filter(rx) is None:  # RE2, the engine the receivers use
                raise EventError(f"Invalid {label} filter {rx!r}: not a valid regular expression")
        ev = ConsulEvent(str(uuid.uuid4()), name, payload or None, node_filter, service_filter, tag_filter)
        sent = self.layer.fire(CONSUL_EVENT_PREFIX + name, ev.encode(), trio.current_time())
        self.driver.flush()  # delivers it here (the ring) and sends what is due
        return replace(ev, ltime=sent.ltime)

    def events(self, name: str | None = None) -> list[ConsulEvent]:
        return self.ring.list(name)

    async def wait_change(self, name: str | None, index: int, timeout: float) -> None:
        """Block while the index of the (name-filtered) list equals `index`, up to `timeout`."""
        with trio.move_on_after(timeout):
            while event_index(self.ring.list(name)) == index:
                await self.changed.wait()

    async def query(self, name: str, payload: bytes, *, filter_nodes: list[str] | None = None,
                    filter_tags: dict[str, str] | None = None, want_ack: bool = False, relay_factor: int = 0,
                    timeout: float | None = None) -> QueryState:
        """Send a query and collect acks and answers until its deadline (UserMessageTooLarge)."""
        state = self.layer.query(name, payload, trio.current_time(), filter_nodes=filter_nodes or (),
                                 filter_tags=filter_tags, want_ack=want_ack, relay_factor=relay_factor,
                                 timeout=timeout)
        self.driver.flush()
        try:
            await trio.sleep_until(state.deadline)
        finally:
            self.layer.finish(state)
        return state

    def register_handler(self, name: str, handler: QueryHandler) -> None:
        """Answer queries called `name` at once with handler(query) (None: no answer)."""
        self.layer.handlers[name] = handler

    def respond(self, q: IncomingQuery, payload: bytes) -> bool:
        """Answer a query handed to an on_query hook; False once too late or already answered."""
        ok = self.layer.respond(q, payload, trio.current_time())
        self.driver.flush()
        return ok
