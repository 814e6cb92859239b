"""KV tombstones and locks, sessions, and transactions in the store (catalog/store.py), the pure
clocks around them (catalog/sessions.py), and the HTTP body rules (agent/sessions.py, routes)."""

from __future__ import annotations

import pytest
from murmur.agent.http.server import HTTPError
from murmur.agent.http.session_routes import parse_create
from murmur.agent.http.txn_routes import parse_ops
from murmur.agent.sessions import SessionError, parse_lock_delay, parse_ttl, ttl_seconds
from murmur.catalog import commands as cmds
from murmur.catalog import queries
from murmur.catalog.commands import (
    KV,
    ApplyError,
    CheckSpec,
    CommandError,
    Deregister,
    KVOp,
    Register,
    ServiceSpec,
    Session,
    SessionOp,
    Txn,
    TxnOp,
    TxnVerb,
)
from murmur.catalog.sessions import LockDelays, SessionTimers, TombstoneGC
from murmur.catalog.store import StateStore

S = 10**9


class Log:
    """A store fed through the codec, at increasing indexes."""

    def __init__(self) -> None:
        self.store = StateStore()
        self.index = 0

    def __call__(self, cmd: cmds.Command) -> object:
        self.index += 1
        return self.store.apply(self.index, cmds.encode(cmd))


def with_node(node: str = "n1", status: str = "passing") -> Log:
    log = Log()
    log(Register(node=node, address="10.0.0.1", checks=(CheckSpec("serfHealth", "Serf", status=status),)))
    return log


def session(log: Log, sid: str, **kw: object) -> object:
    kw.setdefault("node", "n1")
    kw.setdefault("node_checks", ("serfHealth",))
    return log(Session(SessionOp.CREATE, sid, **kw))  # type: ignore[arg-type]


# ---- KV tombstones and indexes ------------------------------------------------------------------
def test_a_deleted_key_reports_an_index_past_its_deletion_and_wakes_its_waiters() -> None:
    log = Log()
    log(KV(KVOp.SET, "a", b"1"))
    log(KV(KVOp.SET, "b", b"2"))
    st = log.store
    assert queries.kv_index(st, "a", False) == 1 and queries.kv_wait_index(st, "a", False) == 1
    log(KV(KVOp.DELETE, "a"))  # index 3
    assert "a" not in st.kvs and st.tombstones == {"a": 3}
    assert queries.kv_index(st, "a", False) == 3  # the 404 carries an index past the one waited on
    assert queries.kv_wait_index(st, "a", False) == 3
    log(KV(KVOp.SET, "b", b"3"))  # another key: the missing key's waiters stay asleep
    assert queries.kv_wait_index(st, "a", False) == 3
    # A prefix's index never goes back when its newest key is deleted.
    log(KV(KVOp.SET, "p/x", b"1"))  # 5
    log(KV(KVOp.SET, "p/y", b"1"))  # 6
    log(KV(KVOp.DELETE, "p/y"))  # 7
    assert queries.kv_index(st, "p/", True) == 7
    log(KV(KVOp.SET, "p/y", b"again"))  # 8: a key written again is no longer a tombstone
    assert "p/y" not in st.tombstones and queries.kv_index(st, "p/", True) == 8
    # Reaping forgets tombstones at or below the index, and nothing else.
    log(KV(KVOp.REAP, "", index=3))
    assert st.tombstones == {}
    assert StateStore.restore(st.snapshot()).tombstones == st.tombstones


def test_delete_tree_leaves_a_tombstone_per_key_and_a_missing_delete_changes_nothing() -> None:
    log = Log()
    for k in ("t/a", "t/b", "u"):
        log(KV(KVOp.SET, k, b"v"))
    assert log(KV(KVOp.DELETE, "nope")) is True and log.store.table_index["kvs"] == 3
    log(KV(KVOp.DELETE_TREE, "t/"))
    assert sorted(log.store.tombstones) == ["t/a", "t/b"] and list(log.store.kvs) == ["u"]


