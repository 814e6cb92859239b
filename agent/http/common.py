"""Helpers shared by the route modules: blocking reads, index headers, datacenter checks."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from murmur.checks.durations import parse_duration

from .server import HTTPError, Request, Response

if TYPE_CHECKING:
    from ..agent import Agent

MAX_WAIT = 600.0  # Consul caps a blocking query's wait at 10 minutes
DEFAULT_WAIT = 300.0  # and waits 5 minutes when `wait` is not given
_jitter = random.Random()


def check_dc(agent: Agent, req: Request) -> None:
    dc = req.arg("dc")
    if dc and dc != agent.cfg.datacenter:
        raise HTTPError(500, f"No path to datacenter {dc!r}")


async def read_barrier(agent: Agent, req: Request) -> None:
    """Default and ?consistent reads on a server are linearizable (ReadIndex); ?stale reads and
    client agents read what they have."""
    if agent.server is None or req.flag("stale"):
        return
    from ..server import NoLeader

    try:
        await agent.server.read_barrier()
    except NoLeader as exc:
        raise HTTPError(500, "No cluster leader") from exc


def read_headers(index: int, agent: Agent | None = None) -> list[tuple[str, str]]:
    """X-Consul-Index, plus whether a leader is known and (on a follower) how many ms ago it spoke."""
    known, contact = "true", "0"
    srv = agent.server if agent is not None else None
    if srv is not None and srv.driver is not None:
        known = str(bool(srv.driver.leader)).lower()
        if not srv.driver.is_leader and srv.driver.last_contact:
            import trio

            contact = str(int(max(0.0, trio.current_time() - srv.driver.last_contact) * 1000))
    return [("X-Consul-Index", str(index)), ("X-Consul-KnownLeader", known), ("X-Consul-LastContact", contact)]


async def blocking(agent: Agent, req: Request, tables: tuple[str, ...], service: str | None = None) -> int:
    """Honour `?index=&wait=`: return once the tables' index (or, for reads of one service, that
    service's own index) passes `index`, or the wait ends. Returns the index to report. Bad
    parameters are a 400."""
    check_dc(agent, req)
    await read_barrier(agent, req)
    raw_index = req.arg("index")
    current: Callable[[], int]
    if service is not None:
        current = lambda: agent.store.index_of_service(service)  # noqa: E731
    else:
        current = lambda: agent.store.index_of(*tables)  # noqa: E731
    if raw_index is None or raw_index == "":
        return current()
    try:
        index = int(raw_index)
    except ValueError as exc:
        raise HTTPError(400, f"Invalid index {raw_index!r}") from exc
    wait = DEFAULT_WAIT
    raw_wait = req.arg("wait")
    if raw_wait:
        try:
            wait = parse_duration(raw_wait if not raw_wait.isdigit() else raw_wait + "s")
        except ValueError as exc:
            raise HTTPError(400, f"Invalid wait time {raw_wait!r}: {exc}") from exc
    wait = min(wait, MAX_WAIT)
    wait += _jitter.uniform(0, wait / 16)
    if index > 0 and current() <= index:
        await agent.feed.wait_past(current, index, wait)
    return current()


def json_read(req: Request, data: Any, index: int, status: int = 200, agent: Agent | None = None) -> Response:
    return Response.json(data, status, read_headers(index, agent), pretty="pretty" in req.query)


def read_params(req: Request) -> tuple[str, int, float]:
    """(mode, index, wait) of a read request; bad values are a 400."""
    mode = "stale" if req.flag("stale") else "consistent" if req.flag("consistent") else "default"
    raw_index = req.arg("index")
    if raw_index is None or raw_index == "":
        return mode, 0, 0.0
    try:
        index = int(raw_index)
    except ValueError as exc:
        raise HTTPError(400, f"Invalid index {raw_index!r}") from exc
    wait = DEFAULT_WAIT
    raw_wait = req.arg("wait")
    if raw_wait:
        try:
            wait = parse_duration(raw_wait if not raw_wait.isdigit() else raw_wait + "s")
        except ValueError as exc:
            raise HTTPError(400, f"Invalid wait time {raw_wait!r}: {exc}") from exc
    return mode, index, min(wait, MAX_WAIT)


async def named_read(agent: Agent, req: Request, name: str, args: dict[str, Any]) -> Any:
    """Run a registered read (agent/reads.py): on a server against its own store, on a client
    through a server over RPC. Same read, same code, same answer. Returns a ReadResult."""
    from ..reads import ReadError, execute

    check_dc(agent, req)
    mode, index, wait = read_params(req)
    try:
        if agent.server is not None:
            return await execute(agent, name, args, mode, index, wait)
        return await agent.remote.read(name, args, mode, index, wait)
    except ReadError as exc:
        raise HTTPError(400 if exc.kind == "bad_request" else 500, str(exc)) from exc


def result_headers(res: Any) -> list[tuple[str, str]]:
    return [("X-Consul-Index", str(res.index)), ("X-Consul-KnownLeader", str(bool(res.known_leader)).lower()),
            ("X-Consul-LastContact", str(res.last_contact_ms))]


_SAME = object()


def json_result(req: Request, res: Any, data: Any = _SAME) -> Response:
    """A read's JSON answer with its index, known-leader and last-contact headers."""
    return Response.json(res.data if data is _SAME else data, 200, result_headers(res),
                         pretty="pretty" in req.query)
