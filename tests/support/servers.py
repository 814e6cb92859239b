"""Three real servers on loopback, as most cluster tests start them, and who they say leads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from .procs import AgentProc, wait_for


def leader_of(a: AgentProc) -> str:
    """The leader address `a` reports ("" while it knows none or does not answer)."""
    try:
        r = httpx.get(a.url + "/v1/status/leader", timeout=2)
        return r.json() if r.status_code == 200 else ""  # type: ignore[no-any-return]
    except httpx.HTTPError:
        return ""


def start_servers(tmp_path: Path, start_agent: Callable[..., AgentProc], snapshot_threshold: int = 0,
                  extra_for: Callable[[int], list[str]] | None = None) -> list[AgentProc]:
    """s0..s2 with the `local` gossip preset, joined to s0, bootstrap-expect 3; returns once all
    three name the same leader. `extra_for(i)` adds flags to server i."""
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "gossip.toml").write_text('[gossip_lan]\npreset = "local"\n')
    if snapshot_threshold:
        (conf / "raft.toml").write_text(f"raft_snapshot_threshold = {snapshot_threshold}\nraft_trailing_logs = 5\n")
    servers: list[AgentProc] = []
    for i in range(3):
        extra = ["--server", "--bootstrap-expect", "3"]
        if servers:
            # retry-join, not join: a one-shot join that times out against a busy s0 makes the
            # agent exit at start (as Consul's does), which on a loaded CI box was a flaky start
            extra += ["--retry-join", f"127.0.0.1:{servers[0].serf_port}"]
        extra += extra_for(i) if extra_for else []
        servers.append(start_agent(conf, node=f"s{i}", dev=False, wait_leader=False, extra=extra))
    wait_for(lambda: len({leader_of(s) for s in servers}) == 1 and leader_of(servers[0]), 60,
             what="one leader known to all three servers")
    return servers


def kill_leader(servers: list[AgentProc]) -> tuple[AgentProc, list[AgentProc]]:
    """kill -9 the server the others name as leader; return it and the survivors once they agree
    on a new leader."""
    lead_addr = leader_of(servers[0])
    leader = next(s for s in servers if lead_addr.endswith(f":{s.server_port}"))
    leader.kill9()
    survivors = [s for s in servers if s is not leader]
    wait_for(lambda: (lambda ls: ls[0] and ls[0] == ls[1] and ls[0] != lead_addr)(
        [leader_of(s) for s in survivors]), 60, what="a new leader among the survivors")
    return leader, survivors


def rejoin_via(s: AgentProc, *others: AgentProc) -> None:
    """Drop the join flags `s` started with (the servers it joined through may be gone) and
    retry-join `others` instead (none: start without any)."""
    args = list(s.args)
    for flag in ("--join", "--retry-join"):
        while flag in args:
            k = args.index(flag)
            del args[k:k + 2]
    for o in others:
        args += ["--retry-join", f"127.0.0.1:{o.serf_port}"]
    s.args = args
