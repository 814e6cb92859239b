"""One node of the `python -m bench raft` clusters, as its own process (or built in-process).

    python -m bench.raft_node murmur --id N --port P --peers 1=127.0.0.1:P1,2=...,3=... --data-dir D
    python -m bench.raft_node pysyncobj --index I --ports P0,P1,P2

murmur: a RaftDriver with RaftStorage (sqlite WAL, synchronous=FULL) in D, a TCPTransport to the
other voters and a ServerPort on 127.0.0.1:P (first byte 0x02 = Raft): the same pieces a server
agent wires, minus gossip and the catalog (the state machine is the tiny KV below). Default
RaftConfig (election after 10-20 ticks) and the agent's tick interval. When it is listening it
writes D/ready; on SIGTERM it prints one `STATS {json}` line (driver, transport, FSM) and exits.

pysyncobj: a SyncObj with one ReplDict, appendEntriesUseBatch=False, election timeouts 2-3 s
(node 0, in the bench process, uses 0.4-0.5 s so it becomes the leader), in-memory journal.

Both stop on their own when the parent process goes away or after --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PAYLOAD_SIZE = 256
TICK_INTERVAL = 0.1  # murmur.agent.server.TICK_INTERVAL: heartbeat every tick, election after 10-20 ticks


# --------------------------------------------------------------------------------------------------
# pure helpers (shared with bench/raft.py and unit-tested)


def parse_peers(spec: str) -> dict[int, tuple[str, int]]:
    """'1=127.0.0.1:5001,2=127.0.0.1:5002' -> {1: ('127.0.0.1', 5001), 2: (...)}."""
    out: dict[int, tuple[str, int]] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        ident, sep, addr = part.partition("=")
        host, sep2, port = addr.rpartition(":")
        if not sep or not sep2 or not host:
            raise ValueError(f"bad peer {part!r}: want ID=HOST:PORT")
        i, p = int(ident), int(port)
        if i <= 0 or not 0 < p < 65536:
            raise ValueError(f"bad peer {part!r}: id must be > 0, port within 1..65535")
        if i in out:
            raise ValueError(f"peer id {i} given twice")
        out[i] = (host, p)
    if not out:
        raise ValueError("no peers")
    return out


def format_peers(peers: dict[int, tuple[str, int]]) -> str:
    return ",".join(f"{i}={host}:{port}" for i, (host, port) in sorted(peers.items()))


def payload(i: int, size: int = PAYLOAD_SIZE) -> bytes:
    """A `size`-byte KV command 'k<i>=vvv...' (key unique per i)."""
    head = b"k%09d=" % i
    if size < len(head):
        raise ValueError(f"payload size {size} is below the {len(head)}-byte key")
    return head + b"v" * (size - len(head))


class KVFSM:
    """The test state machine: 'key=value' commands into a dict; returns the entry's index."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.last_index = 0

    def apply(self, index: int, data: bytes) -> int:
        key, _, value = data.partition(b"=")
        self.data[key] = value
        self.last_index = index
        return index


def pysyncobj_conf(leader: bool) -> Any:
    """pysyncobj 3-node config as shared/peers/bench_pysyncobj.py --no-batch builds it."""
    from pysyncobj import SyncObjConf

    kw: dict[str, Any] = {"appendEntriesUseBatch": False, "dynamicMembershipChange": False}
    if leader:
        kw.update(raftMinTimeout=0.4, raftMaxTimeout=0.5)
    else:
        kw.update(raftMinTimeout=2.0, raftMaxTimeout=3.0)
    return SyncObjConf(**kw)


# --------------------------------------------------------------------------------------------------
# murmur node


class TimedStorage:
    """Wraps a Raft storage and records how long each save (one sqlite transaction + fsync) takes."""

    MAX_SAMPLES = 1_000_000

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.times: list[float] = []

    def save(self, hard: Any, entries: list[Any]) -> None:
        t0 = time.perf_counter()
        try:
            self.inner.save(hard, entries)
        finally:
            if len(self.times) < self.MAX_SAMPLES:
                self.times.append(time.perf_counter() - t0)


