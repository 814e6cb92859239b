"""Gossip wire format (pure): versioned msgpack, compound packets, stream frames.

A UDP datagram is one version byte followed by a msgpack array of messages, each
`[type, body]` with `body` a positional array (three times smaller than maps, so more updates fit
in one 1400-byte packet). Decoders ignore extra trailing fields and skip message types they do not
know, so a newer member can add fields and types without breaking an older one. The version
byte's high bit marks a sealed (encrypted) packet: see keyring.py; framing stays the same.

TCP streams (push-pull, the fallback ping) carry one message per frame: a 4-byte big-endian
length, then the same version byte and `[type, body]`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

VERSION = 1
ENCRYPTED_FLAG = 0x80  # set in the first byte of a sealed packet (keyring.SealFormat)
MAX_FRAME = 16 * 1024 * 1024  # a stream frame larger than this is refused (a 10k-member push-pull is ~1 MB)
MAX_INT = 2**63 - 1  # largest incarnation, sequence number or Lamport time we accept
COMPOUND_OVERHEAD = 3  # bytes msgpack adds per message inside the outer array (array header + type)


class MessageType(IntEnum):
    """Only append to this list: the numbers are on the wire."""

    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    NACK = 3
    SUSPECT = 4
    ALIVE = 5
    DEAD = 6
    PUSH_PULL = 7
    USER = 8  # a user event (Serf's): name, payload, Lamport time
    QUERY = 9  # a user query, gossiped to all; answered directly to its origin
    QUERY_RESPONSE = 10  # an ack or a response to a query
    RELAY = 11  # a query response that a third member forwards to the origin (relay factor)


class WireError(ValueError):
    """Bytes that are not a valid gossip message. Counted and dropped by the core."""


class MemberStateCode(IntEnum):
    """Member states as sent in push-pull. Only append."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


Vsn = tuple[int, int, int, int, int, int]  # protocol min, max, cur; delegate min, max, cur
COMMON_VSN: Vsn = (1, 5, 2, 2, 5, 4)
_COMMON_VSN = list(COMMON_VSN)


@dataclass(frozen=True)
class Ping:
    seq: int
    target: str  # the name we think we are pinging: a restarted node on the same address won't ack it
    src: str
    src_addr: str
    src_port: int


@dataclass(frozen=True)
class IndirectPing:
    seq: int
    target: str
    target_addr: str
    target_port: int
    nack: bool
    src: str
    src_addr: str
    src_port: int


@dataclass(frozen=True)
class Ack:
    seq: int


@dataclass(frozen=True)
class Nack:
    seq: int


@dataclass(frozen=True)
class Suspect:
    incarnation: int
    node: str
    sender: str


@dataclass(frozen=True)
class Alive:
    incarnation: int
    node: str
    addr: str
    port: int
    tags: dict[str, str] = field(default_factory=dict)
    vsn: Vsn = COMMON_VSN


@dataclass(frozen=True)
class Dead:
    incarnation: int
    node: str
    sender: str  # equal to `node` for a graceful leave


@dataclass(frozen=True)
class UserEvent:
    ltime: int
    name: str
    payload: bytes
    coalesce: bool  # receivers may deliver only the latest event of this name in a short window


@dataclass(frozen=True)
class PushState:
    name: str
    addr: str
    port: int
    incarnation: int
    state: MemberStateCode
    tags: dict[str, str]
    vsn: Vsn


@dataclass(frozen=True)
class PushPull:
    join: bool
    ltime: int
    states: tuple[PushState, ...]
    # Serf's user-event state (trailing fields: an older member ignores them, and sends none).
    event_ltime: int = 0  # the sender's event clock
    query_ltime: int = 0  # and query clock
    events: tuple[UserEvent, ...] = ()  # the recent events it holds, so a member that missed one gets it


@dataclass(frozen=True)
class Query:
    ltime: int
    id: int
    name: str
    payload: bytes
    src: str  # the origin: responses go to (src_addr, src_port)
    src_addr: str
    src_port: int
    filter_nodes: tuple[str, ...]  # answer only if our name is listed (empty: everyone)
    filter_tags: tuple[tuple[str, str], ...]  # (tag, regex): answer only if every one matches
    want_ack: bool
    relay_factor: int  # responses also go through this many other members
    timeout_ms: int


