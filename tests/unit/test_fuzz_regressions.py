"""Regression tests for the crashes `make fuzz` found (tests/fuzz), one per crash, named after it."""

from __future__ import annotations

import math

import pytest
from murmur.agent.definitions import parse_service
from murmur.agent.http.catalog_routes import parse_catalog_register
from murmur.agent.http.server import HTTPError
from murmur.checks.definitions import DefinitionError


@pytest.mark.parametrize("weight", [math.inf, [], "3", 2.5, -1, True, 2**63])
def test_service_weights_that_are_not_small_integers_are_a_definition_error_not_a_500(weight: object) -> None:
    """Found by test_fuzz_http_service_definition: int() of a list, a string or infinity raised
    TypeError / ValueError / OverflowError out of parse_service (HTTP 500)."""
    with pytest.raises(DefinitionError, match="Weights.Passing"):
        parse_service({"Name": "web", "Weights": {"Passing": weight}})
    with pytest.raises(DefinitionError, match="Weights: expected an object"):
        parse_service({"Name": "web", "Weights": [1, 2]})
    # Positive control: integers (and the defaults for 0 / null) still work.
    assert parse_service({"Name": "web", "Weights": {"Passing": 3, "Warning": 0}}).spec.weights == (3, 1)
    assert parse_service({"Name": "web", "Weights": None}).spec.weights == (1, 1)


@pytest.mark.parametrize("port", ["x", 70000, -1, 1.5, 2**70, [80]])
def test_tagged_address_port_that_is_not_a_port_is_a_400_not_a_500(port: object) -> None:
    """Found by the probe of /v1/catalog/register: int("x") raised ValueError out of
    parse_service (HTTP 500); a port of 2**70 would have failed later, encoding the command."""
    svc = {"Service": "db", "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": port}}}
    with pytest.raises(HTTPError) as exc:
        parse_catalog_register({"Node": "n", "Address": "10.0.0.1", "Service": svc})
    assert exc.value.status == 400 and "TaggedAddresses.lan.Port" in exc.value.message
    ok = {**svc, "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 5432}}}
    cmd = parse_catalog_register({"Node": "n", "Address": "10.0.0.1", "Service": ok})
    assert cmd.service is not None and cmd.service.tagged_addresses == (("lan", "10.0.0.1", 5432),)


@pytest.mark.parametrize("text", ["1" + "0" * 400 + "h", "99999999999999h", "2562048h"])
def test_a_duration_beyond_int64_nanoseconds_is_a_value_error_not_an_overflow(text: str) -> None:
    """Found probing the HTTP API (?index=1&wait=1000...0h, 400 zeros): parse_duration raised
    OverflowError, which the callers (query args, config files, check and session TTLs), catching
    ValueError, let through: a 500, or a traceback instead of a config error. Go's
    ParseDuration refuses durations past int64 nanoseconds too."""
    from murmur.agent.http.common import read_params
    from murmur.agent.http.server import Request
    from murmur.checks.durations import parse_duration

    with pytest.raises(ValueError, match="out of range"):
        parse_duration(text)
    with pytest.raises(HTTPError) as exc:
        read_params(Request("GET", "/v1/kv/k", {"index": ["1"], "wait": [text]}, {}))
    assert exc.value.status == 400
    assert parse_duration("2562047h") == 2562047 * 3600.0  # positive control: the largest whole hours Go takes


def test_a_snapshot_header_with_an_infinite_size_is_refused_not_a_crash_of_the_server_port() -> None:
    """Found by test_fuzz_raft_snapshot_stream: int(inf) in the snapshot stream's header raised
    OverflowError out of handle_snapshot, through the server port's connection handler, and
    took the whole agent down (one packet from anyone who can reach port 8300)."""
    import struct

    import msgpack
    import trio
    from murmur.agent.drivers.raft_transport import TCPTransport
    from murmur.agent.rpc.mux import FramedStream
    from murmur.raft import codec
    from murmur.raft.messages import Message, MessageType, Snapshot, SnapshotMeta

    class Stream:
        def __init__(self, data: bytes) -> None:
            self.data, self.out = data, b""

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            out, self.data = self.data, b""
            return out

        async def send_all(self, data: bytes) -> None:
            self.out += data

    snap = codec.encode_message(Message(MessageType.SNAP, to=1, frm=2, term=5,
                                        snapshot=Snapshot(SnapshotMeta(9, 2, (1, 2, 3)), b"")))
    for size in (float("inf"), float("nan"), 1.5, "12"):
        header = msgpack.packb({"v": 1, "m": snap, "n": size, "c": 0, "k": 10})
        stream = Stream(struct.pack("!I", len(header)) + header)
        got: list[Message] = []
        t = TCPTransport(got.append)
        trio.run(t.handle_snapshot, FramedStream(stream), ("127.0.0.1", 1))  # type: ignore[arg-type]
        assert got == [] and b"sizes must be integers" in stream.out and t.stats["bad_frames"] == 1


def test_a_failing_server_port_handler_closes_its_connection_not_the_agent() -> None:
    """Defence behind the snapshot-header fix: any exception a connection handler raises on the
    server port used to end trio.serve_listeners, and with it the agent. Now it is logged and
    counted, and the port serves the next connection."""
    import trio
    from murmur.agent.rpc.mux import FramedStream, ServerPort

    async def boom(framed: FramedStream, peer: tuple[str, int]) -> None:
        raise OverflowError("a bug")

    async def echo(framed: FramedStream, peer: tuple[str, int]) -> None:
        await framed.stream.send_all(b"ok")

    async def main() -> bytes:
        with trio.fail_after(10):
            return await run()

    async def run() -> bytes:
        port = ServerPort()
        port.register(0x09, boom)
        port.register(0x0A, echo)
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(port.serve, "127.0.0.1", 0)
            for first in (b"\x09", b"\x09"):
                s = await trio.open_tcp_stream("127.0.0.1", bound)
                await s.send_all(first)
                await s.receive_some(10)  # closed by the server
                await s.aclose()
            s = await trio.open_tcp_stream("127.0.0.1", bound)
            await s.send_all(b"\x0a")
            got = await s.receive_some(10)
            await s.aclose()
            assert port.stats["handler_failed"] == 2
            nursery.cancel_scope.cancel()
        return bytes(got)

    assert trio.run(main) == b"ok"


@pytest.mark.parametrize("field", [("p", 1e300), ("w", [1e300, 1]), ("ta", [["lan", "a", 1e300]]), ("t", [5]),
                                   ("m", {"k": 5})])
def test_a_command_the_store_could_not_snapshot_again_is_refused_by_decode(field: tuple[str, object]) -> None:
    """Found by test_fuzz_catalog_command_decoder: decode took a service port or weight of 1e300
    (int(1e300), far past msgpack's range) or non-string tags and meta; RPC `apply` let it into
    the log, the store kept it, and every later snapshot of the store raised OverflowError."""
    import msgpack
    from murmur.catalog import commands as cmds
    from murmur.catalog.store import StateStore

    ok = cmds.encode(cmds.Register("n", "a", service=cmds.ServiceSpec("s1", "s", port=80)))
    body = msgpack.unpackb(ok[1:], raw=False)
    store = StateStore()
    assert store.apply(1, ok) is True and store.snapshot()  # positive control
    body["s"][field[0]] = field[1]
    bad = ok[:1] + msgpack.packb(body)
    with pytest.raises(cmds.CommandError):
        cmds.decode(bad)
    with pytest.raises(cmds.CommandError):
        store.apply(2, bad)
    assert store.snapshot() and store.last_index == 1