# ---- locks --------------------------------------------------------------------------------------
def test_acquire_release_and_lock_index() -> None:
    log = with_node()
    session(log, "s1")
    session(log, "s2")
    assert isinstance(log(KV(KVOp.LOCK, "k", b"1", session="nope")), ApplyError)
    assert log(KV(KVOp.LOCK, "k", b"1", session="s1")) is True
    rec = log.store.kvs["k"]
    assert (rec.lock_index, rec.session) == (1, "s1")
    assert log(KV(KVOp.LOCK, "k", b"2", session="s2")) is False  # held by another
    assert log(KV(KVOp.LOCK, "k", b"3", session="s1")) is True  # the holder again: same LockIndex
    assert log.store.kvs["k"].lock_index == 1 and log.store.kvs["k"].value == b"3"
    assert log(KV(KVOp.UNLOCK, "k", b"x", session="s2")) is False  # not the holder
    assert log(KV(KVOp.UNLOCK, "k", b"4", session="s1")) is True
    assert (log.store.kvs["k"].session, log.store.kvs["k"].lock_index) == ("", 1)
    assert log(KV(KVOp.LOCK, "k", b"5", session="s2")) is True
    assert log.store.kvs["k"].lock_index == 2  # a new holder: the fencing token moves on
    log(KV(KVOp.SET, "k", b"plain"))  # a plain write keeps the lock
    assert (log.store.kvs["k"].session, log.store.kvs["k"].lock_index) == ("s2", 2)


def test_destroy_releases_locks_and_records_the_lock_delay() -> None:
    log = with_node()
    session(log, "s1", lock_delay=10 * S)
    log(KV(KVOp.LOCK, "k", b"v", session="s1"))
    before = log.store.kvs["k"]
    assert log(Session(SessionOp.DESTROY, "s1")) is True
    after = log.store.kvs["k"]
    assert after.session == "" and after.value == b"v" and after.lock_index == before.lock_index
    assert after.modify_index == log.index > before.modify_index
    assert log.store.lock_delays == {"k": (10 * S, log.index)} and log.store.gc_index == log.index
    assert "s1" not in log.store.sessions
    # The lock-delay guard: a lock checked before the delay began is refused; after, it takes.
    session(log, "s2")
    stale = log.index - 2  # the proposer looked before the destroy was applied
    assert log(KV(KVOp.LOCK, "k", b"w", session="s2", seen=stale)) is False
    assert log(KV(KVOp.LOCK, "k", b"w", session="s2", seen=log.index)) is True
    assert log.store.lock_delays == {}  # a lock taken clears the record
    assert log(Session(SessionOp.DESTROY, "gone")) is True  # destroying what is gone is done


def test_behavior_delete_deletes_the_held_keys() -> None:
    log = with_node()
    session(log, "s1", behavior="delete", lock_delay=0)
    log(KV(KVOp.LOCK, "a", b"1", session="s1"))
    log(KV(KVOp.LOCK, "b", b"2", session="s1"))
    log(KV(KVOp.SET, "c", b"3"))
    log(Session(SessionOp.DESTROY, "s1"))
    assert list(log.store.kvs) == ["c"] and sorted(log.store.tombstones) == ["a", "b"]
    assert log.store.lock_delays == {}  # a zero lock delay records nothing


def test_a_critical_bound_check_or_a_gone_node_invalidates_sessions() -> None:
    log = with_node()
    log(Register(node="n1", address="10.0.0.1", service=ServiceSpec("web", "web"),
                 checks=(CheckSpec("svc", "svc", status="passing", service_id="web"),)))
    session(log, "serf")  # bound to serfHealth
    session(log, "svc", node_checks=(), service_checks=("svc",))
    session(log, "none", node_checks=())  # bound to nothing
    log(KV(KVOp.LOCK, "k", b"v", session="svc"))
    # Another check going critical touches nobody; the bound service check does.
    log(Register(node="n1", address="10.0.0.1", checks=(CheckSpec("other", "o", status="critical"),)))
    assert sorted(log.store.sessions) == ["none", "serf", "svc"]
    log(Register(node="n1", address="10.0.0.1", skip_node_update=True,
                 checks=(CheckSpec("svc", "svc", status="critical", service_id="web"),)))
    assert sorted(log.store.sessions) == ["none", "serf"] and log.store.kvs["k"].session == ""
    # serfHealth critical (node failure) invalidates the sessions bound to it.
    log(Register(node="n1", address="10.0.0.1", checks=(CheckSpec("serfHealth", "Serf", status="critical"),)))
    assert sorted(log.store.sessions) == ["none"]
    # Deregistering the node takes every session on it.
    log(Deregister(node="n1"))
    assert log.store.sessions == {}


