"""The push-pull fast path (Membership._decode_stream): rows byte for byte equal to our own are
skipped or taken from our table instead of decoded. Whatever the frame, a member must end in the
same state, with the same outputs, as with the plain decoder (wire.decode_frame_payload), and
refuse the same frames. Also the per-version cache of our own rows, and the lazily drawn probe
order of a table installed from a SharedTable."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from murmur.gossip import wire
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import Member, Membership, SharedTable, State
from murmur.gossip.wire import MAX_INT, PushPull, PushState

VSN = (1, 5, 2, 2, 5, 4)
PEER = ("10.0.2.1", 7946)


def table(n: int = 12) -> SharedTable:
    return SharedTable([Member(f"n{i:02d}", f"10.0.1.{i}", 7946, 1 + i % 3, State(i % 3) if i % 4 else State.ALIVE,
                               0.0, {"dc": "x"} if i % 5 == 0 else {}, VSN if i % 7 else (1, 5, 2, 2, 5, 3),
                               shared=True) for i in range(n)])


def core(name: str = "n03", plain: bool = False) -> Membership:
    """n03 (alive in the table) holding the table; `plain`: decodes every frame the plain way."""
    m = Membership(GossipConfig.lan(), name, "10.0.1.3", 7946, random.Random(5), 0.0)
    m.preload_shared(table())
    m.receive(wire.packet(wire.Suspect(2, "n04", "n07")), PEER, 0.5)  # a suspicion our rows can confirm
    m.packets_to_send()
    if plain:
        m._decode_stream = wire.decode_frame_payload  # type: ignore[method-assign]
    return m


def outcome(m: Membership, reply: Any) -> Any:
    rows = {n: (x.incarnation, x.state, x.addr, x.port, x.tags, x.vsn, x.state_change) for n, x in m.members.items()}
    return (reply, rows, list(m.members), m.events(), dict(m.stats), sorted(m.suspicions),
            m.broadcasts.get(10_000, wire.COMPOUND_OVERHEAD, 99), m.me.incarnation, m.clock.time,
            m.live_count(), m.user_messages())


# A frame is our own rows, each kept, changed or dropped, plus a few others, in some order.
edits = st.sampled_from(["keep"] * 6 + ["inc", "state", "tags", "drop", "float", "bool", "dup"])
extra_states = st.builds(PushState, st.sampled_from(["n03", "n05", "n08", "zz", "n01"]), st.sampled_from(["10.0.1.5", "x"]),
                         st.integers(0, 65535), st.integers(0, 4), st.sampled_from(list(wire.MemberStateCode)),
                         st.just({}), st.just(VSN))


def mutated_rows(data: st.DataObject) -> list[Any]:
    mine = core()
    rows: list[Any] = [[x.name, x.addr, x.port, x.incarnation, int(x.state), x.tags, list(x.vsn)]
                       for _, x in sorted(mine.members.items())]
    out: list[Any] = []
    for r in rows:
        e = data.draw(edits)
        if e == "inc":
            r[3] += data.draw(st.integers(-1, 2))
        elif e == "state":
            r[4] = data.draw(st.integers(0, 3))
        elif e == "tags":
            r[5] = {"role": "web"}
        elif e == "float":
            r[2] = float(r[2])  # equal in value, not in type: the plain decoder refuses the frame
        elif e == "bool":
            r[3] = r[3] == 1 or r[3]
        if e == "dup":
            out.append(list(r))
        if e != "drop":
            out.append(r)
    for s in data.draw(st.lists(extra_states, max_size=3)):
        out.insert(data.draw(st.integers(0, len(out))),
                   [s.name, s.addr, s.port, s.incarnation, int(s.state), s.tags, list(s.vsn)])
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.booleans())
def test_fast_decoder_ends_where_the_plain_one_does(data: st.DataObject, as_reply: bool) -> None:
    rows = mutated_rows(data)
    payload = wire.frame_push_pull(False, 7, rows, 3, 2, ())[4:]
    results = []
    for plain in (False, True):
        m = core(plain=plain)
        if as_reply:
            (token,) = m.join([PEER], 1.0)
            reply: Any = m.stream_result(token, payload, 1.0)
        else:
            reply = m.handle_stream(payload, PEER, 1.0)
        m.streams_to_open()
        results.append(outcome(m, reply))
    assert results[0] == results[1]


def test_a_row_after_another_of_its_name_is_not_skipped() -> None:
    """n08 left, came back at another address, and then the old row that matches ours: the plain
    decoder merges all three in order, and the last is then a conflict, not old news."""
    results = []
    for plain in (False, True):
        m = core(plain=plain)
        rows = [[x.name, x.addr, x.port, x.incarnation, int(x.state), x.tags, list(x.vsn)]
                for _, x in sorted(m.members.items())]
        n08 = next(r for r in rows if r[0] == "n08")
        assert n08[4] == int(State.ALIVE)
        rows[:0] = [["n08", n08[1], 7946, n08[3] + 1, int(State.LEFT), {}, list(VSN)],
                    ["n08", "10.9.9.9", 7946, n08[3] + 2, int(State.ALIVE), {}, list(VSN)]]
        m.handle_stream(wire.frame_push_pull(False, 1, rows, 0, 0, ())[4:], PEER, 1.0)
        results.append(outcome(m, None))
    assert results[0] == results[1]
    assert results[1][4].get("conflicts") == 1


def test_a_frame_equal_to_our_table_still_merges_its_suspects() -> None:
    """The whole-table shortcut: alive rows are old news, but a suspect row is a confirmation
    (memberlist's mergeState does the same), so those rows still go through _merge."""
    m = core()
    own = m._push_pull_frame(False)[4:]
    split = wire.split_push_pull(own)
    assert split is not None and split.packed == m._table_rows().packed
    states = m._decode_stream(own).states  # type: ignore[attr-defined]
    assert states and all(s.state != State.ALIVE for s in states)
    plain = wire.decode_frame_payload(own)
    assert isinstance(plain, PushPull)
    assert list(states) == [s for s in plain.states if s.state != State.ALIVE]


def test_a_row_equal_in_value_but_not_in_type_refuses_the_frame_as_before() -> None:
    m = core()
    body = msgpack.unpackb(m._push_pull_frame(False)[4:][1:])
    body[1][2][0][2] = float(body[1][2][0][2])  # the port: 7946.0 == 7946
    payload = bytes([wire.VERSION]) + msgpack.packb(body)
    with pytest.raises(wire.WireError):
        wire.decode_frame_payload(payload)
    before = outcome(m, None)
    assert m.handle_stream(payload, PEER, 1.0) is None
    assert m.stats["bad_streams"] == 1
    m.stats["bad_streams"] = 0
    assert outcome(m, None) == before


@pytest.mark.parametrize("n", [0, 3, 15, 16, 65535, 65536])
def test_row_list_packs_as_msgpack_packs_a_list(n: int) -> None:
    rows = [msgpack.packb(i % 200) for i in range(n)]
    assert wire.pack_row_list(rows) == msgpack.packb([i % 200 for i in range(n)])


def test_the_row_cache_catches_a_change_made_without_a_version_bump() -> None:
    m = core()
    m.verify_table_cache = True
    m._push_pull_frame(False)
    m._own(m.members["n05"]).incarnation = 9  # through _own: bumps the version
    assert b"n05" in m._push_pull_frame(False)
    m.members["n05"].incarnation = 10  # behind the core's back
    with pytest.raises(AssertionError, match="without a table version bump"):
        m._push_pull_frame(False)


def test_a_shared_table_installs_as_the_plain_install_does() -> None:
    shared, plain = core(), Membership(GossipConfig.lan(), "n03", "10.0.1.3", 7946, random.Random(5), 0.0)
    plain._install([x for x in table().records if x.name != "n03"])
    assert list(shared.members) == list(plain.members)
    assert shared.members["n03"] is shared.me
    assert shared.live_count() == plain.live_count() == sum(1 for x in plain.members.values() if x.state in (
        State.ALIVE, State.SUSPECT))


def test_lazy_probe_order_visits_every_live_member_once_per_pass_without_touching_the_shared_list() -> None:
    cfg = dataclasses.replace(GossipConfig.lan(), probe_rotation=False)
    t = SharedTable([Member(f"n{i:02d}", f"10.0.1.{i}", 7946, 1, State.ALIVE, 0.0, {}, VSN, shared=True)
                     for i in range(20)])
    names = list(t.names)
    orders = []
    for seed in (1, 2):
        m = Membership(cfg, "n00", "10.0.1.0", 7946, random.Random(seed), 0.0)
        m.preload_shared(t)
        passes = [[m._next_target(0.0).name for _ in range(19)] for _ in range(3)]  # type: ignore[union-attr]
        for p in passes:
            assert sorted(p) == names[1:]
        assert passes[0] != passes[1]
        orders.append(passes[0])
        assert t.names == names  # the shared list was copied, not shuffled in place
    assert orders[0] != orders[1]
    m = Membership(cfg, "n00", "10.0.1.0", 7946, random.Random(3), 0.0)
    m.preload_shared(t)
    first = [m._next_target(0.0).name for _ in range(5)]  # type: ignore[union-attr]
    m.receive(wire.packet(wire.Alive(1, "new", "10.0.1.99", 7946)), PEER, 0.0)  # joins this pass or the next
    rest = [m._next_target(0.0).name for _ in range(14 + 20)]  # type: ignore[union-attr]
    seen = first + rest
    assert sorted(seen[:19]) == names[1:] or sorted(seen[:20]) == sorted(names[1:] + ["new"])
    assert seen.count("new") in (1, 2)


def test_decoded_numbers_still_leave_room_for_our_increment_on_the_fast_path() -> None:
    m = core()
    rows = [[x.name, x.addr, x.port, x.incarnation, int(x.state), x.tags, list(x.vsn)]
            for _, x in sorted(m.members.items())]
    rows[0][3] = MAX_INT + 1
    payload = wire.frame_push_pull(False, 1, rows, 0, 0, ())[4:]
    assert m.handle_stream(payload, PEER, 1.0) is None
    assert m.stats["bad_streams"] == 1
