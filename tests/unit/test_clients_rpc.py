"""Client agents' plumbing: request-ID dedup in the replicated store, the read registry (a client's
answer over RPC equals the server's own), DNS slices, and RPC error replies for hostile input."""

from __future__ import annotations

import random
import struct
from types import SimpleNamespace
from typing import Any

import dns.message
import dns.name
import msgpack
import pytest
import trio
from murmur.agent import reads, remote
from murmur.agent.rpc import endpoint
from murmur.agent.rpc.mux import RPC, FramedStream, ServerPort
from murmur.agent.rpc.protocol import VERSION, RPCError
from murmur.agent.watch import ChangeFeed
from murmur.catalog import commands as cmds
from murmur.catalog import store as store_mod
from murmur.catalog.commands import KV, CheckSpec, CommandError, KVOp, Register, ServiceSpec
from murmur.catalog.dns import Answerer, DNSSettings, slice_key, slice_store
from murmur.catalog.sessions import LockDelays
from murmur.catalog.store import StateStore

# ---- request IDs -----------------------------------------------------------------------------------


def cas_create(key: str) -> bytes:
    """Not idempotent: creates the key only if absent (a plain retry answers False)."""
    return cmds.encode(KV(KVOp.CAS, key, b"v", index=0))


def test_a_retried_write_is_applied_once_and_answers_like_the_first() -> None:
    st = StateStore()
    entry = cmds.wrap_request("rid-1", cas_create("k"))
    assert st.apply(1, entry) is True
    assert st.apply(2, entry) is True  # the retry gets the first attempt's answer
    assert st.kvs["k"].modify_index == 1  # and changed nothing
    # Positive control: the same write without an ID is applied again (and now fails its CAS).
    plain = StateStore()
    assert plain.apply(1, cas_create("k")) is True
    assert plain.apply(2, cas_create("k")) is False
    # Another ID is another write.
    assert st.apply(3, cmds.wrap_request("rid-2", cas_create("k"))) is False


def test_dedup_holds_across_a_leader_change_and_a_snapshot() -> None:
    """Leader A commits the write at index 1 but dies before answering; the client retries the
    same ID through leader B, which appends it again at index 3. Every replica, including one
    that joined from a snapshot taken after index 1, applies it once and agrees."""
    first = cmds.wrap_request("rid-x", cas_create("lock"))
    other = cmds.encode(KV(KVOp.SET, "other", b"1"))
    log = [first, other, first]
    replicas = [StateStore() for _ in range(3)]
    results = [[r.apply(i + 1, e) for i, e in enumerate(log)] for r in replicas]
    assert all(res == [True, True, True] for res in results)
    snap_source = StateStore()
    snap_source.apply(1, first)
    joined = StateStore.restore(snap_source.snapshot())
    assert [joined.apply(2, other), joined.apply(3, first)] == [True, True]
    for r in [*replicas, joined]:
        assert r.kvs["lock"].modify_index == 1
        assert r.snapshot() == replicas[0].snapshot()


def test_apply_errors_are_remembered_too() -> None:
    st = StateStore()
    bad = cmds.wrap_request("r", cmds.encode(Register(node="n", address="a", service=ServiceSpec(id="", name="x"))))
    first = st.apply(1, bad)
    assert isinstance(first, cmds.ApplyError)
    restored = StateStore.restore(st.snapshot())
    assert restored.apply(2, bad) == first


def test_request_memory_is_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "REQUEST_MEMORY", 3)
    st = StateStore()
    for i in range(5):
        st.apply(i + 1, cmds.wrap_request(f"r{i}", cmds.encode(KV(KVOp.SET, f"k{i}", b""))))
    assert list(st.requests) == ["r2", "r3", "r4"]


def test_malformed_request_wrappers_are_command_errors() -> None:
    inner = cas_create("k")
    with pytest.raises(CommandError):
        cmds.wrap_request("", inner)
    with pytest.raises(CommandError):
        cmds.unwrap_request(cmds.wrap_request("a", cmds.wrap_request("b", inner)))
    with pytest.raises(CommandError):
        cmds.unwrap_request(bytes([cmds.CommandType.REQUEST]) + b"\xc1")
    with pytest.raises(CommandError):
        cmds.unwrap_request(bytes([cmds.CommandType.REQUEST]) + msgpack.packb({"r": 1, "c": inner}))


