"""The targets `python -m bench checks` probes: one HTTP server and a few TCP listeners on 127.0.0.1,
in their own process so their CPU is not counted as the agent's.

`python -m bench.checks_targets --http-port P --tcp-ports A,B,C [--seconds S]`. The HTTP server
answers every request `200 OK` with a short fixed body and closes the connection; a TCP listener
accepts and closes. Prints `READY` once all sockets listen; exits after `--seconds` (a bound, in
case the bench that started it dies without stopping it) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

HOST = "127.0.0.1"
BODY = b"ok: bench target"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(BODY), BODY))
HEAD_LIMIT = 64 * 1024


async def handle_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(RESPONSE)
            await writer.drain()
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()


async def handle_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def main(http_port: int, tcp_ports: list[int], seconds: float) -> None:
    servers = [await asyncio.start_server(handle_http, HOST, http_port, backlog=1024, limit=HEAD_LIMIT)]
    for port in tcp_ports:
        servers.append(await asyncio.start_server(handle_tcp, HOST, port, backlog=1024))
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    for s in servers:
        s.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--tcp-ports", default="")
    p.add_argument("--seconds", type=float, default=3600.0)
    a = p.parse_args()
    asyncio.run(main(a.http_port, [int(x) for x in a.tcp_ports.split(",") if x], a.seconds))
    sys.exit(0)