@dataclass(frozen=True)
class QueryResponse:
    ltime: int
    id: int
    src: str  # the member answering
    ack: bool  # an ack (no payload) rather than a response
    payload: bytes


@dataclass(frozen=True)
class Relay:
    """A query response for a relaying member to forward to (dest_addr, dest_port)."""
    dest_addr: str
    dest_port: int
    response: QueryResponse


UserMessage = UserEvent | Query | QueryResponse | Relay
Message = Ping | IndirectPing | Ack | Nack | Suspect | Alive | Dead | PushPull | UserMessage


def _body(msg: Message) -> tuple[MessageType, list[Any]]:
    if isinstance(msg, Ping):
        return MessageType.PING, [msg.seq, msg.target, msg.src, msg.src_addr, msg.src_port]
    if isinstance(msg, IndirectPing):
        return MessageType.INDIRECT_PING, [msg.seq, msg.target, msg.target_addr, msg.target_port, msg.nack,
                                           msg.src, msg.src_addr, msg.src_port]
    if isinstance(msg, Ack):
        return MessageType.ACK, [msg.seq]
    if isinstance(msg, Nack):
        return MessageType.NACK, [msg.seq]
    if isinstance(msg, Suspect):
        return MessageType.SUSPECT, [msg.incarnation, msg.node, msg.sender]
    if isinstance(msg, Alive):
        return MessageType.ALIVE, [msg.incarnation, msg.node, msg.addr, msg.port, msg.tags, list(msg.vsn)]
    if isinstance(msg, Dead):
        return MessageType.DEAD, [msg.incarnation, msg.node, msg.sender]
    if isinstance(msg, UserEvent):
        return MessageType.USER, _event_body(msg)
    if isinstance(msg, Query):
        return MessageType.QUERY, [msg.ltime, msg.id, msg.name, msg.payload, msg.src, msg.src_addr, msg.src_port,
                                   list(msg.filter_nodes), dict(msg.filter_tags), msg.want_ack, msg.relay_factor,
                                   msg.timeout_ms]
    if isinstance(msg, QueryResponse):
        return MessageType.QUERY_RESPONSE, _response_body(msg)
    if isinstance(msg, Relay):
        return MessageType.RELAY, [msg.dest_addr, msg.dest_port, _response_body(msg.response)]
    return MessageType.PUSH_PULL, [msg.join, msg.ltime, [
        [s.name, s.addr, s.port, s.incarnation, int(s.state), s.tags, list(s.vsn)] for s in msg.states],
        msg.event_ltime, msg.query_ltime, [_event_body(e) for e in msg.events]]


def _event_body(e: UserEvent) -> list[Any]:
    return [e.ltime, e.name, e.payload, e.coalesce]


def _response_body(r: QueryResponse) -> list[Any]:
    return [r.ltime, r.id, r.src, r.ack, r.payload]


def encode_message(msg: Message) -> bytes:
    """One message as `[type, body]` msgpack: the unit the broadcast queue stores."""
    kind, body = _body(msg)
    return bytes(msgpack.packb([int(kind), body]))


def pack_packet(encoded: list[bytes]) -> bytes:
    """A datagram from already-encoded messages (see encode_message)."""
    n = len(encoded)
    if n < 16:
        header = bytes([0x90 | n])
    elif n < 65536:
        header = b"\xdc" + struct.pack("!H", n)
    else:
        raise ValueError("too many messages for one packet")
    return bytes([VERSION]) + header + b"".join(encoded)


def packet(*msgs: Message) -> bytes:
    return pack_packet([encode_message(m) for m in msgs])


def _str(v: Any) -> str:
    if type(v) is not str:
        raise WireError(f"expected a string, got {type(v).__name__}")
    return v


def _int(v: Any) -> int:
    # Bounded so that our own +1 (a refutation, a Lamport witness) still fits msgpack's uint64:
    # otherwise one hostile number would make every later encode raise.
    if type(v) is not int or v < 0 or v > MAX_INT:
        raise WireError(f"expected an integer in 0..2^63-1, got {v!r}")
    return v