def test_deregistering_a_service_invalidates_sessions_on_its_checks() -> None:
    log = with_node()
    log(Register(node="n1", address="10.0.0.1", service=ServiceSpec("web", "web"),
                 checks=(CheckSpec("svc", "svc", status="passing", service_id="web"),)))
    session(log, "svc", node_checks=(), service_checks=("svc",))
    session(log, "serf")
    log(Deregister(node="n1", service_id="web"))
    assert sorted(log.store.sessions) == ["serf"]


def test_session_create_rules() -> None:
    log = with_node()
    assert isinstance(session(log, "x", node="n2"), ApplyError)  # no such node
    assert isinstance(session(log, "x", node_checks=("nope",)), ApplyError)  # no such check
    log(Register(node="n1", address="10.0.0.1", checks=(CheckSpec("bad", "b", status="critical"),)))
    assert isinstance(session(log, "x", node_checks=("bad",)), ApplyError)  # critical already
    assert session(log, "x") is True
    assert isinstance(session(log, "x"), ApplyError)  # the ID is taken
    rec = log.store.sessions["x"]
    assert (rec.create_index, rec.modify_index, rec.renew_index) == (log.index - 1,) * 3
    assert queries.session_json(rec)["NodeChecks"] == ["serfHealth"]
    restored = StateStore.restore(log.store.snapshot())
    assert restored.sessions == log.store.sessions and restored.sessions_index == log.store.sessions_index


def test_renew_and_expire() -> None:
    log = with_node()
    session(log, "s", ttl="10s")
    created = log.store.sessions["s"].renew_index
    renewed = log(Session(SessionOp.RENEW, "s"))
    assert isinstance(renewed, list) and log.store.sessions["s"].renew_index == log.index
    assert log.store.sessions["s"].modify_index == created  # a renewal is not a modification
    assert log(Session(SessionOp.RENEW, "nope")) is False
    # An expiry decided before the last renewal loses; one that saw it wins.
    assert log(Session(SessionOp.EXPIRE, "s", renew_index=created)) is False and "s" in log.store.sessions
    assert log(Session(SessionOp.EXPIRE, "s", renew_index=log.store.sessions["s"].renew_index)) is True
    assert "s" not in log.store.sessions


# ---- transactions -------------------------------------------------------------------------------
def test_a_failed_transaction_changes_nothing_and_reports_every_error() -> None:
    log = with_node()
    session(log, "s1")
    log(KV(KVOp.SET, "a", b"1"))
    before = log.store.snapshot()
    result = log(Txn((TxnOp(TxnVerb.SET, "b", b"2"), TxnOp(TxnVerb.DELETE, "a"),
                      TxnOp(TxnVerb.CAS, "a", b"x", index=999), TxnOp(TxnVerb.LOCK, "c", session="s1"),
                      TxnOp(TxnVerb.CHECK_NOT_EXISTS, "b"))))
    assert result[0] == "err"  # type: ignore[index]
    assert [i for i, _ in result[1]] == [2, 4]  # type: ignore[index]
    after = StateStore.restore(log.store.snapshot())
    expected = StateStore.restore(before)
    assert (after.kvs, after.tombstones, after.table_index) == (expected.kvs, expected.tombstones,
                                                                expected.table_index)