def quantiles_ms(values: list[float]) -> dict[str, float | None]:
    """p50/p99 (nearest rank) in ms of durations in seconds."""
    v = sorted(values)
    if not v:
        return {"p50_ms": None, "p99_ms": None}
    return {"p50_ms": v[len(v) // 2] * 1e3, "p99_ms": v[min(len(v) - 1, round(0.99 * (len(v) - 1)))] * 1e3}


class MurmurNode:
    """RaftDriver + RaftStorage + TCPTransport + ServerPort for voter `ident` of `peers`."""

    def __init__(self, ident: int, peers: dict[int, tuple[str, int]], data_dir: Path,
                 tick_interval: float = TICK_INTERVAL) -> None:
        from murmur.agent.drivers.raft import RaftDriver
        from murmur.agent.drivers.raft_transport import TCPTransport
        from murmur.agent.rpc.mux import ServerPort
        from murmur.agent.storage.raft_log import RaftStorage
        from murmur.raft.config import RaftConfig
        from murmur.raft.rawnode import RawNode

        if ident not in peers:
            raise ValueError(f"id {ident} is not among the peers {sorted(peers)}")
        self.ident, self.peers, self.data_dir = ident, peers, data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = RaftStorage(data_dir / "raft.db")
        hard, entries = self.storage.load()
        node = RawNode(RaftConfig(id=ident), sorted(peers), random.Random(ident), hard, entries)
        self.fsm = KVFSM()
        self.transport = TCPTransport(self._deliver)
        self.timed = TimedStorage(self.storage)
        self.driver = RaftDriver(node, self.timed, self.fsm, self.transport, tick_interval)
        self.port = ServerPort()

    def _deliver(self, m: Any) -> None:
        self.driver.receive(m)

    async def start(self, nursery: Any) -> int:
        """Listen, connect to the peers and start the Ready loop; returns the bound port."""
        from murmur.agent.rpc.mux import RAFT

        await nursery.start(self.transport.serve)
        self.port.register(RAFT, self.transport.handle_incoming)
        bound = int(await nursery.start(self.port.serve, self.peers[self.ident][0], self.peers[self.ident][1]))
        await nursery.start(self.driver.serve)
        return bound

    def connect_peers(self) -> None:
        """Start the per-peer senders (they connect at once when the peers already listen)."""
        for i, addr in self.peers.items():
            if i != self.ident:
                self.transport.set_peer(i, addr)

    def campaign(self) -> None:
        self.driver.node.campaign()
        self.driver.kick.set()

    def stats(self) -> dict[str, Any]:
        return {"id": self.ident, "driver": dict(self.driver.stats), "transport": dict(self.transport.stats),
                "port": dict(self.port.stats), "status": self.driver.node.status(),
                "dropped": dict(getattr(self.driver.node.raft, "dropped", {})), "fsm_keys": len(self.fsm.data),
                "save": {"n": len(self.timed.times), **quantiles_ms(self.timed.times)}}

    def close(self) -> None:
        self.storage.close()


def _until_gone(parent: int, max_seconds: float, is_done: Callable[[], bool] = lambda: False) -> str:
    """Why to stop (blocking, polls every 0.2 s): the parent went away or the time ran out."""
    end = time.monotonic() + max_seconds
    while time.monotonic() < end:
        if os.getppid() != parent or is_done():
            return "parent gone"
        time.sleep(0.2)
    return "max-seconds"


async def _serve_murmur(args: argparse.Namespace) -> None:
    import trio

    peers = parse_peers(args.peers)
    node = MurmurNode(args.id, peers, Path(args.data_dir))
    parent = os.getppid()
    logger_setup(args.log_level)
    try:
        async with trio.open_nursery() as nursery:
            bound = await node.start(nursery)
            node.connect_peers()
            (Path(args.data_dir) / "ready").write_text(str(bound))
            print(f"raft_node {args.id} listening on {HOST}:{bound}", flush=True)
            end = trio.current_time() + args.max_seconds
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                why = "max-seconds"
                with trio.move_on_at(end):
                    async with trio.open_nursery() as watch:
                        async def parent_watch() -> None:
                            while os.getppid() == parent:
                                await trio.sleep(0.2)
                            watch.cancel_scope.cancel()

                        async def signals() -> None:
                            async for _ in sigs:
                                watch.cancel_scope.cancel()
                                return

                        watch.start_soon(parent_watch)
                        watch.start_soon(signals)
                    why = "stopped"
            print("STATS " + json.dumps(node.stats()), flush=True)
            print(f"raft_node {args.id}: {why}", flush=True)
            nursery.cancel_scope.cancel()
    finally:
        node.close()


def logger_setup(level: str) -> None:
    import logging

    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------------------------------
# pysyncobj node


def _serve_pysyncobj(args: argparse.Namespace) -> None:
    from pysyncobj import SyncObj
    from pysyncobj.batteries import ReplDict

    ports = [int(p) for p in args.ports.split(",")]
    me = f"{HOST}:{ports[args.index]}"
    others = [f"{HOST}:{p}" for i, p in enumerate(ports) if i != args.index]
    obj = SyncObj(me, others, conf=pysyncobj_conf(leader=False), consumers=[ReplDict()])
    stop = {"flag": False}

    def on_term(signum: int, frame: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    print(f"pysyncobj node {args.index} on {me}", flush=True)
    why = _until_gone(os.getppid(), args.max_seconds, lambda: stop["flag"])
    st = obj.getStatus()
    print("STATS " + json.dumps({k: st.get(k) for k in ("commit_idx", "last_applied", "leader", "raft_term")},
                                default=str), flush=True)
    print(f"pysyncobj node {args.index}: {why}", flush=True)
    obj.destroy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.raft_node", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="kind", required=True)
    m = sub.add_parser("murmur")
    m.add_argument("--id", type=int, required=True)
    m.add_argument("--port", type=int, required=True, help="must match this id's entry in --peers")
    m.add_argument("--peers", required=True, help="ID=HOST:PORT,... for every voter, this one included")
    m.add_argument("--data-dir", required=True)
    m.add_argument("--log-level", default="info")
    m.add_argument("--max-seconds", type=float, default=900.0)
    p = sub.add_parser("pysyncobj")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--ports", required=True)
    p.add_argument("--max-seconds", type=float, default=900.0)
    args = ap.parse_args(argv)
    if args.kind == "murmur":
        peers = parse_peers(args.peers)
        if peers.get(args.id, (None, None))[1] != args.port:
            ap.error(f"--port {args.port} does not match peer {args.id} in --peers")
        if any(host != HOST for host, _ in peers.values()):
            ap.error("peers must be on 127.0.0.1")
        import trio

        trio.run(_serve_murmur, args)
    else:
        _serve_pysyncobj(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