def _port(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= 65535:
        raise WireError(f"expected a port number, got {v!r}")
    return v


def _tags(v: Any) -> dict[str, str]:
    if type(v) is not dict or (v and set(map(type, v.keys())) | set(map(type, v.values())) != {str}):
        raise WireError("tags must be a map of strings")
    return dict(v)


def _vsn(v: Any) -> Vsn:
    if type(v) is not list or len(v) < 6:
        raise WireError("vsn must be a list of 6 integers")
    if v[:6] == _COMMON_VSN:  # nearly every member speaks the current version: skip the checks
        return COMMON_VSN
    t = tuple(v[:6])
    if set(map(type, t)) != {int} or min(t) < 0 or max(t) > 255:
        raise WireError("vsn must be a list of 6 small integers")
    return (t[0], t[1], t[2], t[3], t[4], t[5])


def _bin(v: Any) -> bytes:
    if type(v) is not bytes:
        raise WireError(f"expected bytes, got {type(v).__name__}")
    return v


def _query(b: list[Any]) -> Query:
    nodes = b[7]
    if type(nodes) is not list or not all(type(n) is str for n in nodes):
        raise WireError("query node filter must be a list of strings")
    return Query(_int(b[0]), _int(b[1]), _str(b[2]), _bin(b[3]), _str(b[4]), _str(b[5]), _port(b[6]), tuple(nodes),
                 tuple(sorted(_tags(b[8]).items())), bool(b[9]), _int(b[10]), _int(b[11]))


def _response(b: Any) -> QueryResponse:
    if type(b) is not list:
        raise WireError("query response must be a list")
    return QueryResponse(_int(b[0]), _int(b[1]), _str(b[2]), bool(b[3]), _bin(b[4]))


_STATE_CODES = {int(c): c for c in MemberStateCode}


def push_states(rows: list[Any]) -> list[PushState]:
    """Member rows of a push-pull, validated: WireError at the first bad one."""
    states = []
    codes = _STATE_CODES  # (a push-pull from a 10,000-member cluster has 10,000 of these)
    new = object.__new__
    for s in rows:
        if not isinstance(s, list) or len(s) < 7:
            raise WireError("push-pull state must be a list of 7 fields")
        name, addr, port, inc, code, tags, vsn = s[:7]
        if (type(name) is str and type(addr) is str and type(port) is int and 0 <= port <= 65535
                and type(inc) is int and 0 <= inc <= MAX_INT and type(code) is int and code in codes
                and type(tags) is dict and not tags and type(vsn) is list and vsn[:6] == _COMMON_VSN):
            # The common row (no tags, current version) passes the same checks as the calls below,
            # inline; and a frozen dataclass's __init__ (seven object.__setattr__ calls) is most of
            # a row's cost, so its fields are set in one go.
            st = new(PushState)
            st.__dict__.update(name=name, addr=addr, port=port, incarnation=inc, state=codes[code], tags={},
                               vsn=COMMON_VSN)
            states.append(st)
            continue
        code = _int(s[4])
        state = codes.get(code)
        if state is None:
            raise WireError(f"unknown member state {code}")
        states.append(PushState(_str(s[0]), _str(s[1]), _port(s[2]), _int(s[3]), state, _tags(s[5]), _vsn(s[6])))
    return states


def _push_pull(b: list[Any]) -> PushPull:
    if not isinstance(b[2], list):
        raise WireError("push-pull states must be a list")
    states = push_states(b[2])
    if len(b) < 6:  # from a member without user events
        return PushPull(bool(b[0]), _int(b[1]), tuple(states))
    if type(b[5]) is not list or not all(type(e) is list for e in b[5]):
        raise WireError("push-pull events must be a list of events")
    try:
        events = tuple(_user_event(e) for e in b[5])
    except IndexError as exc:
        raise WireError("push-pull event: missing fields") from exc
    return PushPull(bool(b[0]), _int(b[1]), tuple(states), _int(b[3]), _int(b[4]), events)


def _user_event(b: list[Any]) -> UserEvent:
    return UserEvent(_int(b[0]), _str(b[1]), _bin(b[2]), bool(b[3]))


# One decoder per known type, looked up by the integer on the wire (a dict is faster than a chain
# of enum comparisons, and every datagram goes through here).
_DECODERS: dict[int, Callable[[list[Any]], Message]] = {
    MessageType.PING: lambda b: Ping(_int(b[0]), _str(b[1]), _str(b[2]), _str(b[3]), _port(b[4])),
    MessageType.INDIRECT_PING: lambda b: IndirectPing(_int(b[0]), _str(b[1]), _str(b[2]), _port(b[3]), bool(b[4]),
                                                      _str(b[5]), _str(b[6]), _port(b[7])),
    MessageType.ACK: lambda b: Ack(_int(b[0])),
    MessageType.NACK: lambda b: Nack(_int(b[0])),
    MessageType.SUSPECT: lambda b: Suspect(_int(b[0]), _str(b[1]), _str(b[2])),
    MessageType.ALIVE: lambda b: Alive(_int(b[0]), _str(b[1]), _str(b[2]), _port(b[3]), _tags(b[4]), _vsn(b[5])),
    MessageType.DEAD: lambda b: Dead(_int(b[0]), _str(b[1]), _str(b[2])),
    MessageType.PUSH_PULL: _push_pull,
    MessageType.USER: _user_event,
    MessageType.QUERY: _query,
    MessageType.QUERY_RESPONSE: _response,
    MessageType.RELAY: lambda b: Relay(_str(b[0]), _port(b[1]), _response(b[2])),
}


def _decode_one(kind: int, b: list[Any]) -> Message | None:
    """Decode a body; None for a type this version does not know."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        return None
    try:
        return decoder(b)
    except IndexError as exc:
        raise WireError(f"{MessageType(kind).name}: missing fields") from exc


def decode_packet(data: bytes) -> tuple[list[Message], int]:
    """Messages in a datagram, and how many were of unknown types (skipped).
    Raises WireError for anything malformed: the caller drops the whole packet."""
    if not data:
        raise WireError("empty packet")
    if data[0] & ENCRYPTED_FLAG:
        raise WireError("encrypted packet, but gossip encryption is not configured")
    if data[0] != VERSION:
        raise WireError(f"unsupported gossip version {data[0]}")
    try:
        items = msgpack.unpackb(data[1:], raw=False, strict_map_key=True, max_array_len=4096,
                                max_map_len=1024, max_str_len=65536, max_bin_len=65536)
    except Exception as exc:  # msgpack raises a zoo of types on hostile input
        raise WireError(f"undecodable packet: {type(exc).__name__}") from exc
    if not isinstance(items, list):
        raise WireError("packet is not a list of messages")
    out: list[Message] = []
    unknown = 0
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                and isinstance(item[1], list)):
            raise WireError("message is not [type, body]")
        msg = _decode_one(item[0], item[1])
        if msg is None:
            unknown += 1
        else:
            out.append(msg)
    return out, unknown


# ---- streams ----------------------------------------------------------------------------------
def frame(msg: Message) -> bytes:
    """A stream frame: length, version byte, `[type, body]`."""
    payload = bytes([VERSION]) + encode_message(msg)
    return struct.pack("!I", len(payload)) + payload


def frame_push_pull(join: bool, ltime: int, rows: list[list[Any]], event_ltime: int, query_ltime: int,
                    events: tuple[UserEvent, ...]) -> bytes:
    """The frame of a PushPull whose states are given as ready rows ([name, addr, port,
    incarnation, state code, tags, vsn list], as _body would make them): the same bytes as
    frame(PushPull(...)) without building a PushState per member first (10,000 of them in a
    simulated cluster of that size)."""
    body = [join, ltime, rows, event_ltime, query_ltime, [_event_body(e) for e in events]]
    payload = bytes([VERSION]) + bytes(msgpack.packb([int(MessageType.PUSH_PULL), body]))
    return struct.pack("!I", len(payload)) + payload


def pack_rows(rows: list[list[Any]]) -> bytes:
    """The msgpack bytes of push-pull member rows, for frame_push_pull_packed."""
    return bytes(msgpack.packb(rows))


def frame_push_pull_packed(join: bool, ltime: int, packed_rows: bytes, event_ltime: int, query_ltime: int,
                           events: tuple[UserEvent, ...]) -> bytes:
    """frame_push_pull with the rows already packed (pack_rows): msgpack writes an array as its
    header followed by its elements, so the frame is the same bytes, and a member whose table
    has not changed since its last push-pull reuses its packed rows."""
    body_tail = msgpack.packb(event_ltime) + msgpack.packb(query_ltime) + msgpack.packb(
        [_event_body(e) for e in events])
    payload = b"".join((bytes([VERSION]), b"\x92", msgpack.packb(int(MessageType.PUSH_PULL)), b"\x96",
                        msgpack.packb(join), msgpack.packb(ltime), packed_rows, body_tail))
    return struct.pack("!I", len(payload)) + payload


def _array_header(n: int) -> bytes:
    """msgpack's header of an n-element array."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + struct.pack("!H", n)
    return b"\xdd" + struct.pack("!I", n)


def pack_row_list(packed_rows: list[bytes]) -> bytes:
    """pack_rows(rows) from each row's own packb: the array header, then the rows."""
    return _array_header(len(packed_rows)) + b"".join(packed_rows)


@dataclass
class SplitPushPull:
    """A push-pull frame's payload taken apart without decoding its member rows (split_push_pull)."""
    head: PushPull  # every field but the states, checked as decode_frame_payload checks them
    packed: bytes  # the rows as they came: an array
    spans: list[bytes] | None = None  # each row's bytes, once rows() was called

    def rows(self) -> list[bytes]:
        if self.spans is None:
            up = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max(len(self.packed), 1))
            up.feed(self.packed)
            pos = 0
            spans = []
            for _ in range(up.read_array_header()):
                pos = up.tell()
                up.skip()
                spans.append(self.packed[pos:up.tell()])
            self.spans = spans
        return self.spans