def test_a_transaction_applies_all_at_one_index() -> None:
    log = with_node()
    session(log, "s1")
    log(KV(KVOp.SET, "t/old", b"o"))
    result = log(Txn((TxnOp(TxnVerb.SET, "t/a", b"1", flags=7), TxnOp(TxnVerb.CAS, "t/b", b"2", index=0),
                      TxnOp(TxnVerb.LOCK, "t/l", b"L", session="s1"), TxnOp(TxnVerb.DELETE, "t/old"),
                      TxnOp(TxnVerb.GET_TREE, "t/"), TxnOp(TxnVerb.CHECK_SESSION, "t/l", session="s1"))))
    assert result[0] == "ok"  # type: ignore[index]
    rows = result[1]  # type: ignore[index]
    assert [r[0] for r in rows[:3]] == ["t/a", "t/b", "t/l"] and all(r[1] is None for r in rows[:3])
    assert [(r[0], r[1]) for r in rows[3:6]] == [("t/a", b"1"), ("t/b", b"2"), ("t/l", b"L")]
    assert {r.modify_index for r in log.store.kvs.values()} == {log.index}
    assert log.store.tombstones == {"t/old": log.index} and log.store.kvs["t/l"].lock_index == 1


def test_codec_round_trips_and_refuses_bad_bodies() -> None:
    for cmd in (KV(KVOp.LOCK, "k", b"v", 3, 0, "sid", 42),
                Session(SessionOp.CREATE, "id", "n", "node", ("a",), ("b",), 5, "delete", "20s", 0),
                Txn((TxnOp(TxnVerb.CAS, "k", b"v", 1, 2, ""), TxnOp(TxnVerb.CHECK_SESSION, "k", session="s")), 9)):
        assert cmds.decode(cmds.encode(cmd)) == cmd
    # A plain KV write encodes exactly as before sessions existed (old logs decode the same).
    assert b"ls" not in cmds.encode(KV(KVOp.SET, "k", b"v")) and b"\xa1s" not in cmds.encode(KV(KVOp.SET, "k"))
    import msgpack

    bad = [bytes([cmds.CommandType.TXN]) + msgpack.packb({"ops": [{"v": 99, "k": "a"}]}),
           bytes([cmds.CommandType.TXN]) + msgpack.packb({"ops": [{}] * 65}),
           bytes([cmds.CommandType.SESSION]) + msgpack.packb({"o": 0, "id": 5}),
           bytes([cmds.CommandType.SESSION]) + msgpack.packb({"o": 0, "id": "x", "ld": 61 * S})]
    for data in bad:
        with pytest.raises(CommandError):
            cmds.decode(data)


# ---- the pure clocks ----------------------------------------------------------------------------
def test_session_timers_expire_after_twice_the_ttl_and_restart_on_renewal() -> None:
    log = with_node()
    session(log, "a", ttl="10s")
    session(log, "b")  # no TTL: no timer
    timers = SessionTimers(ttl_seconds)
    timers.sync(log.store, now=100.0)
    assert timers.next_deadline() == 120.0 and timers.expired(119.9) == []
    log(Session(SessionOp.RENEW, "a"))
    timers.sync(log.store, now=115.0)
    assert timers.expired(120.0) == [] and timers.expired(135.0) == [("a", log.index)]
    timers.clear()  # a new leader starts again with the full TTL
    timers.sync(log.store, now=200.0)
    assert timers.next_deadline() == 220.0
    log(Session(SessionOp.DESTROY, "a"))
    timers.sync(log.store, now=201.0)
    assert timers.next_deadline() is None


def test_sessions_version_moves_on_create_renew_and_destroy_only() -> None:
    """The leader's TTL timers rescan the sessions only when this changes (agent/sessions.py)."""
    log = with_node()
    versions = [log.store.sessions_version()]
    session(log, "a", ttl="10s")
    versions.append(log.store.sessions_version())
    log(KV(KVOp.SET, "k", b"v"))  # a plain KV write leaves it
    assert log.store.sessions_version() == versions[-1]
    log(Session(SessionOp.RENEW, "a"))
    versions.append(log.store.sessions_version())
    log(Session(SessionOp.DESTROY, "a"))
    versions.append(log.store.sessions_version())
    assert len(set(versions)) == 4
    # a snapshot restores to the same version (a resync after install is then not needed)
    session(log, "b", ttl="10s")
    log(Session(SessionOp.RENEW, "b"))
    assert StateStore.restore(log.store.snapshot()).sessions_version() == log.store.sessions_version()


