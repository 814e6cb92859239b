"""`murmur`: the agent, and commands that talk to an agent over HTTP."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
from murmur import CONSUL_COMPAT_VERSION, __version__

from .client import APIError, Client, fail, http_options

LOG_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "warning": logging.WARNING, "error": logging.ERROR}


@click.group()
@click.version_option(__version__, prog_name="murmur")
def main() -> None:
    """murmur: service discovery, health checking and a catalog for VM fleets (Consul-compatible)."""


@main.command()
def version() -> None:
    """Print murmur's version and the Consul API version it speaks."""
    click.echo(f"murmur v{__version__}\nConsul API compatibility: {CONSUL_COMPAT_VERSION}")


@main.command()
def keygen() -> None:
    """Print a new gossip encryption key: base64 of 32 random bytes (as `consul keygen`)."""
    import base64
    import os

    click.echo(base64.b64encode(os.urandom(32)).decode("ascii"))


# ---- agent ----------------------------------------------------------------------------------------
@main.command()
@click.option("--dev", is_flag=True, help="Single in-memory server for development.")
@click.option("--server", is_flag=True, default=None, help="Run as a server (catalog, KV, Raft).")
@click.option("--bootstrap-expect", type=int, default=None, help="Servers to wait for before bootstrapping Raft.")
@click.option("--config-dir", multiple=True, type=click.Path(), help="Directory of *.toml / *.json config files.")
@click.option("--config-file", multiple=True, type=click.Path(), help="A config file (TOML or JSON).")
@click.option("--data-dir", default=None, help="Where state is kept.")
@click.option("--node", "node_name", default=None, help="Node name (default: hostname).")
@click.option("--datacenter", default=None, help="Datacenter (default dc1).")
@click.option("--bind", "bind_addr", default=None, help="Address for cluster traffic (gossip, RPC).")
@click.option("--advertise", "advertise_addr", default=None, help="Address other nodes use to reach us.")
@click.option("--client", "client_addr", default=None, help="Address of the HTTP and DNS interfaces (default 127.0.0.1).")
@click.option("--http-port", type=int, default=None, help="HTTP API port (default 8500; -1 disables).")
@click.option("--dns-port", type=int, default=None, help="DNS port (default 8600; -1 disables).")
@click.option("--serf-port", type=int, default=None, help="LAN gossip port (default 8301).")
@click.option("--server-port", type=int, default=None, help="Server RPC port (default 8300).")
@click.option("--join", multiple=True, help="Address of an agent to join at start (repeatable).")
@click.option("--retry-join", multiple=True, help="Like --join, retried until it succeeds (repeatable).")
@click.option("--encrypt", default=None, help="Gossip encryption key (base64, 32 bytes).")
@click.option("--log-level", default=None, help="trace, debug, info, warn or error.")
@click.option("--protocol", type=int, default=None, hidden=True,
              help="Speak an older cluster protocol (rolling upgrades and their tests).")
