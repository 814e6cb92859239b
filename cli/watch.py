"""`murmur watch` (Consul's `consul watch`): a view of the catalog, KV or health, followed with
blocking queries; a handler runs on every change with the view as JSON on its stdin.

Without a handler the view is printed once and the command exits, as Consul's does. With one,
it runs until interrupted: each blocking query waits up to -wait on the agent; an index that
goes backwards (a server restored, a new leader behind) resets it, as Consul's watch plans do;
an unreachable agent is retried with a capped exponential backoff instead of spinning.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
from typing import Any

import click

from .client import APIError, Client, fail, http_options

TYPES = ("key", "keyprefix", "services", "nodes", "service", "checks")
BACKOFF_MAX = 30.0  # seconds between retries once the agent keeps failing


def watch_request(kind: str, key: str, prefix: str, service: str, tag: tuple[str, ...], passing: bool,
                  state: str) -> tuple[str, dict[str, Any]]:
    """The HTTP path and query arguments for a watch type; click.UsageError for a bad combination."""
    q = urllib.parse.quote
    if kind == "key":
        if not key:
            raise click.UsageError("-key is required for a watch of type key")
        return f"/v1/kv/{q(key)}", {}
    if kind == "keyprefix":
        if not prefix:
            raise click.UsageError("-prefix is required for a watch of type keyprefix")
        return f"/v1/kv/{q(prefix)}", {"recurse": ""}
    if kind == "services":
        return "/v1/catalog/services", {}
    if kind == "nodes":
        return "/v1/catalog/nodes", {}
    if kind == "service":
        if not service:
            raise click.UsageError("-service is required for a watch of type service")
        params: dict[str, Any] = {"tag": list(tag)} if tag else {}
        if passing:
            params["passing"] = ""
        return f"/v1/health/service/{q(service)}", params
    if service and state:
        raise click.UsageError("Cannot specify service and state")
    if service:
        return f"/v1/health/checks/{q(service)}", {}
    return f"/v1/health/state/{q(state or 'any')}", {}


def run_handler(handler: tuple[str, ...], shell: bool, data: Any, index: int) -> int:
    """Run the handler with the view on stdin and CONSUL_INDEX (and MURMUR_INDEX) set."""
    env = {**os.environ, "CONSUL_INDEX": str(index), "MURMUR_INDEX": str(index)}
    argv: str | list[str] = " ".join(handler) if shell else list(handler)
    done = subprocess.run(argv, input=json.dumps(data).encode(), shell=shell, env=env, check=False)
    return done.returncode


@click.command()
@click.option("-type", "--type", "kind", type=click.Choice(TYPES), required=True, help="What to watch.")
@click.option("-key", "--key", "key", default="", help="Key to watch (type key).")
@click.option("-prefix", "--prefix", "prefix", default="", help="Key prefix to watch (type keyprefix).")
@click.option("-service", "--service", "service", default="", help="Service (types service and checks).")
@click.option("-tag", "--tag", "tag", multiple=True, help="Service tag to filter on (type service; repeatable).")
@click.option("-passingonly", "--passingonly", "passing", is_flag=True, help="Only passing instances (type service).")
@click.option("-state", "--state", "state", default="", help="Check state (type checks): any, passing, warning, critical.")
@click.option("-wait", "--wait", "wait", default="5m", show_default=True, help="How long each blocking query waits.")
@click.option("-shell/-no-shell", "--shell/--no-shell", "shell", default=True, help="Run the handler through sh.")
@click.argument("handler", nargs=-1)
@http_options
def watch(kind: str, key: str, prefix: str, service: str, tag: tuple[str, ...], passing: bool, state: str, wait: str,
          shell: bool, handler: tuple[str, ...], http_addr: str | None, token: str | None) -> None:
    """Watch a view of the cluster; run HANDLER (JSON on stdin) on each change, or print it once."""
    path, params = watch_request(kind, key, prefix, service, tag, passing, state)
    client = Client(http_addr, token, timeout=700.0)  # longer than any wait the agent honours (10 min cap)
    index, backoff = 0, 0.0
    while True:
        try:
            data, new_index, _status = client.blocking_get(path, index, wait, params)
        except APIError as exc:
            if not handler:
                fail(str(exc))
            backoff = min(BACKOFF_MAX, max(1.0, backoff * 2))
            click.echo(f"watch: {exc}; retrying in {backoff:.0f} s", err=True)
            time.sleep(backoff)
            continue
        backoff = 0.0
        if not handler:
            click.echo(json.dumps(data, indent=4))
            return
        if new_index == index:
            continue  # the wait ran out with no change
        if new_index < index:
            index = 0  # went backwards (a restore, a lagging server): ask afresh, without waiting
            continue
        rc = run_handler(handler, shell, data, new_index)
        if rc != 0:
            click.echo(f"watch: handler exited with {rc}", err=True)
        index = max(new_index, 1)  # never 0 again: that would not block