def test_lock_delays_start_when_applied() -> None:
    log = with_node()
    session(log, "s", lock_delay=15 * S)
    log(KV(KVOp.LOCK, "k", session="s"))
    ld = LockDelays()
    ld.observe(log.store, 10.0)
    assert ld.remaining("k", 10.0) == 0.0
    log(Session(SessionOp.DESTROY, "s"))
    ld.observe(log.store, 50.0)
    assert ld.remaining("k", 50.0) == 15.0 and ld.remaining("k", 64.0) == 1.0 and ld.remaining("k", 65.0) == 0.0
    ld.observe(log.store, 60.0)  # seen already: the deadline does not move
    assert ld.remaining("k", 60.0) == 5.0


def test_tombstone_gc_reaps_after_the_ttl_in_buckets() -> None:
    gc = TombstoneGC(ttl=100.0, granularity=10.0)
    gc.hint(5, now=1.0)
    gc.hint(9, now=3.0)  # same bucket (expires at 110)
    gc.hint(12, now=15.0)  # next bucket (120)
    assert gc.due(109.0) == 0 and gc.next_deadline() == 110.0
    assert gc.due(110.0) == 9 and gc.due(110.0) == 0
    assert gc.due(500.0) == 12


# ---- HTTP bodies --------------------------------------------------------------------------------
def test_lock_delay_number_rules() -> None:
    assert parse_lock_delay(15) == 15 * S  # below 1000: seconds (Ansible)
    assert parse_lock_delay(60) == 60 * S and parse_lock_delay(0.5) == S // 2
    assert parse_lock_delay(1000) == 1000  # from 1000 on: nanoseconds
    assert parse_lock_delay(5 * S) == 5 * S
    assert parse_lock_delay("15s") == 15 * S and parse_lock_delay("0s") == 0
    for bad in ("61s", 61 * S, 999, -1, "soon", True, None, [1]):
        with pytest.raises(SessionError):
            parse_lock_delay(bad)


def test_ttl_rules() -> None:
    assert parse_ttl("10s") == "10s" and parse_ttl("24h") == "24h" and parse_ttl("") == "" and parse_ttl("0s") == ""
    for bad in ("9s", "24h1s", "ten", 20):
        with pytest.raises(SessionError):
            parse_ttl(bad)


def test_create_body_defaults_and_lenient_casing() -> None:
    cmd = parse_create(None, "me", "id1")
    assert (cmd.node, cmd.node_checks, cmd.lock_delay, cmd.behavior, cmd.ttl) == ("me", ("serfHealth",), 15 * S,
                                                                                  "release", "")
    cmd = parse_create({"name": "x", "lockdelay": "1s", "behavior": "delete", "ttl": "20s", "checks": ["c1"],
                        "ServiceChecks": [{"ID": "svc"}]}, "me", "id2")
    assert (cmd.name, cmd.node_checks, cmd.service_checks, cmd.lock_delay, cmd.behavior, cmd.ttl) == (
        "x", ("c1",), ("svc",), S, "delete", "20s")
    assert parse_create({"NodeChecks": []}, "me", "i").node_checks == ()  # explicitly none
    for bad in ({"Behavior": "keep"}, {"TTL": "5s"}, {"LockDelay": "2m"}, {"Checks": "serfHealth"}, [1]):
        with pytest.raises(HTTPError) as info:
            parse_create(bad, "me", "i")
        assert info.value.status == 400