@click.option("--log-json", "log_json", is_flag=True, default=None, help="Log JSON lines instead of text.")
def agent(dev: bool, config_dir: tuple[str, ...], config_file: tuple[str, ...], join: tuple[str, ...],
          retry_join: tuple[str, ...], **flags: Any) -> None:
    """Run an agent."""
    import trio
    from murmur.agent import config as config_mod
    from murmur.agent.agent import Agent

    paths = [*config_dir, *config_file]
    overrides: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    for key, port_key in (("http_port", "ports.http"), ("dns_port", "ports.dns"), ("serf_port", "ports.serf_lan"),
                          ("server_port", "ports.server")):
        if key in overrides:
            overrides[port_key] = overrides.pop(key)
    if join:
        overrides["start_join"] = list(join)
    if retry_join:
        overrides["retry_join"] = list(retry_join)
    try:
        cfg = config_mod.load(paths, overrides=overrides, dev=dev)
    except config_mod.ConfigError as exc:
        fail(f"invalid configuration:\n{exc}")
        return
    level = LOG_LEVELS.get(cfg.log_level.lower(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s [%(levelname)s] %(name)s: %(message)s", stream=sys.stderr)
    if cfg.log_json:
        from murmur.agent.monitor import JSONFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JSONFormatter())
    for noisy in ("httpx", "httpcore"):  # one line per health-check request is noise, not news
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("murmur")
    for w in cfg.warnings:
        log.warning("%s", w)
    from murmur.agent.agent import StartError
    from murmur.agent.conflicts import NameConflictLost
    from murmur.agent.storage.raft_log import StorageError

    fatal = (StartError, StorageError, NameConflictLost)  # reported as one line and a non-zero exit, not a traceback
    if os.environ.get("MURMUR_SAMPLE"):  # a sampling profile of the run (agent/sampler.py, bench/checks.py)
        from murmur.agent.sampler import start_from_env

        start_from_env()
    try:
        trio.run(Agent(cfg, paths, overrides).run)
    except KeyboardInterrupt:
        pass
    except fatal as exc:
        fail(str(exc))
    except BaseExceptionGroup as group:
        known = group.subgroup(fatal)
        if known is None:
            raise
        fail("; ".join(str(e) for e in _leaves(known)))


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--quiet", is_flag=True, help="Print nothing on success.")
def validate(paths: tuple[str, ...], quiet: bool) -> None:
    """Check config files or directories without starting an agent."""
    from murmur.agent import config as config_mod

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        fail(f"no such file or directory: {', '.join(missing)}")
    errors, warnings = config_mod.validate_paths(list(paths))
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    if errors:
        for e in errors:
            click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if not quiet:
        click.echo("Configuration is valid!")


# ---- membership -----------------------------------------------------------------------------------
STATUS_NAMES = {1: "alive", 2: "leaving", 3: "left", 4: "failed"}


@main.command()
@click.option("--detailed", is_flag=True, help="Show every tag of each member.")
@click.option("--status", "status_re", default=None, help="Only members whose status matches this regex.")
@http_options
def members(detailed: bool, status_re: str | None, http_addr: str | None, token: str | None) -> None:
    """List the members of the cluster as this agent sees them."""
    import re

    try:
        data = Client(http_addr, token).call("GET", "/v1/agent/members")
        pattern = re.compile(status_re) if status_re else None
    except (APIError, re.error) as exc:
        fail(str(exc))
    rows: list[tuple[str, ...]] = []
    for m in sorted(data, key=lambda m: m["Name"]):
        status = STATUS_NAMES.get(m["Status"], "none")
        if pattern is not None and not pattern.search(status):
            continue
        tags = m.get("Tags") or {}
        addr = f"{m['Addr']}:{m['Port']}"
        if detailed:
            rows.append((m["Name"], addr, status, ",".join(f"{k}={v}" for k, v in sorted(tags.items()))))
        else:
            kind = "server" if tags.get("role") == "consul" else "client"
            build = tags.get("build", "").split(":")[0]
            rows.append((m["Name"], addr, status, kind, build, tags.get("vsn", ""), tags.get("dc", "")))
    header: tuple[str, ...] = ("Node", "Address", "Status", "Tags") if detailed else (
        "Node", "Address", "Status", "Type", "Build", "Protocol", "DC")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@main.command()
@click.argument("addresses", nargs=-1, required=True)
@http_options
def join(addresses: tuple[str, ...], http_addr: str | None, token: str | None) -> None:
    """Tell the local agent to join the cluster through ADDRESSES."""
    client = Client(http_addr, token)
    joined = 0
    for addr in addresses:
        try:
            client.call("PUT", f"/v1/agent/join/{addr}")
            joined += 1
        except APIError as exc:
            click.echo(f"Error joining {addr}: {exc}", err=True)
    if not joined:
        sys.exit(1)
    click.echo(f"Successfully joined cluster by contacting {joined} nodes.")


@main.command()
@http_options
def leave(http_addr: str | None, token: str | None) -> None:
    """Make the local agent leave the cluster gracefully and exit."""
    try:
        Client(http_addr, token).call("PUT", "/v1/agent/leave")
    except APIError as exc:
        fail(str(exc))
    click.echo("Graceful leave complete")


@main.command("force-leave")
@click.argument("node")
@click.option("--prune", is_flag=True, help="Forget the member at once instead of keeping it as left.")
@http_options
def force_leave(node: str, prune: bool, http_addr: str | None, token: str | None) -> None:
    """Mark a failed member as left (and with --prune, forget it)."""
    try:
        Client(http_addr, token).call("PUT", f"/v1/agent/force-leave/{node}", params={"prune": "1"} if prune else None)
    except APIError as exc:
        fail(str(exc))


# ---- simulation -----------------------------------------------------------------------------------
@main.command()
@click.option("--nodes", "-n", type=click.IntRange(3, 20000), default=100, show_default=True)
@click.option("--seconds", type=click.FloatRange(25, 36000), default=120.0, show_default=True,
              help="Simulated seconds (a member is killed at --kill-at, one joins at --join-at).")
@click.option("--kill-at", type=click.FloatRange(0, 36000), default=10.0, show_default=True,
              help="Simulated second at which a random member is killed.")
@click.option("--join-at", type=click.FloatRange(0, 36000), default=20.0, show_default=True,
              help="Simulated second at which a new member joins (not before --kill-at).")
@click.option("--seed", type=int, default=0, show_default=True, help="Replays exactly.")
@click.option("--loss", type=click.FloatRange(0, 0.9), default=0.0, show_default=True, help="Datagram loss.")
@click.option("--preset", type=click.Choice(["lan", "wan", "local"]), default="lan", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also draw the spread of both pieces of news to this PNG (needs matplotlib).")
@click.option("--progress", is_flag=True, help="Print the simulated time, wall time and CPU to stderr as it runs.")
def sim(nodes: int, seconds: float, seed: int, loss: float, preset: str, as_json: bool, plot: str | None,
        progress: bool, kill_at: float, join_at: float) -> None:
    """Run the real gossip core in a deterministic simulation and report how news spreads."""
    import time

    if plot:
        try:
            import matplotlib
        except ImportError:
            fail("--plot needs matplotlib, which is not installed (pip install matplotlib)")
            return
        matplotlib.use("Agg")

    from murmur.gossip.config import GossipConfig
    from murmur.gossip.sim import scenario

    config = {"lan": GossipConfig.lan, "wan": GossipConfig.wan, "local": GossipConfig.local}[preset]()
    t0 = time.monotonic()

    def report(now: float) -> None:
        click.echo(f"  simulated {now:g} s: wall {time.monotonic() - t0:.0f} s, CPU {time.process_time():.0f} s",
                   err=True)

    if not kill_at <= join_at < seconds:
        fail("need --kill-at <= --join-at < --seconds")
    result = scenario(nodes, seconds, seed=seed, loss=loss, config=config, kill_at=kill_at, join_at=join_at,
                      progress=report if progress else None)
    result["wall_s"] = round(time.monotonic() - t0, 2)
    curves = result.pop("curves")
    if plot:
        _plot_spread(curves, f"{nodes} members, {preset}, loss {loss:.0%}, seed {seed}", plot)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{nodes} members, {seconds:g} s simulated ({preset}, loss {loss:.0%}, seed {seed}; "
               f"kill at {kill_at:g} s, join at {join_at:g} s) in {result['wall_s']} s of wall time")
    for label, key in (("failure of " + result["victim"], "failure_spread_s"), ("join", "join_spread_s")):
        spread = "  ".join(f"{k}: {'never' if v is None else f'{v:.2f} s'}" for k, v in result[key].items())
        click.echo(f"  {label:<22} known by  {spread}")
    click.echo(f"  suspicions {result['suspicions']}, refutations {result['refutations']}, "
               f"false deaths {result['false_deaths']}, packets {result['packets']} "
               f"({result['packets_lost']} lost)")


def _plot_spread(curves: dict[str, list[tuple[float, float]]], title: str, path: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in curves.items():
        if points:
            ax.step([t for t, _ in points], [f * 100 for _, f in points], where="post", label=label)
    ax.set_xlabel("seconds after the event")
    ax.set_ylabel("% of live members that know")
    ax.set_title(title)
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    click.echo(f"plot written to {path}")


# ---- catalog --------------------------------------------------------------------------------------
@main.group()
def catalog() -> None:
    """Read the catalog."""


@catalog.command("services")
@click.option("--tags", is_flag=True, help="Show each service's tags.")
@http_options
def catalog_services(tags: bool, http_addr: str | None, token: str | None) -> None:
    """List services."""
    try:
        data = Client(http_addr, token).call("GET", "/v1/catalog/services")
    except APIError as exc:
        fail(str(exc))
    for name in sorted(data):
        click.echo(f"{name:<30} {','.join(data[name])}" if tags else name)


@catalog.command("datacenters")
@http_options
def catalog_datacenters(http_addr: str | None, token: str | None) -> None:
    """List the known datacenters."""
    try:
        data = Client(http_addr, token).call("GET", "/v1/catalog/datacenters")
    except APIError as exc:
        fail(str(exc))
    for dc in data:
        click.echo(dc)


@catalog.command("nodes")
@http_options
def catalog_nodes(http_addr: str | None, token: str | None) -> None:
    """List nodes."""
    try:
        data = Client(http_addr, token).call("GET", "/v1/catalog/nodes")
    except APIError as exc:
        fail(str(exc))
    click.echo(f"{'Node':<24} {'ID':<10} {'Address':<16} DC")
    for n in data:
        click.echo(f"{n['Node']:<24} {n['ID'][:8]:<10} {n['Address']:<16} {n['Datacenter']}")


# ---- services -------------------------------------------------------------------------------------
@main.group()
def services() -> None:
    """Register and deregister services with the local agent."""


@services.command("register")
@click.argument("file", required=False, type=click.Path(exists=True))
@click.option("--name", default=None, help="Service name (when no FILE is given).")
@click.option("--id", "sid", default=None, help="Service ID (default: the name).")
@click.option("--address", default=None)
@click.option("--port", type=int, default=None)
@click.option("--tag", multiple=True)
@http_options
def services_register(file: str | None, name: str | None, sid: str | None, address: str | None, port: int | None,
                      tag: tuple[str, ...], http_addr: str | None, token: str | None) -> None:
    """Register a service from FILE (JSON or TOML) or from flags."""
    defs: list[dict[str, Any]] = []
    if file:
        from murmur.agent import config as config_mod

        try:
            cfg = config_mod.load([file])
        except config_mod.ConfigError as exc:
            fail(str(exc))
        defs = list(cfg.services)
        if not defs:
            fail(f"{file}: no service definitions found")
    elif name:
        d: dict[str, Any] = {"Name": name}
        if sid:
            d["ID"] = sid
        if address:
            d["Address"] = address
        if port is not None:
            d["Port"] = port
        if tag:
            d["Tags"] = list(tag)
        defs = [d]
    else:
        fail("give a FILE or --name")
    client = Client(http_addr, token)
    for d in defs:
        try:
            client.call("PUT", "/v1/agent/service/register", content=json.dumps(d))
        except APIError as exc:
            fail(str(exc))
        click.echo(f"Registered service: {d.get('Name')}")


@services.command("deregister")
@click.argument("file", required=False, type=click.Path(exists=True))
@click.option("--id", "sid", default=None, help="Service ID to deregister.")
@http_options
def services_deregister(file: str | None, sid: str | None, http_addr: str | None, token: str | None) -> None:
    """Deregister a service by --id or by the services in FILE."""
    ids: list[str] = []
    if sid:
        ids = [sid]
    elif file:
        from murmur.agent import config as config_mod

        try:
            cfg = config_mod.load([file])
        except config_mod.ConfigError as exc:
            fail(str(exc))
        ids = [s.get("ID") or s["Name"] for s in cfg.services]
    else:
        fail("give a FILE or --id")
    client = Client(http_addr, token)
    for i in ids:
        try:
            client.call("PUT", f"/v1/agent/service/deregister/{i}")
        except APIError as exc:
            fail(str(exc))
        click.echo(f"Deregistered service: {i}")


from .events import event, query  # noqa: E402 - the commands live in their own module

main.add_command(event)
main.add_command(query)

from .watch import watch  # noqa: E402 - the command lives in its own module

main.add_command(watch)

from .lock import lock  # noqa: E402 - the command lives in its own module

main.add_command(lock)

from .operator import info, operator  # noqa: E402 - the commands live in their own module

main.add_command(operator)
main.add_command(info)

from .kv import kv  # noqa: E402 - the commands live in their own module

main.add_command(kv)

from .snapshot import snapshot  # noqa: E402 - the commands live in their own module

main.add_command(snapshot)
from .lifecycle import maint, monitor  # noqa: E402 - the commands live in their own module

main.add_command(maint)
main.add_command(monitor)

from .keyring import keyring  # noqa: E402 - the command lives in its own module

main.add_command(keyring)

from .tls import tls  # noqa: E402 - the command lives in its own module

main.add_command(tls)

from .acl import acl  # noqa: E402 - the commands live in their own module

main.add_command(acl)

if __name__ == "__main__":
    main()