# ---- a server to talk to (the RPC endpoint over a real store, Raft faked) ---------------------------


class FakeDriver:
    def __init__(self, leader: bool = True) -> None:
        self.is_leader = leader
        self.leader = 1 if leader else 0
        self.last_contact = 0.0
        self.store: StateStore | None = None
        self.proposed: list[bytes] = []

    async def propose(self, data: bytes) -> Any:
        assert self.store is not None
        self.proposed.append(data)
        return self.store.apply(self.store.last_index + 1, data)


class FakeServer:
    def __init__(self, agent: FakeAgent, leader: bool = True) -> None:
        self.agent = agent
        self.driver = FakeDriver(leader)
        self.driver.store = agent.store
        self.voters = [1]
        self.addresses = {1: ("127.0.0.9", 8300)}
        self.barriers = 0

    async def read_barrier(self, lease: bool = False) -> None:
        self.barriers += 1

    def leader_address(self) -> tuple[str, int] | None:
        return self.addresses[1] if self.driver.leader else None

    def cluster_protocol(self) -> int:
        from murmur.agent.protocol import PROTOCOL_MAX

        return PROTOCOL_MAX


class FakeAgent:
    def __init__(self, leader: bool = True) -> None:
        self.store = StateStore()
        self.feed = ChangeFeed()
        self.server = FakeServer(self, leader)
        self.lock_delays = LockDelays()
        self.acl = SimpleNamespace(enabled=False)


def world() -> FakeAgent:
    ag = FakeAgent()
    i = 0
    for node, addr, svc, status in (("n1", "10.0.0.1", "web", "passing"), ("n2", "10.0.0.2", "web", "critical"),
                                    ("n3", "10.0.0.3", "db", "passing")):
        i += 1
        ag.store.apply(i, cmds.encode(Register(
            node=node, address=addr, service=ServiceSpec(id=f"{svc}-{node}", name=svc, tags=("t",), port=80 + i),
            checks=(CheckSpec("serfHealth", "Serf", "passing"),
                    CheckSpec(f"c-{node}", "c", status, service_id=f"{svc}-{node}")))))
    for k in ("a/1", "a/2", "b"):
        i += 1
        ag.store.apply(i, cmds.encode(KV(KVOp.SET, k, k.encode(), flags=7)))
    ag.store.apply(i + 1, cmds.encode(cmds.Session(cmds.SessionOp.CREATE, "s1", "one", "n1", ("serfHealth",))))
    ag.store.apply(i + 2, cmds.encode(cmds.ACL(cmds.ACLOp.INIT, id="2026-11-25T07:00:00Z")))
    return ag


async def via_rpc(ag: FakeAgent, monkeypatch: pytest.MonkeyPatch, request: dict[str, Any]) -> dict[str, Any]:
    reply = await endpoint.handle_payload(ag.server, msgpack.packb({"v": VERSION, **request}))  # type: ignore[arg-type]
    body: dict[str, Any] = msgpack.unpackb(msgpack.packb(reply), raw=False, strict_map_key=False)
    return body


READ_CASES = [
    ("catalog.services", {}), ("catalog.services", {"filter": 'Node != n3 and "t" in ServiceTags'}),
    ("catalog.service", {"name": "web", "tags": None}),
    ("catalog.service", {"name": "web", "tags": ["t"]}), ("catalog.nodes", {}), ("catalog.node", {"node": "n1"}),
    ("catalog.node", {"node": "nope"}), ("health.service", {"name": "web", "tags": None, "passing": True}),
    ("health.service", {"name": "web", "tags": None, "passing": False}), ("health.checks", {"name": "db"}),
    ("health.node", {"node": "n2"}), ("health.state", {"state": "critical"}),
    ("kv.get", {"key": "a/", "recurse": True}), ("kv.get", {"key": "", "keys": True, "separator": "/"}),
    ("kv.get", {"key": "b"}), ("node.slice", {"node": "n1"}), ("dns.slice", {"key": ["service", "web"]}),
    ("status.leader", {}), ("status.peers", {}),
    ("session.info", {"id": "s1"}), ("session.node", {"node": "n1"}), ("session.list", {}),
    ("session.lock_delay", {"keys": ["b"]}), ("txn.read", {"ops": [[4, "b", 0, ""], [5, "a/", 0, ""]]}),
    ("acl.token_slice", {"secret": "anonymous"}), ("acl.list", {"kind": "token"}),
    ("acl.get", {"kind": "policy", "id": "00000000-0000-0000-0000-000000000001"}),
]