def test_txn_body_rules() -> None:
    ops = parse_ops([{"KV": {"Verb": "set", "Key": "k", "Value": "MQ==", "Flags": 3}},
                     {"kv": {"verb": "get-tree", "key": ""}}])
    assert ops == [TxnOp(TxnVerb.SET, "k", b"1", 3), TxnOp(TxnVerb.GET_TREE, "")]
    cases = [([{"KV": {"Verb": "set", "Key": "k"}}] * 65, 413), ([{"KV": {"Verb": "nope", "Key": "k"}}], 400),
             ([{"KV": {"Verb": "set", "Key": "k", "Value": "!!"}}], 400), ([{"Node": {}}], 400),
             ([{"KV": {"Verb": "lock", "Key": "k"}}], 400), ([{"KV": {"Verb": "cas", "Key": "k", "Index": -1}}], 400),
             ({"KV": {}}, 400), ([{"KV": {"Verb": "set", "Key": ""}}], 400)]
    for body, status in cases:
        with pytest.raises(HTTPError) as info:
            parse_ops(body)
        assert info.value.status == status, body


def test_a_read_only_transaction_answers_as_the_log_would_and_changes_nothing() -> None:
    log = with_node()
    session(log, "s1")
    log(KV(KVOp.SET, "r/a", b"1"))
    log(KV(KVOp.LOCK, "r/b", b"2", session="s1"))
    ops = (TxnOp(TxnVerb.GET, "r/a"), TxnOp(TxnVerb.GET_TREE, "r/"), TxnOp(TxnVerb.CHECK_SESSION, "r/b", session="s1"),
           TxnOp(TxnVerb.CHECK_INDEX, "r/a", index=log.store.kvs["r/a"].modify_index))
    before = log.store.snapshot()
    direct = log.store.read_txn(ops)
    assert log.store.snapshot() == before
    assert direct == log(Txn(ops))  # the same answer through the log
    failing = (TxnOp(TxnVerb.GET, "missing"), TxnOp(TxnVerb.CHECK_NOT_EXISTS, "r/a"))
    assert log.store.read_txn(failing)[0] == "err" and [i for i, _ in log.store.read_txn(failing)[1]] == [0, 1]
    with pytest.raises(ValueError):
        log.store.read_txn((TxnOp(TxnVerb.SET, "x"),))


