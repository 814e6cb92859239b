"""`murmur operator raft ...` (Consul's `consul operator raft`): list-peers, transfer-leader,
remove-peer. Each talks to the local agent's /v1/operator/raft/* routes; the agent forwards to
the leader."""

from __future__ import annotations

import click

from .client import APIError, Client, fail, http_options


@click.group()
def operator() -> None:
    """Cluster operator commands (Raft peers, leadership)."""


@operator.group()
def raft() -> None:
    """Inspect and change the Raft configuration."""


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


@raft.command("list-peers")
@click.option("-stale", "--stale", is_flag=True, help="Any server may answer (no leader needed).")
@http_options
def list_peers(stale: bool, http_addr: str | None, token: str | None) -> None:
    """List the Raft peers (GET /v1/operator/raft/configuration)."""
    try:
        data = Client(http_addr, token).call("GET", "/v1/operator/raft/configuration",
                                             params={"stale": "1"} if stale else None)
    except APIError as exc:
        fail(str(exc))
        return
    rows = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]]
    for s in data.get("Servers", []):
        rows.append([str(s.get("Node", "")), str(s.get("ID", "")), str(s.get("Address", "")),
                     "leader" if s.get("Leader") else "follower", str(bool(s.get("Voter"))).lower(),
                     str(s.get("ProtocolVersion", ""))])
    click.echo(_table(rows))


@raft.command("transfer-leader")
@click.option("-id", "--id", "server_id", default="", help="Node ID of the server to hand leadership to "
              "(default: the most up-to-date other voter).")
@http_options
def transfer_leader(server_id: str, http_addr: str | None, token: str | None) -> None:
    """Transfer Raft leadership to another voter (POST /v1/operator/raft/transfer-leader)."""
    try:
        Client(http_addr, token).call("POST", "/v1/operator/raft/transfer-leader",
                                      params={"id": server_id} if server_id else None)
    except APIError as exc:
        fail(str(exc))
        return
    click.echo("Success")


@raft.command("remove-peer")
@click.option("-id", "--id", "server_id", default="", help="Node ID of the server to remove.")
@click.option("-address", "--address", "address", default="", help="Server address (ip:port) to remove.")
@http_options
def remove_peer(server_id: str, address: str, http_addr: str | None, token: str | None) -> None:
    """Remove a server from the Raft configuration (DELETE /v1/operator/raft/peer)."""
    if bool(server_id) == bool(address):
        fail("Exactly one of -id or -address is required")
        return
    params = {"id": server_id} if server_id else {"address": address}
    try:
        Client(http_addr, token).call("DELETE", "/v1/operator/raft/peer", params=params)
    except APIError as exc:
        fail(str(exc))
        return
    click.echo(f"Removed peer with {'id' if server_id else 'address'} {server_id or address!r}")


@click.command()
@http_options
def info(http_addr: str | None, token: str | None) -> None:
    """Print the agent's own summary by section, as `consul info` does (GET /v1/agent/self)."""
    try:
        data = Client(http_addr, token).call("GET", "/v1/agent/self")
    except APIError as exc:
        fail(str(exc))
        return
    stats = data.get("Stats") or {}
    for section in sorted(stats):
        values = stats[section]
        if not isinstance(values, dict):
            continue
        click.echo(f"{section}:")
        for k in sorted(values):
            click.echo(f"\t{k} = {values[k]}")