def test_every_registered_read_has_a_case() -> None:
    assert {name for name, _ in READ_CASES} | {"catalog.connect"} == set(reads.READS)


@pytest.mark.parametrize(("name", "args"), READ_CASES)
async def test_a_client_read_over_rpc_equals_the_servers_own(name: str, args: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The client path (Remote.read -> RPC -> endpoint -> execute) against the server path
    (execute): same data, index and leader, for every registered read."""
    ag = world()

    async def fake_call(addr: tuple[str, int], request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        body = await via_rpc(ag, monkeypatch, request)
        if "err" in body:
            raise RPCError(body["kind"], body["err"])
        return body

    monkeypatch.setattr(remote, "call", fake_call)
    client = remote.Remote.__new__(remote.Remote)
    client.agent = ag  # type: ignore[assignment]
    client.preferred = None
    client.stats = {"rpc_writes": 0, "rpc_reads": 0, "rpc_retries": 0}
    client.servers = lambda: [("127.0.0.9", 8300)]  # type: ignore[method-assign]
    local = await reads.execute(ag, name, args)  # type: ignore[arg-type]
    over_rpc = await client.read(name, args)
    normalized = msgpack.unpackb(msgpack.packb(local.data), raw=False, strict_map_key=False)
    assert over_rpc.data == normalized
    assert (over_rpc.index, over_rpc.known_leader) == (local.index, local.known_leader)
    assert local.data is not None or name == "catalog.node"


async def test_catalog_services_filter_selects_instances_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    """?filter= on /v1/catalog/services runs in the read (before the roll-up), on the server; a bad
    one is a bad_request there too, for a server's own read and for a client's over RPC."""
    ag = world()
    assert (await reads.execute(ag, "catalog.services", {})).data == {"web": ["t"], "db": ["t"]}  # type: ignore[arg-type]
    res = await reads.execute(ag, "catalog.services", {"filter": "ServicePort == 83"})  # type: ignore[arg-type]
    assert res.data == {"db": ["t"]}
    assert (await reads.execute(ag, "catalog.services", {"filter": 'NodeMeta.x == "y"'})).data == {}  # type: ignore[arg-type]
    with pytest.raises(reads.ReadError) as info:
        await reads.execute(ag, "catalog.services", {"filter": "Nope == 1"})  # type: ignore[arg-type]
    assert info.value.kind == "bad_request" and "Failed to create boolean expression evaluator" in str(info.value)
    reply = await via_rpc(ag, monkeypatch, {"op": "read", "name": "catalog.services", "args": {"filter": "(("}})
    assert reply["kind"] == "bad_request" and "Failed to create boolean expression evaluator" in reply["err"]


async def test_default_reads_wait_on_read_index_and_stale_reads_do_not() -> None:
    ag = world()
    await reads.execute(ag, "catalog.nodes", {}, "default")  # type: ignore[arg-type]
    await reads.execute(ag, "catalog.nodes", {}, "consistent")  # type: ignore[arg-type]
    await reads.execute(ag, "catalog.nodes", {}, "stale")  # type: ignore[arg-type]
    assert ag.server.barriers == 2


async def test_a_blocking_read_returns_when_its_index_moves() -> None:
    ag = world()
    start = ag.store.index_of_service("web")

    async def write_later() -> None:
        await trio.sleep(1)
        ag.store.apply(ag.store.last_index + 1, cmds.encode(Register(
            node="n9", address="10.0.0.9", service=ServiceSpec(id="w9", name="web"))))
        ag.feed.notify()

    async with trio.open_nursery() as n:
        n.start_soon(write_later)
        with trio.fail_after(30):
            res = await reads.execute(ag, "catalog.service", {"name": "web", "tags": None},  # type: ignore[arg-type]
                                      "stale", start, 60.0)
    assert res.index > start and "w9" in {e["ServiceID"] for e in res.data}


async def test_a_blocking_read_on_a_key_sleeps_through_other_keys_and_wakes_on_its_deletion() -> None:
    ag = world()
    start = ag.store.kvs["b"].modify_index
    events: list[str] = []

    async def writes() -> None:
        await trio.sleep(0.2)
        ag.store.apply(ag.store.last_index + 1, cmds.encode(KV(KVOp.SET, "other", b"x")))
        events.append("other")
        ag.feed.notify()
        await trio.sleep(0.4)
        ag.store.apply(ag.store.last_index + 1, cmds.encode(KV(KVOp.DELETE, "b")))
        events.append("deleted")
        ag.feed.notify()

    async with trio.open_nursery() as n:
        n.start_soon(writes)
        with trio.fail_after(30):
            res = await reads.execute(ag, "kv.get", {"key": "b"}, "stale", start, 60.0)  # type: ignore[arg-type]
    assert events == ["other", "deleted"]  # it returned after the deletion, not the other write
    assert res.data == [] and res.index == ag.store.last_index > start  # the 404's index


# ---- DNS slices: a client's answer from a slice equals the server's from the whole store -------------


@pytest.mark.parametrize("qname, rdtype", [
    ("web.service.murmur.", "A"), ("web.service.murmur.", "SRV"), ("t.web.service.murmur.", "A"),
    ("_web._tcp.service.murmur.", "SRV"), ("_db._t.murmur.", "SRV"), ("web.service.dc1.murmur.", "SRV"),
    ("n1.node.murmur.", "A"), ("n1.node.dc1.murmur.", "ANY"), ("nope.service.murmur.", "A"),
    ("0a000001.addr.dc1.murmur.", "A"), ("1.0.0.10.in-addr.arpa.", "PTR"), ("murmur.", "SOA"),
    ("WEB.Service.murmur.", "A"), ("example.com.", "A"),
])
def test_dns_answers_from_a_slice_equal_answers_from_the_whole_catalog(qname: str, rdtype: str) -> None:
    full = world().store
    origin = dns.name.from_text("murmur.")
    key = slice_key(dns.name.from_text(qname), origin)
    part = StateStore.restore(slice_store(full, key).snapshot())
    q = dns.message.make_query(qname, rdtype)
    a = Answerer(DNSSettings(), random.Random(1)).answer(q, full, 1)
    b = Answerer(DNSSettings(), random.Random(1)).answer(q, part, 1)
    assert a.to_text() == b.to_text()


def test_slices_hold_only_what_the_name_needs() -> None:
    full = world().store
    web = slice_store(full, ("service", "web"))
    assert set(web.nodes) == {"n1", "n2"} and not web.kvs
    assert set(slice_store(full, ("node-exact", "n3")).services) == {"n3"}
    assert not slice_store(full, ("none",)).nodes


# ---- hostile RPC input: always an error reply, never a crash ---------------------------------------


@pytest.mark.parametrize("payload, kind", [
    (b"\xc1", "bad_request"),
    (msgpack.packb([1, 2]), "bad_request"),
    (msgpack.packb({"v": 99, "op": "read"}), "bad_version"),
    (msgpack.packb({"v": "1", "op": "read"}), "bad_version"),
    (msgpack.packb({"v": 1, "op": "launch"}), "unknown_op"),
    (msgpack.packb({"v": 1}), "unknown_op"),
    (msgpack.packb({"v": 1, "op": "apply", "d": "text"}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "apply", "d": b"\x00\xc1"}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "apply", "d": b"\x7f{}"}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "apply", "d": cmds.wrap_request("a", cas_create("k"))}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "apply", "d": cas_create("k"), "rid": "x" * 500}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "apply", "d": cas_create("k"), "hops": -3}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "read", "name": "catalog.nope"}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "read", "name": "catalog.service", "args": {}}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "read", "name": "kv.get", "args": [1]}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "read", "name": "catalog.nodes", "mode": "fast"}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "read", "name": "catalog.nodes", "wait": -1}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "read", "name": "dns.slice", "args": {"key": [1]}}), "bad_request"),
])
async def test_malformed_requests_get_error_replies(payload: bytes, kind: str) -> None:
    ag = world()
    before = ag.store.snapshot()
    reply = await endpoint.handle_payload(ag.server, payload)  # type: ignore[arg-type]
    assert reply["kind"] == kind and reply["v"] == VERSION and reply["err"]
    assert ag.store.snapshot() == before  # nothing reached the log


async def test_apply_with_a_request_id_is_wrapped_and_deduplicated() -> None:
    ag = world()
    req = msgpack.packb({"v": 1, "op": "apply", "d": cas_create("new"), "rid": "abc"})
    first = await endpoint.handle_payload(ag.server, req)  # type: ignore[arg-type]
    again = await endpoint.handle_payload(ag.server, req)  # type: ignore[arg-type]
    assert first == again == {"v": VERSION, "r": True}
    assert ag.store.kvs["new"].modify_index == ag.store.kvs["new"].create_index


async def test_a_follower_forwards_once_and_never_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    ag = FakeAgent(leader=False)
    ag.server.driver.leader = 1  # a leader is known, elsewhere
    forwarded: list[tuple[Any, ...]] = []

    async def fake_call_apply(addr: tuple[str, int], data: bytes, rid: str = "", hops: int = 0,
                              tk: str | None = None) -> Any:
        forwarded.append((addr, rid, hops))
        return True

    monkeypatch.setattr(endpoint, "call_apply", fake_call_apply)
    ok = await endpoint.handle_payload(ag.server, msgpack.packb(  # type: ignore[arg-type]
        {"v": 1, "op": "apply", "d": cas_create("k"), "rid": "r1"}))
    assert ok == {"v": VERSION, "r": True} and forwarded == [(("127.0.0.9", 8300), "r1", 1)]
    again = await endpoint.handle_payload(ag.server, msgpack.packb(  # type: ignore[arg-type]
        {"v": 1, "op": "apply", "d": cas_create("k"), "rid": "r1", "hops": 1}))
    assert again["kind"] == "not_leader" and len(forwarded) == 1
    ag.server.driver.leader = 0
    none = await endpoint.handle_payload(ag.server, msgpack.packb(  # type: ignore[arg-type]
        {"v": 1, "op": "apply", "d": cas_create("k")}))
    assert none["kind"] == "no_leader"


async def test_the_server_port_survives_garbage_and_keeps_answering() -> None:
    ag = world()
    port = ServerPort()
    port.register(RPC, lambda framed, peer: endpoint.serve_connection(ag.server, framed, peer))  # type: ignore[arg-type]
    async with trio.open_nursery() as n:
        bound = await n.start(port.serve, "127.0.0.1", 0)
        with trio.fail_after(30):
            # An oversized frame header and a truncated frame: the connection ends, the server stays.
            for junk in (struct.pack("!I", 1 << 31), struct.pack("!I", 10) + b"abc", b"\xde\xad"):
                s = await trio.open_tcp_stream("127.0.0.1", bound)
                await s.send_all(bytes([RPC]) + junk)
                await s.send_eof()
                assert await s.receive_some(100) == b""
                await s.aclose()
            s = await trio.open_tcp_stream("127.0.0.1", bound)
            await s.send_all(bytes([RPC]))
            framed = FramedStream(s)
            await framed.write(b"\xc1")  # not msgpack: an error reply, and the connection stays usable
            bad = msgpack.unpackb(await framed.read())
            await framed.write(msgpack.packb({"v": 1, "op": "read", "name": "catalog.nodes", "mode": "stale"}))
            good = msgpack.unpackb(await framed.read())
            await s.aclose()
        n.cancel_scope.cancel()
    assert bad["kind"] == "bad_request"
    assert [e["Node"] for e in good["data"]] == ["n1", "n2", "n3"]


# ---- the client's retries: another server, the same request ID, applied once -----------------------


def bare_remote(servers: list[tuple[str, int]]) -> remote.Remote:
    client = remote.Remote.__new__(remote.Remote)
    client.agent = SimpleNamespace(rng=random.Random(3),  # type: ignore[assignment]
                                   local=SimpleNamespace(node=SimpleNamespace(id="node-1")),
                                   acl=SimpleNamespace(enabled=False))
    client.preferred = None
    client.stats = {"rpc_writes": 0, "rpc_reads": 0, "rpc_retries": 0}
    client.servers = lambda: list(servers)  # type: ignore[method-assign]
    return client


async def test_a_write_whose_answer_is_lost_is_retried_elsewhere_and_applied_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Server A applies the write but the answer never arrives (outcome unknown); the client
    retries on server B with the same request ID; the shared log applies it once."""
    ag = world()
    seen: list[tuple[tuple[str, int], str]] = []

    async def flaky_call(addr: tuple[str, int], request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        seen.append((addr, request["rid"]))
        body = await via_rpc(ag, monkeypatch, request)
        if addr[1] == 1:
            raise RPCError("unknown_outcome", "connection reset after the request was sent")
        return body

    monkeypatch.setattr(remote, "call", flaky_call)
    client = bare_remote([("127.0.0.1", 1), ("127.0.0.1", 2)])
    result = await client.apply(KV(KVOp.CAS, "once", b"v", index=0))
    assert result is True  # the first attempt's answer, not a failed CAS
    assert [a for a, _ in seen] == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    assert seen[0][1] == seen[1][1] and seen[0][1].startswith("node-1/")  # one request ID for both attempts
    assert ag.store.kvs["once"].modify_index == ag.store.kvs["once"].create_index
    assert client.preferred == ("127.0.0.1", 2)


async def test_errors_that_are_not_about_the_server_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    async def refusing(addr: tuple[str, int], request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        raise RPCError("bad_request", "no")

    monkeypatch.setattr(remote, "call", refusing)
    with pytest.raises(remote.WriteFailed):
        await bare_remote([("127.0.0.1", 1), ("127.0.0.1", 2)]).apply(KV(KVOp.SET, "k", b""))
    assert calls == 1


async def test_retries_are_bounded_and_a_client_without_servers_fails_at_once(
        monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    async def down(addr: tuple[str, int], request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await trio.sleep(0.01)
        raise RPCError("unknown_outcome", "refused")

    monkeypatch.setattr(remote, "call", down)
    t0 = trio.current_time()
    with pytest.raises(remote.WriteFailed, match="may or may not"):
        await bare_remote([("127.0.0.1", 1), ("127.0.0.1", 2)]).apply(KV(KVOp.SET, "k", b""))
    assert calls <= remote.MAX_ATTEMPTS and trio.current_time() - t0 <= remote.RETRY_BUDGET + 1
    calls = 0
    with pytest.raises(reads.ReadError, match="No cluster leader"):
        await bare_remote([]).read("catalog.nodes", {})
    assert calls == 0


async def test_a_blocking_read_stops_when_the_caller_hangs_up(autojump_clock: trio.testing.MockClock) -> None:
    import trio.testing

    ag = world()
    index = ag.store.index_of("nodes")
    req = msgpack.packb({"v": 1, "op": "read", "name": "catalog.nodes", "mode": "stale", "index": index,
                         "wait": 300})
    client_side, server_side = trio.testing.memory_stream_pair()
    framed = FramedStream(server_side)

    async def hang_up() -> None:
        await trio.sleep(1)
        await client_side.aclose()

    async with trio.open_nursery() as n:
        n.start_soon(hang_up)
        t0 = trio.current_time()
        reply = await endpoint._answer_unless_gone(ag.server, framed, req)  # type: ignore[arg-type]
    assert reply is None and trio.current_time() - t0 < 2

    # Bytes that arrive while a read waits are kept for the next frame, and the answer still comes.
    client_side, server_side = trio.testing.memory_stream_pair()
    framed = FramedStream(server_side)

    async def send_more_then_write() -> None:
        await trio.sleep(1)
        await client_side.send_all(b"next")
        await trio.sleep(1)
        ag.store.apply(ag.store.last_index + 1, cmds.encode(Register(node="n7", address="10.0.0.7")))
        ag.feed.notify()

    async with trio.open_nursery() as n:
        n.start_soon(send_more_then_write)
        reply = await endpoint._answer_unless_gone(ag.server, framed, req)  # type: ignore[arg-type]
    assert reply is not None and "n7" in [e["Node"] for e in reply["data"]]
    assert bytes(framed.buf) == b"next"


# ---- DNS slices on a client: fetched once, kept current by a blocking watcher, evicted when idle -----


class SliceServer:
    """A Remote stand-in that runs reads on a fake server agent (or fails while `down`)."""

    def __init__(self, ag: FakeAgent) -> None:
        self.ag = ag
        self.down = False
        self.calls: list[tuple[int, float]] = []

    async def read(self, name: str, args: dict[str, Any], mode: str = "default", index: int = 0,
                   wait: float = 0.0, budget: float = 15.0) -> reads.ReadResult:
        self.calls.append((index, wait))
        if self.down:
            await trio.sleep(0.5)
            raise reads.ReadError("no_leader", "No cluster leader")
        res = await reads.execute(self.ag, name, args, mode, index, wait)  # type: ignore[arg-type]
        return reads.ReadResult(msgpack.unpackb(msgpack.packb(res.data)), res.index, res.known_leader)


async def test_a_watched_slice_follows_changes_without_refetching(autojump_clock: trio.testing.MockClock) -> None:
    from murmur.agent.dns import remote_cache

    ag = world()
    server = SliceServer(ag)
    cache = remote_cache.SliceCache(server)  # type: ignore[arg-type]
    async with trio.open_nursery() as n:
        cache.nursery = n
        first = await cache.get(("service", "web"))
        assert {r.spec.id for r in first.all_services()} == {"web-n1", "web-n2"}
        assert await cache.get(("service", "web")) is first  # current: no second fetch
        assert cache.stats["dns_slice_fetches"] == 1
        # No change for 5 s: the watcher's first blocking read is still out, so the slice stays
        # current (and the same object: answers rendered from it stay valid), no refetch.
        await trio.sleep(5)
        assert await cache.get(("service", "web")) is first and cache.stats["dns_slice_fetches"] == 1
        await trio.sleep(1)
        # A change elsewhere does not wake the watcher; a change to web does.
        woken = len(server.calls)
        ag.store.apply(ag.store.last_index + 1, cmds.encode(KV(KVOp.SET, "zzz", b"")))
        ag.feed.notify()
        await trio.sleep(1)
        assert len(server.calls) == woken
        ag.store.apply(ag.store.last_index + 1, cmds.encode(Register(
            node="n1", address="10.0.0.1", checks=(CheckSpec("serfHealth", "Serf", "critical"),))))
        ag.feed.notify()
        await trio.sleep(1)
        later = await cache.get(("service", "web"))
        assert later.checks["n1"]["serfHealth"].spec.status == "critical"
        assert cache.stats["dns_slice_fetches"] == 1  # the watcher brought it, the query did not ask
        # Servers gone: what we hold is served; a name never fetched gets an error.
        server.down = True
        await trio.sleep(remote_cache.WATCH_WAIT * 3)
        assert (await cache.get(("service", "web"))).checks["n1"]["serfHealth"].spec.status == "critical"
        with pytest.raises(reads.ReadError):
            await cache.get(("service", "db"))
        # Nobody asks: the slice is dropped and its watcher ends.
        server.down = False
        await trio.sleep(remote_cache.IDLE_EVICT + remote_cache.WATCH_WAIT * 2)
        assert cache.entries == {} and cache.watching == set() and cache.stats["dns_slice_watchers"] == 0
        n.cancel_scope.cancel()


# ---- fuzz smoke: hostile bytes never escape as anything but an error reply / CommandError -----------

import trio.testing  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_payloads = st.one_of(
    st.binary(max_size=64),
    st.dictionaries(st.sampled_from(["v", "op", "d", "rid", "hops", "name", "args", "mode", "index", "wait", "x"]),
                    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=8), st.binary(max_size=8),
                              st.sampled_from(["apply", "read", "catalog.nodes", "kv.get", "stale"]),
                              st.lists(st.integers(-9, 9), max_size=2)),
                    max_size=6).map(lambda d: msgpack.packb(d)),
)


@settings(max_examples=300, deadline=None)
@given(_payloads)
def test_fuzz_rpc_requests_always_get_a_reply(payload: bytes) -> None:
    ag = world()

    async def main() -> dict[str, Any]:
        with trio.fail_after(5):  # a blocking read could wait: the generated waits are at most 5 s
            return await endpoint.handle_payload(ag.server, payload)  # type: ignore[arg-type]

    try:
        reply = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))  # waits take no real time
    except trio.TooSlowError:
        return  # a well-formed blocking read waiting for a change: not a failure
    assert reply["v"] == VERSION
    assert ("err" in reply and reply["kind"]) or "r" in reply or "ae" in reply or "data" in reply


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_request_wrappers_raise_only_command_errors(body: bytes) -> None:
    try:
        StateStore().apply(1, bytes([cmds.CommandType.REQUEST]) + body)
    except CommandError:
        pass