# ---- the leader's clocks (agent/sessions.py) in virtual time ----------------------------------
class ClockAgent:
    """What leader_clocks touches: a store, its change feed, a Raft driver's leadership, a writer."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        from murmur.agent.watch import ChangeFeed

        self.log = with_node()
        self.store = self.log.store
        self.feed = ChangeFeed()
        self.driver = SimpleNamespace(is_leader=True)
        self.server = SimpleNamespace(driver=self.driver)
        self.written: list[cmds.Command] = []
        agent = self

        class W:
            async def apply(self, cmd: cmds.Command) -> object:
                agent.written.append(cmd)
                result = agent.log(cmd)
                agent.feed.notify()
                return result

        self.writer = W()


async def test_the_leader_expires_unrenewed_ttl_sessions_and_reaps_tombstones(
        autojump_clock: object) -> None:
    import trio
    from murmur.agent.sessions import leader_clocks

    ag = ClockAgent()
    session(ag.log, "ttl", ttl="10s", node_checks=())
    session(ag.log, "kept", ttl="10s", node_checks=())
    ag.log(KV(KVOp.SET, "gone", b"x"))
    ag.log(KV(KVOp.DELETE, "gone"))
    ag.driver.is_leader = False
    async with trio.open_nursery() as n:
        n.start_soon(leader_clocks, ag, 100.0)
        await trio.sleep(60)  # a follower runs no timers
        assert ag.written == [] and "ttl" in ag.store.sessions
        ag.driver.is_leader = True  # becomes leader: full TTL from now
        t0 = trio.current_time()
        for _ in range(3):  # "kept" is renewed every 6 s
            await trio.sleep(6)
            await ag.writer.apply(Session(SessionOp.RENEW, "kept"))
        assert "ttl" in ag.store.sessions  # 18 s < 2 x TTL
        await trio.sleep(20 - (trio.current_time() - t0) + 1.0)
        for _ in range(2):
            await ag.writer.apply(Session(SessionOp.RENEW, "kept"))
            await trio.sleep(6)
        assert "ttl" not in ag.store.sessions and "kept" in ag.store.sessions
        assert any(isinstance(c, Session) and c.op == SessionOp.EXPIRE and c.id == "ttl" for c in ag.written)
        assert "gone" in ag.store.tombstones
        await trio.sleep(200)  # past the tombstone TTL (100 s here) and its bucket
        assert ag.store.tombstones == {}
        assert any(isinstance(c, KV) and c.op == KVOp.REAP for c in ag.written)
        n.cancel_scope.cancel()


# ---- properties ---------------------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_keys = st.sampled_from(["a", "a/b", "a/c", "b", "c/d"])
_sids = st.sampled_from(["s1", "s2", "s3"])
_txn_ops = st.builds(TxnOp, st.sampled_from(list(TxnVerb)), _keys, st.binary(max_size=3), st.integers(0, 3),
                     st.integers(0, 40), st.one_of(st.just(""), _sids))
_commands = st.one_of(
    st.builds(KV, st.sampled_from([KVOp.SET, KVOp.CAS, KVOp.DELETE, KVOp.DELETE_CAS, KVOp.DELETE_TREE, KVOp.LOCK,
                                   KVOp.UNLOCK]), _keys, st.binary(max_size=3), st.integers(0, 3),
              st.integers(0, 40), st.one_of(st.just(""), _sids), st.integers(0, 40)),
    st.builds(Session, st.just(SessionOp.CREATE), _sids, node=st.just("n1"), node_checks=st.just(("serfHealth",)),
              lock_delay=st.sampled_from([0, 5 * S]), behavior=st.sampled_from(["release", "delete"]),
              ttl=st.sampled_from(["", "10s"])),
    st.builds(Session, st.sampled_from([SessionOp.DESTROY, SessionOp.RENEW, SessionOp.EXPIRE]), _sids,
              renew_index=st.integers(0, 40)),
    st.builds(Txn, st.lists(_txn_ops, max_size=4).map(tuple), st.integers(0, 40)),
    st.builds(Register, st.just("n1"), st.just("10.0.0.1"), checks=st.sampled_from([
        (CheckSpec("serfHealth", "Serf", status="passing"),), (CheckSpec("serfHealth", "Serf", status="critical"),)])),
    st.builds(KV, st.just(KVOp.REAP), st.just(""), index=st.integers(0, 40)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_commands, max_size=30))
def test_any_history_replays_identically_and_survives_a_snapshot(history: list[cmds.Command]) -> None:
    one, two = with_node(), with_node()
    for cmd in history:
        snap = one.store.snapshot()
        r1, r2 = one(cmd), two(cmd)
        assert r1 == r2
        if isinstance(cmd, Txn) and isinstance(r1, list) and r1[0] == "err":
            assert _state(one.store) == _state(StateStore.restore(snap))  # a failed transaction changed nothing
        # Every lock is held by a live session (invalidation never leaves a dangling holder).
        assert all(r.session in one.store.sessions for r in one.store.kvs.values() if r.session)
    assert one.store.snapshot() == two.store.snapshot()
    restored = StateStore.restore(one.store.snapshot())
    assert _state(restored) == _state(one.store)


def _state(st_: StateStore) -> tuple[object, ...]:
    return (st_.kvs, st_.tombstones, st_.sessions, st_.lock_delays, st_.table_index, st_.sessions_index)


@settings(max_examples=300)
@given(st.sampled_from([cmds.CommandType.KV, cmds.CommandType.SESSION, cmds.CommandType.TXN]),
       st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=4),
                              st.binary(max_size=4)),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(
                        st.sampled_from(["o", "k", "v", "s", "ls", "id", "ld", "nc", "sc", "ops", "d", "i", "f"]),
                        c, max_size=5), max_leaves=12))
def test_hostile_session_and_txn_bodies_raise_only_command_error(kind: int, doc: object) -> None:
    import msgpack

    try:
        out = cmds.decode(bytes([kind]) + msgpack.packb(doc))
    except CommandError:
        return
    assert cmds.decode(cmds.encode(out)) == out  # whatever decodes is a well-formed command
