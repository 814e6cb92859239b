"""`murmur operator raft ...` (Consul's `consul operator raft`): list-peers, transfer-leader,
remove-peer. Each talks to the local agent's /v1/operator/raft/* routes; the agent forwards to
the leader. `recover` is the exception: offline, on a stopped server's data dir."""

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


def _parse_peers(peers: tuple[str, ...], peers_file: str | None) -> list[tuple[str, tuple[str, int] | None]]:
    """(node ID, address or None) pairs from -peer NODE_ID[@HOST:PORT] options and a Consul-style
    peers.json ([{"id": ..., "address": "host:port", "non_voter": false}]). Raises ValueError."""
    import json
    import uuid

    out: list[tuple[str, tuple[str, int] | None]] = []

    def add(node_id: str, address: str) -> None:
        try:
            nid = str(uuid.UUID(node_id.strip()))
        except ValueError:
            raise ValueError(f"{node_id!r} is not a node ID (a UUID, as in data_dir/node-id)") from None
        addr: tuple[str, int] | None = None
        if address:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not HOST:PORT")
            addr = (host, int(port))
        out.append((nid, addr))

    for p in peers:
        node_id, _, address = p.partition("@")
        add(node_id, address)
    if peers_file:
        try:
            with open(peers_file, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{peers_file}: {exc}") from None
        if not isinstance(doc, list):
            raise ValueError(f"{peers_file}: expected a JSON array of {{\"id\", \"address\", \"non_voter\"}} objects")
        for item in doc:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise ValueError(f"{peers_file}: each entry needs an \"id\" (the server's node ID)")
            if item.get("non_voter"):
                raise ValueError(f"{peers_file}: non_voter entries are not supported in a recovery; "
                                 "add the server as a voter, or let it join after")
            address = item.get("address", "")
            if not isinstance(address, str):
                raise ValueError(f"{peers_file}: \"address\" must be a string")
            add(item["id"], address)
    return out


@raft.command("recover")
@click.option("-data-dir", "--data-dir", "data_dir", required=True, type=click.Path(file_okay=False),
              help="The stopped server's data directory.")
@click.option("-peer", "--peer", "peers", multiple=True, metavar="NODE_ID[@HOST:PORT]",
              help="A server of the new configuration (repeat). Default: this server alone.")
@click.option("-peers-file", "--peers-file", "peers_file", default=None, type=click.Path(dir_okay=False),
              help="The new configuration in Consul's peers.json format.")
def recover(data_dir: str, peers: tuple[str, ...], peers_file: str | None) -> None:
    """Offline quorum-loss recovery: make the new peer set this server's Raft configuration.

    Stop every surviving server first, run this on each with the same peers, then start them.
    Every entry in this server's log is kept and counts as committed; see the runbook in
    docs/operations.md."""
    from pathlib import Path

    from murmur.agent.server import raft_id
    from murmur.agent.storage.raft_log import StorageError
    from murmur.agent.storage.recovery import recover as do_recover

    base = Path(data_dir)
    raft_dir = base / "raft"
    if not (raft_dir / "raft.db").exists():
        fail(f"{raft_dir}: no raft.db; -data-dir must be a server's data directory")
        return
    try:
        parsed = _parse_peers(peers, peers_file)
    except ValueError as exc:
        fail(str(exc))
        return
    if not parsed:
        node_file = base / "node-id"
        if not node_file.exists():
            fail(f"{node_file} is missing: name the peers with -peer or -peers-file")
            return
        parsed = [(node_file.read_text().strip(), None)]
    voters = [raft_id(nid) for nid, _ in parsed]
    addresses = {raft_id(nid): addr for nid, addr in parsed if addr is not None}
    try:
        report = do_recover(raft_dir, voters, addresses)
    except (StorageError, ValueError) as exc:
        fail(f"recovery failed, nothing was changed unless stated above: {exc}")
        return
    click.echo(f"Recovered {raft_dir}: {len(report.old_voters)} voters -> {len(report.new_voters)} "
               f"({', '.join(nid for nid, _ in parsed)})")
    if report.snapshot_index:
        click.echo(f"Snapshot at index {report.snapshot_index}, term {report.snapshot_term} "
                   f"({report.replayed} log entries replayed; every one now counts as committed)")
    else:
        click.echo("The log was empty: only the configuration was rewritten")
    click.echo("Start the servers of the new configuration; they elect a leader among themselves.")


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