def split_push_pull(payload: bytes) -> SplitPushPull | None:
    """A push-pull frame's payload with its member rows left packed (a 10,000-member table is most
    of a megabyte): the caller compares them with its own rows, byte for byte, and decodes only
    those that differ (decode_row, push_states). None if the payload is anything else, or is
    malformed around the rows: decode_frame_payload then decodes it, or says what is wrong."""
    if not payload or payload[0] != VERSION:
        return None
    data = payload[1:]
    try:
        up = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(data))
        up.feed(data)
        if up.read_array_header() != 2:
            return None
        kind = up.unpack()
        if not (isinstance(kind, int) and kind == MessageType.PUSH_PULL) or up.read_array_header() < 3:
            return None
        up.skip()  # join
        up.skip()  # ltime
        start = up.tell()
        if not (data[start] & 0xF0 == 0x90 or data[start] in (0xDC, 0xDD)):
            return None  # the states are not an array
        up.skip()
        end = up.tell()
        body = msgpack.unpackb(data[:start] + b"\x90" + data[end:], raw=False, strict_map_key=True)
        head = _push_pull(body[1])
    except Exception:
        return None
    return SplitPushPull(head, data[start:end])


def decode_row(packed: bytes) -> Any:
    """One member row as split_push_pull left it, decoded (unchecked: push_states checks it)."""
    return msgpack.unpackb(packed, raw=False, strict_map_key=True)


def frame_length(header: bytes) -> int:
    """The payload length announced by a 4-byte frame header. Raises WireError if too large."""
    n: int = struct.unpack("!I", header)[0]
    if n > MAX_FRAME or n < 2:
        raise WireError(f"stream frame of {n} bytes is outside 2..{MAX_FRAME}")
    return n


def decode_frame_payload(payload: bytes) -> Message:
    """The message of one frame's payload (without the length). Raises WireError."""
    if not payload or payload[0] != VERSION:
        raise WireError("bad stream frame version")
    try:
        item = msgpack.unpackb(payload[1:], raw=False, strict_map_key=True)
    except Exception as exc:
        raise WireError(f"undecodable stream frame: {type(exc).__name__}") from exc
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int) and isinstance(item[1], list)):
        raise WireError("stream frame is not [type, body]")
    msg = _decode_one(item[0], item[1])
    if msg is None:
        raise WireError(f"unknown stream message type {item[0]}")
    return msg
