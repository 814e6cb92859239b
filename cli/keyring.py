"""`murmur keyring` (Consul's `consul keyring`): list, install, use and remove gossip keys on
every member, through the local agent's /v1/operator/keyring.

A key given on the command line is visible to other users of the machine (ps); pass `-` to read
it from stdin, or `@PATH` to read it from a file (mode 0600), instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .client import APIError, Client, fail, http_options


def _read_key(value: str) -> str:
    if value == "-":
        return sys.stdin.readline().strip()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"cannot read the key from {value[1:]}: {exc.strerror or exc}")
    return value.strip()


@click.command()
@click.option("-list", "--list", "do_list", is_flag=True, help="List the installed keys and how many members hold each.")
@click.option("-install", "--install", default=None, metavar="KEY", help="Install KEY on every member (not used yet).")
@click.option("-use", "--use", default=None, metavar="KEY", help="Make the installed KEY the primary (sealing) key.")
@click.option("-remove", "--remove", default=None, metavar="KEY", help="Remove KEY from every member (not the primary).")
@http_options
def keyring(do_list: bool, install: str | None, use: str | None, remove: str | None, http_addr: str | None,
            token: str | None) -> None:
    """Manage the gossip encryption keys of the whole cluster (KEY: base64, `-` for stdin, `@FILE`)."""
    chosen = [(op, v) for op, v in (("install", install), ("use", use), ("remove", remove)) if v is not None]
    if len(chosen) + int(do_list) != 1:
        fail("exactly one of -list, -install, -use or -remove is required")
    client = Client(http_addr, token)
    if do_list:
        click.echo("==> Gathering installed encryption keys...")
        try:
            pools = client.call("GET", "/v1/operator/keyring")
        except APIError as exc:
            fail(str(exc))
            return
        for pool in pools or []:
            click.echo(f"\n{'WAN' if pool.get('WAN') else 'LAN'}:")
            n = pool.get("NumNodes", 0)
            primary = pool.get("PrimaryKeys") or {}
            for key, count in sorted((pool.get("Keys") or {}).items()):
                mark = f" (primary on {primary[key]})" if key in primary else ""
                click.echo(f"  {key} [{count}/{n}]{mark}")
            for node, msg in sorted((pool.get("Messages") or {}).items()):
                click.echo(f"  error from {node}: {msg}")
        return
    op, value = chosen[0]
    key = _read_key(value)
    method = {"install": "POST", "use": "PUT", "remove": "DELETE"}[op]
    verb = {"install": "Installing new gossip encryption key", "use": "Changing primary gossip encryption key",
            "remove": "Removing gossip encryption key"}[op]
    click.echo(f"==> {verb}...")
    try:
        client.call(method, "/v1/operator/keyring", json={"Key": key})
    except APIError as exc:
        fail(str(exc))
