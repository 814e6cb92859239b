"""`murmur maint` (Consul's `consul maint`): node and service maintenance mode."""

from __future__ import annotations

import click

from .client import APIError, Client, fail, http_options


@click.command()
@click.option("-enable", "--enable", is_flag=True, help="Enable maintenance mode.")
@click.option("-disable", "--disable", is_flag=True, help="Disable maintenance mode.")
@click.option("-reason", "--reason", default="", help="Why (shown as the maintenance check's Notes).")
@click.option("-service", "--service", "service_id", default="", help="A service ID instead of the whole node.")
@http_options
def maint(enable: bool, disable: bool, reason: str, service_id: str, http_addr: str | None,
          token: str | None) -> None:
    """Put the node or one service into maintenance mode, take it out, or (with neither
    -enable nor -disable) list what is in maintenance."""
    if enable and disable:
        fail("only one of -enable or -disable may be given")
    if not (enable or disable) and (reason or service_id):
        fail("-reason and -service need -enable or -disable")
    client = Client(http_addr, token)
    if not (enable or disable):
        try:
            checks = client.call("GET", "/v1/agent/checks")
        except APIError as exc:
            fail(str(exc))
            return
        for cid in sorted(checks):
            c = checks[cid]
            if cid == "_node_maintenance":
                click.echo(f"Node:\n  Name:   {c['Node']}\n  Reason: {c['Notes']}\n")
            elif cid.startswith("_service_maintenance:"):
                click.echo(f"Service:\n  ID:     {c['ServiceID']}\n  Reason: {c['Notes']}\n")
        return
    params = {"enable": "true" if enable else "false"}
    if enable and reason:
        params["reason"] = reason
    path = f"/v1/agent/service/maintenance/{service_id}" if service_id else "/v1/agent/maintenance"
    try:
        client.call("PUT", path, params=params)
    except APIError as exc:
        fail(str(exc))
    click.echo(f"{'Service' if service_id else 'Node'} {'entered' if enable else 'left'} maintenance mode")
