"""`murmur event` (Consul's `consul event`) and `murmur query` (Serf's `serf query`)."""

from __future__ import annotations

import base64
import json
from typing import Any

import click

from .client import APIError, Client, fail, http_options


@click.command()
@click.option("-name", "--name", "name", required=True, help="Name of the event.")
@click.option("-node", "--node", "node", default="", help="Regex: only nodes whose name matches act on it.")
@click.option("-service", "--service", "service", default="", help="Regex: only nodes with a matching service.")
@click.option("-tag", "--tag", "tag", default="", help="Regex on the tags of the services matched by -service.")
@click.argument("payload", required=False, default="")
@http_options
def event(name: str, node: str, service: str, tag: str, payload: str, http_addr: str | None,
          token: str | None) -> None:
    """Fire a user event to the cluster (PUT /v1/event/fire/NAME); PAYLOAD is optional."""
    if tag and not service:
        fail("Cannot provide tag filter without service filter.")
    params = {k: v for k, v in (("node", node), ("service", service), ("tag", tag)) if v}
    try:
        data = Client(http_addr, token).call("PUT", f"/v1/event/fire/{name}", params=params,
                                             content=payload.encode())
    except APIError as exc:
        fail(f"Error firing event: {exc}")
    click.echo(f"Event ID: {data['ID']}")


@click.command()
@click.argument("name")
@click.argument("payload", required=False, default="")
@click.option("-node", "--node", "nodes", multiple=True, help="Only this node answers (repeatable).")
@click.option("-tag", "--tag", "tags", multiple=True, help="tag=regex: only nodes whose tag matches (repeatable).")
@click.option("-timeout", "--timeout", "timeout", default="", help="How long to collect answers (default: Serf's).")
@click.option("-relay-factor", "--relay-factor", "relay_factor", type=click.IntRange(0, 5), default=0,
              help="Members that also relay each answer (0-5).")
@click.option("-no-ack", "--no-ack", "no_ack", is_flag=True, help="Do not ask for acks.")
@click.option("-format", "--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@http_options
def query(name: str, payload: str, nodes: tuple[str, ...], tags: tuple[str, ...], timeout: str, relay_factor: int,
          no_ack: bool, fmt: str, http_addr: str | None, token: str | None) -> None:
    """Send a query to the cluster and print the acks and answers (murmur query _murmur_ping)."""
    from murmur.checks.durations import parse_duration

    filter_tags: dict[str, str] = {}
    for t in tags:
        key, sep, rx = t.partition("=")
        if not sep or not key:
            fail(f"-tag {t!r}: expected tag=regex")
        filter_tags[key] = rx
    body: dict[str, Any] = {"Payload": base64.b64encode(payload.encode()).decode(), "FilterNodes": list(nodes),
                            "FilterTags": filter_tags, "RequestAck": not no_ack, "RelayFactor": relay_factor}
    wait = 600.0  # the agent answers at the query's deadline: its default timeout, or -timeout
    if timeout:
        try:
            wait = parse_duration(timeout)
        except ValueError as exc:
            fail(str(exc))
        body["Timeout"] = timeout
    try:
        data = Client(http_addr, token, timeout=wait + 30).call(
            "POST", f"/v1/internal/query/{name}", content=json.dumps(body))
    except APIError as exc:
        fail(f"Error sending query: {exc}")
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"Query '{name}' dispatched (timeout {data['Timeout']:g}s)")
    for n in data["Acks"]:
        click.echo(f"Ack from '{n}'")
    for r in data["Responses"]:
        text = base64.b64decode(r["Payload"]).decode(errors="replace")
        click.echo(f"Response from '{r['From']}': {text}")
    click.echo(f"Total Acks: {len(data['Acks'])}")
    click.echo(f"Total Responses: {len(data['Responses'])}")
