"""`murmur maint` and `murmur monitor` (Consul's `consul maint` and `consul monitor`)."""

from __future__ import annotations

import sys

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


@click.command()
@click.option("-log-level", "--log-level", "log_level", default="info", help="trace, debug, info, warn or error.")
@click.option("-log-json", "--log-json", "log_json", is_flag=True, help="One JSON object a line.")
@http_options
def monitor(log_level: str, log_json: bool, http_addr: str | None, token: str | None) -> None:
    """Stream the local agent's log (GET /v1/agent/monitor) until interrupted."""
    import httpx

    client = Client(http_addr, token)
    params = {"loglevel": log_level}
    if log_json:
        params["logjson"] = "true"
    try:
        with client.http.stream("GET", "/v1/agent/monitor", params=params, timeout=httpx.Timeout(10.0, read=None)
                                ) as resp:
            if resp.status_code >= 400:
                fail(f"{resp.status_code} {resp.read().decode(errors='replace').strip()}")
            for chunk in resp.iter_text():
                click.echo(chunk, nl=False)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return
    except httpx.HTTPError as exc:
        fail(f"monitor stream from {client.base} ended: {exc}")
